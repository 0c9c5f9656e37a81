package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestExportStreamsEveryRow(t *testing.T) {
	handler, err := newServer(&Store{})
	require.NoError(t, err)
	srv := httptest.NewServer(handler)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/orders.csv?customer=c-1&n=2500")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/csv", resp.Header.Get("Content-Type"))
	rows, err := csv.NewReader(resp.Body).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 2501)
	assert.Equal(t, []string{"id", "customer", "total"}, rows[0])
	assert.Equal(t, []string{"1", "c-1", "7"}, rows[1])
	assert.Equal(t, []string{"2500", "c-1", "0"}, rows[2500])
}

func TestExportErrors(t *testing.T) {
	handler, err := newServer(&Store{})
	require.NoError(t, err)
	for url, want := range map[string]int{
		"/orders.csv?n=3":                 http.StatusBadRequest, // the query's own error
		"/orders.csv?customer=c-1&n=x":    http.StatusBadRequest,
		"/orders.csv?customer=c-1&n=0":    http.StatusOK,
		"/orders.csv?customer=c-1&n=1000": http.StatusOK,
	} {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
		assert.Equal(t, want, rec.Code, url)
	}
}

func TestHangingUpStopsTheQuery(t *testing.T) {
	var produced atomic.Int64
	handler, err := newServer(&Store{Produced: func(n int) { produced.Store(int64(n)) }})
	require.NoError(t, err)
	srv := httptest.NewServer(handler)
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/orders.csv?customer=c-1&n=100000000", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	lines := bufio.NewScanner(resp.Body)
	for i := 0; i < 10 && lines.Scan(); i++ {
	}
	cancel() // the client hangs up after ten lines
	_ = resp.Body.Close()
	srv.Close() // waits for the handler to return: the query stopped
	assert.Less(t, produced.Load(), int64(100_000_000), "the query stopped long before its end")
}
