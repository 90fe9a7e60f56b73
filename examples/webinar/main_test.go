package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/store/sqlite"
)

// The example runs against a real server and tells the story it promises.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cocmd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys, err := server.Bootstrap(ctx, db, "ck_example_key_0123456", true)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := meeting.NewRegistry(db, meeting.Config{Logger: log})
	srv := server.New(server.Config{Logger: log}, db, reg, keys)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	defer func() { hs.Close(); reg.Close(); srv.Wait() }()

	var out bytes.Buffer
	if err := run(ctx, "http://"+ln.Addr().String(), "ck_example_key_0123456", 4, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		"pending, oldest first: viewer-0 viewer-1 viewer-2",
		"viewer-0 OFF_STAGE",
		"viewer-1 OFF_STAGE",
		"viewer-2 ON_STAGE",
		"[viewer-0] removedFromStage",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
