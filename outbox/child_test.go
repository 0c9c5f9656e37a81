package outbox_test

import (
	"fmt"
	"os"
)

// childEnv names the variable that makes the test binary a child process
// of a fault test: its value is the role.
const childEnv = "OUTBOX_TEST_CHILD"

// child runs the role of a child process and returns its exit code.
func child(role string) int {
	switch role {
	case "relay":
		return relayChild()
	case "consumer":
		return consumerChild()
	default:
		fmt.Fprintln(os.Stderr, "unknown child role", role)
		return 2
	}
}
