package main

import (
	"archive/zip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// writeTree writes files (slash-separated names) under a new directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	}
	return dir
}

// zipNames lists the names in a zip file.
func zipNames(t *testing.T, name string) []string {
	t.Helper()
	r, err := zip.OpenReader(name)
	require.NoError(t, err)
	defer r.Close()
	var names []string
	for _, f := range r.File {
		names = append(names, f.Name)
	}
	slices.Sort(names)
	return names
}

func TestPublish(t *testing.T) {
	gomod := "module example.com/Repo\n\ngo 1.26.0\n"
	repo := writeTree(t, map[string]string{
		"go.mod":             gomod,
		"a.go":               "package repo\n",
		".git":               "gitdir: /elsewhere\n",
		".ci/run":            "#!/bin/sh\n",
		"sub/go.mod":         "module example.com/Repo/sub\n\ngo 1.26.0\n",
		"sub/b.go":           "package sub\n",
		"sub/.git/HEAD":      "ref: refs/heads/main\n",
		"internal/x/x.go":    "package x\n",
		"nested/tool/go.mod": "module tool\n",
	})
	out := t.TempDir()
	at := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

	m, size, err := publish(out, repo, "v0.1.0", at)
	require.NoError(t, err)
	assert.Equal(t, "example.com/Repo", m.Path)
	zipInfo, err := os.Stat(filepath.Join(out, "example.com", "!repo", "@v", "v0.1.0.zip"))
	require.NoError(t, err)
	assert.Equal(t, zipInfo.Size(), size)
	sub, _, err := publish(out, filepath.Join(repo, "sub"), "v0.1.0", at)
	require.NoError(t, err)
	assert.Equal(t, "example.com/Repo/sub", sub.Path)

	// Upper-case letters are escaped as the go command asks for them.
	vdir := filepath.Join(out, "example.com", "!repo", "@v")
	assert.Equal(t, []string{
		"example.com/Repo@v0.1.0/.ci/run",
		"example.com/Repo@v0.1.0/a.go",
		"example.com/Repo@v0.1.0/go.mod",
		"example.com/Repo@v0.1.0/internal/x/x.go",
	}, zipNames(t, filepath.Join(vdir, "v0.1.0.zip")), "no VCS files, no nested modules")
	assert.Equal(t, []string{
		"example.com/Repo/sub@v0.1.0/b.go",
		"example.com/Repo/sub@v0.1.0/go.mod",
	}, zipNames(t, filepath.Join(out, "example.com", "!repo", "sub", "@v", "v0.1.0.zip")))

	mod, err := os.ReadFile(filepath.Join(vdir, "v0.1.0.mod"))
	require.NoError(t, err)
	assert.Equal(t, gomod, string(mod))

	var info struct {
		Version string
		Time    time.Time
	}
	data, err := os.ReadFile(filepath.Join(vdir, "v0.1.0.info"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &info))
	assert.Equal(t, "v0.1.0", info.Version)
	assert.True(t, at.Equal(info.Time))

	// Another version is added to the list; the same one is not repeated.
	_, _, err = publish(out, repo, "v0.2.0", at)
	require.NoError(t, err)
	_, _, err = publish(out, repo, "v0.2.0", at)
	require.NoError(t, err)
	list, err := os.ReadFile(filepath.Join(vdir, "list"))
	require.NoError(t, err)
	assert.Equal(t, "v0.1.0\nv0.2.0\n", string(list))
}

func TestPublishRefuses(t *testing.T) {
	repo := writeTree(t, map[string]string{"go.mod": "module example.com/repo\n", "a.go": "package repo\n"})
	for name, tc := range map[string]struct{ dir, version string }{
		"no go.mod":                  {t.TempDir(), "v0.1.0"},
		"version not canonical":      {repo, "v0.1"},
		"not a semantic version":     {repo, "latest"},
		"major version v2 needs /v2": {repo, "v2.0.0"},
	} {
		t.Run(name, func(t *testing.T) {
			out := t.TempDir()
			_, _, err := publish(out, tc.dir, tc.version, time.Now())
			require.Error(t, err)
			assert.Contains(t, err.Error(), "modproxy: ")
			entries, err := os.ReadDir(out)
			require.NoError(t, err)
			assert.Empty(t, entries, "nothing written")
		})
	}
}
