// Readme holds every Go block of the README, so that the compiler checks
// them and a test runs them: the README test fails when a block there is
// not, word for word, a region of this file between "readme:begin" and
// "readme:end" comments.
//
//	go run ./examples/readme
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// readme:begin types
type CreateUser struct { // a command
	Name  string `validate:"required"`
	Email string `validate:"required,email"`
}

type GetUser struct{ ID int } // a query

type User struct { // its result
	ID          int
	Name, Email string
}

// readme:end

// Users is an in-memory store whose methods are the handlers.
type Users struct {
	mu    sync.Mutex
	users []User
}

// Create handles CreateUser.
func (s *Users) Create(_ context.Context, c CreateUser) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users = append(s.users, User{ID: len(s.users) + 1, Name: c.Name, Email: c.Email})
	return len(s.users), nil
}

// Get handles GetUser.
func (s *Users) Get(_ context.Context, q GetUser) (User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q.ID < 1 || q.ID > len(s.users) {
		return User{}, middleware.Permanent(fmt.Errorf("user %d: not found", q.ID))
	}
	return s.users[q.ID-1], nil
}

func main() {
	if err := tour(context.Background(), os.Stdout, &Users{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func tour(ctx context.Context, w io.Writer, users *Users) error {
	// readme:begin tour
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(
		middleware.Validation(middleware.ValidationConfig{}),
		middleware.Timeout(2*time.Second),
	))
	queries := cqrs.NewQueryBus(cqrs.WithMetrics())

	// Register infers the message and result types from the handler.
	if err := cqrs.Register(commands, cqrs.HandlerFunc[CreateUser, int](users.Create)); err != nil {
		return err
	}
	if err := cqrs.Register(queries, cqrs.HandlerFunc[GetUser, User](users.Get)); err != nil {
		return err
	}

	// Dispatch is fully static: write the result type, the message type is inferred.
	id, err := cqrs.Dispatch[int](ctx, commands, CreateUser{Name: "Ada", Email: "ada@example.com"})
	if err != nil {
		return err
	}
	user, err := cqrs.Dispatch[User](ctx, queries, GetUser{ID: id})
	fmt.Fprintln(w, user.Name, user.Email, err) // Ada ada@example.com <nil>

	// ExecuteTyped takes a message held in an interface and still returns a User.
	var msg any = GetUser{ID: id}
	user, err = cqrs.ExecuteTyped[User](ctx, queries, msg)
	fmt.Fprintln(w, user.ID, err) // 1 <nil>

	// Every failure is an error to match, never a panic.
	_, err = cqrs.Dispatch[int](ctx, commands, CreateUser{Name: "Bob"})
	fmt.Fprintln(w, errors.Is(err, cqrs.ErrValidation)) // true
	_, err = cqrs.Dispatch[string](ctx, queries, GetUser{ID: id})
	fmt.Fprintln(w, errors.Is(err, cqrs.ErrResultType)) // true
	// readme:end
	return nil
}

// production builds the buses of a service from its config file.
func production(path string, logger *slog.Logger) (*cqrs.CommandBus, *cqrs.QueryBus, error) {
	// readme:begin production
	cfg, err := middleware.LoadConfig(path) // YAML or JSON
	if err != nil {
		return nil, nil, err
	}
	stack, err := cfg.Build(logger) // a stack per bus, in the order docs/middleware.md explains
	if err != nil {
		return nil, nil, err
	}
	// Commands are retried only if the file's commands.retry asks for it.
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(stack.Commands...))
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...))
	// readme:end
	return commands, queries, nil
}
