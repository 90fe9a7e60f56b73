package datadir

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A second Open of the same directory fails while the first holds it, and
// works once it is closed.
func TestOpen_oneAtATime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !d.New {
		t.Error("a directory without a database is not new")
	}
	_, err = Open(dir)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second open: %v", err)
	}
	d.Close()
	d2, err := Open(dir)
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	d2.Close()
}

// TestMain lets the test binary play the other process: with
// COCMD_TEST_HOLD set, it opens that directory, says so, and waits to be
// killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("COCMD_TEST_HOLD"); dir != "" {
		if _, err := Open(dir); err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("holding\n")
		select {}
	}
	os.Exit(m.Run())
}

// The lock holds across processes: another process holding the directory
// keeps this one out, and its death — by SIGKILL, with no chance to clean
// up — frees it.
func TestOpen_lockAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "COCMD_TEST_HOLD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make([]byte, 8)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "holding\n" {
		t.Fatalf("the other process: %q %v", line, err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("open while another process holds it: %v", err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	d, err := Open(dir)
	if err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	d.Close()
}

// An empty or foreign database file is refused, never taken for a new
// directory.
func TestOpen_refusesEmptyOrForeignDatabase(t *testing.T) {
	for name, content := range map[string]string{"empty": "", "foreign": "hello, this is not a database"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, DBName), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), DBName) {
				t.Fatalf("open: %v", err)
			}
			b, _ := os.ReadFile(filepath.Join(dir, DBName))
			if string(b) != content {
				t.Fatal("the file was changed")
			}
		})
	}
}

// The directory ends up 0700 and every file in it 0600, whatever the umask
// and the modes they had.
func TestOpen_modes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, DBName), []byte("SQLite format 3\x00rest"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, DBName+"-wal"), nil, 0o666); err != nil {
		t.Fatal(err)
	}
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.New {
		t.Error("a directory with a database is new")
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v", fi.Mode().Perm())
	}
	for _, f := range []string{DBName, DBName + "-wal", lockName} {
		if fi, _ := os.Stat(filepath.Join(dir, f)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, fi.Mode().Perm())
		}
	}
}
