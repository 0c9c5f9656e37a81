package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	"github.com/typedcqrs/dispatch/middleware"
)

type tailLog struct {
	cqrs.StreamQuery[string]
	Lines int
}

type logRotated struct {
	cqrs.Event
	File string
}

// jsonRecords decodes the JSON lines a slog.JSONHandler wrote.
func jsonRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(buf)
	for dec.More() {
		var r map[string]any
		require.NoError(t, dec.Decode(&r))
		out = append(out, r)
	}
	return out
}

func TestLoggingAStreamOnceWithItsItems(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logging := middleware.Logging(middleware.LoggingConfig{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	queries := cqrs.NewQueryBus(cqrs.WithInterceptors(logging))
	require.NoError(t, cqrs.HandleStream(queries, func(_ context.Context, q tailLog, yield func(string) bool) error {
		for range q.Lines {
			if !yield("line") {
				return nil
			}
		}
		return nil
	}))
	n := 0
	for _, err := range cqrs.Stream(context.Background(), queries, tailLog{Lines: 7}) {
		require.NoError(t, err)
		n++
	}
	require.Equal(t, 7, n)
	recs := jsonRecords(t, &buf)
	require.Len(t, recs, 1, "one record per stream")
	assert.Equal(t, float64(7), recs[0]["items"])
	assert.Equal(t, "ok", recs[0]["outcome"])
	assert.Equal(t, "middleware_test.tailLog", recs[0]["message"])
}

func TestLoggingNamesTheSubscriber(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logging := middleware.Logging(middleware.LoggingConfig{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	events := cqrs.NewEventBus(cqrs.WithInterceptors(logging))
	_, err := cqrs.Subscribe(events, "archive", func(context.Context, logRotated) error { return nil })
	require.NoError(t, err)
	_, err = cqrs.Subscribe(events, "upload", func(context.Context, logRotated) error { return errors.New("bucket gone") })
	require.NoError(t, err)
	require.Error(t, cqrs.Publish(context.Background(), events, logRotated{File: "app.log"}))

	recs := jsonRecords(t, &buf)
	require.Len(t, recs, 2, "one record per subscriber")
	assert.Equal(t, "archive", recs[0]["subscriber"])
	assert.Equal(t, "INFO", recs[0]["level"])
	assert.Equal(t, "upload", recs[1]["subscriber"])
	assert.Equal(t, "ERROR", recs[1]["level"])
	assert.Equal(t, "bucket gone", recs[1]["error"])
	assert.Equal(t, "event", recs[1]["kind"])
}

// TestTimeoutBoundsAWholeStream: on a stream, the timeout interceptor
// bounds the whole stream, not each item.
func TestTimeoutBoundsAWholeStream(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		queries := cqrs.NewQueryBus(cqrs.WithInterceptors(middleware.Timeout(2500 * time.Millisecond)))
		require.NoError(t, cqrs.HandleStream(queries, func(ctx context.Context, q tailLog, yield func(string) bool) error {
			for range q.Lines {
				select {
				case <-time.After(time.Second): // one item a second
				case <-ctx.Done():
					return ctx.Err()
				}
				if !yield("line") {
					return nil
				}
			}
			return nil
		}))
		items := 0
		var last error
		for _, err := range cqrs.Stream(context.Background(), queries, tailLog{Lines: 10}) {
			if err != nil {
				last = err
				continue
			}
			items++
		}
		assert.Equal(t, 2, items, "items at 1s and 2s; the deadline comes at 2.5s")
		require.ErrorIs(t, last, cqrs.ErrExecutionTimeout)
		require.ErrorIs(t, last, context.DeadlineExceeded)
	})
}
