package middleware_test

import (
	"context"
	"fmt"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// Charge is the command of the inbox example.
type Charge struct {
	cqrs.Command[cqrs.NoResult]
	Cents int
}

func ExampleIdempotent() {
	inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(middleware.Idempotent(inbox)))
	err := cqrs.Handle(commands, func(_ context.Context, c Charge) (cqrs.NoResult, error) {
		fmt.Println("charged", c.Cents)
		return cqrs.NoResult{}, nil
	})
	if err != nil {
		panic(err)
	}
	// A transport delivers the message with ID m-1 twice, as after a crash
	// before its acknowledgement.
	for range 2 {
		ctx := cqrs.ContextWithIdentity(context.Background(), cqrs.Identity{ID: "m-1"})
		if _, err := cqrs.Send(ctx, commands, Charge{Cents: 500}); err != nil {
			panic(err)
		}
	}
	// Output:
	// charged 500
}

func ExampleMemoryInbox_Once() {
	inbox := middleware.NewMemoryInbox(middleware.MemoryInboxConfig{})
	for range 2 {
		ran, err := inbox.Once(context.Background(), "billing", "m-1", func(context.Context) error {
			return nil // the effect
		})
		fmt.Println(ran, err)
	}
	// Output:
	// true <nil>
	// false <nil>
}
