package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/store/natsjs"
)

// rotateSigningKey makes a new token signing key for a stopped server's
// data directory; the older keys retire after -retire-after. A running
// server rotates through its REST API instead (POST /v1/signing-keys/rotate):
// this command takes the data directory's lock, so it refuses to run beside
// one. With -nats, it rotates a cluster's keys in the shared store, running
// nodes and all (they read the keys again within a minute, and at once
// when a token names a key they do not know).
func rotateSigningKey(args []string) error {
	fs := flag.NewFlagSet("rotate-signing-key", flag.ContinueOnError)
	dataDir := dataDirFlag(fs)
	natsURL := natsFlag(fs)
	grace := fs.Duration("retire-after", 24*time.Hour, "how long tokens of the older keys keep working; 0: they stop now")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *grace < 0 {
		return fmt.Errorf("retire-after %v: must not be negative", *grace)
	}
	rotate := func(k *server.Keyring, of string) error {
		id, err := k.Rotate(time.Now(), *grace)
		if err != nil {
			return err
		}
		fmt.Printf("New signing key %s%s. Tokens of the older keys stop working %s.\n", id, of, when(*grace))
		return nil
	}
	if *natsURL != "" {
		return withSharedStore(*natsURL, func(ctx context.Context, st *natsjs.Store) error {
			k, err := server.OpenSharedKeyring(ctx, st)
			if err != nil {
				return err
			}
			return rotate(k, " of the cluster")
		})
	}
	dir, err := lockExisting(*dataDir)
	if err != nil {
		return err
	}
	defer dir.Close()
	k, err := server.OpenKeyring(context.Background(), dir.KeysPath(), nil)
	if err != nil {
		return err
	}
	return rotate(k, "")
}

func when(grace time.Duration) string {
	if grace == 0 {
		return "now"
	}
	return "in " + grace.String()
}
