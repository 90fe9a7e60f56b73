package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/cocmd/cocmd/internal/datadir"
	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/store/sqlite"
)

// rotateAPIKey replaces the API key of a data directory: the way back for
// an operator who lost the key printed at first start, or needs a new one.
func rotateAPIKey(args []string) error {
	c := defaults()
	if v := os.Getenv("COCMD_DATA_DIR"); v != "" {
		c.DataDir = v
	}
	fs := flag.NewFlagSet("rotate-api-key", flag.ContinueOnError)
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory (env COCMD_DATA_DIR)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The server's lock: a running server keeps this out instead of
	// keeping the old key in memory against the new one on disk.
	dir, err := datadir.Open(c.DataDir)
	if err != nil {
		return err
	}
	defer dir.Close()
	path := dir.DBPath()
	if dir.New {
		return fmt.Errorf("no database at %s: has cocmd serve ever run on this data directory?", path)
	}
	ctx := context.Background()
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	key, err := server.RotateAPIKey(ctx, db)
	if err != nil {
		return err
	}
	fmt.Printf("New API key (shown once; keep it): %s\nIt takes effect at the next start of cocmd serve.\n", key)
	return nil
}
