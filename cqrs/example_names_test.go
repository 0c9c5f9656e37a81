package cqrs_test

import (
	"context"
	"fmt"

	"github.com/typedcqrs/dispatch/cqrs"
	aorders "github.com/typedcqrs/dispatch/cqrs/internal/testtypes/a/orders"
	borders "github.com/typedcqrs/dispatch/cqrs/internal/testtypes/b/orders"
)

// Two packages named orders each have a Place command. On one bus the
// second registered is named by its import path; on any bus, Spec.Key
// tells them apart.
func ExampleSpec_Key() {
	commands := cqrs.NewCommandBus()
	_ = cqrs.Register(commands, cqrs.HandlerFunc[aorders.Place, cqrs.NoResult](noop[aorders.Place]))
	_ = cqrs.Register(commands, cqrs.HandlerFunc[borders.Place, cqrs.NoResult](noop[borders.Place]))
	for _, spec := range commands.Specs() {
		fmt.Printf("%s\n\t%s\n", spec, spec.Key())
	}
	_, err := cqrs.Dispatch[cqrs.NoResult](context.Background(), commands, borders.Place{})
	fmt.Println(err)
	// Output:
	// command github.com/typedcqrs/dispatch/cqrs/internal/testtypes/b/orders.Place
	// 	command github.com/typedcqrs/dispatch/cqrs/internal/testtypes/b/orders.Place
	// command orders.Place
	// 	command github.com/typedcqrs/dispatch/cqrs/internal/testtypes/a/orders.Place
	// <nil>
}

// Two buses, each with one of the two Place commands: each keeps its
// short name, and FullName is what tells them apart in a report that
// shows both.
func ExampleFullName() {
	one, two := cqrs.NewCommandBus(), cqrs.NewCommandBus()
	_ = cqrs.Register(one, cqrs.HandlerFunc[aorders.Place, cqrs.NoResult](noop[aorders.Place]))
	_ = cqrs.Register(two, cqrs.HandlerFunc[borders.Place, cqrs.NoResult](noop[borders.Place]))
	for _, spec := range append(one.Specs(), two.Specs()...) {
		fmt.Println(spec.Name, "=", cqrs.FullName(spec))
	}
	// Output:
	// orders.Place = github.com/typedcqrs/dispatch/cqrs/internal/testtypes/a/orders.Place
	// orders.Place = github.com/typedcqrs/dispatch/cqrs/internal/testtypes/b/orders.Place
}
