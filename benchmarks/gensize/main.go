// Gensize measures what each message type costs a program: bytes of
// binary and seconds of compile time. It generates a program that
// registers and dispatches n message types, builds it for each n given,
// and reports the difference per type between the largest and the
// smallest n, so that what every program pays once cancels out:
//
//	go run ./benchmarks/gensize                 # 1,000 and 3,000 types
//	go run ./benchmarks/gensize -n 1000,3000 -impl minimal
//	go run ./benchmarks/gensize -stack          # on a bus with interceptors and metrics
//
// Each generated type is a struct with its own field names, so each has
// its own GC shape, as real message types do, and the compiler cannot
// share one copy of the generic code between them. With -shared every type
// is defined on one struct type instead, the best case, where the generic
// code is compiled once and each type costs only its dictionaries, type
// descriptors and method wrappers.
//
// With -impl cqrs (the default) the program uses cqrs.Register and
// cqrs.Dispatch. With -stack its bus has the standard stack of the core:
// WithMetrics and three bus-wide interceptors, one passing each dispatch
// on, one counting calls and errors per message type (set up in
// Intercept, as a metrics interceptor does) and one reading the Call's
// Spec, so that what a bus with interceptors compiles per type is
// measured. With -impl minimal it uses the smallest generic registry
// that still dispatches by type without boxing the message: a
// map[reflect.Type]any of typed handler funcs, behind a generic Register
// and Dispatch of a few lines. The difference is what the bus's features
// (middleware, interceptors, metrics, the three entry points) cost per
// type.
//
// The program is written to a directory under benchmarks/gensize whose
// name starts with an underscore, so that ./... never sees it, and
// removed afterwards. Compile time is the user and system CPU time of
// `go build`, with the dependencies already built.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	counts := flag.String("n", "1000,3000", "comma-separated numbers of message types")
	flag.StringVar(&keep, "keep", "", "copy the binary of the largest program to this file, for go tool nm")
	flag.BoolVar(&strip, "strip", false, "build with -ldflags=-s -w: no symbol table, no DWARF")
	flag.BoolVar(&shared, "shared", false, "define every type on one struct type, so that all share one GC shape")
	flag.BoolVar(&stack, "stack", false, "with -impl cqrs: a bus WithMetrics and with three interceptors")
	impl := flag.String("impl", "cqrs", "cqrs or minimal")
	flag.Parse()
	if err := run(*counts, *impl); err != nil {
		fmt.Fprintln(os.Stderr, "gensize:", err)
		os.Exit(1)
	}
}

var (
	keep                 string
	strip, shared, stack bool
)

type result struct {
	n     int
	bytes int64
	cpu   time.Duration
	wall  time.Duration
}

func run(counts, impl string) error {
	if impl != "cqrs" && impl != "minimal" {
		return fmt.Errorf("-impl must be cqrs or minimal, not %q", impl)
	}
	if stack && impl != "cqrs" {
		return errors.New("-stack needs -impl cqrs")
	}
	if stack {
		impl = "cqrs-stack"
	}
	var ns []int
	for f := range strings.SplitSeq(counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-n: %q is not a positive number", f)
		}
		ns = append(ns, n)
	}
	if len(ns) < 2 {
		return errors.New("-n needs two counts or more, to subtract what every program pays once")
	}
	// Build the dependencies once, so that each measured build compiles
	// the generated package alone.
	if _, err := build(impl, 1); err != nil {
		return err
	}
	var results []result
	for _, n := range ns {
		r, err := build(impl, n)
		if err != nil {
			return err
		}
		results = append(results, r)
		fmt.Printf("%s: %6d types: %10d bytes, compile %6.2fs CPU (%6.2fs wall)\n", impl, n, r.bytes, r.cpu.Seconds(), r.wall.Seconds())
	}
	lo, hi := results[0], results[len(results)-1]
	dn := float64(hi.n - lo.n)
	fmt.Printf("%s: per type: %.0f bytes of binary, %.2f ms of compile CPU (%.2f ms wall)\n", impl,
		float64(hi.bytes-lo.bytes)/dn,
		float64((hi.cpu-lo.cpu).Microseconds())/dn/1000,
		float64((hi.wall-lo.wall).Microseconds())/dn/1000)
	return nil
}

// build writes and builds the program with n types.
func build(impl string, n int) (result, error) {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return result{}, fmt.Errorf("finding the module: %w", err)
	}
	dir, err := os.MkdirTemp(filepath.Join(strings.TrimSpace(string(root)), "benchmarks", "gensize"), "_gen")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	if err := write(filepath.Join(dir, "main.go"), impl, n); err != nil {
		return result{}, err
	}
	bin := filepath.Join(dir, "prog.exe")
	args := []string{"build", "-o", bin}
	if strip {
		args = append(args, "-ldflags=-s -w")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("building %d types: %w", n, err)
	}
	wall := time.Since(start)
	fi, err := os.Stat(bin)
	if err != nil {
		return result{}, err
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if keep != "" {
		if err := os.Rename(bin, keep); err != nil {
			return result{}, err
		}
		bin = keep
	}
	// Run it: every type must register and dispatch.
	out, err := exec.Command(bin).CombinedOutput()
	if want := fmt.Sprintf("%d types\n", n); err != nil || string(out) != want {
		return result{}, fmt.Errorf("running %d types: %v: %s", n, err, out)
	}
	return result{n: n, bytes: fi.Size(), cpu: cpu, wall: wall}, nil
}

// write generates the program: n message types, each with a handler, a
// function that registers and dispatches it, and a main that runs them.
func write(path, impl string, n int) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	w := bufio.NewWriter(f)
	defer func() { err = errors.Join(err, w.Flush()) }()

	fmt.Fprintf(w, "// Code generated by go run ./benchmarks/gensize; DO NOT EDIT.\n\npackage main\n\n")
	switch impl {
	case "cqrs":
		w.WriteString(cqrsPrelude)
	case "cqrs-stack":
		w.WriteString(stackPrelude)
	default:
		w.WriteString(minimalPrelude)
	}
	for i := range n {
		id := fmt.Sprintf("ID%d", i)
		if shared {
			id = "ID"
			fmt.Fprintf(w, "type M%d Base\n\n", i)
		} else {
			fmt.Fprintf(w, "type M%d struct {\n\tID%d int64\n\tName%d string\n}\n\n", i, i, i)
		}
		fmt.Fprintf(w, "func handle%d(_ context.Context, m M%d) (Result, error) { return Result{N: m.%s}, nil }\n\n", i, i, id)
		fmt.Fprintf(w, "func use%d(ctx context.Context, bus *Bus) error {\n", i)
		fmt.Fprintf(w, "\tif err := register(bus, handle%d); err != nil {\n\t\treturn err\n\t}\n", i)
		fmt.Fprintf(w, "\tr, err := dispatch[Result](ctx, bus, M%d{%s: %d})\n", i, id, i)
		fmt.Fprintf(w, "\tif err == nil && r.N != %d {\n\t\terr = errors.New(\"wrong result\")\n\t}\n\treturn err\n}\n\n", i)
	}
	fmt.Fprintf(w, "var uses = [...]func(context.Context, *Bus) error{\n")
	for i := range n {
		fmt.Fprintf(w, "\tuse%d,\n", i)
	}
	fmt.Fprintf(w, "}\n")
	return nil
}

const mainFunc = `
// Result is every handler's result.
type Result struct{ N int64 }

// Base is the underlying type of every message type with -shared.
type Base struct {
	ID   int64
	Name string
}

func main() {
	ctx, bus := context.Background(), newBus()
	for _, use := range uses {
		if err := use(ctx, bus); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Println(len(uses), "types")
}

`

const cqrsPrelude = `import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/typedcqrs/dispatch/cqrs"
)

type Bus = cqrs.CommandBus

func newBus() *Bus { return cqrs.NewCommandBus() }

func register[C, R any](b *Bus, h func(context.Context, C) (R, error)) error {
	return cqrs.Register(b, cqrs.HandlerFunc[C, R](h))
}

func dispatch[R, C any](ctx context.Context, b *Bus, msg C) (R, error) {
	return cqrs.Dispatch[R](ctx, b, msg)
}
` + mainFunc

// stackPrelude is cqrsPrelude on a bus with the standard stack of the
// core: metrics and three interceptors.
var stackPrelude = strings.NewReplacer("\t\"os\"\n", "\t\"os\"\n\t\"sync/atomic\"\n", `func newBus() *Bus { return cqrs.NewCommandBus() }`, `func newBus() *Bus {
	return cqrs.NewCommandBus(cqrs.WithMetrics(), cqrs.WithInterceptors(passOn, counting, naming))
}

// passOn passes every dispatch on.
var passOn = cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	return func(ctx context.Context, c cqrs.Call) error { return next(ctx, c) }
})

// counts is what counting keeps per message type.
type counts struct{ calls, errs atomic.Int64 }

// counting counts the calls and errors of each message type, as a
// metrics interceptor does: its counters are set up once per type.
var counting = cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	n := new(counts)
	return func(ctx context.Context, c cqrs.Call) error {
		n.calls.Add(1)
		err := next(ctx, c)
		if err != nil {
			n.errs.Add(1)
		}
		return err
	}
})

// naming reads each dispatch's Spec, as a logging interceptor does.
var naming = cqrs.InterceptorFunc(func(_ cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
	return func(ctx context.Context, c cqrs.Call) error {
		if c.Spec().Name == "" {
			return errors.New("unnamed message")
		}
		return next(ctx, c)
	}
})`).Replace(cqrsPrelude)

const minimalPrelude = `import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
)

// Bus is the smallest generic registry: typed handler funcs by type.
type Bus struct {
	mu       sync.RWMutex
	handlers map[reflect.Type]any
}

func newBus() *Bus { return &Bus{handlers: map[reflect.Type]any{}} }

func register[C, R any](b *Bus, h func(context.Context, C) (R, error)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := reflect.TypeFor[C]()
	if _, ok := b.handlers[t]; ok {
		return fmt.Errorf("%v registered twice", t)
	}
	b.handlers[t] = h
	return nil
}

func dispatch[R, C any](ctx context.Context, b *Bus, msg C) (R, error) {
	b.mu.RLock()
	h, ok := b.handlers[reflect.TypeFor[C]()].(func(context.Context, C) (R, error))
	b.mu.RUnlock()
	if !ok {
		var zero R
		return zero, fmt.Errorf("no handler for %T", msg)
	}
	return h(ctx, msg)
}
` + mainFunc
