package nats_test

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(servingProcessEnv); url != "" {
		os.Exit(servingProcess(url))
	}
	goleak.VerifyTestMain(m)
}

// servingProcessEnv names the variable that makes the test binary
// servingProcess instead, serving on the NATS URL it holds.
const servingProcessEnv = "CQRS_NATS_SERVING_PROCESS"

// servingProcess is the serving process of TestFloodHeapIsBounded: it
// serves PlaceOrder with a handler that takes 2 ms, measures its own heap
// growth, live (after a collection) and at its peak, and reports it on
// "flood.heap" until a message on "flood.stop". It returns the exit code.
func servingProcess(url string) int {
	nc, err := natsgo.Connect(url)
	if err != nil {
		return 1
	}
	defer nc.Close()
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	bus := cqrs.NewCommandBus()
	err = cqrs.Register(bus, cqrs.HandlerFunc[PlaceOrder, Order](func(ctx context.Context, c PlaceOrder) (Order, error) {
		select {
		case <-time.After(2 * time.Millisecond):
			return Order{ID: c.ID}, nil
		case <-ctx.Done():
			return Order{}, ctx.Err()
		}
	}))
	if err != nil {
		return 1
	}
	srv, err := cqrsnats.Serve(nc, bus)
	if err != nil {
		return 1
	}
	var live, peak atomic.Int64
	done := make(chan struct{})
	if _, err := nc.Subscribe("flood.heap", func(m *natsgo.Msg) {
		data, _ := json.Marshal(map[string]int64{"Live": live.Load(), "Peak": peak.Load()})
		_ = m.Respond(data)
	}); err != nil {
		return 1
	}
	if _, err := nc.Subscribe("flood.stop", func(*natsgo.Msg) { close(done) }); err != nil {
		return 1
	}
	var m runtime.MemStats
	for i := 0; ; i++ {
		if i%10 == 0 {
			runtime.GC()
		}
		runtime.ReadMemStats(&m)
		grown := int64(m.HeapAlloc) - int64(base.HeapAlloc)
		if i%10 == 0 {
			live.Store(max(live.Load(), grown))
		}
		peak.Store(max(peak.Load(), grown))
		select {
		case <-done:
			if srv.Stop(context.Background()) != nil {
				return 1
			}
			return 0
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// startServer runs an embedded NATS server on a loopback port: port -1
// picks a free one. It stops with the test.
func startServer(t testing.TB, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second), "NATS server did not start")
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// connect opens a connection that the test closes.
func connect(t testing.TB, url string, opts ...natsgo.Option) *natsgo.Conn {
	t.Helper()
	nc, err := natsgo.Connect(url, opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}
