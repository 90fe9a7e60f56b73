package server

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store/sqlite"
)

func TestTokens(t *testing.T) {
	now := time.Now()
	tk := NewTokens([]byte("secret"), func() time.Time { return now })
	tok, exp := tk.Sign("m", "p", time.Hour)
	c, err := tk.Verify(tok)
	if err != nil || c.Meeting != "m" || c.Participant != "p" || c.Expires != exp.Unix() {
		t.Fatalf("%+v %v", c, err)
	}
	other := NewTokens([]byte("other secret"), nil)
	if _, err := other.Verify(tok); !errors.Is(err, stage.ErrUnauthenticated) {
		t.Fatalf("another server's token: %v", err)
	}
	now = now.Add(2 * time.Hour)
	if _, err := tk.Verify(tok); !errors.Is(err, stage.ErrUnauthenticated) {
		t.Fatalf("expired: %v", err)
	}
	for _, bad := range []string{"", "v1.", "v1..", "v2." + tok[3:], tok + "x", strings.Repeat("v1.a", 400)} {
		if _, err := tk.Verify(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRotateAPIKey(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cocmd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := RotateAPIKey(ctx, db); err == nil {
		t.Fatal("rotated a key that was never made")
	}
	k, err := Bootstrap(ctx, db, "", true)
	if err != nil || !strings.HasPrefix(k.NewAPIKey, "ck_") {
		t.Fatal(k, err)
	}
	again, err := Bootstrap(ctx, db, "", true)
	if err != nil || again.NewAPIKey != "" || string(again.TokenSecret) != string(k.TokenSecret) {
		t.Fatalf("second start made new secrets: %v", err)
	}
	key, err := RotateAPIKey(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Bootstrap(ctx, db, k.NewAPIKey, true); err == nil {
		t.Fatal("the old key is still accepted")
	}
	if _, err := Bootstrap(ctx, db, key, true); err != nil {
		t.Fatalf("the new key: %v", err)
	}
}
