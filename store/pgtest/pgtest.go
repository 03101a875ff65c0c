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
	Port int
	dir  string
	cmd  *exec.Cmd
	exit chan error // the server process's end
	log  *logTail
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
		s, err := start(bin, dir, data, cred)
		if err == nil {
			return s, nil
		}
		if attempt == 2 || !strings.Contains(err.Error(), "could not") {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

func start(bin, dir, data string, cred *syscall.Credential) (*Server, error) {
	port, err := freeport.TCP("127.0.0.1")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(port),
		"-c", "unix_socket_directories="+dir,
		"-c", "max_connections=300", // parallel tests, several pools each
		"-c", "logging_collector=off",
	)
	// Pdeathsig: a test binary that dies takes its server with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgtest: start postgres: %w", err)
	}
	s := &Server{Port: port, dir: dir, cmd: cmd, exit: make(chan error, 1), log: &logTail{}}
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
		s.exit <- cmd.Wait()
	}()
	select {
	case <-ready:
		return s, nil
	case err := <-s.exit:
		return nil, fmt.Errorf("pgtest: postgres exited (%v); could not start. Its log:\n%s", err, s.log.String())
	case <-time.After(startTimeout):
		s.kill()
		return nil, fmt.Errorf("pgtest: postgres not ready after %s. Its log:\n%s", startTimeout, s.log.String())
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
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exit:
	case <-time.After(15 * time.Second):
		s.kill()
	}
	return os.RemoveAll(s.dir)
}

func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exit
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
