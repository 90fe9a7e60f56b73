package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/store/sqlite"
)

// rotateAPIKey replaces the API key of a data directory: the way back for
// an operator who lost the key printed at first start, or needs a new one.
func rotateAPIKey(args []string) error {
	fs := flag.NewFlagSet("rotate-api-key", flag.ContinueOnError)
	dataDir := dataDirFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := lockExisting(*dataDir)
	if err != nil {
		return err
	}
	defer dir.Close()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, dir.DBPath())
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
