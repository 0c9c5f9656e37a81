package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/typedcqrs/dispatch/cqrs"
)

// JetStreamSink is the [Sink] that stores messages in NATS JetStream, as
// cqrsnats.Publish (durable events) and cqrsnats.Enqueue (durable
// commands) do: each with its subject, headers and payload as [Publish]
// and [Enqueue] wrote them, its ID as Nats-Msg-Id, so that JetStream
// stores once a message sent twice within the stream's duplicate window
// (2 minutes by default). A batch is published asynchronously and the
// sink waits for every acknowledgement; the messages JetStream took
// before the first it did not are those reported sent.
//
// The streams must exist: a process that receives the events
// (cqrsnats.Subscribe) or serves the commands (cqrsnats.ServeDurable)
// makes them, or the operator does. Until then, and while NATS is down,
// the relay's batches fail, and it retries them with back-off: the
// messages wait in the outbox.
//
// Make one with [NewJetStreamSink]; the zero value is not usable. It is
// safe for concurrent use.
type JetStreamSink struct {
	js      jetstream.JetStream
	timeout time.Duration
}

// NewJetStreamSink returns a sink that publishes with js, and waits at
// most timeout for JetStream to acknowledge a batch: a batch not
// acknowledged by then (NATS down, its reconnect buffer holding the
// messages) fails, and the relay sends it again later. If timeout is
// less than or equal to 0, it is 5s. It fails with [ErrConfig] for a nil
// js.
func NewJetStreamSink(js jetstream.JetStream, timeout time.Duration) (*JetStreamSink, error) {
	if js == nil {
		return nil, fmt.Errorf("%w: NewJetStreamSink needs a JetStream", ErrConfig)
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &JetStreamSink{js: js, timeout: timeout}, nil
}

// Send publishes msgs and waits, bounded by ctx and the sink's timeout,
// for JetStream to store them, as [Sink] says.
func (s *JetStreamSink) Send(ctx context.Context, msgs []Message) (int, error) {
	if s == nil || s.js == nil {
		return 0, fmt.Errorf("%w: a JetStreamSink not made with NewJetStreamSink", ErrConfig)
	}
	if ctx == nil {
		return 0, fmt.Errorf("%w: outbox JetStream sink", cqrs.ErrNilContext)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if len(msgs) == 1 {
		if _, err := s.js.PublishMsg(ctx, natsMsg(msgs[0]), jetstream.WithRetryAttempts(0)); err != nil {
			return 0, fmt.Errorf("publishing %s: %w", msgs[0].Subject, err)
		}
		return 1, nil
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var pubErr error
	for _, m := range msgs {
		f, err := s.js.PublishMsgAsync(natsMsg(m))
		if err != nil {
			pubErr = fmt.Errorf("publishing %s: %w", m.Subject, err)
			break
		}
		futures = append(futures, f)
	}
	sent := 0
	var ackErr error
	for i, f := range futures {
		select {
		case <-f.Ok():
			if ackErr == nil && sent == i {
				sent++
			}
		case err := <-f.Err():
			if ackErr == nil {
				ackErr = fmt.Errorf("storing %s: %w", msgs[i].Subject, err)
			}
		case <-ctx.Done():
			return sent, errors.Join(ackErr, ctx.Err())
		}
	}
	if ackErr != nil {
		return sent, ackErr
	}
	return sent, pubErr
}

func natsMsg(m Message) *natsgo.Msg {
	return &natsgo.Msg{Subject: m.Subject, Header: natsgo.Header(m.Header), Data: m.Payload}
}
