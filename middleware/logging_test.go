package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

type traceKey struct{}

// traceHandler adds the trace id it finds in the context, as tracing
// bridges for slog do.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if id, ok := ctx.Value(traceKey{}).(string); ok {
		r.AddAttrs(slog.String("trace_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func jsonLogger(buf *bytes.Buffer, level slog.Level) *slog.Logger {
	return slog.New(traceHandler{slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: level})})
}

func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(buf.String()) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec))
		out = append(out, rec)
	}
	return out
}

func TestLogging(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	bus, _ := jobBus(t, middleware.Logging(middleware.LoggingConfig{Logger: jsonLogger(&buf, slog.LevelInfo)}))
	ctx := context.WithValue(context.Background(), traceKey{}, "trace-7")

	_, err := runCtx(ctx, bus, Job{ID: 1})
	require.NoError(t, err)
	_, err = runCtx(ctx, bus, Job{Do: "fail"})
	require.ErrorIs(t, err, errJob)

	recs := records(t, &buf)
	require.Len(t, recs, 2)
	assert.Equal(t, "INFO", recs[0]["level"])
	assert.Equal(t, "cqrs dispatch", recs[0]["msg"])
	assert.Equal(t, "command", recs[0]["kind"])
	assert.Equal(t, "middleware_test.Job", recs[0]["message"])
	assert.Equal(t, "ok", recs[0]["outcome"])
	assert.Contains(t, recs[0], "duration")
	assert.NotContains(t, recs[0], "error")
	assert.Equal(t, "trace-7", recs[0]["trace_id"], "the handler's context reaches the log")

	assert.Equal(t, "ERROR", recs[1]["level"])
	assert.Equal(t, "error", recs[1]["outcome"])
	assert.Equal(t, "job failed", recs[1]["error"])
}

func TestLoggingLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	// Successes at debug are below the logger's info level; failures are
	// still logged.
	bus, _ := jobBus(t, middleware.Logging(middleware.LoggingConfig{Logger: jsonLogger(&buf, slog.LevelInfo), Level: slog.LevelDebug}))
	_, _ = run(bus, Job{})
	_, _ = run(bus, Job{Do: "fail"})
	recs := records(t, &buf)
	require.Len(t, recs, 1)
	assert.Equal(t, "ERROR", recs[0]["level"])
}

func TestLoggingDisabledCostsNothing(t *testing.T) {
	var buf bytes.Buffer
	quiet := jsonLogger(&buf, slog.LevelError+4)
	cfg := middleware.LoggingConfig{Logger: quiet}

	bus, _ := jobBus(t, middleware.Logging(cfg))
	typed := cqrs.NewCommandBus()
	j := &jobs{}
	require.NoError(t, cqrs.Register(typed, cqrs.HandlerFunc[Job, Done](j.handle), middleware.LoggingFor[Job, Done](typed, cfg)))

	for name, b := range map[string]cqrs.Bus{"interceptor": bus, "typed": typed} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := run(b, Job{Do: "fail"}); err == nil {
				t.Fatal("want the job's error")
			}
		})
		assert.Zero(t, allocs, name)
	}
	assert.Zero(t, buf.Len())
}

func TestLoggingFor(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	queries := cqrs.NewQueryBus()
	j := &jobs{}
	require.NoError(t, cqrs.Register(queries, cqrs.HandlerFunc[Job, Done](j.handle),
		middleware.LoggingFor[Job, Done](queries, middleware.LoggingConfig{Logger: jsonLogger(&buf, slog.LevelDebug)})))
	_, err := run(queries, Job{ID: 2})
	require.NoError(t, err)
	recs := records(t, &buf)
	require.Len(t, recs, 1)
	assert.Equal(t, "query", recs[0]["kind"])
	assert.Equal(t, "middleware_test.Job", recs[0]["message"])
}

func TestLoggingWithoutLogger(t *testing.T) {
	t.Parallel()
	bus, _ := jobBus(t, middleware.Logging(middleware.LoggingConfig{}))
	done, err := run(bus, Job{ID: 3})
	require.NoError(t, err)
	assert.Equal(t, 3, done.ID)
}

// levels counts the records of buf by level.
func levels(t *testing.T, buf *bytes.Buffer) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, rec := range records(t, buf) {
		out[rec["level"].(string)]++
	}
	return out
}

// TestLoggingCallerErrorsBelowError: a rate-limited burst is the caller's
// doing and is logged at WARN, or at the level asked; only the handler's
// own fault is an ERROR.
func TestLoggingCallerErrorsBelowError(t *testing.T) {
	info := slog.LevelInfo
	for name, tc := range map[string]struct {
		level *slog.Level
		want  map[string]int
	}{
		"default": {nil, map[string]int{"INFO": 1, "WARN": 20, "ERROR": 1}},
		"info":    {&info, map[string]int{"INFO": 21, "ERROR": 1}},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var buf bytes.Buffer
				rl := rateLimit(t, middleware.RateLimitConfig{Rate: 1, Burst: 1})
				bus, _ := jobBus(t, middleware.Logging(middleware.LoggingConfig{Logger: jsonLogger(&buf, slog.LevelDebug), CallerErrorLevel: tc.level}), rl)
				_, err := run(bus, Job{})
				require.NoError(t, err)
				for range 19 {
					_, err := run(bus, Job{})
					require.ErrorIs(t, err, cqrs.ErrRateLimited)
				}
				time.Sleep(time.Second)
				_, err = run(bus, Job{Do: "fail"})
				require.ErrorIs(t, err, errJob)
				time.Sleep(time.Second)
				_, err = run(bus, Job{Do: "validate"})
				require.ErrorIs(t, err, cqrs.ErrValidation)
				assert.Equal(t, tc.want, levels(t, &buf))
			})
		})
	}
}

// TestLoggingConfigCallerErrorLevel: the level is a setting of the file.
func TestLoggingConfigCallerErrorLevel(t *testing.T) {
	t.Parallel()
	cfg, err := middleware.ParseConfig([]byte("logging: {level: debug, caller_error_level: info}\n"))
	require.NoError(t, err)
	require.NotNil(t, cfg.Logging.CallerErrorLevel)
	assert.Equal(t, slog.LevelInfo, *cfg.Logging.CallerErrorLevel)
	_, err = middleware.ParseConfig([]byte("logging: {caller_error_level: quiet}\n"))
	require.ErrorContains(t, err, `logging.caller_error_level (line 1): got "quiet", want a level`)
}
