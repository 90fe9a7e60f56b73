package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cocmd/cocmd/internal/datadir"
	"github.com/cocmd/cocmd/store/sqlite"
)

// backup writes a consistent copy of a data directory's database, while
// the server runs: it only reads (one snapshot), so it takes no lock. The
// token signing keys (keys.json) are not in the database; copy that file
// too if the tokens given out should still work after a restore.
func backup(args []string) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	dataDir := dataDirFlag(fs)
	out := fs.String("out", "", "the backup file to write (a new file)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("backup: -out names the file to write")
	}
	path := filepath.Join(*dataDir, datadir.DBName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("backup: no database at %s: %w", path, err)
	}
	if err := sqlite.Backup(context.Background(), path, *out); err != nil {
		return err
	}
	fmt.Printf("Backup of %s written to %s.\n", path, *out)
	return nil
}
