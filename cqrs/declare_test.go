package cqrs_test

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Declared messages: each embeds its marker as the first field.
type (
	openAccount struct {
		cqrs.Command[accountID]
		Owner string `json:"owner"`
	}
	closeAccount struct {
		cqrs.Command[cqrs.NoResult]
		ID accountID
	}
	getAccount struct {
		cqrs.Query[account]
		ID accountID `json:"id"`
	}
	accountID int
	account   struct {
		ID    accountID
		Owner string
	}

	listAccounts struct {
		cqrs.StreamQuery[account]
		Owner string
	}

	// plainGetAccount is getAccount without its marker.
	plainGetAccount struct {
		ID accountID `json:"id"`
	}
)

// accounts handles the declared messages with methods whose values Handle
// takes as they are.
type accounts struct{ byID map[accountID]account }

func (s *accounts) Open(_ context.Context, c openAccount) (accountID, error) {
	id := accountID(len(s.byID) + 1)
	s.byID[id] = account{ID: id, Owner: c.Owner}
	return id, nil
}

func (s *accounts) Get(_ context.Context, q getAccount) (account, error) {
	a, ok := s.byID[q.ID]
	if !ok {
		return account{}, errors.New("no such account")
	}
	return a, nil
}

func newAccountBuses(t *testing.T) (*cqrs.CommandBus, *cqrs.QueryBus) {
	t.Helper()
	s := &accounts{byID: map[accountID]account{}}
	commands, queries := cqrs.NewCommandBus(), cqrs.NewQueryBus()
	require.NoError(t, cqrs.Handle(commands, s.Open))
	require.NoError(t, cqrs.Handle(queries, s.Get))
	return commands, queries
}

func TestSendAndAskInferTheDeclaredResult(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	commands, queries := newAccountBuses(t)

	id, err := cqrs.Send(ctx, commands, openAccount{Owner: "Ada"})
	require.NoError(t, err)
	assert.Equal(t, accountID(1), id)

	got, err := cqrs.Ask(ctx, queries, getAccount{ID: id})
	require.NoError(t, err)
	assert.Equal(t, account{ID: 1, Owner: "Ada"}, got)

	// The handler's own error passes through unchanged.
	_, err = cqrs.Ask(ctx, queries, getAccount{ID: 9})
	assert.EqualError(t, err, "no such account")
}

func TestHandleTakesPlainFunctionsAndMiddleware(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	commands := cqrs.NewCommandBus()
	var closed []accountID
	var order []string
	mw := func(next cqrs.Handler[closeAccount, cqrs.NoResult]) cqrs.Handler[closeAccount, cqrs.NoResult] {
		return cqrs.HandlerFunc[closeAccount, cqrs.NoResult](func(ctx context.Context, c closeAccount) (cqrs.NoResult, error) {
			order = append(order, "middleware")
			return next.Handle(ctx, c)
		})
	}
	err := cqrs.Handle(commands, func(_ context.Context, c closeAccount) (cqrs.NoResult, error) {
		order = append(order, "handler")
		closed = append(closed, c.ID)
		return cqrs.NoResult{}, nil
	}, mw)
	require.NoError(t, err)

	_, err = cqrs.Send(ctx, commands, closeAccount{ID: 4})
	require.NoError(t, err)
	assert.Equal(t, []accountID{4}, closed)
	assert.Equal(t, []string{"middleware", "handler"}, order)
}

func TestHandleAndSendPointerMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Handle(commands, func(_ context.Context, c *openAccount) (accountID, error) {
		return accountID(len(c.Owner)), nil
	}))
	id, err := cqrs.Send(ctx, commands, &openAccount{Owner: "Grace"})
	require.NoError(t, err)
	assert.Equal(t, accountID(5), id)

	// *openAccount and openAccount are different message types.
	_, err = cqrs.Send(ctx, commands, openAccount{Owner: "Grace"})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)

	_, err = cqrs.Send(ctx, commands, (*openAccount)(nil))
	require.ErrorIs(t, err, cqrs.ErrNilMessage)
}

func TestDeclaredEntryPointsRefuseBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var nilCommands *cqrs.CommandBus
	var nilQueries *cqrs.QueryBus

	_, err := cqrs.Send(ctx, nilCommands, openAccount{})
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	_, err = cqrs.Ask(ctx, nilQueries, getAccount{})
	require.ErrorIs(t, err, cqrs.ErrNilBus)
	require.ErrorIs(t, cqrs.Handle(nilQueries, (&accounts{}).Get), cqrs.ErrNilBus)

	queries := cqrs.NewQueryBus()
	var fn func(context.Context, getAccount) (account, error)
	require.ErrorIs(t, cqrs.Handle(queries, fn), cqrs.ErrNilHandler)
	assert.Empty(t, queries.Registered())

	s := &accounts{byID: map[accountID]account{}}
	require.NoError(t, cqrs.Handle(queries, s.Get))
	require.ErrorIs(t, cqrs.Handle(queries, s.Get), cqrs.ErrHandlerExists)

	//lint:ignore SA1012 a nil context is what is tested
	_, err = cqrs.Ask(nil, queries, getAccount{ID: 1})
	require.ErrorIs(t, err, cqrs.ErrNilContext)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = cqrs.Ask(cancelled, queries, getAccount{ID: 1})
	require.ErrorIs(t, err, context.Canceled)

	_, err = cqrs.Ask(ctx, cqrs.NewQueryBus(), getAccount{ID: 1})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
}

func TestRegisterRefusesWhatADeclarationContradicts(t *testing.T) {
	t.Parallel()
	queries, commands := cqrs.NewQueryBus(), cqrs.NewCommandBus()

	// Register cannot be checked by the compiler: it checks when it runs.
	err := cqrs.Register(queries, cqrs.HandlerFunc[getAccount, string](
		func(context.Context, getAccount) (string, error) { return "", nil }))
	require.ErrorIs(t, err, cqrs.ErrResultType)
	assert.Contains(t, err.Error(), "declares the result cqrs_test.account")

	err = cqrs.Register(commands, cqrs.HandlerFunc[getAccount, account](
		func(context.Context, getAccount) (account, error) { return account{}, nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.Contains(t, err.Error(), "declared for the query bus")

	// The pointer type carries the declaration too.
	err = cqrs.Register(commands, cqrs.HandlerFunc[*getAccount, account](
		func(context.Context, *getAccount) (account, error) { return account{}, nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)

	assert.Empty(t, queries.Registered())
	assert.Empty(t, commands.Registered())

	// The declared result is accepted.
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[getAccount, account](
		func(context.Context, getAccount) (account, error) { return account{}, nil })))
}

func TestMarkersAreInvisibleToEncodings(t *testing.T) {
	t.Parallel()
	assert.Zero(t, unsafe.Sizeof(cqrs.Command[account]{}))
	assert.Zero(t, unsafe.Sizeof(cqrs.Query[account]{}))
	assert.Equal(t, unsafe.Sizeof(plainGetAccount{}), unsafe.Sizeof(getAccount{}))

	marked := getAccount{ID: 7}
	plain := plainGetAccount{ID: 7}

	markedJSON, err := json.Marshal(marked)
	require.NoError(t, err)
	plainJSON, err := json.Marshal(plain)
	require.NoError(t, err)
	assert.JSONEq(t, string(plainJSON), string(markedJSON))
	assert.Equal(t, string(plainJSON), string(markedJSON))

	var back getAccount
	require.NoError(t, json.Unmarshal(plainJSON, &back))
	assert.Equal(t, marked, back)

	// gob: what one side encodes, the other decodes, marked or not.
	var buf bytes.Buffer
	require.NoError(t, gob.NewEncoder(&buf).Encode(marked))
	var asPlain plainGetAccount
	require.NoError(t, gob.NewDecoder(&buf).Decode(&asPlain))
	assert.Equal(t, plain, asPlain)

	buf.Reset()
	require.NoError(t, gob.NewEncoder(&buf).Encode(plain))
	var asMarked getAccount
	require.NoError(t, gob.NewDecoder(&buf).Decode(&asMarked))
	assert.Equal(t, marked, asMarked)
}

func TestRequireNamesEveryMissingHandler(t *testing.T) {
	t.Parallel()
	commands, queries := newAccountBuses(t)

	require.NoError(t, cqrs.Require(commands, openAccount{}))
	require.NoError(t, cqrs.Require(queries, getAccount{}, reflect.TypeFor[getAccount]()))
	require.NoError(t, cqrs.Require(commands))

	err := cqrs.Require(commands, openAccount{}, closeAccount{}, (*openAccount)(nil), getAccount{})
	require.Error(t, err)
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.Equal(t, "cqrs: the command bus cannot dispatch 3 of 4 message types"+
		"\n\tcqrs_test.closeAccount: cqrs: handler not found"+
		"\n\t*cqrs_test.openAccount: cqrs: handler not found; its handler takes cqrs_test.openAccount: send the value, not a pointer"+
		"\n\tcqrs_test.getAccount is declared for the query bus: cqrs: invalid message type", err.Error())

	// Undeclared message types are checked too.
	err = cqrs.Require(queries, plainGetAccount{})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	assert.Contains(t, err.Error(), "cqrs_test.plainGetAccount")

	require.ErrorIs(t, cqrs.Require(queries, nil), cqrs.ErrNilMessage)
	require.ErrorIs(t, cqrs.Require(nil, getAccount{}), cqrs.ErrNilBus)
	var nilQueries *cqrs.QueryBus
	require.ErrorIs(t, cqrs.Require(nilQueries, getAccount{}), cqrs.ErrNilBus)
}

// pointerMarked embeds its marker through a pointer, which compiles with
// Send but has a nil marker in its zero value.
type pointerMarked struct {
	*cqrs.Command[int]
	N int
}

func TestMarkerByPointerIsRefusedNotAPanic(t *testing.T) {
	t.Parallel()
	commands := cqrs.NewCommandBus()
	err := cqrs.Handle(commands, func(context.Context, pointerMarked) (int, error) { return 1, nil })
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.Contains(t, err.Error(), "by value")
	err = cqrs.Register(commands, cqrs.HandlerFunc[pointerMarked, int](func(context.Context, pointerMarked) (int, error) { return 1, nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	require.ErrorIs(t, cqrs.Require(commands, pointerMarked{}), cqrs.ErrInvalidMessageType)
	assert.Empty(t, commands.Registered())
}

// A pointer to a declared message satisfies Send's constraint as the
// message does, so the compiler cannot refuse it; the error it gets when
// its handler takes the value (or the other way round) must say so.
func TestPointerOrValueSentToTheOtherSaysWhichToSend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	commands, queries := newAccountBuses(t) // handlers take the values

	_, err := cqrs.Send(ctx, commands, &openAccount{Owner: "Ada"})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	assert.EqualError(t, err, "cqrs: handler not found for *cqrs_test.openAccount on the command bus; "+
		"its handler takes cqrs_test.openAccount: send the value, not a pointer")
	_, err = cqrs.Ask(ctx, queries, &getAccount{ID: 1})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	assert.ErrorContains(t, err, "send the value, not a pointer")
	// The untyped entry points, which transports use, say the same.
	_, err = commands.Execute(ctx, &openAccount{})
	assert.ErrorContains(t, err, "send the value, not a pointer")
	_, err = cqrs.ExecuteTyped[account](ctx, queries, &getAccount{})
	assert.ErrorContains(t, err, "send the value, not a pointer")

	// And the other way round.
	pointers := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Handle(pointers, func(context.Context, *openAccount) (accountID, error) { return 1, nil }))
	_, err = cqrs.Send(ctx, pointers, openAccount{})
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	assert.EqualError(t, err, "cqrs: handler not found for cqrs_test.openAccount on the command bus; "+
		"its handler takes *cqrs_test.openAccount: send a pointer, not the value")

	// Require, at start-up, says it too.
	err = cqrs.Require(commands, (*openAccount)(nil))
	require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
	assert.ErrorContains(t, err, "*cqrs_test.openAccount: cqrs: handler not found; its handler takes cqrs_test.openAccount: send the value, not a pointer")

	// A streaming query too.
	streams := cqrs.NewQueryBus()
	require.NoError(t, cqrs.HandleStream(streams, func(context.Context, listAccounts, func(account) bool) error { return nil }))
	for _, err := range cqrs.Stream(ctx, streams, &listAccounts{}) {
		require.ErrorIs(t, err, cqrs.ErrHandlerNotFound)
		assert.EqualError(t, err, "cqrs: handler not found: no handler for *cqrs_test.listAccounts on the query bus; "+
			"its handler takes cqrs_test.listAccounts: send the value, not a pointer")
	}

	// With neither registered, the error is the plain one.
	_, err = cqrs.Send(ctx, cqrs.NewCommandBus(), &openAccount{})
	assert.EqualError(t, err, "cqrs: handler not found for *cqrs_test.openAccount on the command bus")
	_, err = cqrs.Send(ctx, cqrs.NewCommandBus(), openAccount{})
	assert.EqualError(t, err, "cqrs: handler not found for cqrs_test.openAccount on the command bus")
}

// Messages that embed two markers: Go promotes neither's methods, so no
// constraint holds (compile_test.go checks Ask, Stream, Handle and
// HandleStream), and Register, whose types the compiler does not check
// against a marker, must refuse them too.
type (
	queryAndStream struct {
		cqrs.Query[account]
		cqrs.StreamQuery[account]
	}
	twoMessages struct {
		openAccount
		*getAccount
	}
	twoMessagesDeeper struct{ twoMessages }
)

func TestTwoMarkersAreRefused(t *testing.T) {
	t.Parallel()
	queries, commands := cqrs.NewQueryBus(), cqrs.NewCommandBus()

	err := cqrs.Register(queries, cqrs.HandlerFunc[queryAndStream, account](
		func(context.Context, queryAndStream) (account, error) { return account{}, nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.EqualError(t, err, "cqrs: invalid message type: cqrs_test.queryAndStream embeds more than one marker "+
		"(through its fields Query, StreamQuery), so it declares nothing; "+
		"embed exactly one of cqrs.Command, Query, StreamQuery or Event")

	err = cqrs.RegisterStream(queries, cqrs.StreamFunc[queryAndStream, account](
		func(context.Context, queryAndStream, func(account) bool) error { return nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.ErrorContains(t, err, "embeds more than one marker")

	// Two declared messages embedded, one by pointer, and one more level
	// down: the markers are as ambiguous.
	err = cqrs.Register(commands, cqrs.HandlerFunc[twoMessages, accountID](
		func(context.Context, twoMessages) (accountID, error) { return 0, nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.ErrorContains(t, err, "(through its fields openAccount, getAccount)")
	err = cqrs.Register(commands, cqrs.HandlerFunc[*twoMessagesDeeper, accountID](
		func(context.Context, *twoMessagesDeeper) (accountID, error) { return 0, nil }))
	require.ErrorIs(t, err, cqrs.ErrInvalidMessageType)
	assert.ErrorContains(t, err, "*cqrs_test.twoMessagesDeeper embeds more than one marker (through its fields twoMessages)")

	require.ErrorIs(t, cqrs.Require(queries, queryAndStream{}), cqrs.ErrInvalidMessageType)
	assert.Empty(t, queries.Registered())
	assert.Empty(t, commands.Registered())
}
