// Command modproxy writes a file-system Go module proxy, for GOPROXY=file://DIR,
// holding modules of this repository as they are in the working tree,
// zipped at a release version: what the public proxy will serve once the
// modules are tagged (docs/releasing.md). CI builds a consumer module
// against it to prove the modules work as users will get them.
//
// Usage:
//
//	go run . -o DIR MODULEDIR@VERSION...
//
// Each MODULEDIR holds a go.mod; its module path is read from there. The
// zip follows the rules of the go command (golang.org/x/mod/zip): nested
// modules, vendored packages and version-control files are left out.
// Files git does not track go in too, as they are in the working tree.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

func main() {
	out := flag.String("o", "", "the proxy's directory (created if missing)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: modproxy -o DIR MODULEDIR@VERSION...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	now := time.Now().UTC()
	for _, arg := range flag.Args() {
		dir, version, ok := strings.Cut(arg, "@")
		if !ok {
			fmt.Fprintf(os.Stderr, "modproxy: %q: want MODULEDIR@VERSION\n", arg)
			os.Exit(2)
		}
		m, size, err := publish(*out, dir, version, now)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// The size, for a look: what every user downloads.
		fmt.Printf("%s@%s from %s: %d kB zipped\n", m.Path, m.Version, dir, (size+999)/1000)
	}
}

// publish adds the module in dir to the proxy in out at version, with
// time t as its commit time, and returns the module's path and version and
// the size of its zip.
func publish(out, dir, version string, t time.Time) (_ module.Version, size int64, _ error) {
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return module.Version{}, 0, fmt.Errorf("modproxy: %w", err)
	}
	m := module.Version{Path: modfile.ModulePath(gomod), Version: version}
	if m.Path == "" {
		return m, 0, fmt.Errorf("modproxy: %s: no module path in go.mod", dir)
	}
	if err := module.Check(m.Path, m.Version); err != nil {
		return m, 0, fmt.Errorf("modproxy: %s: %w", dir, err)
	}
	if canonical := module.CanonicalVersion(version); canonical != version {
		return m, 0, fmt.Errorf("modproxy: %s: version %s is not canonical (%s)", dir, version, canonical)
	}
	escPath, err := module.EscapePath(m.Path)
	if err != nil {
		return m, 0, fmt.Errorf("modproxy: %w", err)
	}
	escVersion, err := module.EscapeVersion(m.Version)
	if err != nil {
		return m, 0, fmt.Errorf("modproxy: %w", err)
	}
	vdir := filepath.Join(out, filepath.FromSlash(escPath), "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return m, 0, fmt.Errorf("modproxy: %w", err)
	}
	base := filepath.Join(vdir, escVersion)

	files, err := moduleFiles(dir)
	if err != nil {
		return m, 0, fmt.Errorf("modproxy: %s: %w", dir, err)
	}
	if size, err = writeZip(base+".zip", m, files); err != nil {
		return m, 0, fmt.Errorf("modproxy: %s: %w", dir, err)
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{m.Version, t})
	if err != nil {
		return m, 0, fmt.Errorf("modproxy: %w", err)
	}
	if err := os.WriteFile(base+".info", info, 0o644); err != nil {
		return m, 0, fmt.Errorf("modproxy: %w", err)
	}
	if err := os.WriteFile(base+".mod", gomod, 0o644); err != nil {
		return m, 0, fmt.Errorf("modproxy: %w", err)
	}
	if err := addToList(filepath.Join(vdir, "list"), m.Version); err != nil {
		return m, 0, fmt.Errorf("modproxy: %w", err)
	}
	return m, size, nil
}

// moduleFiles lists the regular files under dir, leaving out
// version-control metadata, which a checkout from a tag would not hold: a
// .git directory, or the .git file of a git worktree. [zip.Create] leaves
// out what belongs to nested modules and vendored packages.
func moduleFiles(dir string) ([]zip.File, error) {
	var files []zip.File
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch d.Name() {
		case ".git", ".hg", ".svn", ".bzr":
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, file{path: path, slash: filepath.ToSlash(rel), info: info})
		return nil
	})
	return files, err
}

// file is a [zip.File] on disk.
type file struct {
	path, slash string
	info        fs.FileInfo
}

func (f file) Path() string                 { return f.slash }
func (f file) Lstat() (fs.FileInfo, error)  { return f.info, nil }
func (f file) Open() (io.ReadCloser, error) { return os.Open(f.path) }

// writeZip writes the zip of module m, made of files, to the file name
// and returns its size.
func writeZip(name string, m module.Version, files []zip.File) (size int64, err error) {
	w, err := os.Create(name)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, w.Close()) }()
	if err := zip.Create(w, m, files); err != nil {
		return 0, err
	}
	return w.Seek(0, io.SeekCurrent)
}

// addToList adds version to the proxy's list of a module's versions.
func addToList(name, version string) error {
	data, err := os.ReadFile(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	versions := strings.Fields(string(data))
	if slices.Contains(versions, version) {
		return nil
	}
	versions = append(versions, version)
	return os.WriteFile(name, []byte(strings.Join(versions, "\n")+"\n"), 0o644)
}
