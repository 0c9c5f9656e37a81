// Middleware shows the decorators by hand: bus-wide interceptors and
// per-handler ones, validation failures with their fields, a query cache
// that a command invalidates, placed outside the timeout so that a hit
// skips it, and the metrics of it all.
//
//	go run ./examples/middleware
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

// AddProduct is a command with validation tags.
type AddProduct struct {
	SKU   string `validate:"required,alphanum,len=6"`
	Name  string `validate:"required"`
	Price int    `validate:"gt=0"`
}

// ChangePrice is a command that must invalidate the cached product.
type ChangePrice struct {
	SKU   string `validate:"required"`
	Price int    `validate:"gt=0"`
}

// GetProduct is a cached query.
type GetProduct struct{ SKU string }

// Product is what GetProduct returns.
type Product struct {
	SKU, Name string
	Price     int
}

// Catalog is the store; reads counts the reads that reached it.
type Catalog struct {
	mu       sync.Mutex
	products map[string]Product
	reads    int
}

func (c *Catalog) add(_ context.Context, cmd AddProduct) (cqrs.NoResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.products[cmd.SKU] = Product(cmd)
	return cqrs.NoResult{}, nil
}

func (c *Catalog) get(_ context.Context, q GetProduct) (Product, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	p, ok := c.products[q.SKU]
	if !ok {
		return Product{}, fmt.Errorf("product %s: %w", q.SKU, errNotFound)
	}
	return p, nil
}

var errNotFound = errors.New("not found")

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(w io.Writer) error {
	ctx := context.Background()
	catalog := &Catalog{products: map[string]Product{}}
	metrics := middleware.NewMetrics()

	// Bus-wide: every command is measured and validated.
	commands := cqrs.NewCommandBus(cqrs.WithInterceptors(
		metrics,
		middleware.Validation(middleware.ValidationConfig{}),
	))
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(metrics))

	// Per handler: GetProduct is cached, and only it gets a timeout,
	// inside the cache, so that a hit needs none.
	cache, err := middleware.NewCache[GetProduct, Product](middleware.CacheConfig{TTL: time.Minute})
	if err != nil {
		return err
	}
	defer cache.Close()
	changePrice := func(ctx context.Context, c ChangePrice) (cqrs.NoResult, error) {
		catalog.mu.Lock()
		p, ok := catalog.products[c.SKU]
		if ok {
			p.Price = c.Price
			catalog.products[c.SKU] = p
		}
		catalog.mu.Unlock()
		if !ok {
			return cqrs.NoResult{}, fmt.Errorf("product %s: %w", c.SKU, errNotFound)
		}
		cache.Invalidate(GetProduct{SKU: c.SKU}) // the cached price is stale now
		return cqrs.NoResult{}, nil
	}
	for _, err := range []error{
		cqrs.Register(commands, cqrs.HandlerFunc[AddProduct, cqrs.NoResult](catalog.add)),
		cqrs.Register(commands, cqrs.HandlerFunc[ChangePrice, cqrs.NoResult](changePrice)),
		cqrs.Register(queries, cqrs.HandlerFunc[GetProduct, Product](catalog.get),
			cache.Middleware(),
			cqrs.Intercept[GetProduct, Product](queries, middleware.Timeout(time.Second))),
		cqrs.Require(commands, AddProduct{}, ChangePrice{}), // at start-up: every handler is there
		cqrs.Require(queries, GetProduct{}),
	} {
		if err != nil {
			return err
		}
	}

	// Validation: the handler never sees a bad command.
	_, err = cqrs.Dispatch[cqrs.NoResult](ctx, commands, AddProduct{SKU: "ab-1", Price: -5})
	var verr *cqrs.ValidationError
	if errors.As(err, &verr) {
		fmt.Fprintf(w, "rejected (%t):\n", errors.Is(err, cqrs.ErrValidation))
		for _, f := range verr.Fields {
			fmt.Fprintf(w, "  %s fails %s%s (got %v)\n", f.Field, f.Tag, param(f.Param), f.Value)
		}
	}

	if _, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, AddProduct{SKU: "LAMP01", Name: "Desk lamp", Price: 40}); err != nil {
		return err
	}

	// Caching: three reads, one reaches the catalog.
	for range 3 {
		p, err := cqrs.Dispatch[Product](ctx, queries, GetProduct{SKU: "LAMP01"})
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s costs %d\n", p.Name, p.Price)
	}
	fmt.Fprintf(w, "catalog reads: %d\n", catalog.reads)

	// A command invalidates the entry; the next read sees the new price.
	if _, err := cqrs.Dispatch[cqrs.NoResult](ctx, commands, ChangePrice{SKU: "LAMP01", Price: 35}); err != nil {
		return err
	}
	p, err := cqrs.Dispatch[Product](ctx, queries, GetProduct{SKU: "LAMP01"})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "after the change: %s costs %d (catalog reads: %d)\n", p.Name, p.Price, catalog.reads)

	// Errors are never cached.
	for range 2 {
		_, err = cqrs.Dispatch[Product](ctx, queries, GetProduct{SKU: "NOPE00"})
	}
	fmt.Fprintf(w, "missing product: %v (catalog reads: %d)\n", err, catalog.reads)

	fmt.Fprintln(w, "metrics:")
	for _, m := range metrics.Snapshot() {
		fmt.Fprintf(w, "  %-7s %-22s calls=%d errors=%d\n", m.Kind, m.Name, m.Calls, m.Errors)
	}
	return nil
}

func param(p string) string {
	if p == "" {
		return ""
	}
	return "=" + p
}
