package nats_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// TestForwardDeclaredInfersTheTypes: the declared messages forwarded with
// only their type written reach servers set up with the explicit calls,
// and middleware given to ForwardDeclared runs around the trip.
func TestForwardDeclaredInfersTheTypes(t *testing.T) {
	ns := startServer(t, -1)
	w := newWarehouse(t, "w1")
	serving := connect(t, ns.ClientURL())
	for _, bus := range []cqrs.Bus{w.commands, w.queries} {
		srv, err := cqrsnats.Serve(serving, bus)
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })
	}
	streams, err := cqrsnats.ServeStreams(serving, w.queries, []cqrsnats.StreamType{cqrsnats.StreamTypeFor[Picks, Pick]()})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, streams.Stop(context.Background())) })

	client := cqrsnats.NewClient(connect(t, ns.ClientURL()))
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	var around []string
	logged := func(next cqrs.Handler[Reserve, Reservation]) cqrs.Handler[Reserve, Reservation] {
		return cqrs.HandlerFunc[Reserve, Reservation](func(ctx context.Context, c Reserve) (Reservation, error) {
			res, err := next.Handle(ctx, c)
			around = append(around, fmt.Sprintf("%d by %s", c.ID, res.By))
			return res, err
		})
	}
	require.NoError(t, cqrsnats.ForwardDeclared[Reserve](commands, client, logged))
	require.NoError(t, cqrsnats.ForwardDeclared[Lookup](queries, client))
	require.NoError(t, cqrsnats.ForwardDeclaredStream[Picks](queries, client))
	require.NoError(t, cqrs.Require(commands, Reserve{}))
	require.NoError(t, cqrs.Require(queries, Lookup{}, Picks{}))

	ctx := context.Background()
	res, err := cqrs.Send(ctx, commands, Reserve{ID: 4, SKU: "desk"})
	require.NoError(t, err)
	assert.Equal(t, Reservation{ID: 4, SKU: "desk", By: "w1"}, res)
	assert.Equal(t, []string{"4 by w1"}, around)
	got, err := cqrs.Ask(ctx, queries, Lookup{ID: 4})
	require.NoError(t, err)
	assert.Equal(t, Reservation{ID: 4, By: "w1"}, got)
	n := 0
	for p, err := range cqrs.Stream(ctx, queries, Picks{ID: 4, N: 5}) {
		require.NoError(t, err)
		assert.Equal(t, Pick{ID: 4, Seq: n, By: "w1"}, p)
		n++
	}
	assert.Equal(t, 5, n)

	// A second forwarder of a type is refused, as Forward refuses it.
	require.ErrorIs(t, cqrsnats.ForwardDeclared[Reserve](commands, client), cqrs.ErrHandlerExists)
}

// TestDeclaredRoutesRefuseTheWrongKindAtCompileTime: the calls that
// infer the types from a declared message refuse, as the compiler's
// error, a message of another kind than the call forwards or routes;
// the right ones compile.
func TestDeclaredRoutesRefuseTheWrongKindAtCompileTime(t *testing.T) {
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go command builds the cases")
	module, err := filepath.Abs(".")
	require.NoError(t, err)
	sum, err := os.ReadFile("go.sum")
	require.NoError(t, err)

	const types = `package msgs

import "github.com/typedcqrs/dispatch/cqrs"

type (
	Place    struct{ cqrs.Command[string] }
	Get      struct{ cqrs.Query[int] }
	List     struct{ cqrs.StreamQuery[int] }
	Placed   struct{ cqrs.Event }
	Unmarked struct{ ID string }
)
`
	const preamble = `package main

import (
	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"

	"check/msgs"
)

var (
	commands = cqrs.NewCommandBus()
	queries  = cqrs.NewQueryBus()
	client   = cqrsnats.NewClient(nil)
	_        = msgs.Place{}
)

func main() {
`
	cases := []struct{ name, body, want string }{
		{"a query on a command bus", `_ = cqrsnats.ForwardDeclared[msgs.Get](commands, client)`, "have servedBy(*cqrs.QueryBus) int\n\t\twant servedBy(B) R"},
		{"a command on a query bus", `_ = cqrsnats.ForwardDeclared[msgs.Place](queries, client)`, "have servedBy(*cqrs.CommandBus) string\n\t\twant servedBy(B) R"},
		{"a streaming query to ForwardDeclared", `_ = cqrsnats.ForwardDeclared[msgs.List](queries, client)`, "have servedBy(cqrs.streamOnQueryBus) int\n\t\twant servedBy(B) R"},
		{"a query to ForwardDeclaredStream", `_ = cqrsnats.ForwardDeclaredStream[msgs.Get](queries, client)`, "have servedBy(*cqrs.QueryBus) int\n\t\twant servedBy(cqrs.streamOnQueryBus) R"},
		{"an undeclared message routed", `_ = cqrsnats.RouteFor[msgs.Unmarked]()`, "missing method mustEmbedCommandQueryOrEvent"},
		{"a command as an event route", `_ = cqrsnats.EventRouteFor[msgs.Place]()`, "have servedBy(*cqrs.CommandBus) string\n\t\twant servedBy(*cqrs.EventBus) cqrs.NoResult"},
	}
	good := `	_ = cqrsnats.ForwardDeclared[msgs.Place](commands, client)
	_ = cqrsnats.ForwardDeclared[msgs.Get](queries, client)
	_ = cqrsnats.ForwardDeclaredStream[msgs.List](queries, client)
	_ = []cqrsnats.Route{cqrsnats.RouteFor[msgs.Place](), cqrsnats.RouteFor[msgs.Get](), cqrsnats.RouteFor[msgs.List](), cqrsnats.EventRouteFor[msgs.Placed]()}
`

	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	}
	write("go.mod", "module check\n\ngo 1.26\n\nrequire (\n\tgithub.com/typedcqrs/dispatch v0.1.0\n\tgithub.com/typedcqrs/dispatch/transport/nats v0.1.0\n)\n\n"+
		"replace (\n\tgithub.com/typedcqrs/dispatch => "+filepath.Join(module, "..", "..")+"\n\tgithub.com/typedcqrs/dispatch/transport/nats => "+module+"\n)\n")
	write("go.sum", string(sum))
	write("msgs/msgs.go", types)
	write("good/main.go", preamble+good+"}\n")
	for i, c := range cases {
		write(fmt.Sprintf("bad%d/main.go", i), preamble+"\t"+c.body+"\n}\n")
	}
	// One build type-checks every package and reports all the errors of
	// each (-e), going on past a package that fails.
	cmd := exec.Command(goTool, "build", "-gcflags=-e", "-o", os.DevNull, "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "the bad cases must not compile:\n%s", out)
	text := string(out)
	assert.NotContains(t, text, "good/main.go", "the right calls must compile")
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// An error's line names the file; the lines after it that
			// start with a tab go on with it.
			var lines []string
			in := false
			for _, l := range strings.Split(text, "\n") {
				switch {
				case strings.Contains(l, fmt.Sprintf("bad%d/main.go", i)):
					in = true
				case !strings.HasPrefix(l, "\t"):
					in = false
				}
				if in {
					lines = append(lines, l)
				}
			}
			require.NotEmpty(t, lines, "%s compiled; it must not:\n%s", c.body, text)
			assert.Contains(t, strings.Join(lines, "\n"), c.want)
		})
	}
}
