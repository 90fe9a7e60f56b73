package natsjs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/nats-io/nats.go/jetstream"
)

// CertStorage keeps what ACME needs in JetStream, shared by every node of
// a cluster: the account, the certificates and their keys (each node
// serves them all, and one node renews them for all), and the challenge
// tokens one node stores for whichever node the CA's validation reaches.
// Locks make one node at a time obtain or renew a certificate; a dead
// node's lock expires after lockTTL. It implements certmagic.Storage.
//
// Reads wait until this node's view holds everything the bucket's leader
// had when they began: a node reads what another stored before.
type CertStorage struct {
	files *kvView
	locks jetstream.KeyValue
	owner string

	mu   sync.Mutex
	held map[string]*certLock
}

// certLock is a lock this node holds: its revision, and the end of its
// refreshing.
type certLock struct {
	rev  uint64
	stop chan struct{}
	done chan struct{}
}

var (
	_ certmagic.Storage          = (*CertStorage)(nil)
	_ certmagic.TryLocker        = (*CertStorage)(nil)
	_ certmagic.LockLeaseRenewer = (*CertStorage)(nil)
)

// lockTTL is how long a lock outlives the last refresh of its holder;
// holders refresh it every lockTTL/4.
const lockTTL = 2 * time.Minute

// CertStorage opens the shared storage of ACME certificates (buckets
// <prefix>_certs and <prefix>_certlocks). Its view ends with the store.
func (s *Store) CertStorage(ctx context.Context) (*CertStorage, error) {
	s.mu.Lock()
	if s.certs != nil {
		defer s.mu.Unlock()
		return s.certs, nil
	}
	s.mu.Unlock()
	kv, err := EnsureKeyValue(ctx, s.js, jetstream.KeyValueConfig{Bucket: s.cfg.Prefix + "_certs", Replicas: s.cfg.Replicas, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("natsjs: bucket certs: %w", err)
	}
	locks, err := EnsureKeyValue(ctx, s.js, jetstream.KeyValueConfig{Bucket: s.cfg.Prefix + "_certlocks", Replicas: s.cfg.Replicas,
		Storage: jetstream.FileStorage, TTL: lockTTL})
	if err != nil {
		return nil, fmt.Errorf("natsjs: bucket certlocks: %w", err)
	}
	files, err := watch(ctx, s.js, kv)
	if err != nil {
		return nil, err
	}
	cs := &CertStorage{files: files, locks: locks, owner: s.cfg.Node, held: map[string]*certLock{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.certs != nil || s.closed {
		files.stop()
		if s.closed {
			return nil, errors.New("natsjs: the store is closed")
		}
		return s.certs, nil
	}
	s.certs = cs
	return cs, nil
}

// certKey is the bucket key of certmagic's key k: the characters a key
// may hold but '=' and '.' kept ('/' included), the others escaped as =XX.
func certKey(k string) string {
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "=%02X", c)
	}
	return b.String()
}

// certmagicKey reverses certKey.
func certmagicKey(k string) string {
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		if k[i] == '=' && i+2 < len(k) {
			var c byte
			if _, err := fmt.Sscanf(k[i+1:i+3], "%02X", &c); err == nil {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(k[i])
	}
	return b.String()
}

// Store implements certmagic.Storage.
func (c *CertStorage) Store(ctx context.Context, key string, value []byte) error {
	if key == "" {
		return errors.New("natsjs: an empty certificate storage key")
	}
	return c.files.put(ctx, certKey(key), value)
}

// Load implements certmagic.Storage; a missing key is fs.ErrNotExist.
func (c *CertStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := c.files.sync(ctx); err != nil {
		return nil, err
	}
	v, _, ok := c.files.get(certKey(key))
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	return v, nil
}

// Delete implements certmagic.Storage: key and every key under it.
func (c *CertStorage) Delete(ctx context.Context, key string) error {
	if err := c.files.sync(ctx); err != nil {
		return err
	}
	for _, k := range c.under(key, true) {
		if err := c.files.remove(ctx, certKey(k)); err != nil && !errors.Is(err, errMissing) {
			return err
		}
	}
	return nil
}

// Exists implements certmagic.Storage: key is a file or a directory.
func (c *CertStorage) Exists(ctx context.Context, key string) bool {
	if err := c.files.sync(ctx); err != nil {
		return false
	}
	return len(c.under(key, true)) > 0
}

// List implements certmagic.Storage: the keys under dir, all of them
// (recursive) or its direct children, files and directories.
func (c *CertStorage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	if err := c.files.sync(ctx); err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for _, k := range c.under(dir, true) {
		if k == dir {
			continue
		}
		if !recursive {
			if i := strings.IndexByte(k[len(prefix):], '/'); i >= 0 {
				k = k[:len(prefix)+i] // a directory: once
			}
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", dir, fs.ErrNotExist)
	}
	return out, nil
}

// Stat implements certmagic.Storage.
func (c *CertStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if err := c.files.sync(ctx); err != nil {
		return certmagic.KeyInfo{}, err
	}
	c.files.mu.Lock()
	e, ok := c.files.vals[certKey(key)]
	c.files.mu.Unlock()
	if ok {
		return certmagic.KeyInfo{Key: key, Modified: e.at, Size: int64(len(e.val)), IsTerminal: true}, nil
	}
	if len(c.under(key, false)) > 0 {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
}

// under returns the keys that are key (if self) or under it, as
// certmagic names them.
func (c *CertStorage) under(key string, self bool) []string {
	keys, _ := c.files.all()
	prefix := strings.TrimSuffix(key, "/") + "/"
	var out []string
	for _, k := range keys {
		k = certmagicKey(k)
		if self && k == key || key == "" || strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// Lock implements certmagic.Locker: it waits until the lock is free (or
// its holder's expired) and takes it, until ctx ends.
func (c *CertStorage) Lock(ctx context.Context, name string) error {
	for {
		ok, err := c.TryLock(ctx, name)
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// TryLock implements certmagic.TryLocker.
func (c *CertStorage) TryLock(ctx context.Context, name string) (bool, error) {
	key := certKey(name)
	rev, err := c.locks.Create(ctx, key, []byte(c.owner))
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLast(err) {
		return false, nil
	}
	if err != nil {
		return false, unavailable(err)
	}
	l := &certLock{rev: rev, stop: make(chan struct{}), done: make(chan struct{})}
	c.mu.Lock()
	c.held[name] = l
	c.mu.Unlock()
	go c.refresh(key, l)
	return true, nil
}

// refresh keeps lock l alive until it is unlocked.
func (c *CertStorage) refresh(key string, l *certLock) {
	defer close(l.done)
	t := time.NewTicker(lockTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), lockTTL/4)
		c.mu.Lock()
		rev := l.rev
		c.mu.Unlock()
		nrev, err := c.locks.Update(ctx, key, []byte(c.owner), rev)
		cancel()
		if err == nil {
			c.mu.Lock()
			l.rev = nrev
			c.mu.Unlock()
		}
	}
}

// RenewLockLease implements certmagic.LockLeaseRenewer: the lock is
// refreshed for as long as it is held, whatever the lease asked for.
func (c *CertStorage) RenewLockLease(ctx context.Context, name string, _ time.Duration) error {
	c.mu.Lock()
	_, ok := c.held[name]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("natsjs: lock %q is not held here", name)
	}
	return nil
}

// Unlock implements certmagic.Locker.
func (c *CertStorage) Unlock(ctx context.Context, name string) error {
	c.mu.Lock()
	l, ok := c.held[name]
	delete(c.held, name)
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("natsjs: lock %q is not held here", name)
	}
	close(l.stop)
	<-l.done
	c.mu.Lock()
	rev := l.rev
	c.mu.Unlock()
	// Conditional: a lock that expired and was taken by another stays.
	if err := c.locks.Delete(ctx, certKey(name), jetstream.LastRevision(rev)); err != nil && !isWrongLast(err) {
		return unavailable(err)
	}
	return nil
}
