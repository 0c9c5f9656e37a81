package cqrstest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Scenario is the "given" part of a given/when/then test on a [Harness],
// made by [Harness.Given]: messages that set the scene before the message
// under test. Its methods must be called from the test's goroutine. Its
// zero value is not usable.
type Scenario struct {
	h     *Harness
	given []any
	set   bool // the given messages have been dispatched
}

// Given starts a scenario, in the manner of Axon's test fixtures: msgs
// are dispatched, in order, when [Scenario.When] is first called, before
// its message (a second When on the same Scenario does not dispatch them
// again); events are published to their subscribers synchronously,
// whatever the event bus's strategy, so that the state they build is
// there when the message under test arrives, and commands are sent. Their
// failures fail the test; what they publish is not part of the outcome.
//
//	h.Given(AccountOpened{ID: 1}, Deposited{Account: 1, Amount: 100}).
//		When(Withdraw{Account: 1, Amount: 30}).
//		Then(Withdrawn{Account: 1, Amount: 30})
func (h *Harness) Given(msgs ...any) *Scenario {
	return &Scenario{h: h, given: msgs}
}

// When is Given with nothing given: h.When(msg) is h.Given().When(msg).
func (h *Harness) When(msg any) *Outcome {
	h.t.Helper()
	return h.Given().When(msg)
}

// Outcome is what the message under test of a scenario did, made by
// [Scenario.When]: the assertions Then, ThenSent, ThenReturns and
// ThenError check it, and Result and Err return it. Each assertion
// reports a failure with t.Errorf and returns the Outcome, so that they
// can be chained. Its methods must be called from the test's goroutine.
// Its zero value is not usable.
type Outcome struct {
	h      *Harness
	msg    any
	id     string
	result any
	err    error
}

// When dispatches the given messages, then msg, the message under test,
// and returns its outcome. msg is sent on the command bus if that bus has
// a handler for its type, else asked of the query bus if that one has,
// else published on the event bus (with the bus's strategy) if it is an
// event: declared with [cqrs.Event], or subscribed to on the event bus.
// Any other message fails the test with t.Fatalf, as does a given
// message that fails.
//
// msg is dispatched with a new [cqrs.Identity] of its own, the root of a
// conversation: what its handler sends and publishes from the context it
// is given, and what their handlers do in turn, carries its ID as their
// CorrelationID, which is how [Outcome.Then] tells them from other
// messages. (A message sent from another context, such as
// context.Background(), starts a conversation of its own, and is not part
// of the outcome.)
func (s *Scenario) When(msg any) *Outcome {
	h := s.h
	h.t.Helper()
	ctx := h.t.Context()
	if !s.set {
		s.set = true
		for i, g := range s.given {
			if _, err := h.dispatch(ctx, g, cqrs.Sequential()); err != nil {
				h.t.Fatalf("cqrstest: Given message %d, %s: %v", i+1, show(g), err)
				return &Outcome{h: h, msg: msg, err: err}
			}
		}
	}
	id := cqrs.NewID()
	o := &Outcome{h: h, msg: msg, id: id}
	o.result, o.err = h.dispatch(cqrs.ContextWithIdentity(ctx, cqrs.Identity{ID: id}), msg, cqrs.Strategy{})
	if errors.Is(o.err, errNotRoutable) {
		h.t.Fatalf("cqrstest: When %s: %v", show(msg), o.err)
	}
	if o.err != nil && o.result == nil {
		// Execute drops the result of a handler that failed; the
		// recorder, first of the interceptors, has it.
		o.result = h.Recorder.resultOf(id)
	}
	return o
}

// errNotRoutable marks a message the harness has no bus for.
var errNotRoutable = errors.New("cqrstest: no bus of the harness takes this message")

// dispatch sends, asks or publishes msg on the bus that takes it; an event
// with strategy s.
func (h *Harness) dispatch(ctx context.Context, msg any, s cqrs.Strategy) (any, error) {
	t := reflect.TypeOf(msg)
	if t == nil {
		return nil, fmt.Errorf("%w: a nil message", errNotRoutable)
	}
	has := func(specs []cqrs.Spec) bool {
		return slices.ContainsFunc(specs, func(s cqrs.Spec) bool { return s.MessageType == t })
	}
	_, declaredEvent := msg.(cqrs.Message[cqrs.NoResult, *cqrs.EventBus])
	switch {
	case has(h.Commands.Specs()):
		return h.Commands.Execute(ctx, msg)
	case has(h.Queries.Specs()):
		return h.Queries.Execute(ctx, msg)
	case declaredEvent || has(h.Events.Specs()):
		return nil, h.Events.PublishWith(ctx, s, msg)
	}
	return nil, fmt.Errorf("%w: %s has no handler on the command or query bus, and is not an event: register its handler first", errNotRoutable, t)
}

// Result returns what the message under test's handler returned, as
// [cqrs.Send] returns it: with an error too, if the handler returned
// both. For a message that an interceptor refused before its handler (a
// fault of the harness's [Faults]) it is the zero value of the result
// type; it is nil for an event.
func (o *Outcome) Result() any { return o.result }

// Err returns the error the message under test's dispatch returned.
func (o *Outcome) Err() error { return o.err }

// Then checks that the events the message under test caused to be
// published (by its handler, and by the handlers of what that sent and
// published in turn, in the order of their first deliveries) are events,
// in that order: each equal, as [reflect.DeepEqual] compares, to the one
// expected in its place. No events checks that none was published. A
// failure shows the differences, expected (-) and got (+), with their
// types, and the error of the message under test if it failed. Then
// checks the events only: chain [Outcome.ThenError] or
// [Outcome.ThenReturns] to check that it succeeded, or how it failed.
//
// A publish is recorded as it is delivered: an event with no subscriber
// cannot be seen (subscribe a [Sink] to it). So that an asynchronous
// strategy's events are seen, Then first waits, as [Recorder.Await]
// does, until as many events as expected have been published and
// delivered to every subscriber, so that what the subscribers did is
// done when it returns: a Then that fails for want of events fails after
// the recorder's timeout (inside a testing/synctest bubble, at once). It
// cannot wait for events that should not come: to check that none
// follows, inside a bubble call synctest.Wait first, which lets every
// delivery that can run run.
func (o *Outcome) Then(events ...any) *Outcome {
	o.h.t.Helper()
	o.expect("the events published", cqrs.KindEvent, events)
	return o
}

// ThenSent checks that the commands the message under test caused to be
// sent (by its handler, or by subscribers of the events it published: a
// process manager's or saga's) are cmds, in the order they were sent, as
// [Outcome.Then] checks events.
func (o *Outcome) ThenSent(cmds ...any) *Outcome {
	o.h.t.Helper()
	o.expect("the commands sent", cqrs.KindCommand, cmds)
	return o
}

// ThenReturns checks that the message under test succeeded and that its
// handler returned want, as [reflect.DeepEqual] compares: of the same
// type and value.
func (o *Outcome) ThenReturns(want any) *Outcome {
	o.h.t.Helper()
	if o.err != nil {
		o.h.t.Errorf("cqrstest: When %s: failed: %v; want the result %s", show(o.msg), o.err, show(want))
	} else if !reflect.DeepEqual(o.result, want) {
		o.h.t.Errorf("cqrstest: When %s: the result differs (-want +got):\n%s", show(o.msg), diff([]any{want}, []any{o.result}))
	}
	return o
}

// ThenError checks that the message under test failed with an error that
// matches target, as [errors.Is] matches; a nil target checks that it
// succeeded.
func (o *Outcome) ThenError(target error) *Outcome {
	o.h.t.Helper()
	switch {
	case target == nil && o.err != nil:
		o.h.t.Errorf("cqrstest: When %s: failed: %v; want success", show(o.msg), o.err)
	case target != nil && o.err == nil:
		o.h.t.Errorf("cqrstest: When %s: succeeded; want an error matching %q", show(o.msg), target)
	case target != nil && !errors.Is(o.err, target):
		o.h.t.Errorf("cqrstest: When %s: failed with %q (%T), which does not match %q", show(o.msg), o.err, o.err, target)
	}
	return o
}

// expect checks that the messages of the given kind the message under
// test caused are want.
func (o *Outcome) expect(what string, kind cqrs.Kind, want []any) {
	t := o.h.t
	t.Helper()
	rec := o.h.Recorder
	var got []any
	var err error
	caused := func(c *record) bool {
		return c.hasID && c.id.CorrelationID == o.id && c.id.ID != o.id
	}
	collect := func() bool {
		var ended bool
		got, ended, err = o.caused(kind, caused)
		return err != nil || (len(got) >= len(want) && ended)
	}
	rec.await(collect)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	if equal(want, got) {
		return
	}
	msg := fmt.Sprintf("cqrstest: When %s: %s differ (-want +got):\n%s", show(o.msg), what, diff(want, got))
	if o.err != nil {
		msg += fmt.Sprintf("\nnote: it failed: %v", o.err)
	}
	if kind == cqrs.KindEvent {
		msg += o.unseen(want)
	}
	t.Errorf("%s", msg)
}

// caused returns the messages of the given kind recorded for the calls
// keep selects, one per publish for events, and whether all of them have
// ended: every command returned, every event delivered to every
// subscriber.
func (o *Outcome) caused(kind cqrs.Kind, keep func(*record) bool) (out []any, ended bool, err error) {
	rec := o.h.Recorder
	ended = true
	if kind == cqrs.KindEvent {
		groups, err := rec.publishes(reflect.TypeFor[any](), keep)
		for _, g := range groups {
			out = append(out, g.msg)
			ended = ended && g.complete
		}
		return out, ended, err
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, c := range rec.calls {
		if c.spec.Kind == kind && keep(c) {
			out = append(out, c.msg)
			ended = ended && c.done
		}
	}
	return out, ended, nil
}

// unseen explains why an expected event whose type no subscriber takes
// cannot have been seen.
func (o *Outcome) unseen(want []any) string {
	rec := o.h.Recorder
	var sb strings.Builder
	seen := map[reflect.Type]bool{}
	for _, w := range want {
		t := reflect.TypeOf(w)
		if t == nil || seen[t] {
			continue
		}
		seen[t] = true
		if len(rec.subscribersOf(t)) == 0 {
			fmt.Fprintf(&sb, "\nnote: %s has no subscriber on the event bus, and an event is recorded as it is delivered: subscribe one, such as cqrstest.Sink[%s](t, h.Events)", t, t)
		}
	}
	return sb.String()
}

// equal reports whether got holds what want holds, in order.
func equal(want, got []any) bool {
	return slices.EqualFunc(want, got, func(w, g any) bool { return reflect.DeepEqual(w, g) })
}

// show formats a message with its type: main.OrderPlaced{Order:1},
// &main.OrderPlaced{Order:1}, main.OrderID(7).
func show(v any) string {
	if v == nil {
		return "<nil>"
	}
	t, s := reflect.TypeOf(v), fmt.Sprintf("%+v", v)
	switch {
	case strings.HasPrefix(s, "{"):
		return t.String() + s
	case strings.HasPrefix(s, "&{") && t.Kind() == reflect.Pointer:
		return "&" + t.Elem().String() + s[1:]
	default:
		return t.String() + "(" + s + ")"
	}
}

// diff shows how got differs from want, a line per message: unchanged
// ones indented, those only in want marked "-", those only in got "+",
// after the longest common subsequence. Values that print alike but
// differ are shown with %#v.
func diff(want, got []any) string {
	// lcs[i][j] is the length of the longest common subsequence of
	// want[i:] and got[j:].
	lcs := make([][]int, len(want)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(got)+1)
	}
	for i := len(want) - 1; i >= 0; i-- {
		for j := len(got) - 1; j >= 0; j-- {
			if reflect.DeepEqual(want[i], got[j]) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		mark byte
		v    any
	}
	var lines []line
	i, j := 0, 0
	for i < len(want) || j < len(got) {
		switch {
		case i < len(want) && j < len(got) && reflect.DeepEqual(want[i], got[j]):
			lines = append(lines, line{' ', want[i]})
			i, j = i+1, j+1
		case j == len(got) || (i < len(want) && lcs[i+1][j] >= lcs[i][j+1]):
			lines = append(lines, line{'-', want[i]})
			i++
		default:
			lines = append(lines, line{'+', got[j]})
			j++
		}
	}
	if len(lines) == 0 {
		return "  (none)"
	}
	format := show
	removed := map[string]bool{}
	for _, l := range lines {
		if l.mark == '-' {
			removed[show(l.v)] = true
		}
	}
	for _, l := range lines {
		if l.mark == '+' && removed[show(l.v)] {
			format = func(v any) string { return fmt.Sprintf("%#v", v) }
			break
		}
	}
	var sb strings.Builder
	for k, l := range lines {
		if k > 0 {
			sb.WriteByte('\n')
		}
		sb.WriteByte(l.mark)
		sb.WriteByte(' ')
		sb.WriteString(format(l.v))
	}
	return sb.String()
}
