// Package orders has a message type whose printed name, orders.Place, is
// the same as that of its twin in the other tree: the tests use the two to
// check that per-type state is keyed by the type, not by its name.
package orders

// Place is a command; its twin in the other package prints alike.
type Place struct{ ID int }
