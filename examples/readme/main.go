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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/cqrstest"
	"github.com/typedcqrs/dispatch/middleware"
)

// readme:begin types
type CreateUser struct { // a command that returns the new user's ID
	cqrs.Command[int]
	Name  string `validate:"required"`
	Email string `validate:"required,email"`
}

type GetUser struct { // a query that returns a User
	cqrs.Query[User]
	ID int
}

type User struct {
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
	ctx, users := context.Background(), &Users{}
	if err := errors.Join(
		tour(ctx, os.Stdout, users),
		events(ctx, os.Stdout),
		streams(ctx, os.Stdout, users),
	); err != nil {
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

	// Handle infers every type from the handler: no type arguments.
	if err := errors.Join(
		cqrs.Handle(commands, users.Create), // func(context.Context, CreateUser) (int, error)
		cqrs.Handle(queries, users.Get),     // func(context.Context, GetUser) (User, error)
	); err != nil {
		return err
	}
	// At start-up rather than on the first request: every message has its handler.
	if err := errors.Join(cqrs.Require(commands, CreateUser{}), cqrs.Require(queries, GetUser{})); err != nil {
		return err
	}

	// Send and Ask infer the result from the message: id is an int, user a User.
	id, err := cqrs.Send(ctx, commands, CreateUser{Name: "Ada", Email: "ada@example.com"})
	if err != nil {
		return err
	}
	user, err := cqrs.Ask(ctx, queries, GetUser{ID: id})
	fmt.Fprintln(w, user.Name, user.Email, err) // Ada ada@example.com <nil>

	// None of these compiles: a query sent as a command, a result of the
	// wrong type, a message that declares nothing.
	//
	//	cqrs.Send(ctx, commands, GetUser{ID: id})
	//	var name string
	//	name, err = cqrs.Ask(ctx, queries, GetUser{ID: id})
	//	cqrs.Ask(ctx, queries, "user 1")

	// A message held in an interface: found by its dynamic type, with a typed result.
	var msg any = GetUser{ID: id}
	user, err = cqrs.ExecuteTyped[User](ctx, queries, msg)
	fmt.Fprintln(w, user.ID, err) // 1 <nil>

	// Every failure is an error to match, never a panic.
	_, err = cqrs.Send(ctx, commands, CreateUser{Name: "Bob"})
	fmt.Fprintln(w, errors.Is(err, cqrs.ErrValidation)) // true
	_, err = cqrs.ExecuteTyped[string](ctx, queries, msg)
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

// readme:begin eventtypes
type UserCreated struct { // an event
	cqrs.Event
	ID int
}

// readme:end

// events shows the event bus.
func events(ctx context.Context, w io.Writer) error {
	// readme:begin events
	events := cqrs.NewEventBus(cqrs.WithMetrics())
	welcome := func(_ context.Context, e UserCreated) error {
		fmt.Fprintln(w, "welcome mail to user", e.ID)
		return nil
	}
	audit := func(context.Context, UserCreated) error { return errors.New("audit log full") }
	if _, err := cqrs.Subscribe(events, "welcome", welcome); err != nil {
		return err
	}
	if _, err := cqrs.Subscribe(events, "audit", audit); err != nil {
		return err
	}
	// Every subscriber runs; the failures come back joined, each naming its subscriber.
	err := cqrs.Publish(ctx, events, UserCreated{ID: 1})
	fmt.Fprintln(w, err) // cqrs: event main.UserCreated: subscriber audit: audit log full
	// readme:end
	return nil
}

// readme:begin streamtypes
type ListUsers struct { // a query that streams Users
	cqrs.StreamQuery[User]
	Prefix string
}

// readme:end

// List handles ListUsers, pushing each user to yield.
func (s *Users) List(ctx context.Context, q ListUsers, yield func(User) bool) error {
	s.mu.Lock()
	users := append([]User(nil), s.users...)
	s.mu.Unlock()
	for _, u := range users {
		if strings.HasPrefix(u.Name, q.Prefix) && !yield(u) {
			return nil
		}
	}
	return nil
}

// streams shows a streaming query.
func streams(ctx context.Context, w io.Writer, users *Users) error {
	// readme:begin streams
	queries := cqrs.NewQueryBus()
	if err := cqrs.HandleStream(queries, users.List); err != nil {
		return err
	}
	for user, err := range cqrs.Stream(ctx, queries, ListUsers{Prefix: "A"}) {
		if err != nil {
			return err
		}
		fmt.Fprintln(w, user.ID, user.Name) // one user at a time, as the handler yields them
	}
	// readme:end
	return nil
}

// SignUp creates users and announces each: its handler publishes
// UserCreated. The README's test tests it.
type SignUp struct {
	users  *Users
	events *cqrs.EventBus
}

// Create handles CreateUser.
func (s *SignUp) Create(ctx context.Context, c CreateUser) (int, error) {
	id, err := s.users.Create(ctx, c)
	if err != nil {
		return 0, err
	}
	return id, cqrs.Publish(ctx, s.events, UserCreated{ID: id})
}

var errDatabaseDown = errors.New("database down")

// TestSignUp is the README's test of SignUp, here so that the README test
// finds it; main_test.go runs it.
//
// readme:begin testing
func TestSignUp(t *testing.T) {
	// Recorded buses; a worker delivers the events after Publish returns.
	h := cqrstest.NewHarness(t, cqrs.WithStrategy(cqrs.Async()))
	signUp := &SignUp{users: &Users{}, events: h.Events}
	if err := cqrs.Handle(h.Commands, signUp.Create); err != nil {
		t.Fatal(err)
	}
	welcome := cqrstest.Sink[UserCreated](t, h.Events) // a stand-in subscriber

	// Then waits for the delivery, and reports a diff, with types, if it differs.
	h.When(CreateUser{Name: "Ada", Email: "ada@example.com"}).Then(UserCreated{ID: 1}).ThenReturns(1)

	// A fault: the next CreateUser fails before its handler, as if the database were down.
	cqrstest.On[CreateUser](h.Faults).Nth(1).Fail(errDatabaseDown)
	h.When(CreateUser{Name: "Bob", Email: "bob@example.com"}).ThenError(errDatabaseDown).Then()

	// Typed records of what the buses carried, and of what the stand-in received.
	if sent := cqrstest.Sent[CreateUser](h); len(sent) != 2 || sent[1].Name != "Bob" {
		t.Errorf("sent %+v", sent)
	}
	if got := welcome.Received(); len(got) != 1 || got[0].ID != 1 {
		t.Errorf("welcomed %+v", got)
	}
}

// readme:end
