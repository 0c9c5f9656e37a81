package nats_test

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// streamPermissions is the authorization of docs/distributed.md,
// "Permissions", for streaming queries under the prefix cqrs: a serving
// user, and two callers with inbox prefixes of their own.
const streamPermissions = `
authorization {
  users = [
    {user: orders, password: orders, permissions: {
      publish: "_INBOX.>"
      subscribe: "cqrs.stream.>"
    }}
    {user: alice, password: alice, permissions: {
      publish: "cqrs.stream.>"
      subscribe: "_INBOX.alice.>"
    }}
    {user: mallory, password: mallory, permissions: {
      publish: "cqrs.stream.>"
      subscribe: "_INBOX.mallory.>"
    }}
  ]
}
`

// startServerWithConfig runs an embedded NATS server on a loopback port
// with the configuration conf. It stops with the test.
func startServerWithConfig(t *testing.T, conf string) *server.Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	opts, err := server.ProcessConfigFile(path)
	require.NoError(t, err)
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second), "NATS server did not start")
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// TestStreamUnderPermissions: under the documented permissions, streams
// run, and another caller can
// neither read a caller's inbox or the stream subjects, nor publish to
// the caller's inbox, nor reach its stream by guessing: the caller's
// stream arrives whole.
func TestStreamUnderPermissions(t *testing.T) {
	ns := startServerWithConfig(t, streamPermissions)
	serveStreams(t, connect(t, ns.ClientURL(), natsgo.UserInfo("orders", "orders")))
	alice := connect(t, ns.ClientURL(), natsgo.UserInfo("alice", "alice"), natsgo.CustomInboxPrefix("_INBOX.alice"))

	var mu sync.Mutex
	var violations []string
	mallory := connect(t, ns.ClientURL(), natsgo.UserInfo("mallory", "mallory"), natsgo.CustomInboxPrefix("_INBOX.mallory"),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			mu.Lock()
			defer mu.Unlock()
			violations = append(violations, err.Error())
		}))
	// Mallory tries to read every inbox, and the stream subjects, where
	// the requests (with their keys) and the control messages travel.
	var overheard atomic.Int64
	for _, subject := range []string{"_INBOX.>", "cqrs.stream.>"} {
		_, err := mallory.Subscribe(subject, func(*natsgo.Msg) { overheard.Add(1) })
		require.NoError(t, err)
	}
	require.NoError(t, mallory.Flush())

	const n = 40
	v := startVictim(t, callStreams(t, alice), ListItems{Count: n, Pause: 50 * time.Millisecond})
	v.read(t, 5)

	// Mallory learns Alice's inbox (the NATS server's monitoring lists
	// it) and forges an end there, then tries the control subjects
	// another stream could have, from her own stream's.
	inbox := inboxOf(t, ns, alice)
	require.True(t, strings.HasPrefix(inbox, "_INBOX.alice."), inbox)
	require.NoError(t, mallory.Publish(inbox, keyed(binary.AppendUvarint([]byte{'E'}, 5), []byte("not the key, but"))))
	attacker := openByHand(t, mallory, 4, time.Second, `{"Count":0}`)
	for _, g := range attacker.guesses() {
		require.NoError(t, mallory.Publish(g, []byte{'C'}))
	}
	attacker.barrier(t)

	v.rest(nil)
	v.check(t, n)
	assert.Zero(t, overheard.Load(), "messages Mallory overheard")
	mu.Lock()
	defer mu.Unlock()
	t.Logf("Mallory's permission violations: %q", violations)
	for _, want := range []string{`Subscription to "_INBOX.>"`, `Subscription to "cqrs.stream.>"`, `Publish to "` + inbox + `"`} {
		assert.True(t, strings.Contains(strings.Join(violations, "\n"), want), "no permission violation for %s", want)
	}

	// Mallory's own streams run as Alice's do.
	read, err := lastError(t, cqrs.Stream(context.Background(), callStreams(t, mallory), ListItems{Count: 10}))
	require.NoError(t, err)
	assert.Equal(t, 10, read)
}
