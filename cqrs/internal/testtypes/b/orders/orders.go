// Package orders is one of two test packages of the same name whose
// message types print alike: a/orders.Place and b/orders.Place.
package orders

// Place is a command whose %T name, "orders.Place", is also that of
// a/orders.Place.
type Place struct{ SKU string }
