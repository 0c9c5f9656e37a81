package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRun(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out))
	assert.Equal(t, `email: receipt for order 1 to ada@example.com (attempt 2)
stock: reserved [tea cup] for order 1
email: receipt for order 2 to ada@example.com (attempt 2)
stock: reserved [cup] for order 2
email: receipt for order 3 to ada@example.com (attempt 2)
order 3: order 3 placed, but: cqrs: event main.OrderPlaced: subscriber stock: cup is out of stock
  the subscriber that failed: stock
analytics saw orders [1 2 3]
metrics: main.OrderPlaced to analytics: 3 calls, 0 errors
metrics: main.OrderPlaced to email: 3 calls, 0 errors
metrics: main.OrderPlaced to stock: 3 calls, 1 errors
`, out.String())
}
