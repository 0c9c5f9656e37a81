// Package benchfmt reads the rows of `go test -bench` output, for the
// small tools in benchmarks/ that turn it into ratios and charts. It needs
// only the standard library.
package benchfmt

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
)

// row matches "BenchmarkName-8   1000   12.3 ns/op ...".
var row = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

// Rows calls fn with the name (without "Benchmark" and the -GOMAXPROCS
// suffix) and the ns/op of each benchmark row of r, in order, and skips
// every other line.
func Rows(r io.Reader, fn func(name string, ns float64)) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := row.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ns, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return fmt.Errorf("%q: %w", sc.Text(), err)
		}
		fn(m[1], ns)
	}
	return sc.Err()
}

// Median returns the median of xs, which must not be empty, without
// changing xs.
func Median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	mid := len(s) / 2
	if len(s)%2 == 0 {
		return (s[mid-1] + s[mid]) / 2
	}
	return s[mid]
}
