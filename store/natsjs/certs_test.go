package natsjs

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"testing"
	"time"

	"github.com/cocmd/cocmd/internal/natstest"
)

// Two nodes share the ACME storage: what one stores the other reads at
// once (whatever the key's characters), directories are listed, stated,
// deleted as certmagic expects, a missing key is fs.ErrNotExist, and a
// lock is held by one node at a time.
func TestCertStorage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := natstest.Start(t, 3)
	open := func(i int, node string) *CertStorage {
		s, err := Open(ctx, natstest.Connect(t, c.URL(i)), Config{Prefix: "c", Replicas: 3, Node: node})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		cs, err := s.CertStorage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	a, b := open(0, "a"), open(1, "b")

	const (
		dir  = "certificates/localhost-14000-dir"
		crt  = dir + "/wildcard_.meet.cocmd.test/wildcard_.meet.cocmd.test.crt"
		key  = dir + "/wildcard_.meet.cocmd.test/wildcard_.meet.cocmd.test.key"
		user = "users/ops@cocmd.test/ops.json"
	)
	for k, v := range map[string]string{crt: "CERT", key: "KEY", user: "{}", "*=odd key ü": "odd"} {
		if err := a.Store(ctx, k, []byte(v)); err != nil {
			t.Fatalf("storing %q: %v", k, err)
		}
		if got, err := b.Load(ctx, k); err != nil || string(got) != v {
			t.Fatalf("the other node loading %q: %q, %v", k, got, err)
		}
	}
	if _, err := b.Load(ctx, dir+"/nothing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("loading a missing key: %v", err)
	}
	if err := a.Store(ctx, "", []byte("x")); err == nil {
		t.Fatal("an empty key was stored")
	}

	if got, err := b.List(ctx, "certificates", false); err != nil || !slices.Equal(got, []string{dir}) {
		t.Fatalf("listing certificates/: %v, %v", got, err)
	}
	got, err := b.List(ctx, "certificates", true)
	slices.Sort(got)
	if err != nil || !slices.Equal(got, []string{crt, key}) {
		t.Fatalf("listing certificates/ recursively: %v, %v", got, err)
	}
	if all, err := b.List(ctx, "", true); err != nil || !slices.Contains(all, "*=odd key ü") || !slices.Contains(all, user) {
		t.Fatalf("listing everything: %v, %v", all, err)
	}
	if _, err := b.List(ctx, "nowhere", true); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("listing a missing directory: %v", err)
	}
	if ki, err := b.Stat(ctx, crt); err != nil || !ki.IsTerminal || ki.Size != 4 || time.Since(ki.Modified) > time.Minute {
		t.Fatalf("stat of a file: %+v, %v", ki, err)
	}
	if ki, err := b.Stat(ctx, dir); err != nil || ki.IsTerminal {
		t.Fatalf("stat of a directory: %+v, %v", ki, err)
	}
	if _, err := b.Stat(ctx, "nowhere"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat of a missing key: %v", err)
	}
	if !b.Exists(ctx, dir) || !b.Exists(ctx, user) || b.Exists(ctx, "users/nobody") {
		t.Fatal("exists answers wrong")
	}
	if err := b.Delete(ctx, "certificates"); err != nil {
		t.Fatal(err)
	}
	if a.Exists(ctx, crt) || a.Exists(ctx, key) || !a.Exists(ctx, user) {
		t.Fatal("deleting a directory: its files remain, or another went")
	}
	if err := a.Delete(ctx, "certificates"); err != nil {
		t.Fatalf("deleting what is gone: %v", err)
	}

	// Locks: one holder at a time; waiting ends with the context.
	if err := a.Lock(ctx, "issue_cert_meet.cocmd.test"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_meet.cocmd.test"); ok || err != nil {
		t.Fatalf("b took a lock a holds: %v, %v", ok, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	if err := b.Lock(wctx, "issue_cert_meet.cocmd.test"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b waiting for a's lock: %v", err)
	}
	wcancel()
	if err := b.Unlock(ctx, "issue_cert_meet.cocmd.test"); err == nil {
		t.Fatal("b unlocked a lock it does not hold")
	}
	if err := a.RenewLockLease(ctx, "issue_cert_meet.cocmd.test", time.Minute); err != nil {
		t.Fatal(err)
	}
	locked := make(chan error, 1)
	go func() { locked <- b.Lock(ctx, "issue_cert_meet.cocmd.test") }()
	if err := a.Unlock(ctx, "issue_cert_meet.cocmd.test"); err != nil {
		t.Fatal(err)
	}
	if err := <-locked; err != nil {
		t.Fatalf("b after a unlocked: %v", err)
	}
	if ok, _ := a.TryLock(ctx, "issue_cert_meet.cocmd.test"); ok {
		t.Fatal("a took the lock b holds")
	}
	if err := b.Unlock(ctx, "issue_cert_meet.cocmd.test"); err != nil {
		t.Fatal(err)
	}
}
