// Package datadir guards a cocmd data directory: one process at a time
// (an OS lock on its LOCK file, held for the process's life), owner-only
// modes on the directory and everything in it, and a database file that is
// either absent (a new directory) or really an SQLite database — never an
// empty or foreign file taken silently for a new one.
package datadir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// DBName is the database's file name in a data directory.
const DBName = "cocmd.db"

// lockName is the file whose lock marks the directory as in use. It is not
// the database: closing any handle on the database would drop SQLite's own
// locks, and a PID file outlives a crash.
const lockName = "LOCK"

// sqliteMagic starts every SQLite database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// ErrLocked is returned when another process holds the data directory.
var ErrLocked = errors.New("datadir: in use by another process")

// Dir is a data directory locked by this process.
type Dir struct {
	Path string
	// New is true when the directory had no database: the caller creates
	// one.
	New  bool
	lock *os.File
}

// Open creates the directory if needed (mode 0700), takes its lock, makes
// the directory and every file in it owner-only, and checks its database.
// The caller must Close it when done; the lock also goes when the process
// ends, however it ends.
func Open(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(path, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: another cocmd is using the data directory %s (it holds %s); stop it first, or give this one another -data",
				ErrLocked, path, filepath.Join(path, lockName))
		}
		return nil, fmt.Errorf("datadir: locking %s: %w", path, err)
	}
	d := &Dir{Path: path, lock: f}
	if err := d.check(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.Secure(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// DBPath is the path of the database file.
func (d *Dir) DBPath() string { return filepath.Join(d.Path, DBName) }

// KeysPath is the path of the token signing keys' file: beside the
// database, never in it.
func (d *Dir) KeysPath() string { return filepath.Join(d.Path, "keys.json") }

// check decides whether the directory is new, and refuses a database
// file that is not one.
func (d *Dir) check() error {
	f, err := os.Open(d.DBPath())
	if errors.Is(err, os.ErrNotExist) {
		d.New = true
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, len(sqliteMagic))
	n, err := io.ReadFull(f, head)
	switch {
	case n == 0:
		return fmt.Errorf("datadir: %s is empty: it is not a cocmd database; move it away to start a new data directory, or restore it from a backup", d.DBPath())
	case err != nil || !bytes.Equal(head, sqliteMagic):
		return fmt.Errorf("datadir: %s is not an SQLite database; move it away to start a new data directory, or restore it from a backup", d.DBPath())
	}
	return nil
}

// Secure makes every file in the directory owner-only (0600), whatever the
// umask made it: the database, its WAL and shared-memory files, the keys.
// Call it again after files were created.
func (d *Dir) Secure() error {
	ents, err := os.ReadDir(d.Path)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			if err := os.Chmod(filepath.Join(d.Path, e.Name()), 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close releases the lock.
func (d *Dir) Close() error {
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close() // closing the descriptor releases the flock
	d.lock = nil
	return err
}
