package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/cocmd/cocmd/server"
)

// rotateSigningKey makes a new token signing key for a stopped server's
// data directory; the older keys retire after -retire-after. A running
// server rotates through its REST API instead (POST /v1/signing-keys/rotate):
// this command takes the data directory's lock, so it refuses to run beside
// one.
func rotateSigningKey(args []string) error {
	fs := flag.NewFlagSet("rotate-signing-key", flag.ContinueOnError)
	dataDir := dataDirFlag(fs)
	grace := fs.Duration("retire-after", 24*time.Hour, "how long tokens of the older keys keep working; 0: they stop now")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *grace < 0 {
		return fmt.Errorf("retire-after %v: must not be negative", *grace)
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
	id, err := k.Rotate(time.Now(), *grace)
	if err != nil {
		return err
	}
	fmt.Printf("New signing key %s. Tokens of the older keys stop working %s.\n", id, when(*grace))
	return nil
}

func when(grace time.Duration) string {
	if grace == 0 {
		return "now"
	}
	return "in " + grace.String()
}
