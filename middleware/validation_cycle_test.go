package middleware_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Node is a recursive message: a value of it may hold a cycle.
type Node struct {
	Name  string `validate:"required"`
	Child *Node
}

// Bag reaches itself through an interface.
type Bag struct {
	Label string `validate:"required"`
	Items []any
}

func nodeBus(t *testing.T) *cqrs.CommandBus {
	t.Helper()
	bus := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Validation(middleware.ValidationConfig{})))
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[*Node, cqrs.NoResult](func(context.Context, *Node) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, nil
	})))
	require.NoError(t, cqrs.Register(bus, cqrs.HandlerFunc[Bag, cqrs.NoResult](func(context.Context, Bag) (cqrs.NoResult, error) {
		return cqrs.NoResult{}, nil
	})))
	return bus
}

// list returns n nodes, each the child of the one before.
func list(n int) *Node {
	head := &Node{Name: "0"}
	for i, at := 1, head; i < n; i, at = i+1, at.Child {
		at.Child = &Node{Name: fmt.Sprint(i)}
	}
	return head
}

const cycleChild = "MIDDLEWARE_TEST_CYCLE_CHILD"

// TestValidationRefusesCycles sends cyclic messages through Validation in
// a child process, whose stack is kept small so that a recursion without
// end kills it at once: the child must report the refusals and exit 0.
func TestValidationRefusesCycles(t *testing.T) {
	if os.Getenv(cycleChild) == "1" {
		debug.SetMaxStack(32 << 20)
		bus := nodeBus(t)
		self := &Node{Name: "a"}
		self.Child = self
		pair := &Node{Name: "a", Child: &Node{Name: "b"}}
		pair.Child.Child = pair
		bag := Bag{Label: "x", Items: []any{nil}}
		inner := &Bag{Label: "y", Items: []any{nil}}
		inner.Items[0] = inner
		bag.Items[0] = inner
		for name, msg := range map[string]any{"self": self, "pair": pair, "bag": bag, "deep": list(100_000)} {
			_, err := cqrs.ExecuteTyped[cqrs.NoResult](context.Background(), bus, msg)
			fmt.Printf("CHILD %s: %v\n", name, err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestValidationRefusesCycles$", "-test.v")
	cmd.Env = append(os.Environ(), cycleChild+"=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the child crashed:\n%.2000s", out)
	for _, want := range []string{
		"CHILD self: cqrs: validation failed: command *middleware_test.Node: middleware: validation: the message holds a cycle",
		"CHILD pair: cqrs: validation failed: command *middleware_test.Node: middleware: validation: the message holds a cycle",
		"CHILD bag: cqrs: validation failed: command middleware_test.Bag: middleware: validation: the message holds a cycle",
		"CHILD deep: cqrs: validation failed: command *middleware_test.Node: middleware: validation: the message is nested deeper than 1000 levels",
	} {
		assert.Contains(t, string(out), want)
	}
}

// TestValidationOfRecursiveTypes: values of a recursive type without a
// cycle are validated as any other, shared parts included.
func TestValidationOfRecursiveTypes(t *testing.T) {
	t.Parallel()
	bus := nodeBus(t)
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, list(1000))
	require.NoError(t, err, "1000 levels are allowed")
	_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, list(1001))
	require.ErrorIs(t, err, cqrs.ErrValidation, "1001 are not")
	bad := list(3)
	bad.Child.Child.Name = ""
	_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, bad)
	require.ErrorIs(t, err, cqrs.ErrValidation)
	assert.Contains(t, err.Error(), "Node.Child.Child.Name")

	shared := &Bag{Label: "shared"}
	_, err = cqrs.Dispatch[cqrs.NoResult](context.Background(), bus, Bag{Label: "x", Items: []any{shared, shared, map[string]any{"a": shared}}})
	require.NoError(t, err, "a part shared twice is no cycle")
}
