// Package pgtest runs a throwaway PostgreSQL server for tests: a fresh
// data directory, 127.0.0.1 on a free port, its unix socket in that
// directory, stopped and removed at the end. It uses the server binaries of
// Debian's postgresql package (scripts/deps.sh postgresql installs them)
// and never touches a system cluster.
package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardchat/shard/internal/freeport"
)

// ErrNoServer says the server binaries are missing, and how to get them.
var ErrNoServer = errors.New("pgtest: PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin, $SHARD_PG_BIN or PATH: run `scripts/deps.sh postgresql` (Debian package postgresql)")

// startTimeout bounds initdb plus server start: about 1 s on a laptop.
const startTimeout = 60 * time.Second

// Server is a running throwaway PostgreSQL server.
type Server struct {
	Port    int
	dir     string
	bin     string // of postgres
	data    string // the data directory, in dir
	cred    *syscall.Credential
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the server process has ended
	exitErr error         // how it ended, once exited is closed
	log     *logTail
}

// BinDir finds the directory of initdb and postgres: $SHARD_PG_BIN, else
// the newest /usr/lib/postgresql/N/bin (Debian), else PATH.
func BinDir() (string, error) {
	if d := os.Getenv("SHARD_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNoServer
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start starts a server for t, creates a database `shard` in it and
// returns its URL; the server stops when t ends. It fails t, saying what
// to install, when the binaries are missing.
func Start(t testing.TB) string {
	t.Helper()
	s, err := StartServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.CreateDatabase(ctx, "shard"); err != nil {
		t.Fatalf("pgtest: create database shard: %v", err)
	}
	return s.URL("shard")
}

// StartServer initializes a data directory and starts a server on it; the
// caller stops it. PostgreSQL refuses to run as root: as root, both run as
// the `postgres` user (which the Debian package creates).
func StartServer() (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	cred, err := credential(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--no-locale", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	// A free port can be taken between the probe and the bind: try again.
	for attempt := 0; ; attempt++ {
		port, err := freeport.TCP("127.0.0.1")
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s := &Server{Port: port, dir: dir, bin: bin, data: data, cred: cred, log: &logTail{}}
		err = s.start()
		if err == nil {
			return s, nil
		}
		if attempt == 2 || !strings.Contains(err.Error(), "could not") {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// start starts the server process on s's data directory and port, and
// waits until it accepts connections.
func (s *Server) start() error {
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.data,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(s.Port),
		"-c", "unix_socket_directories="+s.dir,
		"-c", "max_connections=300", // parallel tests, several pools each
		"-c", "logging_collector=off",
	)
	// Pdeathsig: a test binary that dies takes its server with it. Setpgid:
	// the server and its backends are one process group, for Crash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	exited := make(chan struct{})
	s.cmd, s.exited = cmd, exited
	ready := make(chan struct{})
	go func() {
		// Read the log to its end, always: a full pipe would stall the server.
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			s.log.add(line)
			if strings.Contains(line, "database system is ready to accept connections") {
				once.Do(func() { close(ready) })
			}
		}
		s.exitErr = cmd.Wait()
		close(exited)
	}()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("pgtest: postgres exited (%v); could not start. Its log:\n%s", s.exitErr, s.log.String())
	case <-time.After(startTimeout):
		s.kill()
		return fmt.Errorf("pgtest: postgres not ready after %s. Its log:\n%s", startTimeout, s.log.String())
	}
}

// credential returns who the server runs as, and hands dir to them.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root needs the postgres user to run the server as: %w (%v)", err, ErrNoServer)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// URL is the connection URL of database db.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// CreateDatabase creates database name.
func (s *Server) CreateDatabase(ctx context.Context, name string) error {
	return s.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// Exec runs sql in database db.
func (s *Server) Exec(ctx context.Context, db, sql string) error {
	conn, err := pgx.Connect(ctx, s.URL(db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop shuts the server down (fast shutdown: sessions are cut) and removes
// its directory.
func (s *Server) Stop() error {
	if s == nil {
		return nil
	}
	s.Down()
	return os.RemoveAll(s.dir)
}

// Down shuts the server down as `pg_ctl stop -m fast` does (SIGINT): open
// sessions are cut, transactions under way roll back, the data stays. Up
// starts it again. It returns once the server has exited.
func (s *Server) Down() {
	select {
	case <-s.exited: // down already
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		s.kill()
	}
}

// Crash kills the server and all its backends at once with SIGKILL, as a
// kill -9 of the service would: connections drop mid-transaction, and Up
// recovers the data from the write-ahead log.
func (s *Server) Crash() { s.kill() }

// Up starts the server again after Down or Crash, on the same data and
// port, and returns once it accepts connections.
func (s *Server) Up() error { return s.start() }

func (s *Server) kill() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// Once starts one server for a whole test binary on first use: tests that
// need none never start it. Stop it from TestMain.
type Once struct {
	once    sync.Once
	srv     *Server
	err     error
	dbOnce  sync.Once
	dbErr   error
	schemas atomic.Int64
}

// TestDB is the database FreshSchema makes its schemas in.
const TestDB = "shard_test"

// Get returns the server, starting it on first use; it fails t when the
// server cannot start, saying why.
func (o *Once) Get(t testing.TB) *Server {
	t.Helper()
	o.once.Do(func() { o.srv, o.err = StartServer() })
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.srv
}

// FreshSchema creates an empty schema in TestDB and returns a URL whose
// connections work in it (search_path): an isolated, cheap place for one
// test, much faster to make than a database.
func (o *Once) FreshSchema(t testing.TB) string {
	t.Helper()
	s := o.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o.dbOnce.Do(func() { o.dbErr = s.CreateDatabase(ctx, TestDB) })
	if o.dbErr != nil {
		t.Fatalf("pgtest: create database %s: %v", TestDB, o.dbErr)
	}
	schema := fmt.Sprintf("t%d", o.schemas.Add(1))
	if err := s.Exec(ctx, TestDB, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	return s.URL(TestDB) + "&search_path=" + schema
}

// Stop stops the server if it was started.
func (o *Once) Stop() error { return o.srv.Stop() }

// logTail keeps the last lines of the server's log, for error messages.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

func (l *logTail) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 50 {
		l.lines = l.lines[1:]
	}
	l.lines = append(l.lines, line)
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
