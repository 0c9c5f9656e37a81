// Chart draws the dispatch-cost chart of docs/benchmarks.md from the
// output of the benchmarks, as an SVG bar chart on a logarithmic scale:
//
//	go test ./benchmarks -run '^$' -bench . -count=6 | go run ./benchmarks/chart > docs/dispatch-cost.svg
//
// Each bar is the median ns/op of one benchmark over the runs given. It
// needs only the standard library, so that regenerating the chart pulls no
// plotting library into anyone's module graph.
package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/typedcqrs/dispatch/benchmarks/internal/benchfmt"
)

// bars are the benchmarks drawn, in order, with their labels.
var bars = []struct{ bench, label string }{
	{"Dispatch/Direct", "direct call"},
	{"Dispatch/StringMap", "map[string] baseline"},
	{"Dispatch/Dispatch", "cqrs.Dispatch"},
	{"Declared/QueryAsk", "cqrs.Ask (declared)"},
	{"Dispatch/ExecuteTyped", "cqrs.ExecuteTyped"},
	{"Dispatch/DispatchInterceptor3", "Dispatch, 3 interceptors"},
	{"Dispatch/DispatchMetrics", "Dispatch, WithMetrics"},
	{"Cache/Hit", "query cache hit"},
	{"Middleware/FullStack", "full middleware stack"},
}

func main() {
	results, err := parse(os.Stdin)
	if err == nil {
		err = draw(os.Stdout, results)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

// parse reads benchmark output and returns the median ns/op of each
// benchmark.
func parse(r io.Reader) (map[string]float64, error) {
	runs := map[string][]float64{}
	if err := benchfmt.Rows(r, func(name string, ns float64) { runs[name] = append(runs[name], ns) }); err != nil {
		return nil, err
	}
	medians := make(map[string]float64, len(runs))
	for name, ns := range runs {
		medians[name] = benchfmt.Median(ns)
	}
	return medians, nil
}

// draw writes the chart of results as SVG.
func draw(w io.Writer, results map[string]float64) error {
	const (
		width, labelW, barH, gap, top = 760, 190, 26, 12, 40
		plotW                         = width - labelW - 90
	)
	var missing []string
	maxNS := 1.0
	for _, b := range bars {
		ns, ok := results[b.bench]
		if !ok {
			missing = append(missing, b.bench)
		}
		maxNS = max(maxNS, ns)
	}
	if len(missing) > 0 {
		return fmt.Errorf("no results for %s", strings.Join(missing, ", "))
	}
	// A log scale from 1 ns to the next power of ten above the largest.
	decades := math.Ceil(math.Log10(maxNS))
	x := func(ns float64) float64 { return labelW + plotW*math.Log10(max(ns, 1))/decades }
	height := top + len(bars)*(barH+gap) + 40

	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="13">`+"\n", width, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(w, `<text x="%d" y="22" font-size="15" font-weight="bold">Cost of one dispatch (ns/op, log scale, lower is better)</text>`+"\n", labelW)
	for d := 0.0; d <= decades; d++ {
		gx := x(math.Pow(10, d))
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", gx, top-6, gx, height-30)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle" fill="#666">%s</text>`+"\n", gx, height-14, strconv.FormatFloat(math.Pow(10, d), 'f', -1, 64))
	}
	for i, b := range bars {
		ns := results[b.bench]
		y := top + i*(barH+gap)
		color := "#4c78a8"
		if strings.HasPrefix(b.bench, "Dispatch/StringMap") {
			color = "#e45756"
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-10, y+barH/2+5, html.EscapeString(b.label))
		fmt.Fprintf(w, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelW, y, x(ns)-labelW, barH, color)
		fmt.Fprintf(w, `<text x="%.1f" y="%d">%s ns</text>`+"\n", x(ns)+6, y+barH/2+5, strconv.FormatFloat(ns, 'g', 4, 64))
	}
	_, err := fmt.Fprintln(w, "</svg>")
	return err
}
