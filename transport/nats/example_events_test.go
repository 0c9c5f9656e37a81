package nats_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// OrderPlaced is the event of the examples.
type OrderPlaced struct {
	cqrs.Event
	Order int `json:"order"`
}

// eventsNATS starts an embedded NATS server for an example, with
// JetStream when durable, and returns its URL and how to stop it.
func eventsNATS(durable bool) (string, func()) {
	ns, stop := exampleNATS(durable)
	return ns.ClientURL(), stop
}

// dialNATS connects to url, or panics.
func dialNATS(url string) *natsgo.Conn {
	nc, err := natsgo.Connect(url)
	if err != nil {
		panic(err)
	}
	return nc
}

// printSorted collects what subscribers print from their goroutines, to print
// it sorted once n have come.
func printSorted(n int, in <-chan string) {
	var out []string
	for range n {
		select {
		case s := <-in:
			out = append(out, s)
		case <-time.After(10 * time.Second):
			out = append(out, "timed out")
		}
	}
	sort.Strings(out)
	fmt.Println(strings.Join(out, "\n"))
}

func ExampleSubscribe() {
	url, stop := eventsNATS(false)
	defer stop()
	got := make(chan string, 8)

	// Two instances of the mailer service and one of the stock service,
	// each a process of its own: "email" and "stock" each get every
	// event, and the two instances of "email" share theirs.
	for _, service := range []string{"email", "email", "stock"} {
		nc := dialNATS(url)
		defer nc.Close()
		r, err := cqrsnats.NewReceiver(nc, cqrsnats.EventConfig{})
		if err != nil {
			panic(err)
		}
		defer func() { _ = r.Stop(context.Background()) }()
		_, err = cqrsnats.Subscribe(r, service, func(_ context.Context, e OrderPlaced) error {
			got <- fmt.Sprintf("%s: order %d", service, e.Order)
			return nil
		})
		if err != nil {
			panic(err)
		}
	}

	nc := dialNATS(url)
	defer nc.Close()
	p, _ := cqrsnats.NewPublisher(nc, cqrsnats.EventConfig{})
	for order := 1; order <= 2; order++ {
		if err := cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: order}); err != nil {
			panic(err)
		}
	}
	printSorted(4, got)
	// Output:
	// email: order 1
	// email: order 2
	// stock: order 1
	// stock: order 2
}

func ExamplePublish() {
	url, stop := eventsNATS(true)
	defer stop()
	ev := cqrsnats.EventConfig{Durable: true}

	// The mailer subscribes once: that makes its durable consumer.
	mailer := dialNATS(url)
	defer mailer.Close()
	r, _ := cqrsnats.NewReceiver(mailer, ev)
	got := make(chan string, 4)
	email := func(_ context.Context, e OrderPlaced) error {
		got <- fmt.Sprint("email: order ", e.Order)
		return nil
	}
	if _, err := cqrsnats.Subscribe(r, "email", email); err != nil {
		panic(err)
	}
	_ = r.Stop(context.Background()) // the mailer goes down

	// With JetStream, Publish returns once the stream has the event.
	nc := dialNATS(url)
	defer nc.Close()
	p, _ := cqrsnats.NewPublisher(nc, ev)
	err := cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: 7})
	fmt.Println("published:", err)

	// The mailer comes back and gets what it missed.
	r, _ = cqrsnats.NewReceiver(mailer, ev)
	defer func() { _ = r.Stop(context.Background()) }()
	if _, err := cqrsnats.Subscribe(r, "email", email); err != nil {
		panic(err)
	}
	printSorted(1, got)
	// Output:
	// published: <nil>
	// email: order 7
}

func ExampleNewPublisher() {
	url, stop := eventsNATS(false)
	defer stop()
	nc := dialNATS(url)
	defer nc.Close()

	// Core NATS: at most once, to the subscribers connected now. The
	// options are those of the request path: the prefix, the codec.
	p, err := cqrsnats.NewPublisher(nc, cqrsnats.EventConfig{}, cqrsnats.WithPrefix("shop"))
	fmt.Println(err)
	fmt.Println(cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: 1}))
	// Output:
	// <nil>
	// <nil>
}

func ExampleNewReceiver() {
	url, stop := eventsNATS(true)
	defer stop()
	nc := dialNATS(url)
	defer nc.Close()

	// JetStream: at least once, a durable consumer per subscriber name
	// and event type, failures delivered again after a back-off.
	r, err := cqrsnats.NewReceiver(nc, cqrsnats.EventConfig{
		Durable:    true,
		MaxDeliver: 3,
		BackOff:    []time.Duration{10 * time.Millisecond},
		Bus:        []cqrs.Option{cqrs.WithMetrics()},
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = r.Stop(context.Background()) }()
	sub, err := cqrsnats.Subscribe(r, "email", func(context.Context, OrderPlaced) error { return nil })
	if err != nil {
		panic(err)
	}
	fmt.Println(sub.Spec())
	fmt.Println(sub.Stats().Subject)
	// Output:
	// event nats_test.OrderPlaced to email
	// cqrs.stored.event.github.com/typedcqrs/dispatch/transport/nats_test.OrderPlaced
}

func ExampleForwardEvents() {
	url, stop := eventsNATS(false)
	defer stop()
	got := make(chan string, 2)

	// Another process's subscriber.
	remote := dialNATS(url)
	defer remote.Close()
	r, _ := cqrsnats.NewReceiver(remote, cqrsnats.EventConfig{})
	defer func() { _ = r.Stop(context.Background()) }()
	_, _ = cqrsnats.Subscribe(r, "analytics", func(_ context.Context, e OrderPlaced) error {
		got <- fmt.Sprint("analytics: order ", e.Order)
		return nil
	})

	// This process publishes on its local bus, as ever.
	events := cqrs.NewEventBus()
	_, _ = cqrs.Subscribe(events, "email", func(_ context.Context, e OrderPlaced) error {
		got <- fmt.Sprint("email: order ", e.Order)
		return nil
	})
	nc := dialNATS(url)
	defer nc.Close()
	p, _ := cqrsnats.NewPublisher(nc, cqrsnats.EventConfig{})
	if _, err := cqrsnats.ForwardEvents[OrderPlaced](events, p); err != nil {
		panic(err)
	}
	if err := cqrs.Publish(context.Background(), events, OrderPlaced{Order: 3}); err != nil {
		panic(err)
	}
	printSorted(2, got)
	// Output:
	// analytics: order 3
	// email: order 3
}

func ExampleReplayUnhandled() {
	url, stop := eventsNATS(true)
	defer stop()
	ev := cqrsnats.EventConfig{Durable: true, MaxDeliver: 2, BackOff: []time.Duration{time.Millisecond}}
	nc := dialNATS(url)
	defer nc.Close()

	broken := make(chan struct{})
	got := make(chan string, 4)
	r, _ := cqrsnats.NewReceiver(nc, ev)
	defer func() { _ = r.Stop(context.Background()) }()
	sub, _ := cqrsnats.Subscribe(r, "email", func(_ context.Context, e OrderPlaced) error {
		select {
		case <-broken:
			got <- fmt.Sprint("email: order ", e.Order)
			return nil
		default:
			return errors.New("mail server down")
		}
	})
	p, _ := cqrsnats.NewPublisher(nc, ev)
	_ = cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: 9})
	for sub.Stats().DeadLettered == 0 {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("failed deliveries:", sub.Stats().Failed)

	close(broken) // the mail server is back: replay to "email" alone
	n, err := cqrsnats.ReplayUnhandled(context.Background(), nc, ev, "email")
	fmt.Println("replayed:", n, err)
	printSorted(1, got)
	// Output:
	// failed deliveries: 2
	// replayed: 1 <nil>
	// email: order 9
}

func ExampleEventSubject() {
	spec := cqrs.Spec{Kind: cqrs.KindEvent, Name: "OrderPlaced", MessageType: reflect.TypeFor[OrderPlaced]()}
	fmt.Println(cqrsnats.EventSubject("shop", spec, false))
	fmt.Println(cqrsnats.EventSubject("shop", spec, true))
	// Output:
	// shop.event.github.com/typedcqrs/dispatch/transport/nats_test.OrderPlaced
	// shop.stored.event.github.com/typedcqrs/dispatch/transport/nats_test.OrderPlaced
}

func ExampleReceiver_Stats() {
	url, stop := eventsNATS(false)
	defer stop()
	nc := dialNATS(url)
	defer nc.Close()
	r, _ := cqrsnats.NewReceiver(nc, cqrsnats.EventConfig{})
	defer func() { _ = r.Stop(context.Background()) }()
	sub, _ := cqrsnats.Subscribe(r, "email", func(_ context.Context, e OrderPlaced) error {
		if e.Order == 2 {
			return errors.New("mail server down") // logged and counted: core NATS does not retry
		}
		return nil
	})
	p, _ := cqrsnats.NewPublisher(nc, cqrsnats.EventConfig{})
	_ = cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: 1})
	_ = cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: 2})
	for st := sub.Stats(); st.Handled+st.Failed < 2; st = sub.Stats() {
		time.Sleep(time.Millisecond)
	}
	for _, st := range r.Stats() {
		fmt.Printf("%s %s: received %d, handled %d, failed %d\n", st.Event, st.Subscriber, st.Received, st.Handled, st.Failed)
	}
	// Output:
	// nats_test.OrderPlaced email: received 2, handled 1, failed 1
}

func ExampleReceiver_Metrics() {
	url, stop := eventsNATS(false)
	defer stop()
	nc := dialNATS(url)
	defer nc.Close()
	// Each subscriber runs on a bus made with these options.
	r, _ := cqrsnats.NewReceiver(nc, cqrsnats.EventConfig{Bus: []cqrs.Option{cqrs.WithMetrics()}})
	defer func() { _ = r.Stop(context.Background()) }()
	sub, _ := cqrsnats.Subscribe(r, "stock", func(_ context.Context, e OrderPlaced) error {
		if e.Order == 2 {
			return errors.New("out of stock")
		}
		return nil
	})
	p, _ := cqrsnats.NewPublisher(nc, cqrsnats.EventConfig{})
	_ = cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: 1})
	_ = cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: 2})
	for st := sub.Stats(); st.Handled+st.Failed < 2; st = sub.Stats() {
		time.Sleep(time.Millisecond)
	}
	for _, m := range r.Metrics() {
		fmt.Printf("%s %s: %d calls, %d errors\n", m.Name, m.Subscriber, m.Calls, m.Errors)
	}
	// Output:
	// nats_test.OrderPlaced stock: 2 calls, 1 errors
}

func ExampleSubscribe_identity() {
	url, stop := eventsNATS(true)
	defer stop()
	ev := cqrsnats.EventConfig{Durable: true, BackOff: []time.Duration{time.Millisecond}}
	nc := dialNATS(url)
	defer nc.Close()

	// Each delivery's context carries the event's identity: the same on
	// every delivery, so that an idempotent subscriber keys by its ID.
	r, _ := cqrsnats.NewReceiver(nc, ev)
	defer func() { _ = r.Stop(context.Background()) }()
	got := make(chan string, 4)
	deliveries := 0
	_, err := cqrsnats.Subscribe(r, "email", func(ctx context.Context, e OrderPlaced) error {
		id, _ := cqrs.IdentityOf(ctx)
		if deliveries++; deliveries == 1 {
			got <- fmt.Sprintf("delivery 1 of %s fails", id.ID)
			return errors.New("mail server down")
		}
		got <- fmt.Sprintf("delivery 2 of %s, conversation %s", id.ID, id.CorrelationID)
		return nil
	})
	if err != nil {
		panic(err)
	}

	// The publisher chooses the identity, here for an HTTP request's
	// conversation; by default each event gets a new ID.
	p, _ := cqrsnats.NewPublisher(nc, ev)
	ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "order-7-placed", CorrelationID: "request-42"})
	if err := cqrsnats.Publish(ctx, p, OrderPlaced{Order: 7}); err != nil {
		panic(err)
	}
	printSorted(2, got)
	// Output:
	// delivery 1 of order-7-placed fails
	// delivery 2 of order-7-placed, conversation request-42
}

func ExamplePublisher_Stats() {
	url, stop := eventsNATS(false)
	defer stop()
	nc := dialNATS(url)
	defer nc.Close()
	p, _ := cqrsnats.NewPublisher(nc, cqrsnats.EventConfig{}, cqrsnats.WithMaxPayload(16))
	_ = cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: 1})
	err := cqrsnats.Publish(context.Background(), p, OrderPlaced{Order: 1 << 62}) // over 16 bytes
	fmt.Println(errors.Is(err, cqrsnats.ErrPayloadTooLarge))
	// With core NATS, Buffered counts the events published while the
	// connection was reconnecting: at risk of being lost, with no error.
	fmt.Printf("%+v\n", p.Stats())
	// Output:
	// true
	// {Published:1 Failed:1 Buffered:0}
}
