package main

import (
	"bytes"
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
	require.NoError(t, run(&out))
	assert.Equal(t, `account 1 holds 100
handler's own error:   errors.Is(err, no such account) = true
no handler:            errors.Is(err, cqrs: handler not found) = true
registered twice:      errors.Is(err, cqrs: handler already registered) = true
wrong result type:     errors.Is(err, cqrs: wrong result type) = true
nil message:           errors.Is(err, cqrs: nil message) = true
handler panicked:      errors.Is(err, cqrs: handler panicked) = true
                       value "unlucky amount", stack of true
nil handler:           errors.Is(err, cqrs: nil handler) = true
interface message:     errors.Is(err, cqrs: invalid message type) = true
nil bus:               errors.Is(err, cqrs: nil bus) = true
nil context:           errors.Is(err, cqrs: nil context) = true
cancelled context:     errors.Is(err, context canceled) = true
`, out.String())
}
