// Quickstart shows a command and a query end to end: messages that declare
// their results, handlers registered from plain methods, a dispatch of
// each with no type arguments, and what the errors look like when
// something is wrong.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/typedcqrs/dispatch/cqrs"
)

// CreateUser is a command: it changes state and returns the new user's ID,
// an int, as its marker declares.
type CreateUser struct {
	cqrs.Command[int]
	Name  string
	Email string
}

// GetUser is a query: it reads state and returns a User.
type GetUser struct {
	cqrs.Query[User]
	ID int
}

// User is what GetUser returns.
type User struct {
	ID    int
	Name  string
	Email string
}

// Users is an in-memory store with one handler per message.
type Users struct {
	mu    sync.Mutex
	users []User
}

// Create handles CreateUser.
func (s *Users) Create(_ context.Context, c CreateUser) (int, error) {
	if c.Name == "" {
		return 0, errors.New("a user needs a name")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := User{ID: len(s.users) + 1, Name: c.Name, Email: c.Email}
	s.users = append(s.users, u)
	return u.ID, nil
}

// Get handles GetUser.
func (s *Users) Get(_ context.Context, q GetUser) (User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q.ID < 1 || q.ID > len(s.users) {
		return User{}, fmt.Errorf("user %d does not exist", q.ID)
	}
	return s.users[q.ID-1], nil
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	users := &Users{}
	commands := cqrs.NewCommandBus(cqrs.WithMetrics())
	queries := cqrs.NewQueryBus(cqrs.WithMetrics())
	// The handlers are plain methods: every type is inferred from them.
	if err := cqrs.Handle(commands, users.Create); err != nil {
		return err
	}
	if err := cqrs.Handle(queries, users.Get); err != nil {
		return err
	}
	// At start-up, not on the first request: every message has a handler.
	if err := cqrs.Require(commands, CreateUser{}); err != nil {
		return err
	}

	// A command: no type arguments, and id is an int because CreateUser
	// says so. Sending it to the query bus would not compile.
	id, err := cqrs.Send(ctx, commands, CreateUser{Name: "Ada", Email: "ada@example.com"})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "command CreateUser -> user %d\n", id)

	// A query: user is a User.
	user, err := cqrs.Ask(ctx, queries, GetUser{ID: id})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "query GetUser -> %+v\n", user)

	// A message held in an interface, with a typed result.
	var msg any = GetUser{ID: id}
	user, err = cqrs.ExecuteTyped[User](ctx, queries, msg)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "ExecuteTyped -> %s <%s>\n", user.Name, user.Email)

	// What goes wrong comes back as errors to match, never as panics.
	_, err = cqrs.Send(ctx, commands, CreateUser{})
	fmt.Fprintf(w, "handler error: %v\n", err)
	_, err = cqrs.ExecuteTyped[User](ctx, queries, any(CreateUser{Name: "Bob"}))
	fmt.Fprintf(w, "not found: %t (%v)\n", errors.Is(err, cqrs.ErrHandlerNotFound), err)
	_, err = cqrs.ExecuteTyped[string](ctx, queries, msg)
	fmt.Fprintf(w, "wrong result type: %t\n", errors.Is(err, cqrs.ErrResultType))

	for _, m := range append(commands.Metrics(), queries.Metrics()...) {
		fmt.Fprintf(w, "metrics: %s %s: %d calls, %d errors\n", m.Kind, m.Name, m.Calls, m.Errors)
	}
	return nil
}
