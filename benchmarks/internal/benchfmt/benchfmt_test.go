package benchfmt

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRows(t *testing.T) {
	out := `goos: linux
BenchmarkDispatch/Dispatch-2   	 6122677	        19.13 ns/op	       0 B/op	       0 allocs/op
BenchmarkPublish/subscribers=8/Loop        1000	        20.5 ns/op
PASS
BenchmarkBroken-2   10   x ns/op
`
	type got struct {
		name string
		ns   float64
	}
	var rows []got
	err := Rows(strings.NewReader(out), func(name string, ns float64) { rows = append(rows, got{name, ns}) })
	require.NoError(t, err, "a line whose ns/op is not a number is not a row")
	assert.Equal(t, []got{{"Dispatch/Dispatch", 19.13}, {"Publish/subscribers=8/Loop", 20.5}}, rows)

	err = Rows(strings.NewReader("BenchmarkX-2 10 1.2.3 ns/op\n"), func(string, float64) {})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1.2.3")
}

func TestMedian(t *testing.T) {
	xs := []float64{3, 1, 2}
	assert.Equal(t, 2.0, Median(xs))
	assert.Equal(t, []float64{3, 1, 2}, xs, "Median leaves its argument as it was")
	assert.Equal(t, 2.5, Median([]float64{4, 1, 3, 2}))
}
