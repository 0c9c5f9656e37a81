// CSV-export streams a query's results to an HTTP client as CSV, row by
// row: the server holds one row at a time however large the export, the
// client sees the first rows before the last is read, and a client that
// hangs up stops the query.
//
//	go run ./examples/csv-export          # serves on 127.0.0.1:8080
//	curl 'http://127.0.0.1:8080/orders.csv?customer=c-1&n=5'
package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// Order is one row of the export.
type Order struct {
	ID       int
	Customer string
	Total    int
}

// ListOrders streams a customer's orders.
type ListOrders struct {
	cqrs.StreamQuery[Order]
	Customer string
	Limit    int
}

// Store stands for a database: it reads orders one page at a time.
type Store struct {
	// Produced counts the rows read, so a test can tell that a hang-up
	// stopped the query.
	Produced func(n int)
}

// ListOrders handles ListOrders, yielding each order as it is read.
func (s *Store) ListOrders(ctx context.Context, q ListOrders, yield func(Order) bool) error {
	if q.Customer == "" {
		return errors.New("which customer?")
	}
	for i := 1; i <= q.Limit; i++ {
		if i%100 == 0 { // a page boundary: where a database would wait
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if s.Produced != nil {
			s.Produced(i)
		}
		if !yield(Order{ID: i, Customer: q.Customer, Total: i * 7 % 100}) {
			return nil
		}
	}
	return nil
}

// exportHandler serves GET /orders.csv?customer=…&n=….
func exportHandler(queries *cqrs.QueryBus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 {
			http.Error(w, "n must be a whole number", http.StatusBadRequest)
			return
		}
		q := ListOrders{Customer: r.URL.Query().Get("customer"), Limit: n}
		out := csv.NewWriter(w)
		flusher, _ := w.(http.Flusher)
		rows := 0
		// The request's context ends when the client hangs up, and with
		// it the stream.
		for order, err := range cqrs.Stream(r.Context(), queries, q) {
			if err != nil {
				if rows == 0 {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				// The header went out with the first row: the error can
				// only end the body. A client sees a missing last line.
				log.Printf("export cut short after %d rows: %v", rows, err)
				return
			}
			if rows == 0 {
				w.Header().Set("Content-Type", "text/csv")
				_ = out.Write([]string{"id", "customer", "total"})
			}
			_ = out.Write([]string{strconv.Itoa(order.ID), order.Customer, strconv.Itoa(order.Total)})
			rows++
			if rows%100 == 0 {
				out.Flush()
				if flusher != nil {
					flusher.Flush()
				}
			}
		}
		if rows == 0 {
			w.Header().Set("Content-Type", "text/csv")
			_ = out.Write([]string{"id", "customer", "total"})
		}
		out.Flush()
	})
}

func newServer(store *Store) (http.Handler, error) {
	queries := cqrs.NewQueryBus(cqrs.WithMetrics())
	if err := cqrs.HandleStream(queries, store.ListOrders); err != nil {
		return nil, err
	}
	if err := cqrs.Require(queries, ListOrders{}); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /orders.csv", exportHandler(queries))
	return mux, nil
}

func main() {
	handler, err := newServer(&Store{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("serving CSV exports on http://%s/orders.csv?customer=c-1&n=1000", srv.Addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
