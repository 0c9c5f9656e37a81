package middleware_test

import (
	"errors"
	"testing"

	"github.com/typedcqrs/dispatch/middleware"
)

// FuzzParseConfig: whatever the bytes, ParseConfig returns, and either a
// Config that validates or an error wrapping ErrConfig.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		fullYAML, "", "{}", `{"timeout": "250ms", "rate_limit": {"rate": 5}}`,
		"timeout: 1s\ntimeout: 2s\n", "a: &x [*x]\n", "queries: {cache: {ttl: 0}}\n",
		"commands:\n  retry: {jitter: .nan}\n", "---\n---\n", "logging: {level: warn+2}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := middleware.ParseConfig(data)
		if err != nil {
			if !errors.Is(err, middleware.ErrConfig) {
				t.Fatalf("error does not wrap ErrConfig: %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted what Validate refuses: %v", err)
		}
	})
}
