// Production-demo is a small service: an HTTP JSON API whose handlers send
// commands and queries through the buses, over an in-memory repository,
// with the whole middleware stack loaded from a YAML file. A fraud check
// that can be made to fail shows the circuit breaker open and recover.
//
//	go run ./examples/production-demo -addr localhost:8080
//
//	curl -X POST localhost:8080/accounts -d '{"owner":"Ada","email":"ada@example.com"}'
//	curl -H 'X-Request-Id: req-1' -X POST localhost:8080/accounts/1/deposits -d '{"amount":100}'
//	curl localhost:8080/accounts/1
//	curl -X PUT localhost:8080/admin/flaky -d '{"flaky":true}'   # then deposit a few times
//	curl localhost:8080/metrics
//
// It stops gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/typedcqrs/dispatch/middleware"
)

//go:embed config.yaml
var defaultConfig []byte

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	configPath := flag.String("config", "", "YAML config of the middleware stack (default: the config.yaml built in)")
	flag.Parse()

	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*addr, *configPath, logger); err != nil {
		logger.Error("exiting", "error", err)
		os.Exit(1)
	}
}

func run(addr, configPath string, logger *slog.Logger) error {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	app, err := NewApp(cfg, &MemoryRepository{}, &FraudCheck{}, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("listening", "addr", ln.Addr().String())
	return serve(ctx, ln, app.Handler(), logger)
}

func loadConfig(path string) (middleware.Config, error) {
	if path == "" {
		return middleware.ParseConfig(defaultConfig)
	}
	return middleware.LoadConfig(path)
}

// serve serves h on ln until ctx is done, then shuts down gracefully:
// requests in flight get up to 10 seconds to finish.
func serve(ctx context.Context, ln net.Listener, h http.Handler, logger *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
