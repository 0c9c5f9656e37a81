package nats_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// startJetStream runs an embedded NATS server with JetStream, storing in a
// temporary directory.
func startJetStream(t testing.TB) (*natsgo.Conn, jetstream.JetStream) {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	nc := connect(t, s.ClientURL())
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// Ship is a durable command.
type Ship struct{ Parcel int }

// shipper handles Ship, failing each parcel's first fails attempts.
type shipper struct {
	fails    int
	mu       sync.Mutex
	attempts map[int]int
	shipped  map[int]int
	done     chan int
}

func newShipper(fails int) *shipper {
	return &shipper{fails: fails, attempts: map[int]int{}, shipped: map[int]int{}, done: make(chan int, 1000)}
}

func (s *shipper) handle(_ context.Context, c Ship) (cqrs.NoResult, error) {
	s.mu.Lock()
	s.attempts[c.Parcel]++
	n := s.attempts[c.Parcel]
	s.mu.Unlock()
	if n <= s.fails {
		panic("the handler crashed") // recovered by the bus, then redelivered
	}
	s.mu.Lock()
	s.shipped[c.Parcel]++
	s.mu.Unlock()
	s.done <- c.Parcel
	return cqrs.NoResult{}, nil
}

// await waits for n successful shipments.
func (s *shipper) await(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Fatal("a command was lost")
		}
	}
}

func serveDurable(t *testing.T, js jetstream.JetStream, nc *natsgo.Conn, s *shipper, cfg cqrsnats.DurableConfig) {
	t.Helper()
	bus := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Ship, cqrs.NoResult](s.handle)))
	srv, err := cqrsnats.ServeDurable(context.Background(), js, nc, bus, cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
}

func TestDurableCommandsWaitForAHandler(t *testing.T) {
	nc, js := startJetStream(t)
	ctx := context.Background()
	// Nobody serves Ship yet: the commands wait in the stream.
	for p := range 20 {
		require.NoError(t, cqrsnats.Enqueue(ctx, js, Ship{Parcel: p}, cqrsnats.DurableConfig{}))
	}
	s := newShipper(0)
	serveDurable(t, js, nc, s, cqrsnats.DurableConfig{})
	s.await(t, 20)
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range 20 {
		assert.Equal(t, 1, s.shipped[p], "parcel %d shipped once", p)
	}
}

func TestDurableCommandsAreRedeliveredAfterACrash(t *testing.T) {
	nc, js := startJetStream(t)
	s := newShipper(2) // every parcel's first two attempts crash
	serveDurable(t, js, nc, s, cqrsnats.DurableConfig{MaxDeliver: 5})
	for p := range 10 {
		require.NoError(t, cqrsnats.Enqueue(context.Background(), js, Ship{Parcel: p}, cqrsnats.DurableConfig{MaxDeliver: 5}))
	}
	s.await(t, 10)
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range 10 {
		assert.Equal(t, 3, s.attempts[p], "parcel %d: two crashes, then success", p)
		assert.Equal(t, 1, s.shipped[p])
	}
}

func TestDurableDeadLetter(t *testing.T) {
	nc, js := startJetStream(t)
	dead := make(chan *natsgo.Msg, 1)
	sub, err := nc.Subscribe("cqrs.dead", func(m *natsgo.Msg) { dead <- m })
	require.NoError(t, err)
	defer func() { require.NoError(t, sub.Unsubscribe()) }()

	s := newShipper(100) // always crashes
	cfg := cqrsnats.DurableConfig{MaxDeliver: 3}
	serveDurable(t, js, nc, s, cfg)
	require.NoError(t, cqrsnats.Enqueue(context.Background(), js, Ship{Parcel: 7}, cfg))

	select {
	case m := <-dead:
		assert.JSONEq(t, `{"Parcel":7}`, string(m.Data))
		assert.Equal(t, "panic", m.Header.Get("Nats-Service-Error-Code"))
		assert.Equal(t, "cqrs.durable.command.nats_test.Ship", m.Header.Get("Cqrs-Subject"))
		assert.Equal(t, "3", m.Header.Get("Cqrs-Attempts"))
	case <-time.After(10 * time.Second):
		t.Fatal("the command did not reach the dead-letter subject")
	}
	s.mu.Lock()
	assert.Equal(t, 3, s.attempts[7])
	s.mu.Unlock()

	// Nothing is left in the work queue.
	stream, err := js.Stream(context.Background(), "CQRS_COMMANDS")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := stream.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	}, 5*time.Second, 10*time.Millisecond)
}
