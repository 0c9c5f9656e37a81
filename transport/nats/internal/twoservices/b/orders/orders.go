// Package orders is service B's message: the same short name,
// orders.Place, as the other service's, in another package, for the tests
// of two services sharing one NATS.
package orders

// Place is service B's command.
type Place struct {
	ID int `json:"id"`
}

// Placed is its result: which service handled it.
type Placed struct {
	ID      int    `json:"id"`
	Service string `json:"service"`
}
