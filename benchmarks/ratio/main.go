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
// With -budget, each argument is a row and what it may cost, as a sum of
// rows each times a factor, and it prints the median of the per-pass
// quotients: at most 1 means the row is within its budget in most passes.
// Issue #21's targets are such sums (a dispatch with metrics: the bare
// dispatch, two clock readings and half a bare dispatch more):
//
//	go run ./benchmarks/ratio -budget 'Middleware/Metrics<=1.5*Middleware/Bare+2*Middleware/PartNow' < passes.txt
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
	"strconv"
	"strings"

	"github.com/typedcqrs/dispatch/benchmarks/internal/benchfmt"
)

func main() {
	base := flag.String("base", "", "the row every other is divided by, such as Dispatch/Dispatch")
	budget := flag.Bool("budget", false, "each argument is ROW<=K*ROW+K*ROW...: print ROW over that sum")
	flag.Parse()
	var err error
	if *budget {
		err = runBudgets(os.Stdin, os.Stdout, flag.Args())
	} else {
		err = run(os.Stdin, os.Stdout, *base, flag.Args())
	}
	if err != nil {
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

// term is one part of a budget: factor times the ns/op of a row.
type term struct {
	factor float64
	row    string
}

// parseBudget reads ROW<=K*ROW+ROW+...: the row, and the terms of what it
// may cost; a term without a factor counts once.
func parseBudget(arg string) (string, []term, error) {
	row, sum, ok := strings.Cut(arg, "<=")
	if !ok || row == "" || sum == "" {
		return "", nil, fmt.Errorf("budget %q: want ROW<=K*ROW+ROW and so on", arg)
	}
	var terms []term
	for part := range strings.SplitSeq(sum, "+") {
		t := term{factor: 1, row: part}
		if k, name, ok := strings.Cut(part, "*"); ok {
			f, err := strconv.ParseFloat(k, 64)
			if err != nil || f <= 0 {
				return "", nil, fmt.Errorf("budget %q: factor %q is not a positive number", arg, k)
			}
			t = term{factor: f, row: name}
		}
		if t.row == "" {
			return "", nil, fmt.Errorf("budget %q: an empty row", arg)
		}
		terms = append(terms, t)
	}
	return row, terms, nil
}

// runBudgets prints, for each budget, the median (min, max) of the row's
// ns/op over its budget's, pass by pass.
func runBudgets(r io.Reader, w io.Writer, budgets []string) error {
	if len(budgets) == 0 {
		return errors.New("usage: ratio -budget 'ROW<=K*ROW+ROW' ... < benchmark output")
	}
	type parsed struct {
		arg   string
		row   string
		terms []term
	}
	var all []parsed
	for _, arg := range budgets {
		row, terms, err := parseBudget(arg)
		if err != nil {
			return err
		}
		all = append(all, parsed{arg, row, terms})
	}
	passes, err := parse(r)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%d passes; each row over its budget: median (min, max) of the per-pass quotients, at most 1 within it\n", len(passes))
	for _, b := range all {
		var qs []float64
	pass:
		for _, p := range passes {
			v, ok := p[b.row]
			if !ok {
				continue
			}
			var sum float64
			for _, t := range b.terms {
				ns, ok := p[t.row]
				if !ok {
					continue pass
				}
				sum += t.factor * ns
			}
			if sum > 0 {
				qs = append(qs, v/sum)
			}
		}
		if len(qs) == 0 {
			return fmt.Errorf("no pass has every row of %s", b.arg)
		}
		fmt.Fprintf(w, "%-45s %6.2f (%.2f, %.2f)\n", b.arg, benchfmt.Median(qs), slices.Min(qs), slices.Max(qs))
	}
	return nil
}
