package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The demo's child process is this test binary, run as the subscriber.
	if os.Getenv("OUTBOX_EXAMPLE_CHILD") == "1" {
		os.Args = append([]string{os.Args[0]}, childArgs()...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// childArgs returns the demo's flags given to the test binary.
func childArgs() []string {
	var out []string
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-test.") {
			out = append(out, a)
		}
	}
	return out
}

// TestDemoOnSQLite places two orders, the second twice: the subscriber
// process gets each OrderPlaced once.
func TestDemoOnSQLite(t *testing.T) {
	var out strings.Builder
	require.NoError(t, demo("", &out))
	assert.Equal(t, "email: order 1 placed for ada\nemail: order 2 placed for grace\n", out.String())
}
