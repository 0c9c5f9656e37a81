// Distributed shows a service whose handlers run in other processes, over
// NATS, with the load shared between them: its command, query, streaming
// query and event, served with one call (cqrsnats.ServeService) and
// called with another (cqrsnats.ForwardService), from declared messages.
//
// One command runs it all: an embedded NATS server, two handler processes
// (here, two connections with their own buses) and a client:
//
//	cd examples/distributed && go run .
//
// Or run each role as a process of its own:
//
//	go run . -role nats                      # a NATS server on localhost:4222
//	go run . -role handler -name h1          # as many as you like
//	go run . -role handler -name h2
//	go run . -role client -n 20
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// The image service's messages, and its routes and errors: what the
// handling and the calling processes share, as a package of their own
// would. Each message declares its kind and result by the marker it
// embeds, so that neither side writes a type argument.
type (
	// Resize is a command: it returns the Image made.
	Resize struct {
		cqrs.Command[Image]
		Image string
		Width int
	}
	Image struct {
		Image   string
		Width   int
		Handler string
	}
	// Widths is a query: the widths the service makes.
	Widths struct{ cqrs.Query[[]int] }
	// Tiles is a streaming query: an image's tiles, one at a time.
	Tiles struct {
		cqrs.StreamQuery[Tile]
		Image string
		N     int
	}
	Tile struct {
		Image   string
		Index   int
		Handler string
	}
	// Resized is the event a Resize publishes.
	Resized struct {
		cqrs.Event
		Image   string
		Handler string
	}
)

// ErrTooWide is the service's own error; codes names it on the wire, so
// that errors.Is finds it in the calling process too.
var (
	ErrTooWide = errors.New("too wide")
	codes      = []cqrsnats.ErrorCode{{Code: "images.too_wide", Err: ErrTooWide}}
	routes     = []cqrsnats.Route{
		cqrsnats.RouteFor[Resize](),
		cqrsnats.RouteFor[Widths](),
		cqrsnats.RouteFor[Tiles](),
		cqrsnats.EventRouteFor[Resized](),
	}
)

func main() {
	role := flag.String("role", "all", "all, nats, handler or client")
	url := flag.String("url", "nats://127.0.0.1:4222", "NATS server URL (roles handler and client)")
	name := flag.String("name", "h1", "handler name (role handler)")
	n := flag.Int("n", 20, "commands to send (roles client and all)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	switch *role {
	case "all":
		err = runAll(ctx, os.Stdout, *n)
	case "nats":
		var ns *server.Server
		if ns, err = startNATS(4222); err == nil {
			fmt.Println("NATS listening on", ns.ClientURL())
			<-ctx.Done()
			ns.Shutdown()
		}
	case "handler":
		err = runHandler(ctx, *url, *name)
	case "client":
		err = runClient(ctx, os.Stdout, *url, *n)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func startNATS(port int) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return nil, fmt.Errorf("NATS server did not start")
	}
	return ns, nil
}

// imageService returns the buses of a process that handles the image
// service as name.
func imageService(name string) (cqrsnats.Service, error) {
	commands, queries, events := cqrs.NewCommandBus(), cqrs.NewQueryBus(), cqrs.NewEventBus()
	resize := func(ctx context.Context, c Resize) (Image, error) {
		if c.Width > 4096 {
			return Image{}, fmt.Errorf("%s at %d: %w", c.Image, c.Width, ErrTooWide)
		}
		return Image{Image: c.Image, Width: c.Width, Handler: name}, cqrs.Publish(ctx, events, Resized{Image: c.Image, Handler: name})
	}
	widths := func(context.Context, Widths) ([]int, error) { return []int{320, 640, 1280}, nil }
	tiles := func(_ context.Context, q Tiles, yield func(Tile) bool) error {
		for i := range q.N {
			if !yield(Tile{Image: q.Image, Index: i, Handler: name}) {
				return nil
			}
		}
		return nil
	}
	err := errors.Join(cqrs.Handle(commands, resize), cqrs.Handle(queries, widths), cqrs.HandleStream(queries, tiles))
	return cqrsnats.Service{Commands: commands, Queries: queries, Events: events, Routes: routes, Errors: codes}, err
}

// serveHandler connects to url and serves the image service as name
// until stopped: its command, query, stream and event, in one call.
func serveHandler(url, name string) (stop func(), err error) {
	svc, err := imageService(name)
	if err != nil {
		return nil, err
	}
	nc, err := natsgo.Connect(url)
	if err != nil {
		return nil, err
	}
	srv, err := cqrsnats.ServeService(nc, svc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return func() {
		// Answer what is queued, but give up after 10 seconds.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		nc.Close()
	}, nil
}

func runHandler(ctx context.Context, url, name string) error {
	stop, err := serveHandler(url, name)
	if err != nil {
		return err
	}
	fmt.Printf("handler %s serving the image service\n", name)
	<-ctx.Done()
	stop()
	return nil
}

// send calls the image service over nc, on buses whose messages are
// forwarded: n resizes, shared between the handlers, and one too wide,
// the widths, an image's tiles, and the events of the resizes, which a
// local subscriber counts. It returns how many resizes each handler
// served.
func send(ctx context.Context, w io.Writer, nc *natsgo.Conn, n int) (map[string]int, error) {
	// The calling code is the same as for local handlers: only the
	// forwarding differs.
	commands, queries, events := cqrs.NewCommandBus(), cqrs.NewQueryBus(), cqrs.NewEventBus()
	seen := make(chan Resized, n)
	if _, err := cqrs.Subscribe(events, "gallery", func(_ context.Context, e Resized) error { seen <- e; return nil }); err != nil {
		return nil, err
	}
	remote, err := cqrsnats.ForwardService(nc, cqrsnats.Service{
		Commands: commands, Queries: queries, Events: events,
		Routes: routes, Errors: codes, Subscriber: "gallery",
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = remote.Stop(context.Background()) }()

	served := map[string]int{}
	for i := range n {
		img, err := cqrs.Send(ctx, commands, Resize{Image: fmt.Sprintf("img-%02d.png", i), Width: 640})
		if err != nil {
			return nil, err
		}
		served[img.Handler]++
	}
	names := make([]string, 0, len(served))
	for h := range served {
		names = append(names, h)
	}
	sort.Strings(names)
	for _, h := range names {
		fmt.Fprintf(w, "%s handled %d of %d\n", h, served[h], n)
	}
	if _, err := cqrs.Send(ctx, commands, Resize{Image: "huge.png", Width: 10000}); errors.Is(err, ErrTooWide) {
		fmt.Fprintf(w, "refused: %v\n", err)
	}
	sizes, err := cqrs.Ask(ctx, queries, Widths{})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "widths: %v\n", sizes)
	tiles := 0
	for _, err := range cqrs.Stream(ctx, queries, Tiles{Image: "img-00.png", N: 4}) {
		if err != nil {
			return nil, err
		}
		tiles++
	}
	fmt.Fprintf(w, "tiles of img-00.png: %d\n", tiles)
	for i := range n {
		select {
		case <-seen:
		case <-time.After(5 * time.Second):
			return nil, fmt.Errorf("the gallery saw %d of %d resizes", i, n)
		}
	}
	fmt.Fprintf(w, "the gallery saw %d of %d resizes\n", n, n)
	return served, nil
}

func runClient(ctx context.Context, w io.Writer, url string, n int) error {
	nc, err := natsgo.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	_, err = send(ctx, w, nc, n)
	return err
}

// runAll runs every role in this process: a NATS server on a free port,
// two handlers and a client.
func runAll(ctx context.Context, w io.Writer, n int) error {
	ns, err := startNATS(-1)
	if err != nil {
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	for _, name := range []string{"h1", "h2"} {
		stop, err := serveHandler(ns.ClientURL(), name)
		if err != nil {
			return err
		}
		defer stop()
	}
	nc, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	_, err = send(ctx, w, nc, n)
	return err
}
