package cqrs

import (
	"context"
	"fmt"
	"reflect"
	"strings"
)

// Command marks a message type as a command whose handler returns R. A
// message declares itself by embedding it as its first field:
//
//	type PlaceOrder struct {
//		cqrs.Command[OrderID]
//		Customer string
//		Items    []Item
//	}
//
// A command that returns nothing but an error declares
// Command[NoResult]. The marker is a zero-size struct with no fields, so it
// adds nothing to the message's size or to its encoding: encoding/json,
// encoding/gob, the validator and the transports see the message as they
// would without it. (Go pads a zero-size field that comes last in a struct:
// embed it first.)
//
// A declared command is sent with [Send], which needs no type arguments,
// and its handler is registered with [Handle], which infers every type from
// the handler function. The compiler then refuses a dispatch or a handler
// whose result is not R, and a declared command sent to a [QueryBus].
// [Register] refuses, when the program runs, a handler for a declared
// command whose result is not R or that is registered on the wrong bus.
//
// Command has no state: its zero value is the only value.
type Command[R any] struct{}

// The markers' methods below are never called: they exist for the
// constraints [Message] and [StreamMessage], and are named for the
// compiler's messages when a constraint is not met, which quote them (see
// docs/compile-errors.md):
//
//   - mustEmbedCommandQueryOrEvent and mustEmbedStreamQuery are what a
//     type that embeds no marker is missing. Every marker has both, so
//     that a marker of the wrong kind is reported by servedBy instead; and
//     a type that embeds two markers has both twice, at the same depth,
//     so neither: it satisfies no constraint ("ambiguous selector").
//   - servedBy(B) R says which bus serves the message and what it
//     returns: a mismatch reads "have servedBy(*cqrs.QueryBus) Order,
//     want servedBy(*cqrs.CommandBus) R".
func (Command[R]) mustEmbedCommandQueryOrEvent() {}

//lint:ignore U1000 no constraint that a Command meets asks for it: it is there so that Stream, given a command, reports servedBy
func (Command[R]) mustEmbedStreamQuery() {}

func (Command[R]) servedBy(*CommandBus) R { return *new(R) }

func (Command[R]) declaration() declaration {
	return declaration{kind: KindCommand, result: reflect.TypeFor[R]()}
}

// Query marks a message type as a query whose handler returns R, as
// [Command] marks a command: embed it as the message's first field.
//
//	type GetOrder struct {
//		cqrs.Query[Order]
//		ID OrderID
//	}
//
// A declared query is sent with [Ask], which needs no type arguments, and
// its handler is registered with [Handle].
//
// Query has no state: its zero value is the only value.
type Query[R any] struct{}

func (Query[R]) mustEmbedCommandQueryOrEvent() {}

//lint:ignore U1000 no constraint that a Query meets asks for it: it is there so that Stream, given a query, reports servedBy
func (Query[R]) mustEmbedStreamQuery() {}

func (Query[R]) servedBy(*QueryBus) R { return *new(R) }

func (Query[R]) declaration() declaration {
	return declaration{kind: KindQuery, result: reflect.TypeFor[R]()}
}

// Message is satisfied by every message type that declares, by embedding
// [Command], [Query] or [Event], that it is handled on a bus of type B and
// returns R: a type embedding Command[R] is a Message[R, *CommandBus], one
// embedding Query[R] a Message[R, *QueryBus], one embedding Event a
// Message[NoResult, *EventBus]. So is a pointer to such a type.
//
// Message is the constraint of [Send], [Ask], [Handle], [Publish] and
// [Subscribe], through which the compiler infers R from the message and
// refuses the mismatches. Only the markers of this package implement it.
// When a type does not satisfy it, the compiler's message names one of
// its methods, which say what to do: a type that is missing
// mustEmbedCommandQueryOrEvent embeds no marker; one whose servedBy has
// the wrong type is served by another bus, or returns another result,
// than the call needs. docs/compile-errors.md lists each message with its
// cause and its fix.
type Message[R, B any] interface {
	mustEmbedCommandQueryOrEvent()
	servedBy(B) R
}

// Send dispatches the declared command cmd on b and returns its handler's
// result, of the type cmd declares:
//
//	id, err := cqrs.Send(ctx, commands, PlaceOrder{Customer: "c-1"})
//
// No type argument is written: the compiler infers R from cmd's
// [Command] marker. A message that declares no result, a query, and a
// result assigned to a variable of another type are compile errors.
//
// Send is [Dispatch] with the types proven, at the same cost; its errors
// are those of Dispatch. The one mistake the compiler cannot see is a
// command whose handler was never registered ([ErrHandlerNotFound]): see
// [Require] to find those at start-up. A pointer to a declared command is
// a message of its own type, with a handler of its own: sent where the
// handler takes the value, it fails with an error that says "send the
// value, not a pointer".
//
// The type parameter ResultOfEmbeddedCommand is named for the compiler's
// message when cmd embeds no marker, such as a string literal: "cannot
// infer ResultOfEmbeddedCommand".
func Send[C Message[ResultOfEmbeddedCommand, *CommandBus], ResultOfEmbeddedCommand any](ctx context.Context, b *CommandBus, cmd C) (ResultOfEmbeddedCommand, error) {
	return Dispatch[ResultOfEmbeddedCommand](ctx, b, cmd)
}

// Ask dispatches the declared query q on b and returns its handler's
// result, of the type q declares:
//
//	order, err := cqrs.Ask(ctx, queries, GetOrder{ID: "o-1"})
//
// No type argument is written: the compiler infers R from q's [Query]
// marker. A message that declares no result, a command, and a result
// assigned to a variable of another type are compile errors.
//
// Ask is [Dispatch] with the types proven, at the same cost; its errors
// are those of Dispatch, and a pointer is refused as [Send] says.
//
// The type parameter ResultOfEmbeddedQuery is named for the compiler's
// message when q embeds no marker, such as a string literal: "cannot
// infer ResultOfEmbeddedQuery".
func Ask[Q Message[ResultOfEmbeddedQuery, *QueryBus], ResultOfEmbeddedQuery any](ctx context.Context, b *QueryBus, q Q) (ResultOfEmbeddedQuery, error) {
	return Dispatch[ResultOfEmbeddedQuery](ctx, b, q)
}

// Handle registers fn as the handler of the declared message type C on b,
// decorated by mws as [Register] decorates: every type is inferred from fn,
// which may be a plain function or a method value.
//
//	err := cqrs.Handle(queries, svc.GetOrder) // func(context.Context, GetOrder) (Order, error)
//
// The compiler refuses a handler whose result is not the one C declares,
// and a command's handler on a [QueryBus] or a query's on a [CommandBus].
// b must be a *CommandBus or a *QueryBus: through the [Bus] interface the
// bus's kind is unknown to the compiler, and the call does not compile.
//
// Handle fails as Register does: with [ErrNilHandler] for a nil fn,
// [ErrHandlerExists] for a second handler of C.
func Handle[C Message[R, B], R any, B Bus](b B, fn func(ctx context.Context, msg C) (R, error), mws ...Middleware[C, R]) error {
	return Register(b, HandlerFunc[C, R](fn), mws...)
}

// declaration is what a marker says of the message that embeds it.
type declaration struct {
	kind    Kind
	result  reflect.Type // of a stream, its items'
	stream  bool         // declared by StreamQuery
	pointer bool         // the marker is embedded through a pointer: refused
	// ambiguous names the embedded fields that each bring a marker, when
	// there are several at the same depth: refused.
	ambiguous []string
}

// declarer is implemented by every type that embeds a marker.
type declarer interface{ declaration() declaration }

// declaredBy returns what message type t declares, if it embeds a marker.
// It calls no user code: the markers' method runs on a zero value. A
// marker embedded through a pointer (struct{ *cqrs.Command[R] }) is nil in
// that zero value; it is reported as such, to be refused. So is a type
// that embeds two markers at the same depth (a Query and a StreamQuery,
// or two declared messages), which Go gives neither's methods.
func declaredBy(t reflect.Type) (d declaration, ok bool) {
	if t == nil {
		return declaration{}, false
	}
	if !t.Implements(reflect.TypeFor[declarer]()) {
		if fields := markerFields(t, 0); len(fields) > 0 {
			return declaration{ambiguous: fields}, true
		}
		return declaration{}, false
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	defer func() {
		if recover() != nil {
			d, ok = declaration{pointer: true}, true
		}
	}()
	dl, ok := reflect.Zero(t).Interface().(declarer)
	if !ok {
		return declaration{}, false
	}
	return dl.declaration(), true
}

// maxMarkerDepth bounds the search of markerFields, through types that
// embed themselves by pointer among others.
const maxMarkerDepth = 4

// markerFields returns the names of the embedded fields of struct type t,
// or of the struct t points to, that bring a marker: whose type has a
// declaration, or embeds markers deeper. It is called for a t that has
// none, where any such field means that t embeds markers at the same
// depth more than once.
func markerFields(t reflect.Type, depth int) []string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || depth > maxMarkerDepth {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && (f.Type.Implements(reflect.TypeFor[declarer]()) || len(markerFields(f.Type, depth+1)) > 0) {
			out = append(out, f.Name)
		}
	}
	return out
}

// errPointerMarker explains the refusal of a marker embedded by pointer.
func errPointerMarker(t reflect.Type) error {
	return fmt.Errorf("%w: %s embeds its marker through a pointer; embed cqrs.Command, Query, StreamQuery or Event by value",
		ErrInvalidMessageType, t)
}

// errAmbiguousMarkers explains the refusal of a type that embeds several
// markers, described by d.
func errAmbiguousMarkers(t reflect.Type, d declaration) error {
	return fmt.Errorf("%w: %s embeds more than one marker (through its fields %s), so it declares nothing; embed exactly one of cqrs.Command, Query, StreamQuery or Event",
		ErrInvalidMessageType, t, strings.Join(d.ambiguous, ", "))
}

// pointerHint says, for a message of type t that has no handler on b, that
// its handler takes the value where t is a pointer, or a pointer where t is
// a value; it returns "" when neither has a handler. A message's
// pointer satisfies the constraints of [Send] and [Ask] as the message
// does (a pointer's method set includes the value's), so the compiler
// cannot refuse it: this error says what it would have.
func pointerHint(b Bus, t reflect.Type) string {
	if t == nil || t.Kind() == reflect.Interface {
		return ""
	}
	if t.Kind() == reflect.Pointer {
		if find(b, t.Elem()) != nil {
			return "; its handler takes " + t.Elem().String() + ": send the value, not a pointer"
		}
		return ""
	}
	if p := reflect.PointerTo(t); find(b, p) != nil {
		return "; its handler takes " + p.String() + ": send a pointer, not the value"
	}
	return ""
}

// checkDeclared refuses a handler for message type t, returning res, on a
// bus of the given kind when t declares another kind or another result.
func checkDeclared(t reflect.Type, kind Kind, res reflect.Type) error {
	d, ok := declaredBy(t)
	switch {
	case !ok:
		return nil
	case d.pointer:
		return errPointerMarker(t)
	case d.ambiguous != nil:
		return errAmbiguousMarkers(t, d)
	case d.stream:
		return fmt.Errorf("%w: %s is declared a streaming query; register it with HandleStream or RegisterStream",
			ErrInvalidMessageType, t)
	case d.kind != kind:
		return fmt.Errorf("%w: %s is declared for the %s bus; it cannot be registered on the %s bus",
			ErrInvalidMessageType, t, d.kind, kind)
	case d.result != res:
		return fmt.Errorf("%w: %s declares the result %s; its handler returns %s",
			ErrResultType, t, d.result, res)
	}
	return nil
}

// Require checks at start-up what the compiler cannot: that b has a
// handler for every message a service will send it. It returns nil when
// it has; otherwise one error naming every message type that b cannot
// dispatch, which matches [ErrHandlerNotFound] when a handler is missing
// and [ErrInvalidMessageType] when a message declares another kind than
// b's (a query required of a command bus).
//
// Each of msgs is a value of a message type (its zero value will do) or a
// [reflect.Type]:
//
//	if err := cqrs.Require(commands, PlaceOrder{}, CancelOrder{}, (*Refund)(nil)); err != nil {
//		log.Fatal(err) // cqrs: the command bus cannot dispatch 1 of 3 message types: …
//	}
//
// A nil b fails with [ErrNilBus], a nil interface in msgs with
// [ErrNilMessage]. Require is safe to call while other goroutines register
// handlers or dispatch.
func Require(b Bus, msgs ...any) error {
	c := coreOf(b)
	if c == nil {
		return fmt.Errorf("%w: checking handlers", ErrNilBus)
	}
	kind := b.Kind()
	var errs []error
	for i, m := range msgs {
		t, ok := m.(reflect.Type)
		if !ok {
			t = reflect.TypeOf(m)
		}
		if t == nil {
			errs = append(errs, fmt.Errorf("%w: message %d is a nil interface", ErrNilMessage, i))
			continue
		}
		if err := requireOne(b, kind, t); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &requireError{kind: kind, total: len(msgs), errs: errs}
}

// requireOne checks that b, of the given kind, can dispatch messages of
// type t. A declared message's result need not be checked: Register
// refuses a handler that does not return it.
func requireOne(b Bus, kind Kind, t reflect.Type) error {
	d, ok := declaredBy(t)
	switch {
	case ok && d.pointer:
		return errPointerMarker(t)
	case ok && d.ambiguous != nil:
		return errAmbiguousMarkers(t, d)
	case ok && d.kind != kind:
		return fmt.Errorf("%s is declared for the %s bus: %w", t, d.kind, ErrInvalidMessageType)
	case find(b, t) == nil:
		return fmt.Errorf("%s: %w%s", t, ErrHandlerNotFound, pointerHint(b, t))
	}
	return nil
}

// requireError is the error of [Require]: one line per message type that
// cannot be dispatched, matching each of their sentinels.
type requireError struct {
	kind  Kind
	total int
	errs  []error
}

func (e *requireError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "cqrs: the %s bus cannot dispatch %d of %d message types", e.kind, len(e.errs), e.total)
	for _, err := range e.errs {
		sb.WriteString("\n\t")
		sb.WriteString(err.Error())
	}
	return sb.String()
}

func (e *requireError) Unwrap() []error { return e.errs }
