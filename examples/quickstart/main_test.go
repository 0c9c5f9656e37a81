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
	assert.Equal(t, `command CreateUser -> user 1
query GetUser -> {ID:1 Name:Ada Email:ada@example.com}
ExecuteTyped -> Ada <ada@example.com>
handler error: a user needs a name
not found: true (cqrs: handler not found for main.CreateUser on the query bus)
wrong result type: true
metrics: command main.CreateUser: 2 calls, 1 errors
metrics: query main.GetUser: 2 calls, 0 errors
`, out.String())
}
