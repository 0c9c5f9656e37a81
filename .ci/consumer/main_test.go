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
	assert.Equal(t, "hello, consumer\nspan: command main.Greet\nspan: command main.Greet\noutbox pending: 1\n", out.String(),
		"the reply, a span on each side of the wire, and the event the outbox holds")
}
