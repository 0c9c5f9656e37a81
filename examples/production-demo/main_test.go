package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/typedcqrs/dispatch/middleware"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.DiscardHandler)

func newApp(t *testing.T, yaml string) (*App, *FraudCheck) {
	t.Helper()
	cfg, err := middleware.ParseConfig([]byte(yaml))
	require.NoError(t, err)
	fraud := &FraudCheck{}
	app, err := NewApp(cfg, &MemoryRepository{}, fraud, quiet)
	require.NoError(t, err)
	return app, fraud
}

// call sends one request to h and decodes the JSON reply into a map.
func call(t *testing.T, h http.Handler, method, path, body string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	var out map[string]any
	if rec.Code != http.StatusOK || !strings.HasPrefix(strings.TrimSpace(rec.Body.String()), "[") {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out), rec.Body.String())
	}
	return rec.Code, out
}

func TestAPIOverHTTP(t *testing.T) {
	app, _ := newApp(t, string(defaultConfig))
	srv := httptest.NewServer(app.Handler())
	defer srv.Close()
	post := func(path, body string) (*http.Response, map[string]any) {
		resp, err := srv.Client().Post(srv.URL+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp, out
	}

	resp, account := post("/accounts", `{"owner":"Ada","email":"ada@example.com"}`)
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, map[string]any{"id": 1.0, "owner": "Ada", "email": "ada@example.com", "balance": 0.0}, account)

	resp, account = post("/accounts/1/deposits", `{"amount":250}`)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, 250.0, account["balance"])

	get, err := srv.Client().Get(srv.URL + "/accounts/1")
	require.NoError(t, err)
	var read map[string]any
	require.NoError(t, json.NewDecoder(get.Body).Decode(&read))
	get.Body.Close()
	assert.Equal(t, http.StatusOK, get.StatusCode)
	assert.Equal(t, 250.0, read["balance"])

	// Validation failures come back as 400 with the fields.
	resp, body := post("/accounts", `{"owner":"","email":"nope"}`)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, map[string]any{"OpenAccount.Owner": "required", "OpenAccount.Email": "email"}, body["fields"])

	resp, _ = post("/accounts/7/deposits", `{"amount":5}`)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = post("/accounts", `{"owner":`)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	resp, _ = post("/accounts", `{"owner":"A","email":"a@example.com","admin":true}`)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "unknown fields are refused")

	m, err := srv.Client().Get(srv.URL + "/metrics")
	require.NoError(t, err)
	defer m.Body.Close()
	var metrics []map[string]any
	require.NoError(t, json.NewDecoder(m.Body).Decode(&metrics))
	require.Len(t, metrics, 3)
	assert.Equal(t, "main.Deposit", metrics[0]["name"])
	assert.Equal(t, 2.0, metrics[0]["calls"])
	assert.Equal(t, "closed", metrics[0]["breaker"])
}

func TestRateLimited(t *testing.T) {
	app, _ := newApp(t, "rate_limit: {rate: 1, burst: 2}\n")
	h := app.Handler()
	for range 2 {
		code, _ := call(t, h, "POST", "/accounts", `{"owner":"A","email":"a@example.com"}`)
		require.Equal(t, http.StatusCreated, code)
	}
	code, body := call(t, h, "POST", "/accounts", `{"owner":"A","email":"a@example.com"}`)
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Contains(t, body["error"], "rate limited")
}

func TestBreakerOpensAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		app, fraud := newApp(t, "metrics: true\nbreaker: {consecutive_failures: 3, open_timeout: 5s}\n")
		h := app.Handler()
		code, _ := call(t, h, "POST", "/accounts", `{"owner":"A","email":"a@example.com"}`)
		require.Equal(t, http.StatusCreated, code)
		deposit := func() int {
			code, _ := call(t, h, "POST", "/accounts/1/deposits", `{"amount":10}`)
			return code
		}

		code, _ = call(t, h, "PUT", "/admin/flaky", `{"flaky":true}`)
		require.Equal(t, http.StatusOK, code)
		for range 3 {
			assert.Equal(t, http.StatusBadGateway, deposit(), "the downstream fails")
		}
		calls := fraud.calls.Load()
		assert.Equal(t, http.StatusServiceUnavailable, deposit(), "the breaker is open")
		assert.Equal(t, calls, fraud.calls.Load(), "an open breaker spares the downstream")

		// The downstream recovers; the breaker waits out its open timeout.
		fraud.Flaky.Store(false)
		assert.Equal(t, http.StatusServiceUnavailable, deposit())
		time.Sleep(5*time.Second + time.Millisecond)
		assert.Equal(t, http.StatusOK, deposit(), "a probe gets through and closes it")
		assert.Equal(t, http.StatusOK, deposit())

		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		assert.Contains(t, rec.Body.String(), `"name":"main.Deposit","calls":7,"errors":5`)
		assert.Contains(t, rec.Body.String(), `"breaker":"closed"`)
	})
}

func TestGracefulShutdown(t *testing.T) {
	app, _ := newApp(t, string(defaultConfig))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, app.Handler(), slog.New(slog.NewTextHandler(&logs, nil))) }()

	resp, err := http.Post("http://"+ln.Addr().String()+"/accounts", "application/json",
		strings.NewReader(`{"owner":"A","email":"a@example.com"}`))
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusCreated, resp.StatusCode)

	cancel() // as SIGTERM does through signal.NotifyContext
	require.NoError(t, <-done)
	assert.Contains(t, logs.String(), "shutting down")
	http.DefaultClient.CloseIdleConnections()
	_, err = http.Get("http://" + ln.Addr().String() + "/metrics")
	require.Error(t, err, "the listener is closed")
}

func TestConfig(t *testing.T) {
	cfg, err := loadConfig("")
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, cfg.Timeout)
	cfg, err = loadConfig("config.yaml")
	require.NoError(t, err)
	assert.True(t, cfg.Validation)
	_, err = loadConfig("missing.yaml")
	require.Error(t, err)
	require.Error(t, run("127.0.0.1:0", "missing.yaml", quiet))
}

// TestLogsCarryTheRequestID: a request's X-Request-Id becomes the
// correlation ID of the message it sends, in that message's log record;
// without one, each message still has an ID of its own.
func TestLogsCarryTheRequestID(t *testing.T) {
	cfg, err := middleware.ParseConfig([]byte("logging: {level: info}\n"))
	require.NoError(t, err)
	var logs bytes.Buffer
	app, err := NewApp(cfg, &MemoryRepository{}, &FraudCheck{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	h := app.Handler()

	req := httptest.NewRequest("POST", "/accounts", strings.NewReader(`{"owner":"A","email":"a@example.com"}`))
	req.Header.Set("X-Request-Id", "req-1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusCreated, rec.Code)
	code, _ := call(t, h, "GET", "/accounts/1", "")
	require.Equal(t, http.StatusOK, code)

	var ids []map[string]any
	for line := range strings.Lines(logs.String()) {
		var r map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &r), line)
		id, ok := r["identity"].(map[string]any)
		require.True(t, ok, line)
		ids = append(ids, id)
	}
	require.Len(t, ids, 2)
	assert.Equal(t, "req-1", ids[0]["correlation_id"])
	assert.Len(t, ids[0]["id"], 36)
	assert.Equal(t, ids[1]["id"], ids[1]["correlation_id"], "no header: a conversation of its own")
}
