package outbox_test

import (
	"bufio"
	"context"
	"database/sql"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/outbox"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// startNATS runs an embedded NATS server with JetStream on 127.0.0.1,
// storing in dir, on port (-1 for any).
func startNATS(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true, JetStream: true, StoreDir: dir})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second), "NATS did not start")
	return s
}

func connectNATS(t testing.TB, url string) (*natsgo.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := natsgo.Connect(url, natsgo.MaxReconnects(-1), natsgo.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// eventStream makes the events' stream as a Receiver does, by
// subscribing, and returns the subscriber's deliveries.
func eventStream(t testing.TB, nc *natsgo.Conn) chan OrderPlaced {
	t.Helper()
	r, err := cqrsnats.NewReceiver(nc, cqrsnats.EventConfig{Durable: true, AckWait: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	got := make(chan OrderPlaced, 100_000)
	_, err = cqrsnats.Subscribe(r, "test", func(_ context.Context, e OrderPlaced) error {
		got <- e
		return nil
	})
	require.NoError(t, err)
	return got
}

// eventsStream makes the events' stream with limits retention, so that
// what it stored can be counted after the fact (a Receiver's stream
// removes what its subscribers acknowledged).
func eventsStream(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "CQRS_EVENTS", Subjects: []string{"cqrs.stored.>"}, Storage: jetstream.FileStorage,
	})
	require.NoError(t, err)
}

// stored returns the Cqrs-Id of each message of the events' stream.
func stored(t testing.TB, js jetstream.JetStream) []string {
	t.Helper()
	ctx := context.Background()
	c, err := js.OrderedConsumer(ctx, "CQRS_EVENTS", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	info, err := js.Stream(ctx, "CQRS_EVENTS")
	require.NoError(t, err)
	n := int(info.CachedInfo().State.Msgs)
	var ids []string
	for len(ids) < n {
		batch, err := c.Fetch(min(n-len(ids), 500), jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		got := 0
		for m := range batch.Messages() {
			ids = append(ids, m.Headers().Get(cqrsnats.HeaderID))
			got++
		}
		require.NotZero(t, got, "the stream's messages stopped coming")
	}
	return ids
}

func writeN(t testing.TB, b *backend, from, n int) map[[2]int]bool {
	t.Helper()
	committed := map[[2]int]bool{}
	for i := from; i < from+n; i += 10 {
		var evts []OrderPlaced
		for j := i; j < min(i+10, from+n); j++ {
			evts = append(evts, OrderPlaced{Order: j})
			committed[[2]int{0, j}] = true
		}
		b.write(t, true, evts...)
	}
	return committed
}

// TestRelayToJetStreamReachesReceivers: an event and a durable command
// written into one transaction reach a Receiver's subscriber and a
// durable server through the relay, each once.
func TestRelayToJetStreamReachesReceivers(t *testing.T) {
	eachBackend(t, outbox.Config{}, func(t *testing.T, b *backend) {
		s := startNATS(t, t.TempDir(), -1)
		defer s.Shutdown()
		nc, js := connectNATS(t, s.ClientURL())
		got := eventStream(t, nc)
		commands := cqrs.NewCommandBus()
		shipped := make(chan int, 10)
		require.NoError(t, cqrs.Handle(commands, func(_ context.Context, c ShipOrder) (cqrs.NoResult, error) {
			shipped <- c.Order
			return cqrs.NoResult{}, nil
		}))
		srv, err := cqrsnats.ServeDurable(t.Context(), js, commands, cqrsnats.DurableConfig{})
		require.NoError(t, err)
		defer func() { require.NoError(t, srv.Stop(context.Background())) }()

		tx, err := b.db.BeginTx(t.Context(), nil)
		require.NoError(t, err)
		require.NoError(t, outbox.Publish(t.Context(), b.box, tx, OrderPlaced{Order: 5}))
		require.NoError(t, outbox.Enqueue(t.Context(), b.box, tx, ShipOrder{Order: 5}))
		require.NoError(t, tx.Commit())

		sink, err := outbox.NewJetStreamSink(js, 500*time.Millisecond)
		require.NoError(t, err)
		relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{PollInterval: 10 * time.Millisecond})
		require.NoError(t, err)
		runRelay(t, relay)
		select {
		case e := <-got:
			assert.Equal(t, 5, e.Order)
		case <-time.After(10 * time.Second):
			t.Fatal("the event never arrived")
		}
		select {
		case o := <-shipped:
			assert.Equal(t, 5, o)
		case <-time.After(10 * time.Second):
			t.Fatal("the command never arrived")
		}
	})
}

// TestNATSDownFiveSeconds: NATS stops for 5 s while messages are written;
// the relay backs off, and once NATS is back every message is stored
// once.
func TestNATSDownFiveSeconds(t *testing.T) {
	b := openPostgres(t, outbox.Config{})
	dir := t.TempDir()
	s := startNATS(t, dir, -1)
	url := s.ClientURL()
	_, js := connectNATS(t, url)
	eventsStream(t, js)
	sink, err := outbox.NewJetStreamSink(js, 500*time.Millisecond)
	require.NoError(t, err)
	relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{PollInterval: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	require.NoError(t, err)
	runRelay(t, relay)

	committed := writeN(t, b, 0, 100)
	require.Eventually(t, func() bool { l, _ := b.box.Lag(t.Context()); return l.Pending == 0 }, 10*time.Second, 10*time.Millisecond)
	s.Shutdown()
	s.WaitForShutdown()
	for k := range writeN(t, b, 100, 200) {
		committed[k] = true
	}
	time.Sleep(5 * time.Second) // NATS down for 5 s: the fault under test
	lag, err := b.box.Lag(t.Context())
	require.NoError(t, err)
	assert.EqualValues(t, 200, lag.Pending, "nothing sent while NATS is down, nothing dropped")
	s = startNATS(t, dir, natsPort(t, url))
	defer s.Shutdown()
	require.Eventually(t, func() bool { l, _ := b.box.Lag(t.Context()); return l.Pending == 0 }, 20*time.Second, 20*time.Millisecond)
	ids := stored(t, js)
	assert.Len(t, ids, len(committed), "0 lost")
	assert.Len(t, unique(ids), len(ids), "0 stored twice")
	assert.Positive(t, relay.Stats().Failures, "the relay saw NATS down")
	t.Logf("relay %+v", relay.Stats())
}

func natsPort(t testing.TB, url string) int {
	t.Helper()
	i := strings.LastIndexByte(url, ':')
	var port int
	for _, c := range url[i+1:] {
		port = port*10 + int(c-'0')
	}
	return port
}

func unique(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// haltingSink sends batches to JetStream, and after the third prints
// "SENT" and blocks: the relay process is then between sending a batch
// and removing it, where the test kills it.
type haltingSink struct {
	next    *outbox.JetStreamSink
	batches int
}

func (h *haltingSink) Send(ctx context.Context, msgs []outbox.Message) (int, error) {
	n, err := h.next.Send(ctx, msgs)
	if err == nil {
		h.batches++
		if h.batches == 3 {
			os.Stdout.WriteString("SENT\n")
			select {} // killed here
		}
	}
	return n, err
}

// relayChild is the child process of TestRelayKilledMidBatch.
func relayChild() int {
	db, err := sql.Open("pgx", os.Getenv("OUTBOX_TEST_DSN"))
	if err != nil {
		return 1
	}
	box, err := outbox.New(db, outbox.Config{Dialect: outbox.Postgres, Table: os.Getenv("OUTBOX_TEST_TABLE"), InboxTable: os.Getenv("OUTBOX_TEST_INBOX")})
	if err != nil {
		return 1
	}
	nc, err := natsgo.Connect(os.Getenv("OUTBOX_TEST_NATS"))
	if err != nil {
		return 1
	}
	js, _ := jetstream.New(nc)
	next, _ := outbox.NewJetStreamSink(js, 0)
	relay, err := outbox.NewRelay(box, &haltingSink{next: next}, outbox.RelayConfig{BatchSize: 100})
	if err != nil {
		return 1
	}
	_ = relay.Run(context.Background())
	return 1
}

// TestRelayKilledMidBatch: a relay process is killed (SIGKILL) after
// JetStream stored a batch and before the batch was removed from the
// outbox (MassTransit #3791). Another relay sends the batch again:
// JetStream drops the copies by Nats-Msg-Id, and an inbox keyed by the
// message ID runs no effect twice even for copies that get through.
func TestRelayKilledMidBatch(t *testing.T) {
	b := openPostgres(t, outbox.Config{})
	s := startNATS(t, t.TempDir(), -1)
	defer s.Shutdown()
	_, js := connectNATS(t, s.ClientURL())
	eventsStream(t, js)
	const n = 1000
	committed := writeN(t, b, 0, n)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=relay", "OUTBOX_TEST_DSN="+pgDSN, "OUTBOX_TEST_TABLE="+b.cfg.Table,
		"OUTBOX_TEST_INBOX="+b.cfg.InboxTable, "OUTBOX_TEST_NATS="+s.ClientURL())
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "SENT" {
				line <- "SENT"
				return
			}
		}
		line <- ""
	}()
	select {
	case l := <-line:
		require.Equal(t, "SENT", l, "the child relay ended before its third batch")
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the child relay sent no third batch")
	}
	require.NoError(t, cmd.Process.Kill()) // SIGKILL: no deferred call, no cleanup
	_ = cmd.Wait()

	lag, err := b.box.Lag(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, n-200, lag.Pending, "the killed batch was stored and not removed")

	sink, err := outbox.NewJetStreamSink(js, 500*time.Millisecond)
	require.NoError(t, err)
	relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{})
	require.NoError(t, err)
	// The killed relay's session holds the outbox's lock until PostgreSQL
	// sees its connection close: until then Forward finds another relay
	// forwarding and returns 0. So forward until the outbox is empty.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := relay.Forward(t.Context())
		require.NoError(t, err)
		lag, err := b.box.Lag(t.Context())
		require.NoError(t, err)
		if lag.Pending == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the new relay never took over: %d pending", lag.Pending)
		time.Sleep(10 * time.Millisecond) // a poll, as Run's: the dead session's end is PostgreSQL's to see
	}
	assert.EqualValues(t, n-200, relay.Stats().Sent, "the restarted relay sent the killed batch again")
	ids := stored(t, js)
	assert.Len(t, unique(ids), len(committed), "0 lost")
	assert.Len(t, ids, len(committed), "0 stored twice: JetStream dropped the resent batch by Nats-Msg-Id")

	// Past JetStream's window, a copy would get through: the inbox runs
	// each effect once all the same.
	in, err := outbox.NewInbox(b.db, b.cfg)
	require.NoError(t, err)
	var mu sync.Mutex
	effects := map[string]int{}
	for range 2 { // every message delivered twice
		for _, id := range ids {
			_, err := in.Once(t.Context(), "billing", id, func(context.Context) error {
				mu.Lock()
				effects[id]++
				mu.Unlock()
				return nil
			})
			require.NoError(t, err)
		}
	}
	twice := 0
	for _, c := range effects {
		if c > 1 {
			twice++
		}
	}
	assert.Len(t, effects, n)
	assert.Zero(t, twice, "0 effects twice")
}

// commandsStream makes the durable commands' work queue as ServeDurable
// would, and the pull consumer "billing" on it, with a short AckWait.
func commandsStream(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "CQRS_COMMANDS", Subjects: []string{"cqrs.durable.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	require.NoError(t, err)
	_, err = js.CreateOrUpdateConsumer(ctx, "CQRS_COMMANDS", jetstream.ConsumerConfig{Durable: "billing", AckWait: time.Second, AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
}

// handleOne takes one command from "billing" and handles it through the
// SQL inbox, keyed by its Cqrs-Id: the handler inserts a row into table in
// the inbox's transaction. afterCommit runs between the commit and the
// acknowledgement. It returns whether the handler ran.
func handleOne(ctx context.Context, js jetstream.JetStream, in *outbox.Inbox, table string, afterCommit func()) (bool, error) {
	c, err := js.Consumer(ctx, "CQRS_COMMANDS", "billing")
	if err != nil {
		return false, err
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		return false, err
	}
	m, ok := <-batch.Messages()
	if !ok {
		return false, batch.Error()
	}
	{
		ran, err := in.Once(ctx, "billing", m.Headers().Get(cqrsnats.HeaderID), func(ctx context.Context) error {
			tx, _ := outbox.Tx(ctx)
			_, err := tx.ExecContext(ctx, "INSERT INTO "+table+" (id) VALUES (1)")
			return err
		})
		if err != nil {
			return ran, err
		}
		afterCommit()
		return ran, m.DoubleAck(ctx)
	}
}

// consumerChild is the child process of TestConsumerKilledAfterCommit: it
// handles one command, then halts before acknowledging it.
func consumerChild() int {
	db, err := sql.Open("pgx", os.Getenv("OUTBOX_TEST_DSN"))
	if err != nil {
		return 1
	}
	in, err := outbox.NewInbox(db, outbox.Config{Dialect: outbox.Postgres, Table: os.Getenv("OUTBOX_TEST_TABLE"), InboxTable: os.Getenv("OUTBOX_TEST_INBOX")})
	if err != nil {
		return 1
	}
	nc, err := natsgo.Connect(os.Getenv("OUTBOX_TEST_NATS"))
	if err != nil {
		return 1
	}
	js, _ := jetstream.New(nc)
	_, err = handleOne(context.Background(), js, in, os.Getenv("OUTBOX_TEST_ORDERS"), func() {
		os.Stdout.WriteString("COMMITTED\n")
		select {} // killed here, before the acknowledgement
	})
	os.Stderr.WriteString(err.Error())
	return 1
}

// TestConsumerKilledAfterCommit: a consumer process is killed after its
// handler's transaction (its row and the inbox record) committed and
// before it acknowledged the command. JetStream delivers the command
// again after AckWait; the inbox finds the record, and the effect happens
// once.
func TestConsumerKilledAfterCommit(t *testing.T) {
	b := openPostgres(t, outbox.Config{})
	table := b.orders(t)
	s := startNATS(t, t.TempDir(), -1)
	defer s.Shutdown()
	_, js := connectNATS(t, s.ClientURL())
	commandsStream(t, js)

	tx, err := b.db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	require.NoError(t, outbox.Enqueue(t.Context(), b.box, tx, ShipOrder{Order: 1}))
	require.NoError(t, tx.Commit())
	sink, err := outbox.NewJetStreamSink(js, 0)
	require.NoError(t, err)
	relay, err := outbox.NewRelay(b.box, sink, outbox.RelayConfig{})
	require.NoError(t, err)
	k, err := relay.Forward(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, k)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=consumer", "OUTBOX_TEST_DSN="+pgDSN, "OUTBOX_TEST_TABLE="+b.cfg.Table,
		"OUTBOX_TEST_INBOX="+b.cfg.InboxTable, "OUTBOX_TEST_NATS="+s.ClientURL(), "OUTBOX_TEST_ORDERS="+table)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	committed := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "COMMITTED" {
				committed <- true
				return
			}
		}
		committed <- false
	}()
	select {
	case ok := <-committed:
		require.True(t, ok, "the child consumer ended before committing")
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the child consumer never committed")
	}
	require.NoError(t, cmd.Process.Kill()) // SIGKILL before the acknowledgement
	_ = cmd.Wait()
	require.Equal(t, 1, b.count(t, table), "the killed consumer's effect committed")

	in, err := outbox.NewInbox(b.db, b.cfg)
	require.NoError(t, err)
	ran, err := handleOne(t.Context(), js, in, table, func() {})
	require.NoError(t, err, "the command is delivered again after AckWait")
	assert.False(t, ran, "the redelivery finds the inbox record")
	assert.Equal(t, 1, b.count(t, table), "the effect happened once")
	info, err := js.Stream(t.Context(), "CQRS_COMMANDS")
	require.NoError(t, err)
	assert.Zero(t, info.CachedInfo().State.Msgs, "and the redelivery was acknowledged")
}

// TestJetStreamSinkReportsTheStoredPrefix: JetStreamSink.Send counts the
// messages JetStream stored before the first it did not, so that the
// relay removes those and sends the rest again; one that no stream takes
// fails the batch from there, even when later ones were stored.
func TestJetStreamSinkReportsTheStoredPrefix(t *testing.T) {
	s := startNATS(t, t.TempDir(), -1)
	defer s.Shutdown()
	_, js := connectNATS(t, s.ClientURL())
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SINK", Subjects: []string{"sink.>"}})
	require.NoError(t, err)
	sink, err := outbox.NewJetStreamSink(js, 5*time.Second)
	require.NoError(t, err)
	msg := func(subject, id string) outbox.Message {
		return outbox.Message{ID: id, Subject: subject, Header: map[string][]string{jetstream.MsgIDHeader: {id}}, Payload: []byte(id)}
	}

	n, err := sink.Send(t.Context(), []outbox.Message{msg("sink.a", "1"), msg("nostream.b", "2"), msg("sink.c", "3")})
	require.Error(t, err)
	assert.Equal(t, 1, n, "only the message before the refused one counts as sent")

	n, err = sink.Send(t.Context(), []outbox.Message{msg("nostream.d", "4")})
	require.Error(t, err)
	assert.Zero(t, n)

	n, err = sink.Send(t.Context(), []outbox.Message{msg("sink.a", "1"), msg("sink.e", "5")})
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	info, err := js.Stream(t.Context(), "SINK")
	require.NoError(t, err)
	// 1 (once: the second send is a duplicate by Nats-Msg-Id), 3 and 5.
	assert.Equal(t, uint64(3), info.CachedInfo().State.Msgs)
}
