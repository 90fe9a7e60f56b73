package server

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store/sqlite"
)

func memKeyring(t *testing.T) *Keyring {
	k, err := OpenKeyring(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestTokens(t *testing.T) {
	now := time.Now()
	tk := NewTokens(memKeyring(t), func() time.Time { return now })
	tok, exp := tk.Sign("m", "p", time.Hour)
	c, err := tk.Verify(tok)
	if err != nil || c.Meeting != "m" || c.Participant != "p" || c.Expires != exp.Unix() {
		t.Fatalf("%+v %v", c, err)
	}
	other := NewTokens(memKeyring(t), nil)
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
	if err != nil || again.NewAPIKey != "" || string(again.APIKeyHash) != string(k.APIKeyHash) {
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

// Rotating the signing key: new tokens name the new key; tokens of the old
// one verify until it retires, then never again, also after a restart
// (the keyring is a file, 0600). The keyring survives a reopen.
func TestKeyring_rotate(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.json")
	now := time.Now()
	clock := func() time.Time { return now }
	k, err := OpenKeyring(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tk := NewTokens(k, clock)
	old, _ := tk.Sign("m", "p", 48*time.Hour)
	id, err := k.Rotate(now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := tk.Sign("m", "p", 48*time.Hour)
	if c, err := tk.Verify(fresh); err != nil || c.Key != id {
		t.Fatalf("a new token: %+v %v", c, err)
	}
	if _, err := tk.Verify(old); err != nil {
		t.Fatalf("an old token within the grace: %v", err)
	}
	k2, err := OpenKeyring(ctx, path, nil) // as after a restart
	if err != nil || len(k2.Keys()) != 2 || k2.Keys()[1].Secret != nil {
		t.Fatalf("reopened: %+v %v", k2.Keys(), err)
	}
	now = now.Add(time.Hour)
	for _, ring := range []*Keyring{k, k2} {
		if _, err := NewTokens(ring, clock).Verify(old); !errors.Is(err, stage.ErrUnauthenticated) || !strings.Contains(err.Error(), "retired") {
			t.Errorf("an old token after the grace: %v", err)
		}
	}
	gone, err := k.Prune(now)
	if err != nil || len(gone) != 1 {
		t.Fatalf("pruned %v %v", gone, err)
	}
	if _, err := tk.Verify(old); !errors.Is(err, stage.ErrUnauthenticated) {
		t.Errorf("an old token after pruning: %v", err)
	}
	if _, err := tk.Verify(fresh); err != nil {
		t.Errorf("the new key's token after pruning: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("keyring file: %v %v", fi, err)
	}
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKeyring(ctx, path, nil); err == nil {
		t.Error("an empty keyring file was accepted")
	}
}

// A data directory from before the keyring: its database's secret moves to
// the keyring as the legacy key, the tokens it signed keep working, and the
// database no longer holds it.
func TestKeyring_migratesLegacySecret(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "cocmd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	secret := []byte("the-old-secret-of-this-directory")
	if err := db.SetSetting(ctx, settingLegacySecret, secret); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(Claims{Meeting: "m", Participant: "p", Expires: time.Now().Add(time.Hour).Unix()})
	msg := tokenPrefix + b64.EncodeToString(b)
	legacy := msg + "." + b64.EncodeToString(mac(secret, msg))
	k, err := OpenKeyring(ctx, filepath.Join(dir, "keys.json"), db)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := NewTokens(k, nil).Verify(legacy); err != nil || c.Participant != "p" {
		t.Fatalf("a legacy token: %+v %v", c, err)
	}
	if _, err := db.Setting(ctx, settingLegacySecret); !errors.Is(err, stage.ErrNotFound) {
		t.Errorf("the database still holds the secret: %v", err)
	}
}
