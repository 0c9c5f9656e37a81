package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// OpenAccount opens an account and returns it.
type OpenAccount struct {
	Owner string `json:"owner" validate:"required,max=100"`
	Email string `json:"email" validate:"required,email"`
}

// Deposit adds to an account's balance, after a fraud check.
type Deposit struct {
	Account int `json:"-" validate:"gt=0"`
	Amount  int `json:"amount" validate:"gt=0,lte=1000000"`
}

// GetAccount reads an account.
type GetAccount struct {
	ID int `validate:"gt=0"`
}

// App is the service: the buses, the stack around them, and the HTTP API
// that sends commands and queries through them.
type App struct {
	commands *cqrs.CommandBus
	queries  *cqrs.QueryBus
	stack    *middleware.Stack
	fraud    *FraudCheck
}

// NewApp builds the service on repo, with the middleware cfg describes.
func NewApp(cfg middleware.Config, repo Repository, fraud *FraudCheck, logger *slog.Logger) (*App, error) {
	stack, err := cfg.Build(logger)
	if err != nil {
		return nil, err
	}
	// Every message gets an identity, which the logs carry: see inRequest.
	app := &App{
		commands: cqrs.NewCommandBus(cqrs.WithInterceptors(stack.Commands...), cqrs.WithLogger(logger), cqrs.WithIdentity()),
		queries:  cqrs.NewQueryBus(cqrs.WithInterceptors(stack.Queries...), cqrs.WithLogger(logger), cqrs.WithIdentity()),
		stack:    stack,
		fraud:    fraud,
	}
	open := func(ctx context.Context, c OpenAccount) (Account, error) {
		return repo.Create(ctx, c.Owner, c.Email)
	}
	deposit := func(ctx context.Context, c Deposit) (Account, error) {
		if _, err := repo.Get(ctx, c.Account); err != nil {
			return Account{}, middleware.Permanent(err)
		}
		if err := fraud.Check(ctx, c.Account, c.Amount); err != nil {
			return Account{}, fmt.Errorf("deposit to %d: %w", c.Account, err)
		}
		return repo.AddToBalance(ctx, c.Account, c.Amount)
	}
	get := func(ctx context.Context, q GetAccount) (Account, error) {
		a, err := repo.Get(ctx, q.ID)
		return a, middleware.Permanent(err)
	}
	for _, err := range []error{
		cqrs.Register(app.commands, cqrs.HandlerFunc[OpenAccount, Account](open)),
		cqrs.Register(app.commands, cqrs.HandlerFunc[Deposit, Account](deposit)),
		cqrs.Register(app.queries, cqrs.HandlerFunc[GetAccount, Account](get)),
		// At start-up, not on the first request: every route's message has a handler.
		cqrs.Require(app.commands, OpenAccount{}, Deposit{}),
		cqrs.Require(app.queries, GetAccount{}),
	} {
		if err != nil {
			return nil, err
		}
	}
	return app, nil
}

// Handler returns the HTTP API.
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /accounts", func(w http.ResponseWriter, r *http.Request) {
		var c OpenAccount
		if !decode(w, r, &c) {
			return
		}
		account, err := cqrs.Dispatch[Account](inRequest(r), a.commands, c)
		reply(w, http.StatusCreated, account, err)
	})
	mux.HandleFunc("POST /accounts/{id}/deposits", func(w http.ResponseWriter, r *http.Request) {
		var c Deposit
		if !decode(w, r, &c) {
			return
		}
		c.Account, _ = strconv.Atoi(r.PathValue("id"))
		account, err := cqrs.Dispatch[Account](inRequest(r), a.commands, c)
		reply(w, http.StatusOK, account, err)
	})
	mux.HandleFunc("GET /accounts/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(r.PathValue("id"))
		account, err := cqrs.Dispatch[Account](inRequest(r), a.queries, GetAccount{ID: id})
		reply(w, http.StatusOK, account, err)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		type metric struct {
			Kind    string `json:"kind"`
			Name    string `json:"name"`
			Calls   uint64 `json:"calls"`
			Errors  uint64 `json:"errors"`
			MeanNS  int64  `json:"mean_ns"`
			P99NS   int64  `json:"p99_ns"`
			Breaker string `json:"breaker"`
		}
		states := a.stack.Breaker.States()
		var out []metric
		for _, m := range a.stack.Metrics.Snapshot() {
			out = append(out, metric{
				Kind: m.Kind.String(), Name: m.Name, Calls: m.Calls, Errors: m.Errors,
				MeanNS: int64(m.Mean), P99NS: int64(m.P99), Breaker: states[m.Kind.String()+" "+m.Name].String(),
			})
		}
		reply(w, http.StatusOK, out, nil)
	})
	// The flag that makes the fraud check fail, to watch the breaker open
	// and recover.
	mux.HandleFunc("PUT /admin/flaky", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Flaky bool `json:"flaky"`
		}
		if !decode(w, r, &body) {
			return
		}
		a.fraud.Flaky.Store(body.Flaky)
		reply(w, http.StatusOK, body, nil)
	})
	return mux
}

// inRequest returns the context of a message sent for request r: one whose
// message joins the conversation the caller named with an X-Request-Id
// header, which the message's log record then carries as its
// identity.correlation_id. With no such header the message starts a
// conversation of its own.
func inRequest(r *http.Request) context.Context {
	id := r.Header.Get("X-Request-Id")
	if id == "" || len(id) > 128 {
		return r.Context()
	}
	return cqrs.ContextWithIdentity(r.Context(), cqrs.Identity{CorrelationID: id})
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "malformed request: " + err.Error()})
		return false
	}
	return true
}

// reply writes v with status, or the error with the status it maps to.
func reply(w http.ResponseWriter, status int, v any, err error) {
	if err == nil {
		writeJSON(w, status, v)
		return
	}
	body := map[string]any{"error": err.Error()}
	var verr *cqrs.ValidationError
	if errors.As(err, &verr) {
		fields := map[string]string{}
		for _, f := range verr.Fields {
			fields[f.Field] = f.Tag
		}
		body["fields"] = fields
	}
	writeJSON(w, statusOf(err), body)
}

// statusOf maps the bus's errors to HTTP statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, cqrs.ErrValidation):
		return http.StatusBadRequest
	case errors.Is(err, ErrNoAccount):
		return http.StatusNotFound
	case errors.Is(err, cqrs.ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, cqrs.ErrCircuitOpen):
		return http.StatusServiceUnavailable
	case errors.Is(err, cqrs.ErrExecutionTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrDownstream):
		return http.StatusBadGateway
	default:
		return http.StatusInternalServerError
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
