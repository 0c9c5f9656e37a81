// Package pgtest runs a throw-away PostgreSQL server for tests: Debian's
// postgresql package, initdb in a temporary directory, a free port of
// 127.0.0.1, trust authentication, stopped and removed at the end. As
// root, the server runs as the postgres user, which initdb requires. It
// is what scripts/postgres.sh start does, from Go, so that a test binary
// needs no script. Nothing here mocks the database.
package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
)

// EnvDSN names the variable that, when set, gives the DSN of a server to
// use instead of starting one.
const EnvDSN = "OUTBOX_POSTGRES_DSN"

// Server is a running PostgreSQL server started by [Start].
type Server struct {
	DSN      string // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
	Port     int
	dir      string
	bin      string
	settings []string
}

// ErrNotInstalled: no initdb was found.
var ErrNotInstalled = errors.New("pgtest: PostgreSQL is not installed: run bash scripts/postgres.sh install (apt-get install postgresql)")

// Bin returns the directory of initdb and pg_ctl.
func Bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNotInstalled
}

// Fast are settings for a server whose data need not survive a crash of
// the machine: fsync and synchronous commits off. A server restarted
// with Restart keeps what was committed either way (its operating
// system is not restarted).
var Fast = []string{"fsync=off", "synchronous_commit=off", "full_page_writes=off"}

// Start initialises and starts a server in a new temporary directory,
// with the given settings (name=value) on top of the defaults.
func Start(settings ...string) (*Server, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "outbox-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin, settings: settings}
	if err := s.chown(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if out, err := s.run("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	if s.Port, err = freePort(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s.DSN = "postgres://postgres@127.0.0.1:" + strconv.Itoa(s.Port) + "/postgres?sslmode=disable"
	if err := s.start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) start() error {
	opts := "-p " + strconv.Itoa(s.Port) + " -c listen_addresses=127.0.0.1 -c unix_socket_directories=" + s.dir +
		" -c max_connections=200"
	for _, kv := range s.settings {
		opts += " -c " + kv
	}
	out, err := s.run("pg_ctl", "-D", s.data(), "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "-o", opts, "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		return fmt.Errorf("pgtest: pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	return nil
}

// Restart stops the server as a crash would (immediate: no checkpoint,
// every connection cut) and starts it again on the same port. It
// returns once the server accepts connections.
func (s *Server) Restart() error {
	if out, err := s.run("pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop"); err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %w\n%s", err, out)
	}
	return s.start()
}

// Stop stops the server and removes its directory.
func (s *Server) Stop() error {
	out, err := s.run("pg_ctl", "-D", s.data(), "-m", "fast", "-w", "stop")
	_ = os.RemoveAll(s.dir)
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// run runs a PostgreSQL program, as the postgres user when this process
// is root.
func (s *Server) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(s.bin, prog)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

// chown gives dir to the postgres user when this process is root.
func (s *Server) chown(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgtest: no postgres user (is the postgresql package installed?): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(dir, uid, gid)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
