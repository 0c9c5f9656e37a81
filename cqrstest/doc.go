// Package cqrstest helps test applications built on package cqrs: it
// records what the buses carry, stubs handlers, runs given/when/then
// scenarios, waits for asynchronous deliveries, and injects faults. It
// uses only the exported API of package cqrs and the standard library,
// and reports failures to a [testing.TB], so it adds no module to a test
// build's dependencies.
//
// # Recording
//
// A [Recorder] is a [cqrs.Interceptor]: given to the application's own
// buses, it records every command sent, query asked and event delivered,
// which the typed readers return as typed slices:
//
//	rec := cqrstest.NewRecorder(t)
//	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(rec))
//	…
//	cqrstest.Sent[PlaceOrder](rec)                // []PlaceOrder
//	cqrstest.Published[OrderPlaced](rec)          // []OrderPlaced, once per publish
//	cqrstest.Delivered[OrderPlaced](rec, "email") // what the email subscriber handled
//	cqrstest.Calls[PlaceOrder](rec)               // with identities, results and errors
//
// A [Harness] makes the three buses, recorded, for one test.
//
// # Stubs
//
// [Stub], [Returns] and [Fails] register a stand-in handler of one
// declared message type, inferring every type they can, and return what
// it received; [Sink] subscribes a stand-in subscriber to an event:
//
//	place := cqrstest.Returns[PlaceOrder](t, commands, OrderID(7))
//	cqrstest.Fails[GetStock](t, queries, ErrWarehouseDown)
//	placed := cqrstest.Sink[OrderPlaced](t, events)
//
// # Given, when, then
//
// A [Harness] runs a scenario in the manner of Axon's test fixtures: the
// given messages set the scene, the message under test is dispatched, and
// what it caused to be published or sent is compared with what is
// expected, the differences printed with their types:
//
//	h.Given(AccountOpened{ID: 1}).
//		When(Deposit{Account: 1, Amount: 100}).
//		Then(Deposited{Account: 1, Amount: 100})
//
// The message under test starts a conversation of its own
// ([cqrs.Identity]), so what it caused is told from everything else the
// buses carry, even while other goroutines use them.
//
// # Asynchronous deliveries
//
// The [cqrs.Async] strategy delivers events on the bus's own goroutines,
// after Publish has returned. [Recorder.Await] waits for a condition,
// checked each time the recorder records a call, and [AwaitPublished] for
// n events delivered to every subscriber; neither needs Close or a sleep.
// Each is bounded by a timeout ([DefaultTimeout]). Inside a
// testing/synctest bubble they wait in the bubble's time: a retry's
// backoff is waited for at no cost, and what can no longer happen fails
// at once. There, synctest.Wait also lets every delivery that can run
// run, until every goroutine of the bubble is blocked: the way to check
// that an event was not published.
//
// # Faults
//
// [Faults] is an interceptor that makes chosen calls fail, fail as a
// panicking handler does, wait, or reach the handler twice with the same
// identity, counted per message type and per handler:
//
//	cqrstest.On[PlaceOrder](h.Faults).Nth(2).Fail(ErrDatabaseDown)
//	cqrstest.On[OrderPlaced](h.Faults).To("email").Duplicate()
//
// so that retries, timeouts and idempotent consumers are tested with the
// real handlers.
package cqrstest
