package cqrs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The declared-result API is only as good as the mistakes it refuses to
// compile. Each case below is a small program that must not compile, with
// the error the compiler must give; one more must compile, to show that
// the harness builds what is right. All are built by the go command in a
// throw-away module that uses this repository's code, so that a change
// that loosens the types fails here.

const compileMessages = `package msgs

import (
	"context"

	"github.com/typedcqrs/dispatch/cqrs"
)

type Order struct{ ID string }

type GetOrder struct {
	cqrs.Query[Order]
	ID string
}

type PlaceOrder struct {
	cqrs.Command[string]
	Items int
}

type Unmarked struct{ ID string }

type OrderPlaced struct {
	cqrs.Event
	ID string
}

type ListOrders struct {
	cqrs.StreamQuery[Order]
	Customer string
}

func GetOrderHandler(context.Context, GetOrder) (Order, error) { return Order{}, nil }

func PlaceOrderHandler(context.Context, PlaceOrder) (string, error) { return "", nil }
`

var compileCases = []struct {
	name string
	body string // the body of run(ctx, commands, queries)
	want string // a regular expression the compiler's error must match
}{
	{
		name: "query sent to the command bus",
		body: `_, _ = cqrs.Send(ctx, commands, msgs.GetOrder{})`,
		want: `msgs.GetOrder\) does not satisfy cqrs.Message\[R, \*cqrs.CommandBus\]`,
	},
	{
		name: "command asked of the query bus",
		body: `_, _ = cqrs.Ask(ctx, queries, msgs.PlaceOrder{})`,
		want: `msgs.PlaceOrder\) does not satisfy cqrs.Message\[R, \*cqrs.QueryBus\]`,
	},
	{
		name: "result assigned to the wrong type",
		body: `var s string; s, _ = cqrs.Ask(ctx, queries, msgs.GetOrder{}); _ = s`,
		want: `value of struct type msgs.Order\) as string value in assignment`,
	},
	{
		name: "command result assigned to the wrong type",
		body: `var n int; n, _ = cqrs.Send(ctx, commands, msgs.PlaceOrder{}); _ = n`,
		want: `value of type string\) as int value in assignment`,
	},
	{
		name: "unmarked message sent",
		body: `_, _ = cqrs.Send(ctx, commands, msgs.Unmarked{})`,
		want: `msgs.Unmarked\) does not satisfy cqrs.Message\[R, \*cqrs.CommandBus\] \(missing method declares\)`,
	},
	{
		name: "unmarked message asked",
		body: `_, _ = cqrs.Ask(ctx, queries, "not a message")`,
		want: `in call to cqrs.Ask, cannot infer R`,
	},
	{
		name: "handler with the wrong result",
		body: `_ = cqrs.Handle(queries, func(context.Context, msgs.GetOrder) (string, error) { return "", nil })`,
		want: `msgs.GetOrder\) does not satisfy cqrs.Message\[R, B\] \(wrong type for method declares\)`,
	},
	{
		name: "query handler on the command bus",
		body: `_ = cqrs.Handle(commands, msgs.GetOrderHandler)`,
		want: `msgs.GetOrder\) does not satisfy cqrs.Message\[R, B\]`,
	},
	{
		name: "handler of an unmarked message",
		body: `_ = cqrs.Handle(queries, func(context.Context, msgs.Unmarked) (int, error) { return 0, nil })`,
		want: `msgs.Unmarked\) does not satisfy cqrs.Message\[R, B\] \(missing method declares\)`,
	},
	{
		name: "command published as an event",
		body: `_ = cqrs.Publish(ctx, events, msgs.PlaceOrder{})`,
		want: `msgs.PlaceOrder\) does not satisfy cqrs.Message\[cqrs.NoResult, \*cqrs.EventBus\]`,
	},
	{
		name: "unmarked message published",
		body: `_ = cqrs.Publish(ctx, events, msgs.Unmarked{})`,
		want: `msgs.Unmarked\) does not satisfy cqrs.Message\[cqrs.NoResult, \*cqrs.EventBus\] \(missing method declares\)`,
	},
	{
		name: "subscriber of a query",
		body: `_, _ = cqrs.Subscribe(events, "s", func(context.Context, msgs.GetOrder) error { return nil })`,
		want: `msgs.GetOrder\) does not satisfy cqrs.Message\[cqrs.NoResult, \*cqrs.EventBus\]`,
	},
	{
		name: "event sent as a command",
		body: `_, _ = cqrs.Send(ctx, commands, msgs.OrderPlaced{})`,
		want: `msgs.OrderPlaced\) does not satisfy cqrs.Message\[R, \*cqrs.CommandBus\]`,
	},
	{
		name: "event handler registered with Handle",
		body: `_ = cqrs.Handle(events, func(context.Context, msgs.OrderPlaced) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil })`,
		want: `B \(type \*cqrs.EventBus\) does not satisfy cqrs.Bus`,
	},
	{
		name: "streaming query asked for one result",
		body: `_, _ = cqrs.Ask(ctx, queries, msgs.ListOrders{})`,
		want: `msgs.ListOrders\) does not satisfy cqrs.Message\[R, \*cqrs.QueryBus\] \(missing method declares\)`,
	},
	{
		name: "query with one result streamed",
		body: `for range cqrs.Stream(ctx, queries, msgs.GetOrder{}) {}`,
		want: `msgs.GetOrder\) does not satisfy cqrs.StreamMessage\[R\] \(missing method streams\)`,
	},
	{
		name: "stream items ranged into the wrong type",
		body: `for s, err := range cqrs.Stream(ctx, queries, msgs.ListOrders{}) { var x string = s; _, _ = x, err }`,
		want: `cannot use s \(variable of struct type msgs.Order\) as string value`,
	},
	{
		name: "stream handler with the wrong items",
		body: `_ = cqrs.HandleStream(queries, func(context.Context, msgs.ListOrders, func(string) bool) error { return nil })`,
		want: `msgs.ListOrders\) does not satisfy cqrs.StreamMessage\[R\] \(wrong type for method streams\)`,
	},
	{
		name: "handler on a bus of unknown kind",
		body: `var b cqrs.Bus = queries; _ = cqrs.Handle(b, msgs.GetOrderHandler)`,
		want: `msgs.GetOrder\) does not satisfy cqrs.Message\[R, B\]`,
	},
}

const compileGood = `_ = cqrs.Handle(queries, msgs.GetOrderHandler)
	_ = cqrs.Handle(commands, msgs.PlaceOrderHandler)
	var o msgs.Order
	o, _ = cqrs.Ask(ctx, queries, msgs.GetOrder{ID: "o-1"})
	var id string
	id, _ = cqrs.Send(ctx, commands, msgs.PlaceOrder{Items: 1})
	_, _ = o, id
	_, _ = cqrs.Subscribe(events, "mail", func(context.Context, msgs.OrderPlaced) error { return nil })
	_ = cqrs.Publish(ctx, events, msgs.OrderPlaced{ID: "o-1"})
	_ = cqrs.HandleStream(queries, func(context.Context, msgs.ListOrders, func(msgs.Order) bool) error { return nil })
	for order, err := range cqrs.Stream(ctx, queries, msgs.ListOrders{}) {
		_, _ = order.ID, err
	}`

func compileProgram(body string) string {
	return `package main

import (
	"context"

	"github.com/typedcqrs/dispatch/cqrs"
	"compilecheck/msgs"
)

func run(ctx context.Context, commands *cqrs.CommandBus, queries *cqrs.QueryBus, events *cqrs.EventBus) {
	` + body + `
}

func main() {
	run(context.Background(), cqrs.NewCommandBus(), cqrs.NewQueryBus(), cqrs.NewEventBus())
}
`
}

func TestDeclaredMismatchesDoNotCompile(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go command builds the cases")
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	require.NoError(t, err)

	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	}
	write("go.mod", "module compilecheck\n\ngo 1.26\n\n"+
		"require github.com/typedcqrs/dispatch v0.0.0\n\n"+
		"replace github.com/typedcqrs/dispatch => "+root+"\n")
	write("go.sum", string(sum))
	write("msgs/msgs.go", compileMessages)
	write("good/main.go", compileProgram(compileGood))
	for i, c := range compileCases {
		write(filepath.Join("bad", string(rune('a'+i)), "main.go"), compileProgram(c.body))
	}

	// One go vet run type-checks every package and reports the errors of
	// each; the go command keeps going past a package that fails.
	cmd := exec.Command(goTool, "vet", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "some cases must fail to compile:\n%s", out)
	output := string(out)

	assert.NotContains(t, output, "good/", "the program that is right must compile:\n%s", output)
	for i, c := range compileCases {
		t.Run(c.name, func(t *testing.T) {
			pkg := "bad/" + string(rune('a'+i)) + "/main.go"
			var lines []string
			for _, l := range strings.Split(output, "\n") {
				if strings.Contains(l, pkg) {
					lines = append(lines, l)
				}
			}
			require.NotEmpty(t, lines, "%s compiled; it must not:\n%s", c.body, output)
			assert.Regexp(t, regexp.MustCompile(c.want), strings.Join(lines, "\n"), "the body was: %s", c.body)
		})
	}
}
