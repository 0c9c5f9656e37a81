package cqrs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The declared-result API is only as good as the mistakes it refuses to
// compile, and the messages with which it refuses them. The cases are the
// rows of docs/compile-errors.md, which quotes what Go 1.26 says for each,
// and a few more below: each is a small program that must not compile,
// whose error must contain the words that say what to do. One more program
// must compile, to show that the harness builds what is right; and the
// rows of the page's run-time table are run, to check the errors it
// quotes. All are built by the go command in a throw-away module that
// uses this repository's code, so that a change that loosens the types,
// or renames what the messages quote, fails here.

// compileNames holds, for each row of the page's compile-time table (by
// the code in its first column), what the compiler's message must contain
// to say what to do: the methods and type parameters named for it, or
// the types involved. A row of the page missing here, or an entry here
// missing from the page, fails the test.
var compileNames = map[string]string{
	`id, err := cqrs.Send(ctx, commands, orders.GetOrder{ID: "o-1"})`:                                                               "have servedBy(*cqrs.QueryBus) orders.Order",
	`id, err := cqrs.Ask(ctx, queries, orders.PlaceOrder{Items: 2})`:                                                                "have servedBy(*cqrs.CommandBus) string",
	`err := cqrs.Publish(ctx, events, orders.PlaceOrder{Items: 2})`:                                                                 "want servedBy(*cqrs.EventBus) cqrs.NoResult",
	`id, err := cqrs.Send(ctx, commands, orders.Unmarked{ID: "u-1"})`:                                                               "missing method mustEmbedCommandQueryOrEvent",
	`order, err := cqrs.Ask(ctx, queries, "o-1")`:                                                                                   "cannot infer ResultOfEmbeddedQuery",
	`err := cqrs.Handle(commands, orders.Get)`:                                                                                      "have servedBy(*cqrs.QueryBus) orders.Order",
	`list, err := cqrs.Ask(ctx, queries, orders.ListOrders{Customer: "c-1"})`:                                                       "have servedBy(cqrs.streamOnQueryBus) orders.Order",
	`order, err := cqrs.Ask(ctx, queries, orders.Both{})`:                                                                           "ambiguous selector orders.Both.mustEmbedCommandQueryOrEvent",
	`for order, err := range cqrs.Stream(ctx, queries, orders.Both{}) { … }`:                                                        "ambiguous selector orders.Both.mustEmbedStreamQuery",
	`for order, err := range cqrs.Stream(ctx, queries, orders.GetOrder{ID: "o-1"}) { … }`:                                           "want servedBy(cqrs.streamOnQueryBus) ItemOfEmbeddedStreamQuery",
	`var name string; name, err := cqrs.Ask(ctx, queries, orders.GetOrder{ID: "o-1"})`:                                              "(value of struct type orders.Order) as string value",
	`err := cqrs.Handle(queries, func(ctx context.Context, q orders.GetOrder) (*orders.Order, error) { … })`:                        "have servedBy(*cqrs.QueryBus) orders.Order",
	`err := cqrs.Handle(queries, func(ctx context.Context, q orders.ListOrders) ([]orders.Order, error) { … })`:                     "have servedBy(cqrs.streamOnQueryBus) orders.Order",
	`err := cqrs.HandleStream(queries, func(ctx context.Context, q orders.ListOrders, yield func(*orders.Order) bool) error { … })`: "have servedBy(cqrs.streamOnQueryBus) orders.Order",
	`sub, err := cqrs.Subscribe(events, "email", func(ctx context.Context, e orders.OrderPlaced) (cqrs.NoResult, error) { … })`:     "does not match inferred type func(ctx context.Context, evt orders.OrderPlaced) error",
	`sub, err := cqrs.Subscribe(events, "email", orders.Mail, cqrs.Intercept[orders.OrderPlaced, cqrs.NoResult](events))`:           "*cqrs.EventBus does not implement cqrs.Bus",
}

// compileExtra are more programs that must not compile, not worth a row of
// the page: want is a regular expression the compiler's error must match.
var compileExtra = []struct {
	name string
	body string
	want string
}{
	{
		name: "command result assigned to the wrong type",
		body: `var n int; n, _ = cqrs.Send(ctx, commands, orders.PlaceOrder{}); _ = n`,
		want: `value of type string\) as int value in assignment`,
	},
	{
		name: "unmarked handler",
		body: `_ = cqrs.Handle(queries, func(context.Context, orders.Unmarked) (int, error) { return 0, nil })`,
		want: `orders.Unmarked\) does not satisfy cqrs.Message\[R, B\] \(missing method mustEmbedCommandQueryOrEvent\)`,
	},
	{
		name: "unmarked message published",
		body: `_ = cqrs.Publish(ctx, events, orders.Unmarked{})`,
		want: `orders.Unmarked\) does not satisfy cqrs.Message\[cqrs.NoResult, \*cqrs.EventBus\] \(missing method mustEmbedCommandQueryOrEvent\)`,
	},
	{
		name: "unmarked message streamed",
		body: `for range cqrs.Stream(ctx, queries, orders.Unmarked{}) {}`,
		want: `orders.Unmarked\) does not satisfy cqrs.StreamMessage\[ItemOfEmbeddedStreamQuery\] \(missing method mustEmbedStreamQuery\)`,
	},
	{
		name: "literal sent",
		body: `_, _ = cqrs.Send(ctx, commands, "place")`,
		want: `in call to cqrs.Send, cannot infer ResultOfEmbeddedCommand`,
	},
	{
		name: "literal streamed",
		body: `for range cqrs.Stream(ctx, queries, "list") {}`,
		want: `in call to cqrs.Stream, cannot infer ItemOfEmbeddedStreamQuery`,
	},
	{
		name: "subscriber of a query",
		body: `_, _ = cqrs.Subscribe(events, "s", func(context.Context, orders.GetOrder) error { return nil })`,
		want: `have servedBy\(\*cqrs.QueryBus\) orders.Order\n\s*want servedBy\(\*cqrs.EventBus\) cqrs.NoResult`,
	},
	{
		name: "event sent as a command",
		body: `_, _ = cqrs.Send(ctx, commands, orders.OrderPlaced{})`,
		want: `have servedBy\(\*cqrs.EventBus\) cqrs.NoResult\n\s*want servedBy\(\*cqrs.CommandBus\) ResultOfEmbeddedCommand`,
	},
	{
		name: "event handler registered with Handle",
		body: `_ = cqrs.Handle(events, func(context.Context, orders.OrderPlaced) (cqrs.NoResult, error) { return cqrs.NoResult{}, nil })`,
		want: `B \(type \*cqrs.EventBus\) does not satisfy cqrs.Bus`,
	},
	{
		name: "plain handler of a streaming query on the command bus",
		body: `_ = cqrs.Handle(commands, func(context.Context, orders.ListOrders) (orders.Order, error) { return orders.Order{}, nil })`,
		want: `have servedBy\(cqrs.streamOnQueryBus\) orders.Order`,
	},
	{
		name: "stream handler of a query with one result",
		body: `_ = cqrs.HandleStream(queries, func(context.Context, orders.GetOrder, func(orders.Order) bool) error { return nil })`,
		want: `have servedBy\(\*cqrs.QueryBus\) orders.Order\n\s*want servedBy\(cqrs.streamOnQueryBus\) R`,
	},
	{
		name: "handler of two markers",
		body: `_ = cqrs.Handle(queries, func(context.Context, orders.Both) (orders.Order, error) { return orders.Order{}, nil })`,
		want: `ambiguous selector orders.Both.mustEmbedCommandQueryOrEvent`,
	},
	{
		name: "stream handler of two markers",
		body: `_ = cqrs.HandleStream(queries, func(context.Context, orders.Both, func(orders.Order) bool) error { return nil })`,
		want: `ambiguous selector orders.Both.mustEmbedStreamQuery`,
	},
	{
		name: "two messages embedded published",
		body: `type placed struct{ orders.OrderPlaced; orders.PlaceOrder }; _ = cqrs.Publish(ctx, events, placed{})`,
		want: `ambiguous selector placed.mustEmbedCommandQueryOrEvent`,
	},
	{
		name: "handler on a bus of unknown kind",
		body: `var b cqrs.Bus = queries; _ = cqrs.Handle(b, orders.Get)`,
		want: `have servedBy\(\*cqrs.QueryBus\) orders.Order\n\s*want servedBy\(B\) R`,
	},
}

const compileGood = `_ = cqrs.Handle(queries, orders.Get)
	_ = cqrs.Handle(commands, orders.Place)
	var o orders.Order
	o, _ = cqrs.Ask(ctx, queries, orders.GetOrder{ID: "o-1"})
	var id string
	id, _ = cqrs.Send(ctx, commands, orders.PlaceOrder{Items: 1})
	id, _ = cqrs.Send(ctx, commands, &orders.PlaceOrder{Items: 1})
	_, _ = o, id
	_, _ = cqrs.Subscribe(events, "mail", orders.Mail)
	_ = cqrs.Publish(ctx, events, orders.OrderPlaced{ID: "o-1"})
	_ = cqrs.HandleStream(queries, func(context.Context, orders.ListOrders, func(orders.Order) bool) error { return nil })
	for order, err := range cqrs.Stream(ctx, queries, orders.ListOrders{}) {
		_, _ = order.ID, err
	}
	_ = cqrs.Register(queries, cqrs.HandlerFunc[orders.Both, orders.Order](func(context.Context, orders.Both) (orders.Order, error) { return orders.Order{}, nil }))`

const compileImports = `import (
	"context"

	"github.com/typedcqrs/dispatch/cqrs"
	"compilecheck/orders"
)
`

func compileProgram(body string) string {
	return "package main\n\n" + compileImports + `
func run(ctx context.Context, commands *cqrs.CommandBus, queries *cqrs.QueryBus, events *cqrs.EventBus) {
	` + body + `
}

func main() {
	run(context.Background(), cqrs.NewCommandBus(), cqrs.NewQueryBus(), cqrs.NewEventBus())
}
`
}

// compileCases returns one package holding each of bodies in a function of
// its own, and the line on which each function starts: one package type
// checks much faster than one per case, and the compiler reports every
// error of each (with -e), each at its line.
func compileCases(bodies []string) (src string, starts []int) {
	var b strings.Builder
	b.WriteString("package main\n\n" + compileImports + "\nfunc main() {}\n")
	for i, body := range bodies {
		starts = append(starts, strings.Count(b.String(), "\n")+2)
		fmt.Fprintf(&b, "\nfunc case%d(ctx context.Context, commands *cqrs.CommandBus, queries *cqrs.QueryBus, events *cqrs.EventBus) {\n\t%s\n}\n", i, body)
	}
	return b.String(), starts
}

// docRow is a row of a table of docs/compile-errors.md.
type docRow struct {
	code    string   // the first column's code
	message []string // the second column's, one code span per line
	why     string   // the third column
}

// docTable returns the rows of the table under heading in doc.
func docTable(t *testing.T, doc, heading string) []docRow {
	t.Helper()
	_, section, ok := strings.Cut(doc, "\n"+heading+"\n")
	require.True(t, ok, "the page has a section %q", heading)
	section, _, _ = strings.Cut(section, "\n## ")
	span := regexp.MustCompile("`([^`]*)`")
	var rows []docRow
	for line := range strings.Lines(section) {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := splitCells(line)
		require.Len(t, cells, 3, "a row of %q has three columns: %s", heading, line)
		code := span.FindStringSubmatch(cells[0])
		require.NotNil(t, code, "the first column is code: %s", line)
		row := docRow{code: code[1], why: cells[2]}
		for _, m := range span.FindAllStringSubmatch(cells[1], -1) {
			row.message = append(row.message, m[1])
		}
		require.NotEmpty(t, row.message, "the second column quotes a message: %s", line)
		rows = append(rows, row)
	}
	require.NotEmpty(t, rows, "the table under %q", heading)
	return rows
}

// splitCells splits a table row into its cells, on the '|' outside code.
func splitCells(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	var cells []string
	var cell strings.Builder
	code := false
	for _, r := range line {
		switch {
		case r == '`':
			code = !code
		case r == '|' && !code:
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
			continue
		}
		cell.WriteRune(r)
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

// buildErrors returns the error lines of the output of go build, each
// with its continuation lines (have, want), by package directory and
// line, without the file and position.
func buildErrors(out string) map[string]map[int][]string {
	errs := map[string]map[int][]string{}
	pos := regexp.MustCompile(`^(\S+)/[^/\s]+\.go:(\d+):\d+: `)
	pkg, line := "", 0
	for text := range strings.Lines(out) {
		if strings.HasPrefix(text, "# ") {
			continue
		}
		if m := pos.FindStringSubmatch(text); m != nil {
			pkg, line = m[1], atoi(m[2])
			text = text[len(m[0]):]
			if errs[pkg] == nil {
				errs[pkg] = map[int][]string{}
			}
		}
		if pkg != "" {
			errs[pkg][line] = append(errs[pkg][line], strings.TrimSpace(text))
		}
	}
	return errs
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// caseErrors returns the error lines reported in case i of cases, which
// start at the lines starts.
func caseErrors(errs map[int][]string, starts []int, i int) []string {
	end := int(^uint(0) >> 1)
	if i+1 < len(starts) {
		end = starts[i+1]
	}
	var lines []int
	for l := range errs {
		if starts[i] <= l && l < end {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	var out []string
	for _, l := range lines {
		out = append(out, errs[l]...)
	}
	return out
}

// containsLines reports whether lines holds each of want, in order, on
// consecutive lines.
func containsLines(lines, want []string) bool {
	for i := range lines {
		if i+len(want) > len(lines) {
			return false
		}
		match := true
		for k, w := range want {
			if !strings.Contains(lines[i+k], w) {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// runProgram is a program that runs each row of the page's run-time
// table and prints, for each, the error and whether it matches the
// sentinel the row names.
func runProgram(rows []docRow) string {
	sentinel := regexp.MustCompile("matches `cqrs\\.(Err[A-Za-z]+)`")
	var body strings.Builder
	for i, r := range rows {
		is := "false"
		if m := sentinel.FindStringSubmatch(r.why); m != nil {
			is = "errors.Is(err, cqrs." + m[1] + ")"
		}
		fmt.Fprintf(&body, "\t{\n\t\t%s\n\t\tfmt.Printf(\"%d\\t%%v\\t%%s\\n\", %s, err)\n\t}\n", r.code, i, is)
	}
	return `package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/typedcqrs/dispatch/cqrs"
	"compilecheck/orders"
)

func main() {
	ctx := context.Background()
	commands, queries, events := cqrs.NewCommandBus(), cqrs.NewQueryBus(), cqrs.NewEventBus()
	if err := cqrs.Handle(commands, orders.Place); err != nil {
		panic(err)
	}
	if _, err := cqrs.Subscribe(events, "email", orders.Mail); err != nil {
		panic(err)
	}
	get := func(context.Context, orders.Both) (orders.Order, error) { return orders.Order{}, nil }
	_, _, _, _ = ctx, commands, queries, get
` + body.String() + `}
`
}

func TestDeclaredMismatchesDoNotCompile(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go command builds the cases")
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	require.NoError(t, err)
	page, err := os.ReadFile(filepath.Join(root, "docs", "compile-errors.md"))
	require.NoError(t, err)
	doc := string(page)
	_, types, ok := strings.Cut(doc, "```go\npackage orders\n")
	require.True(t, ok, "the page declares the types of its examples")
	types, _, ok = strings.Cut(types, "```\n")
	require.True(t, ok)
	compileRows := docTable(t, doc, "## At compile time")
	runRows := docTable(t, doc, "## At run time")

	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	}
	write("go.mod", "module compilecheck\n\ngo 1.26\n\n"+
		"require github.com/typedcqrs/dispatch v0.0.0\n\n"+
		"replace github.com/typedcqrs/dispatch => "+root+"\n")
	write("go.sum", string(sum))
	write("orders/orders.go", "package orders\n"+types)
	write("good/main.go", compileProgram(compileGood))
	write("run/main.go", runProgram(runRows))
	var bodies []string
	for _, r := range compileRows {
		bodies = append(bodies, strings.ReplaceAll(r.code, "{ … }", "{ panic(0) }"))
	}
	for _, c := range compileExtra {
		bodies = append(bodies, c.body)
	}
	cases, starts := compileCases(bodies)
	write("bad/main.go", cases)

	// One go build type-checks every package and reports the errors of
	// each (-e: all of them); the go command keeps going past a package
	// that fails. Its messages are those of the compiler, which the page
	// quotes.
	env := append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	cmd := exec.Command(goTool, "build", "-gcflags=-e", "./...")
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "some cases must fail to compile:\n%s", out)
	errs := buildErrors(string(out))
	require.NotContains(t, errs, "good", "the program that is right must compile:\n%s", out)
	require.NotContains(t, errs, "orders", "the page's types must compile:\n%s", out)
	require.NotContains(t, errs, "run", "the page's run-time rows must compile:\n%s", out)
	require.Contains(t, errs, "bad", "%s", out)
	for l := range errs["bad"] {
		require.GreaterOrEqual(t, l, starts[0], "the cases' preamble must compile:\n%s", out)
	}

	seen := map[string]bool{}
	for i, r := range compileRows {
		t.Run("page/"+r.code, func(t *testing.T) {
			seen[r.code] = true
			lines := caseErrors(errs["bad"], starts, i)
			require.NotEmpty(t, lines, "%s compiled; it must not", r.code)
			got := strings.Join(lines, "\n")
			assert.True(t, containsLines(lines, r.message),
				"docs/compile-errors.md quotes what the compiler does not say (Go 1.26 is quoted; update the page for another Go):\nquoted:\n%s\nsaid:\n%s",
				strings.Join(r.message, "\n"), got)
			name, ok := compileNames[r.code]
			require.True(t, ok, "the page has a row this test does not know: add it to compileNames")
			assert.Contains(t, got, name, "the message must say what to do")
		})
	}
	for code := range compileNames {
		assert.True(t, seen[code], "compileNames has a row the page does not: %s", code)
	}
	for i, c := range compileExtra {
		t.Run("extra/"+c.name, func(t *testing.T) {
			lines := caseErrors(errs["bad"], starts, len(compileRows)+i)
			require.NotEmpty(t, lines, "%s compiled; it must not", c.body)
			assert.Regexp(t, regexp.MustCompile(c.want), strings.Join(lines, "\n"), "the body was: %s", c.body)
		})
	}

	// The run-time rows: run them, and check the errors the page quotes.
	cmd = exec.Command(goTool, "run", "./run")
	cmd.Dir, cmd.Env = dir, env
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	results := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	require.Len(t, results, len(runRows), "%s", out)
	for i, r := range runRows {
		t.Run("run/"+r.code, func(t *testing.T) {
			fields := strings.SplitN(results[i], "\t", 3)
			require.Len(t, fields, 3, results[i])
			assert.Equal(t, strconv.Itoa(i), fields[0])
			require.Len(t, r.message, 1)
			assert.Equal(t, r.message[0], fields[2], "docs/compile-errors.md quotes another error than the code gives")
			assert.Equal(t, "true", fields[1], "the row's error must match the sentinel the row names")
		})
	}
}
