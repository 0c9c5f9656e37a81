package cqrs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/typedcqrs/dispatch/cqrs"
)

var errOdd = errors.New("odd")

// fuzzBus has handlers that succeed, fail, panic and read pointers.
func fuzzBus(t testing.TB, opts ...cqrs.Option) *cqrs.QueryBus {
	b := cqrs.NewQueryBus(append(opts, cqrs.WithMetrics())...)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cqrs.Register(b, cqrs.HandlerFunc[GetUser, UserView](func(_ context.Context, q GetUser) (UserView, error) {
		switch {
		case q.ID%7 == 0:
			panic(fmt.Sprintf("panic %d", q.ID))
		case q.ID%2 != 0:
			return UserView{}, errOdd
		}
		return UserView{ID: q.ID}, nil
	})))
	must(cqrs.Register(b, cqrs.HandlerFunc[*GetUser, int](func(_ context.Context, q *GetUser) (int, error) {
		return q.ID, nil
	})))
	must(cqrs.Register(b, cqrs.HandlerFunc[string, string](func(_ context.Context, s string) (string, error) {
		return s + s, nil
	})))
	return b
}

// FuzzDispatch sends arbitrary messages through every entry point, asking
// for arbitrary result types. Whatever comes in, nothing panics, every
// error is one the API documents, and every success is the right answer.
func FuzzDispatch(f *testing.F) {
	f.Add(uint8(0), int64(4), "a", uint8(0))
	f.Add(uint8(1), int64(7), "", uint8(1))
	f.Add(uint8(2), int64(0), "xyz", uint8(2))
	f.Add(uint8(3), int64(3), "\x00", uint8(3))
	f.Add(uint8(4), int64(-14), "é", uint8(4))
	f.Add(uint8(5), int64(1), "q", uint8(5))
	// The same handlers bare and inside interceptors: decorating them
	// changes no outcome, and a panic is recovered on either path.
	buses := []*cqrs.QueryBus{fuzzBus(f), fuzzBus(f, cqrs.WithInterceptors(passThrough, passThrough))}
	documented := []error{
		cqrs.ErrHandlerNotFound, cqrs.ErrResultType, cqrs.ErrNilMessage, cqrs.ErrHandlerPanic, errOdd,
	}

	f.Fuzz(func(t *testing.T, kind uint8, n int64, s string, entry uint8) {
		var msg any
		switch kind % 7 {
		case 0:
			msg = GetUser{ID: int(n)}
		case 1:
			msg = &GetUser{ID: int(n)}
		case 2:
			msg = (*GetUser)(nil)
		case 3:
			msg = s
		case 4:
			msg = n
		case 5:
			msg = nil
		case 6:
			msg = []byte(s)
		}

		for _, bus := range buses {
			fuzzOne(t, bus, msg, entry, documented)
		}
	})
}

// fuzzOne sends msg to bus by the entry point entry selects and checks
// the outcome.
func fuzzOne(t *testing.T, bus *cqrs.QueryBus, msg any, entry uint8, documented []error) {
	var res any
	var err error
	ctx := context.Background()
	switch entry % 6 {
	case 0:
		res, err = cqrs.ExecuteTyped[UserView](ctx, bus, msg)
	case 1:
		res, err = cqrs.ExecuteTyped[int](ctx, bus, msg)
	case 2:
		res, err = cqrs.ExecuteTyped[string](ctx, bus, msg)
	case 3:
		res, err = cqrs.ExecuteTyped[any](ctx, bus, msg)
	case 4:
		res, err = bus.Execute(ctx, msg)
	case 5:
		res, err = cqrs.Dispatch[fmt.Stringer](ctx, bus, msg)
	}

	if err != nil {
		for _, target := range documented {
			if errors.Is(err, target) {
				return
			}
		}
		t.Fatalf("undocumented error for %#v: %v", msg, err)
	}
	var want any
	switch m := msg.(type) {
	case GetUser:
		want = UserView{ID: m.ID}
	case *GetUser:
		want = m.ID
	case string:
		want = m + m
	default:
		t.Fatalf("%#v succeeded with %#v", msg, res)
	}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Fatalf("%#v: got %#v, want %#v", msg, res, want)
	}
}
