package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunPrintsTheSpans(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out))

	type span struct {
		Name        string
		SpanContext struct{ SpanID string }
		Parent      struct{ SpanID string }
		Status      struct{ Code string }
	}
	var spans []span
	dec := json.NewDecoder(&out)
	for dec.More() {
		var s span
		require.NoError(t, dec.Decode(&s))
		spans = append(spans, s)
	}
	require.Len(t, spans, 4)
	names := []string{spans[0].Name, spans[1].Name, spans[2].Name, spans[3].Name}
	assert.Equal(t, []string{"warehouse.pick", "command main.Ship", "query main.Track", "query main.Track"}, names)
	assert.Equal(t, spans[1].SpanContext.SpanID, spans[0].Parent.SpanID, "the handler's span is a child of the dispatch span")
	assert.Equal(t, "Error", spans[3].Status.Code)
	assert.Equal(t, "Unset", spans[2].Status.Code)
}
