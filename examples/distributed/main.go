// Distributed shows the same typed commands handled in other processes,
// over NATS, with the load shared between them.
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

// Resize is the command; Resized its result.
type (
	Resize struct {
		Image string
		Width int
	}
	Resized struct {
		Image   string
		Width   int
		Handler string
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

// serveHandler connects to url and serves Resize as name until stopped.
func serveHandler(url, name string) (stop func(), err error) {
	nc, err := natsgo.Connect(url)
	if err != nil {
		return nil, err
	}
	bus := cqrs.NewCommandBus()
	resize := func(_ context.Context, c Resize) (Resized, error) {
		return Resized{Image: c.Image, Width: c.Width, Handler: name}, nil
	}
	if err := cqrs.Register(bus, cqrs.HandlerFunc[Resize, Resized](resize)); err != nil {
		nc.Close()
		return nil, err
	}
	srv, err := cqrsnats.Serve(nc, bus)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return func() { _ = srv.Stop(context.Background()); nc.Close() }, nil
}

func runHandler(ctx context.Context, url, name string) error {
	stop, err := serveHandler(url, name)
	if err != nil {
		return err
	}
	fmt.Printf("handler %s serving main.Resize\n", name)
	<-ctx.Done()
	stop()
	return nil
}

// send dispatches n commands on a bus whose Resize is forwarded over nc,
// and returns how many each handler served.
func send(ctx context.Context, w io.Writer, nc *natsgo.Conn, n int) (map[string]int, error) {
	// The calling code is the same as for a local handler: only the
	// registration differs.
	commands := cqrs.NewCommandBus()
	if err := cqrsnats.Forward[Resize, Resized](commands, cqrsnats.NewClient(nc)); err != nil {
		return nil, err
	}
	served := map[string]int{}
	for i := range n {
		r, err := cqrs.Dispatch[Resized](ctx, commands, Resize{Image: fmt.Sprintf("img-%02d.png", i), Width: 640})
		if err != nil {
			return nil, err
		}
		served[r.Handler]++
	}
	names := make([]string, 0, len(served))
	for h := range served {
		names = append(names, h)
	}
	sort.Strings(names)
	for _, h := range names {
		fmt.Fprintf(w, "%s handled %d of %d\n", h, served[h], n)
	}
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
