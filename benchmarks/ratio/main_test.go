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

// In every pass Slow is twice Dispatch: within a budget of 2*Dispatch,
// over one of 1.5*Dispatch, and exactly one of Dispatch+Dispatch.
func TestBudgets(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, runBudgets(strings.NewReader(passes), &out, []string{
		"Dispatch/Slow<=2.5*Dispatch/Dispatch",
		"Dispatch/Slow<=Dispatch/Dispatch+0.5*Dispatch/Dispatch",
	}))
	assert.Contains(t, out.String(), "3 passes")
	assert.Regexp(t, `Dispatch/Slow<=2\.5\*Dispatch/Dispatch\s+0\.80 \(0\.80, 1\.20\)`, out.String())
	assert.Regexp(t, `Dispatch/Slow<=Dispatch/Dispatch\+0\.5\*Dispatch/Dispatch\s+1\.33 \(1\.33, 2\.00\)`, out.String())
}

func TestBudgetErrors(t *testing.T) {
	var out bytes.Buffer
	for _, bad := range []string{"Dispatch/Slow", "Dispatch/Slow<=", "<=Dispatch/Dispatch", "Dispatch/Slow<=x*Dispatch/Dispatch", "Dispatch/Slow<=-1*Dispatch/Dispatch", "Dispatch/Slow<=Dispatch/Dispatch+"} {
		assert.Error(t, runBudgets(strings.NewReader(passes), &out, []string{bad}), bad)
	}
	assert.ErrorContains(t, runBudgets(strings.NewReader(passes), &out, []string{"Dispatch/Slow<=Dispatch/Missing"}), "no pass has every row")
	assert.Error(t, runBudgets(strings.NewReader(passes), &out, nil), "no budget")
}
