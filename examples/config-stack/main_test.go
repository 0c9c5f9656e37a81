package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRun(t *testing.T) {
	var out, logs bytes.Buffer
	require.NoError(t, run(&out, &logs))

	// One JSON record per dispatch, each with the service's attributes.
	// Refusals (a duplicate, an invalid order, a missing one) are the
	// caller's doing: WARN, not ERROR.
	// Each record has its message's identity: an ID of its own, in the
	// conversation the run started.
	var outcomes []string
	ids := map[string]bool{}
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		assert.Equal(t, "orders", rec["service"])
		assert.Equal(t, "cqrs dispatch", rec["msg"])
		outcomes = append(outcomes, rec["level"].(string)+" "+rec["message"].(string)+" "+rec["outcome"].(string))
		id, ok := rec["identity"].(map[string]any)
		require.True(t, ok, line)
		assert.Equal(t, "request-42", id["correlation_id"], line)
		ids[id["id"].(string)] = true
	}
	assert.Len(t, ids, len(outcomes), "one ID per message")
	assert.Equal(t, []string{
		"INFO main.PlaceOrder ok", "INFO main.PlaceOrder ok", "WARN main.PlaceOrder error", "WARN main.PlaceOrder error",
		"INFO main.GetOrder ok", "INFO main.GetOrder ok", "WARN main.GetOrder error", "INFO main.GetOrder ok", "INFO main.GetOrder ok",
	}, outcomes)
	assert.Contains(t, logs.String(), `"error":"cqrs: validation failed: command main.PlaceOrder: PlaceOrder.Customer fails \"email\", PlaceOrder.Items fails \"min\" (1)"`)

	report := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, report, 4)
	assert.Regexp(t, `^command main.PlaceOrder\s+4\s+2\s`, report[1])
	assert.Regexp(t, `^query\s+main.GetOrder\s+5\s+1\s`, report[2])
	assert.Equal(t, "cache: 2 hits, 3 misses", report[3])
}
