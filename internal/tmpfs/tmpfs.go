// Package tmpfs mounts a small tmpfs for a test: a disk that a test can
// fill, to see what fills it does to a node. It never touches a mount it
// did not make.
package tmpfs

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size (as mount(8) takes it: "160m") on a new
// temporary directory and returns the directory; it is unmounted when the
// test ends. It skips the test, saying why, when the test does not run as
// root or the kernel refuses the mount (an unprivileged container).
func Mount(t testing.TB, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a full disk is a tmpfs the test mounts, which needs root: skipped when not root")
	}
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("mount -t tmpfs refused (%v: %s): skipped where the kernel lets no test mount, such as an unprivileged container",
			err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		// Lazy: a process the test started may still hold a file open.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Fill writes zeros to a new file at path until the disk is full and
// returns how many bytes it wrote; removing the file gives the space back.
func Fill(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zeros := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(zeros)
		n += int64(w)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", path, err)
			}
			return n
		}
	}
}
