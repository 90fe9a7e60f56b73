package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/store/natsjs"
	"github.com/cocmd/cocmd/store/sqlite"
)

// rotateAPIKey replaces the API key of a data directory: the way back for
// an operator who lost the key printed at first start, or needs a new one.
// With -nats, it replaces a cluster's, in the shared store.
func rotateAPIKey(args []string) error {
	fs := flag.NewFlagSet("rotate-api-key", flag.ContinueOnError)
	dataDir := dataDirFlag(fs)
	natsURL := natsFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *natsURL != "" {
		return withSharedStore(*natsURL, func(ctx context.Context, st *natsjs.Store) error {
			key, err := server.RotateAPIKey(ctx, st)
			if err != nil {
				return err
			}
			fmt.Printf("New API key of the cluster (shown once; keep it): %s\nRestart the nodes one at a time with it (-api-key-file): "+
				"a node keeps the old key until it restarts, and refuses to start with the old one after.\n", key)
			return nil
		})
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
