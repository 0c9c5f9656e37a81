//go:build race

package cqrs_test

// raceEnabled reports a build with the race detector, under which a
// sync.Pool drops a quarter of what it is given, on purpose, so pooled
// values are allocated again now and then.
const raceEnabled = true
