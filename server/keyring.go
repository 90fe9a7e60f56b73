package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// SigningKey is one key that signs participant tokens. Tokens name the key
// that signed them.
type SigningKey struct {
	ID      string    `json:"id"`
	Secret  []byte    `json:"secret"`
	Created time.Time `json:"created"`
	// RetireAt, once set, is when the key stops verifying tokens; the
	// tokens it signed stop working then, and their connections close.
	RetireAt *time.Time `json:"retire_at,omitempty"`
}

// legacyKeyID names the secret of data directories made before keys had
// ids; its tokens name no key.
const legacyKeyID = "legacy"

// Keyring holds the token signing keys, in a file of their own (0600) in
// the data directory — never in the database, so a copy of the database
// alone (a backup) cannot mint tokens. The newest key signs; older ones
// verify until they are retired. Its methods are safe for concurrent use.
type Keyring struct {
	path string // "" keeps the keys in memory only
	// shared, in a cluster, is the store every node shares, which keeps
	// the keys instead of a file (see OpenSharedKeyring).
	shared store.Store

	mu     sync.Mutex
	keys   []SigningKey // oldest first; the last one signs
	loaded time.Time    // when the keys were last read from shared
}

// settingSigningKeys is where a cluster's shared store keeps the keyring.
const settingSigningKeys = "signing_keys"

// refreshEvery is how often a shared keyring reads the keys again, to
// learn of another node's rotation.
const refreshEvery = 10 * time.Second

// OpenSharedKeyring loads the keyring kept in st, the store every node of a
// cluster shares, creating it with a new key if it is not there (the first
// node to start makes it; the others read it). Every node verifies the
// tokens any node signed. The keys are in the shared store, unlike a single
// node's, which keeps them out of its database: protect the cluster's NATS
// with authentication and TLS (docs/cluster.md).
func OpenSharedKeyring(ctx context.Context, st store.Store) (*Keyring, error) {
	k := &Keyring{shared: st}
	b, err := st.Setting(ctx, settingSigningKeys)
	if errors.Is(err, stage.ErrNotFound) {
		nb, merr := json.Marshal(keyringFile{Keys: []SigningKey{newSigningKey(time.Now().UTC().Truncate(time.Second))}})
		if merr != nil {
			return nil, merr
		}
		b, err = st.SetSettingOnce(ctx, settingSigningKeys, nb)
	}
	if err != nil {
		return nil, err
	}
	if err := k.use(b); err != nil {
		return nil, err
	}
	return k, nil
}

// use takes the keys of a shared keyring's setting b.
func (k *Keyring) use(b []byte) error {
	var f keyringFile
	if err := json.Unmarshal(b, &f); err != nil || len(f.Keys) == 0 {
		return fmt.Errorf("the shared keyring is unreadable or empty (%v)", err)
	}
	k.mu.Lock()
	k.keys, k.loaded = f.Keys, time.Now()
	k.mu.Unlock()
	return nil
}

// refresh reads a shared keyring again if it is due, or if force and it
// was not read in the last second; outside the lock.
func (k *Keyring) refresh(force bool) {
	if k.shared == nil {
		return
	}
	k.mu.Lock()
	since := time.Since(k.loaded)
	k.mu.Unlock()
	if since < refreshEvery && (!force || since < time.Second) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if b, err := k.shared.Setting(ctx, settingSigningKeys); err == nil {
		_ = k.use(b)
	}
}

type keyringFile struct {
	Keys []SigningKey `json:"keys"`
}

// settingLegacySecret is where data directories made before the keyring
// kept their one signing secret.
const settingLegacySecret = "token_secret"

// OpenKeyring loads the keyring at path, or creates it with a new key. A
// data directory whose database still holds the secret of old (key-less)
// tokens has it moved into the keyring, as key "legacy", and removed from
// the database. path "" makes a keyring in memory only, for tests.
func OpenKeyring(ctx context.Context, path string, st store.Store) (*Keyring, error) {
	k := &Keyring{path: path}
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			var f keyringFile
			if err := json.Unmarshal(b, &f); err != nil || len(f.Keys) == 0 {
				return nil, fmt.Errorf("keyring %s: unreadable or empty (%v); restore it from a backup, or remove it to start with a new key (every token ends)", path, err)
			}
			k.keys = f.Keys
			return k, nil
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	if st != nil {
		legacy, err := st.Setting(ctx, settingLegacySecret)
		switch {
		case err == nil:
			k.keys = append(k.keys, SigningKey{ID: legacyKeyID, Secret: legacy, Created: now})
		case !errors.Is(err, stage.ErrNotFound):
			return nil, err
		}
	}
	k.keys = append(k.keys, newSigningKey(now))
	if err := k.save(); err != nil {
		return nil, err
	}
	if len(k.keys) > 1 && st != nil {
		if err := st.DeleteSetting(ctx, settingLegacySecret); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func newSigningKey(now time.Time) SigningKey {
	return SigningKey{ID: "k" + strings.ToLower(rand.Text()[:10]), Secret: []byte(rand.Text() + rand.Text()), Created: now}
}

// save writes the keyring: a new file, fsynced, renamed over the old one.
func (k *Keyring) save() error {
	if k.shared != nil {
		b, err := json.Marshal(keyringFile{Keys: k.keys})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := k.shared.SetSetting(ctx, settingSigningKeys, b); err != nil {
			return err
		}
		k.loaded = time.Now()
		return nil
	}
	if k.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(keyringFile{Keys: k.keys}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.path), ".keys-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(k.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// current returns the signing key.
func (k *Keyring) current() SigningKey {
	k.refresh(false)
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[len(k.keys)-1]
}

// key returns the key with id if it still verifies at now.
func (k *Keyring) key(id string, now time.Time) (SigningKey, bool) {
	k.refresh(false)
	sk, found, ok := k.find(id, now)
	if !found {
		// Another node may have made it since the last read.
		k.refresh(true)
		sk, _, ok = k.find(id, now)
	}
	return sk, ok
}

func (k *Keyring) find(id string, now time.Time) (sk SigningKey, found, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, sk := range k.keys {
		if sk.ID == id {
			return sk, true, sk.RetireAt == nil || now.Before(*sk.RetireAt)
		}
	}
	return SigningKey{}, false, false
}

// Keys returns the keys, oldest first, without their secrets (a shared
// keyring's as the store had them at most refreshEvery ago).
func (k *Keyring) Keys() []SigningKey {
	k.refresh(false)
	k.mu.Lock()
	defer k.mu.Unlock()
	out := slices.Clone(k.keys)
	for i := range out {
		out[i].Secret = nil
	}
	return out
}

// Rotate makes a new signing key and schedules every older key still in
// use to retire after grace (0: at once). It returns the new key's id.
func (k *Keyring) Rotate(now time.Time, grace time.Duration) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old := slices.Clone(k.keys)
	at := now.Add(grace).UTC()
	for i := range k.keys {
		if k.keys[i].RetireAt == nil || k.keys[i].RetireAt.After(at) {
			k.keys[i].RetireAt = &at
		}
	}
	nk := newSigningKey(now.UTC().Truncate(time.Second))
	k.keys = append(k.keys, nk)
	if err := k.save(); err != nil {
		k.keys = old
		return "", err
	}
	return nk.ID, nil
}

// Prune drops the keys retired by now and returns their ids.
func (k *Keyring) Prune(now time.Time) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var gone []string
	kept := make([]SigningKey, 0, len(k.keys))
	for _, sk := range k.keys {
		if sk.RetireAt != nil && !now.Before(*sk.RetireAt) {
			gone = append(gone, sk.ID)
		} else {
			kept = append(kept, sk)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	old := k.keys
	k.keys = kept
	if err := k.save(); err != nil {
		k.keys = old
		return nil, err
	}
	return gone, nil
}
