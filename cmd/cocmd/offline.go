package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cocmd/cocmd/internal/datadir"
)

// dataDirFlag defines -data on fs: the data directory an offline command
// works on (COCMD_DATA_DIR, else serve's default).
func dataDirFlag(fs *flag.FlagSet) *string {
	def := defaults().DataDir
	if v := os.Getenv("COCMD_DATA_DIR"); v != "" {
		def = v
	}
	return fs.String("data", def, "data directory (env COCMD_DATA_DIR)")
}

// lockExisting takes the lock of a data directory serve has set up, as the
// offline commands that change it do, so that a running server keeps them
// out.
func lockExisting(path string) (*datadir.Dir, error) {
	dir, err := datadir.Open(path)
	if err != nil {
		return nil, err
	}
	if dir.New {
		dir.Close()
		return nil, fmt.Errorf("no database at %s: has cocmd serve ever run on this data directory?", dir.DBPath())
	}
	return dir, nil
}
