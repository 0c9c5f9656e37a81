package nats_test

import (
	"context"
	"encoding/binary"
	"iter"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// These tests play a hostile party on the same NATS as a stream's caller
// and serving process: another caller, with the same rights, that tries
// to steer a stream that is not its own (issue #18, item 5). Each counts
// what the victim's stream lost, duplicated or received that was not its
// own, and the forged messages that took effect, and asserts them all 0.

// handStream is a ListItems stream opened by hand over raw NATS, as a
// hostile caller would: it sees its own acceptance, so it knows what a
// control subject looks like. An attacker's own stream streams no items
// ({"Count":0}), so that the producer's counts are the victim's.
type handStream struct {
	nc        *natsgo.Conn
	frames    *natsgo.Subscription
	inbox     string
	control   string // from the acceptance
	window    uint64 // granted
	heartbeat time.Duration
}

// openByHand opens a ListItems stream of query (JSON) with testKey,
// asking for window and heartbeat, and waits for its acceptance. The
// stream is cancelled when the test ends.
func openByHand(t *testing.T, nc *natsgo.Conn, window uint64, heartbeat time.Duration, query string) *handStream {
	t.Helper()
	subject, id := listItemsSubject()
	h := &handStream{nc: nc, inbox: nc.NewInbox()}
	var err error
	h.frames, err = nc.SubscribeSync(h.inbox)
	require.NoError(t, err)
	require.NoError(t, nc.PublishRequest(subject, h.inbox, streamRequest(window, uint64(heartbeat), sealFor(id, 30*time.Second, query))))
	accept, err := h.frames.NextMsg(5 * time.Second)
	require.NoError(t, err)
	require.Greater(t, len(accept.Data), 17)
	require.Equal(t, byte('A'), accept.Data[0], "the stream was not accepted: %q", accept.Data)
	require.Equal(t, testKey[:], accept.Data[1:17], "the acceptance carries the caller's key")
	rest := accept.Data[17:]
	var n int
	h.window, n = binary.Uvarint(rest)
	require.Positive(t, n)
	hb, n := binary.Uvarint(rest[n:])
	require.Positive(t, n)
	h.heartbeat = time.Duration(hb)
	h.control = accept.Reply
	t.Cleanup(func() {
		if nc.Publish(h.control, []byte{'C'}) == nil {
			_ = nc.FlushTimeout(time.Second)
		}
	})
	return h
}

// ping pings the stream, asking for a pong, with read as the items read.
func (h *handStream) ping(t *testing.T, read uint64) {
	t.Helper()
	data := append(binary.AppendUvarint([]byte{'P'}, read), 1)
	require.NoError(t, h.nc.PublishMsg(&natsgo.Msg{Subject: h.control, Reply: h.inbox, Data: append(data, testKey[:]...)}))
}

// barrier returns once the serving process has handled every control
// message h's connection sent before: it pings h's own stream and waits
// for the pong, or for the answer that the stream has ended. The serving
// process reads its control messages in order, on one subscription.
func (h *handStream) barrier(t *testing.T) {
	t.Helper()
	h.ping(t, 0)
	for {
		m, err := h.frames.NextMsg(5 * time.Second)
		require.NoError(t, err, "no answer to the ping")
		if m.Data[0] == 'P' || m.Data[0] == 'X' {
			return
		}
	}
}

// guesses returns the control subjects a hostile caller would try for
// the other streams of the serving process that accepted h: the counter
// values 1 to 64 in base 36 (the stream ids of the version that issue #18
// reviewed), and h's own id with its last character replaced by every
// other letter and digit. h's own subject is not among them.
func (h *handStream) guesses() []string {
	cut := strings.LastIndexByte(h.control, '.') + 1
	prefix, own := h.control[:cut], h.control[cut:]
	ids := map[string]bool{}
	for i := uint64(1); i <= 64; i++ {
		ids[strconv.FormatUint(i, 36)] = true
	}
	for _, c := range "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" {
		ids[own[:len(own)-1]+string(c)] = true
	}
	delete(ids, own)
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, prefix+id)
	}
	return out
}

// countItems counts, of the item numbers a stream of want items from 0 gave,
// those lost, duplicated and misrouted (not its own: out of range).
func countItems(items []int, want int) (lost, duplicated, misrouted int) {
	seen := make([]int, want)
	for _, n := range items {
		if n < 0 || n >= want {
			misrouted++
			continue
		}
		if seen[n]++; seen[n] > 1 {
			duplicated++
		}
	}
	for _, c := range seen {
		if c == 0 {
			lost++
		}
	}
	return lost, duplicated, misrouted
}

// victim is a stream read by hand with iter.Pull2.
type victim struct {
	next  func() (Item, error, bool)
	stop  func()
	items []int
	err   error
}

func startVictim(t *testing.T, queries *cqrs.QueryBus, q ListItems) *victim {
	v := &victim{}
	v.next, v.stop = iter.Pull2(cqrs.Stream(context.Background(), queries, q))
	t.Cleanup(v.stop)
	return v
}

// read reads n items, failing the test on an error or the stream's end.
func (v *victim) read(t *testing.T, n int) {
	t.Helper()
	for range n {
		item, err, ok := v.next()
		require.True(t, ok, "the stream ended")
		require.NoError(t, err)
		v.items = append(v.items, item.N)
	}
}

// rest reads the stream to its end, calling each after each item.
func (v *victim) rest(each func()) {
	for {
		item, err, ok := v.next()
		if !ok {
			return
		}
		if err != nil {
			v.err = err
			continue
		}
		v.items = append(v.items, item.N)
		if each != nil {
			each()
		}
	}
}

// check asserts that the victim read its want items, whole and in order,
// and that its stream ended without an error.
func (v *victim) check(t *testing.T, want int) {
	t.Helper()
	lost, duplicated, misrouted := countItems(v.items, want)
	outOfOrder := 0
	for i, n := range v.items {
		if i != n {
			outOfOrder++
		}
	}
	t.Logf("the victim read %d of %d items: %d lost, %d duplicated, %d misrouted, %d out of order; its stream ended with %v",
		len(v.items), want, lost, duplicated, misrouted, outOfOrder, v.err)
	assert.NoError(t, v.err)
	assert.Equal(t, want, len(v.items))
	assert.Zero(t, lost+duplicated+misrouted+outOfOrder, "lost, duplicated, misrouted or out of order")
}

// TestStreamForgedCancel: a caller who sees its own stream's control
// subject, and tries the subjects another stream's could have, cancels
// nothing. (In the version reviewed, stream ids counted up in base 36:
// the victim stopped at 100 of 600 items.)
func TestStreamForgedCancel(t *testing.T) {
	ns := startServer(t, -1)
	srv, _ := serveStreams(t, connect(t, ns.ClientURL()))
	const n = 600
	v := startVictim(t, callStreams(t, connect(t, ns.ClientURL())), ListItems{Count: n})
	v.read(t, 100)

	attacker := openByHand(t, connect(t, ns.ClientURL()), 4, time.Second, `{"Count":0}`)
	guesses := attacker.guesses()
	for _, g := range guesses {
		require.NoError(t, attacker.nc.Publish(g, []byte{'C'}))
	}
	attacker.barrier(t)
	stats := srv.Stats()
	forged := stats.Types[0].Cancelled
	t.Logf("%d forged cancels: %d took effect, %d were for no stream", len(guesses), forged, stats.Stray)
	assert.Zero(t, forged, "forged cancels accepted")
	assert.GreaterOrEqual(t, stats.Stray, uint64(len(guesses)))

	v.rest(nil)
	v.check(t, n)
}

// TestStreamForgedCredit: forged acknowledgements, sent to every subject
// another stream's control subject could have, grant it no credit: its
// producer stays within the window of what its own caller read, and the
// caller's inbox never overflows. (In the version reviewed, one forged
// credit of 2^40 put the producer 4,991 items ahead of a window of 64,
// and the victim got 90 of 5,000.)
func TestStreamForgedCredit(t *testing.T) {
	ns := startServer(t, -1)
	srv, p := serveStreams(t, connect(t, ns.ClientURL()))
	const n = 600
	v := startVictim(t, callStreams(t, connect(t, ns.ClientURL())), ListItems{Count: n})
	v.read(t, 10)
	require.Eventually(t, func() bool { return p.yielded.Load() == streamWindow }, 5*time.Second, time.Millisecond,
		"the producer did not fill the window")

	attacker := openByHand(t, connect(t, ns.ClientURL()), 4, time.Second, `{"Count":0}`)
	guesses := attacker.guesses()
	forged := 0
	for _, g := range guesses {
		// Credit beyond all bounds, and, in case acknowledgements beyond
		// the items sent are refused, every plausible count.
		acks := []uint64{1 << 40}
		for k := uint64(1); k <= n/16; k++ {
			acks = append(acks, 16*k)
		}
		for _, a := range acks {
			require.NoError(t, attacker.nc.Publish(g, binary.AppendUvarint([]byte{'K'}, a)))
			forged++
		}
	}
	attacker.barrier(t)

	// The victim reads on, slowly; the producer must never be more than
	// the window ahead of it.
	var ahead int64
	read := int64(len(v.items))
	v.rest(func() {
		if read++; read%50 == 0 {
			time.Sleep(10 * time.Millisecond) // a slow reader: a producer with credit runs ahead now
		}
		ahead = max(ahead, p.yielded.Load()-read)
	})
	t.Logf("%d forged acknowledgements; the producer ran at most %d items ahead of its caller (window %d); %d control messages were for no stream",
		forged, ahead, streamWindow, srv.Stats().Stray)
	assert.LessOrEqual(t, ahead, int64(streamWindow), "the producer ran more than a window ahead")
	v.check(t, n)
}

// TestStreamCreditCappedAtWindow: a caller that acknowledges more items
// than were sent, on its own stream's control subject, gets no credit
// for them: the acknowledgement is refused and counted as malformed, and
// the producer stays a window ahead of what was truly read.
func TestStreamCreditCappedAtWindow(t *testing.T) {
	ns := startServer(t, -1)
	srv, p := serveStreams(t, connect(t, ns.ClientURL()))
	h := openByHand(t, connect(t, ns.ClientURL()), 8, time.Second, `{"Count":1000}`)
	require.Equal(t, uint64(8), h.window)
	require.Eventually(t, func() bool { return p.yielded.Load() == 8 }, 5*time.Second, time.Millisecond)

	require.NoError(t, h.nc.Publish(h.control, binary.AppendUvarint([]byte{'K'}, 1<<40)))
	h.barrier(t)
	assert.Equal(t, uint64(1), srv.Stats().Malformed, "the acknowledgement of items never sent was not refused")
	assert.Never(t, func() bool { return p.yielded.Load() > 8 }, 200*time.Millisecond, 5*time.Millisecond,
		"the producer ran past the window on credit for items never sent")

	// An acknowledgement of items sent grants credit as before.
	require.NoError(t, h.nc.Publish(h.control, binary.AppendUvarint([]byte{'K'}, 8)))
	require.Eventually(t, func() bool { return p.yielded.Load() == 16 }, 5*time.Second, time.Millisecond)
}

// TestStreamForgedPingsKeepNoVanishedCallerAlive: pings from another
// caller, sent to every subject the stream's control subject could have,
// do not keep alive a stream whose caller vanished: the serving process
// cancels it after the caller's heartbeats, as without them.
func TestStreamForgedPingsKeepNoVanishedCallerAlive(t *testing.T) {
	ns := startServer(t, -1)
	srv, _ := serveStreams(t, connect(t, ns.ClientURL()))
	calling := connect(t, ns.ClientURL())
	v := startVictim(t, callStreams(t, calling), ListItems{Count: -1})
	v.read(t, 5)

	attacker := openByHand(t, connect(t, ns.ClientURL()), 4, time.Second, `{"Count":0}`)
	guesses := attacker.guesses()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ping := append([]byte{'P', 0, 0}, testKey[:]...)
		for {
			for _, g := range guesses {
				_ = attacker.nc.Publish(g, ping)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	defer wg.Wait()
	defer close(stop)

	start := time.Now()
	calling.Close() // the caller vanishes: no cancel, no more pings of its own
	require.Eventually(t, func() bool { return srv.Stats().Types[0].Vanished == 1 }, 5*time.Second, 5*time.Millisecond,
		"the stream of a vanished caller was kept alive by forged pings")
	t.Logf("the vanished caller's stream was cancelled %v after it vanished, %d forged pings a round of 50ms notwithstanding",
		time.Since(start), len(guesses))
}

// TestStreamHeartbeatCapped: the serving side grants at most its own
// heartbeat, so a caller that asks for an hour and vanishes holds its
// stream, and its place among MaxStreams, for at most 4 of the serving
// side's heartbeats, not 4 hours.
func TestStreamHeartbeatCapped(t *testing.T) {
	ns := startServer(t, -1)
	const most = 100 * time.Millisecond
	srv, _ := serveStreams(t, connect(t, ns.ClientURL()),
		cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{Heartbeat: most, MaxStreams: 1}))

	for _, asked := range []time.Duration{time.Hour, 1<<63 - 1} {
		start := time.Now()
		h := openByHand(t, connect(t, ns.ClientURL()), 8, asked, `{"Count":-1}`)
		assert.Equal(t, most, h.heartbeat, "the heartbeat granted to a caller that asked for %v", asked)
		// The caller never says a word again.
		vanished := srv.Stats().Types[0].Vanished
		require.Eventually(t, func() bool { return srv.Stats().Types[0].Vanished == vanished+1 }, 5*time.Second, 5*time.Millisecond,
			"the stream of a silent caller that asked for a heartbeat of %v was not cancelled", asked)
		t.Logf("asked for a heartbeat of %v, granted %v: cancelled after %v of silence", asked, h.heartbeat, time.Since(start))
		assert.Less(t, time.Since(start), 4*most+2*time.Second)
	}

	// The place it held among MaxStreams (1) is free for another caller.
	read, err := lastError(t, cqrs.Stream(context.Background(), callStreams(t, connect(t, ns.ClientURL())), ListItems{Count: 10}))
	require.NoError(t, err)
	assert.Equal(t, 10, read)
}

// TestStreamCallerUsesGrantedHeartbeat: a caller that asked for a longer
// heartbeat than the serving side grants pings at the pace granted, so a
// loop slower than 4 of the serving side's heartbeats is not taken for a
// vanished caller.
func TestStreamCallerUsesGrantedHeartbeat(t *testing.T) {
	ns := startServer(t, -1)
	srv, _ := serveStreams(t, connect(t, ns.ClientURL()),
		cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{Heartbeat: 150 * time.Millisecond}))
	queries := callStreams(t, connect(t, ns.ClientURL()),
		cqrsnats.WithStreamConfig(cqrsnats.StreamConfig{Window: streamWindow, Heartbeat: 5 * time.Second}))
	read := 0
	for _, err := range cqrs.Stream(context.Background(), queries, ListItems{Count: -1}) {
		require.NoError(t, err)
		if read++; read == 3 {
			break
		}
		// Over 4 heartbeats granted (600ms), while the producer waits for
		// credit: only the pings say the caller is there.
		time.Sleep(time.Second)
	}
	require.Eventually(t, func() bool { return srv.Stats().Types[0].Cancelled == 1 }, 5*time.Second, 5*time.Millisecond,
		"the caller's break did not cancel the stream")
	assert.Zero(t, srv.Stats().Types[0].Vanished, "a slow caller was taken for a vanished one")
}

// inboxOf returns the inbox subscription of the connection nc, as the
// NATS server's monitoring lists it: a subject is no secret.
func inboxOf(t *testing.T, ns *server.Server, nc *natsgo.Conn) string {
	t.Helper()
	cid, err := nc.GetClientID()
	require.NoError(t, err)
	connz, err := ns.Connz(&server.ConnzOptions{CID: cid, Subscriptions: true})
	require.NoError(t, err)
	require.Len(t, connz.Conns, 1)
	var inboxes []string
	for _, sub := range connz.Conns[0].Subs {
		if strings.HasPrefix(sub, "_INBOX.") && !strings.ContainsAny(sub, "*>") {
			inboxes = append(inboxes, sub)
		}
	}
	require.Len(t, inboxes, 1, "the caller's subscriptions: %v", connz.Conns[0].Subs)
	return inboxes[0]
}

// TestStreamForgedFrames: a party that knows a caller's inbox (from the
// NATS server's monitoring, here) and may publish to it cannot end the
// stream early as if it were whole, slip an item into it, or end it with
// the frames of the protocol; a frame without the stream's key is
// dropped, and the stream goes on whole. (In the version reviewed, a
// forged end frame truncated a stream with a nil error.) NATS's own
// no-responders status cannot carry a key: forged, it ends the stream
// with ErrTransport, never silently.
func TestStreamForgedFrames(t *testing.T) {
	ns := startServer(t, -1)
	srv, p := serveStreams(t, connect(t, ns.ClientURL()))
	forger := connect(t, ns.ClientURL())
	otherKey := []byte("not the key, but") // 16 bytes
	const n = 200
	for _, tc := range []struct {
		name   string
		forged []*natsgo.Msg
	}{
		{"an end, as if whole", []*natsgo.Msg{{Data: keyed(binary.AppendUvarint([]byte{'E'}, streamWindow), otherKey)}}},
		{"an item", []*natsgo.Msg{{Data: keyed(append(binary.AppendUvarint([]byte{'I'}, streamWindow+1), `{"N":-1}`...), otherKey)}}},
		{"an end with an error", []*natsgo.Msg{{Data: keyed(append(binary.AppendUvarint([]byte{'E'}, streamWindow), 5, 'e', 'r', 'r', 'o', 'r'), otherKey)}}},
		{"the stream gone", []*natsgo.Msg{{Data: keyed([]byte{'X'}, otherKey)}}},
		{"a pong, an acceptance", []*natsgo.Msg{
			{Data: keyed([]byte{'P'}, otherKey)},
			{Data: keyed(acceptFrame(1, "x").Data, otherKey), Reply: "cqrs.stream._control.x.y"},
		}},
		{"the frames of the version reviewed", []*natsgo.Msg{
			{Data: binary.AppendUvarint([]byte{'E'}, streamWindow)},
			{Data: append(binary.AppendUvarint([]byte{'I'}, streamWindow+1), `{"N":-1}`...)},
			{Data: []byte{'X'}},
		}},
		{"garbage", []*natsgo.Msg{{Data: nil}, {Data: []byte("hello")}, {Data: []byte{'I'}}, {Data: make([]byte, 64)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calling := connect(t, ns.ClientURL())
			yielded := p.yielded.Load()
			v := startVictim(t, callStreams(t, calling), ListItems{Count: n})
			v.read(t, 5)
			// The producer has sent a window of items, which are on their
			// way to the inbox or in it: the forged frames come after them.
			require.Eventually(t, func() bool { return p.yielded.Load()-yielded == streamWindow }, 5*time.Second, time.Millisecond)
			inbox := inboxOf(t, ns, calling)
			for _, m := range tc.forged {
				m.Subject = inbox
				require.NoError(t, forger.PublishMsg(m))
			}
			require.NoError(t, forger.Flush()) // the NATS server has queued them for the caller
			v.rest(nil)
			v.check(t, n)
		})
	}
	assert.Zero(t, srv.Stats().Types[0].Errors)

	t.Run("a no-responders status", func(t *testing.T) {
		calling := connect(t, ns.ClientURL())
		v := startVictim(t, callStreams(t, calling), ListItems{Count: n})
		v.read(t, 5)
		status := &natsgo.Msg{Subject: inboxOf(t, ns, calling), Header: natsgo.Header{"Status": []string{"503"}}}
		require.NoError(t, forger.PublishMsg(status))
		require.NoError(t, forger.Flush())
		v.rest(nil)
		t.Logf("a forged no-responders status: the victim read %d of %d items, then %v", len(v.items), n, v.err)
		require.ErrorIs(t, v.err, cqrsnats.ErrTransport, "a stream ended by a forged status ends with an error")
		lost, duplicated, misrouted := countItems(v.items, len(v.items))
		assert.Zero(t, lost+duplicated+misrouted)
	})
}
