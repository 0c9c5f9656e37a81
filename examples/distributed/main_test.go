package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRunAllSharesTheLoad runs every role in one process: both handlers
// serve some of the resizes, and the caller gets the whole service.
func TestRunAllSharesTheLoad(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, runAll(context.Background(), &out, 200))
	lines := regexp.MustCompile(`(h\d) handled (\d+) of 200`).FindAllStringSubmatch(out.String(), -1)
	require.Len(t, lines, 2, "both handlers served some: %s", out.String())
	total := 0
	for _, l := range lines {
		n, err := strconv.Atoi(l[2])
		require.NoError(t, err)
		assert.Positive(t, n)
		total += n
	}
	assert.Equal(t, 200, total)
	// The rest of the service: its own error, its query, its stream and
	// the event of every resize.
	assert.Contains(t, out.String(), "refused: huge.png at 10000: too wide\n")
	assert.Contains(t, out.String(), "widths: [320 640 1280]\n")
	assert.Contains(t, out.String(), "tiles of img-00.png: 4\n")
	assert.Contains(t, out.String(), "the gallery saw 200 of 200 resizes\n")
}
