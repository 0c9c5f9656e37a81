// Ratio reads the output of several interleaved benchmark passes and
// prints, for each row named, the median of its per-pass ratios to a base
// row: on a machine whose load changes from second to second, two rows of
// one pass ran under the same load, where two medians of -count=6 runs did
// not.
//
//	go test -c -o bench.test ./benchmarks
//	for i in 1 2 3 4 5 6; do (cd benchmarks && ../bench.test -test.run '^$' -test.bench . -test.benchtime=100ms); done > passes.txt
//	go run ./benchmarks/ratio -base Dispatch/Dispatch Dispatch/DispatchInterceptor1 Dispatch/DispatchMetrics < passes.txt
//
// A pass ends where a row comes again. It needs only the standard library.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/typedcqrs/dispatch/benchmarks/internal/benchfmt"
)

func main() {
	base := flag.String("base", "", "the row every other is divided by, such as Dispatch/Dispatch")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *base, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "ratio:", err)
		os.Exit(1)
	}
}

func run(r io.Reader, w io.Writer, base string, rows []string) error {
	if base == "" || len(rows) == 0 {
		return errors.New("usage: ratio -base ROW ROW... < benchmark output")
	}
	passes, err := parse(r)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%d passes; ratio to %s: median (min, max) of the per-pass ratios\n", len(passes), base)
	for _, row := range rows {
		ratios := ratiosOf(passes, base, row)
		if len(ratios) == 0 {
			return fmt.Errorf("no pass has both %s and %s", base, row)
		}
		fmt.Fprintf(w, "%-45s %6.2f (%.2f, %.2f)\n", row, benchfmt.Median(ratios), slices.Min(ratios), slices.Max(ratios))
	}
	return nil
}

// parse splits benchmark output into passes, each the ns/op of its rows.
// A pass ends where a row comes again.
func parse(r io.Reader) ([]map[string]float64, error) {
	passes := []map[string]float64{{}}
	err := benchfmt.Rows(r, func(name string, ns float64) {
		if _, again := passes[len(passes)-1][name]; again {
			passes = append(passes, map[string]float64{})
		}
		passes[len(passes)-1][name] = ns
	})
	if err != nil {
		return nil, err
	}
	return passes, nil
}

// ratiosOf returns row / base in each pass that has both.
func ratiosOf(passes []map[string]float64, base, row string) []float64 {
	var out []float64
	for _, p := range passes {
		b, okB := p[base]
		v, okV := p[row]
		if okB && okV && b > 0 {
			out = append(out, v/b)
		}
	}
	return out
}
