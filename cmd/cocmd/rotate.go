package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

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
	path := filepath.Join(c.DataDir, "cocmd.db")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no database at %s: %w", path, err)
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
	fmt.Printf("New API key (shown once; keep it): %s\nRestart cocmd serve for it to take effect; the old key stops working then.\n", key)
	return nil
}
