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

const sample = `goos: linux
BenchmarkDispatch/Direct-2         	77493823	         3.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkDispatch/Direct-2         	77493823	         4.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkDispatch/Direct-2         	77493823	         9.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkDispatch/StringMap-2      	4480136	        50 ns/op
BenchmarkDispatch/StringMap-2      	4480136	        60 ns/op
BenchmarkDispatch/Dispatch-2       	15767455	        14 ns/op
BenchmarkDeclared/QueryAsk-2       	15767455	        14 ns/op
BenchmarkDispatch/ExecuteTyped-2   	6484570	        35 ns/op
BenchmarkDispatch/DispatchInterceptor3-2   	6484570	        30 ns/op
BenchmarkDispatch/DispatchMetrics-2   	6484570	        60 ns/op
BenchmarkCache/Hit-2               	6484570	        55 ns/op
BenchmarkMiddleware/FullStack-2    	139466	      1600 ns/op
PASS
`

func TestParseTakesMedians(t *testing.T) {
	got, err := parse(strings.NewReader(sample))
	require.NoError(t, err)
	assert.InDelta(t, 4.0, got["Dispatch/Direct"], 0, "median of 3, 4, 9")
	assert.InDelta(t, 55.0, got["Dispatch/StringMap"], 0, "median of an even count")
	assert.InDelta(t, 1600.0, got["Middleware/FullStack"], 0)
}

func TestDraw(t *testing.T) {
	results, err := parse(strings.NewReader(sample))
	require.NoError(t, err)
	var svg bytes.Buffer
	require.NoError(t, draw(&svg, results))
	out := svg.String()
	assert.True(t, strings.HasPrefix(out, "<svg "))
	assert.Equal(t, len(bars)+1, strings.Count(out, "<rect "), "a background and one bar each")
	assert.Contains(t, out, "cqrs.Dispatch")
	assert.Contains(t, out, "1600 ns")
	assert.Contains(t, out, ">1000<", "log-scale grid up to the next power of ten")

	delete(results, "Cache/Hit")
	require.ErrorContains(t, draw(&svg, results), "no results for Cache/Hit")
}
