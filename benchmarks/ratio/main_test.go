package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Three passes; the machine is twice as slow in the second, so the rows'
// medians are far apart but every per-pass ratio is 2 or 3.
const passes = `goos: linux
BenchmarkDispatch/Dispatch-2       	100	        10 ns/op	       0 B/op	       0 allocs/op
BenchmarkDispatch/Slow-2           	100	        20 ns/op
PASS
BenchmarkDispatch/Dispatch-2       	100	        40 ns/op
BenchmarkDispatch/Slow-2           	100	        80 ns/op
PASS
BenchmarkDispatch/Dispatch-2       	100	        10 ns/op
BenchmarkDispatch/Slow-2           	100	        30 ns/op
PASS
`

func TestRatiosArePerPass(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(strings.NewReader(passes), &out, "Dispatch/Dispatch", []string{"Dispatch/Slow"}))
	assert.Contains(t, out.String(), "3 passes")
	assert.Regexp(t, `Dispatch/Slow\s+2\.00 \(2\.00, 3\.00\)`, out.String())
}

func TestRatioErrors(t *testing.T) {
	var out bytes.Buffer
	assert.Error(t, run(strings.NewReader(passes), &out, "", []string{"Dispatch/Slow"}), "no base")
	assert.ErrorContains(t, run(strings.NewReader(passes), &out, "Dispatch/Dispatch", []string{"Dispatch/Missing"}), "no pass has both")
}
