// Package shardproc runs the shard binary as real processes on loopback:
// it builds the binary, picks free addresses, starts one node or a cluster,
// waits until they are ready and agree on the ring, drains them with
// SIGTERM and kills them with SIGKILL. The tests that need whole processes
// (cmd/shard, web) use it through internal/testcluster, and bench uses it
// for its local clusters; it reports errors instead of failing a test, and
// never imports testing, so that the load generator can link it.
package shardproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrNoModule says Build was called outside the shard module's source.
var ErrNoModule = errors.New("not inside the shard module")

// Build compiles cmd/shard into dir and returns the binary's path; flags go
// to go build (the tests give -race). It needs the module's source: it runs
// from the module that holds the working directory.
func Build(ctx context.Context, dir string, flags ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", ErrNoModule
	}
	bin := filepath.Join(dir, "shard")
	args := append(append([]string{"build"}, flags...), "-o", bin, "github.com/shardchat/shard/cmd/shard")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cmd/shard: %v\n%s", err, out)
	}
	return bin, nil
}
