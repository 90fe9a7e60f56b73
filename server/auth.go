package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// Claims is what a participant token says.
type Claims struct {
	Meeting     string `json:"m"`
	Participant string `json:"p"`
	Expires     int64  `json:"exp"`         // unix seconds
	Key         string `json:"k,omitempty"` // the signing key's id; empty: the legacy key
}

// Tokens signs and verifies participant tokens: "v1.<claims>.<hmac>", both
// parts unpadded base64url, HMAC-SHA256 over "v1.<claims>" with the key
// the claims name.
type Tokens struct {
	keys *Keyring
	now  func() time.Time
}

// NewTokens returns a signer with the keys of k; now may be nil for
// time.Now.
func NewTokens(k *Keyring, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	return &Tokens{keys: k, now: now}
}

const tokenPrefix = "v1."

var b64 = base64.RawURLEncoding

func mac(secret []byte, msg string) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// Sign returns a token for participant pid of meeting mid, valid for ttl,
// signed with the current key.
func (t *Tokens) Sign(mid, pid string, ttl time.Duration) (string, time.Time) {
	key := t.keys.current()
	exp := t.now().Add(ttl).Truncate(time.Second)
	b, _ := json.Marshal(Claims{Meeting: mid, Participant: pid, Expires: exp.Unix(), Key: key.ID})
	msg := tokenPrefix + b64.EncodeToString(b)
	return msg + "." + b64.EncodeToString(mac(key.Secret, msg)), exp
}

// usable reports whether key id (of a token's claims) still verifies at
// now.
func (t *Tokens) usable(id string, now time.Time) bool {
	if id == "" {
		id = legacyKeyID
	}
	_, ok := t.keys.key(id, now)
	return ok
}

var errBadToken = stage.Errorf(stage.ErrUnauthenticated, "invalid token")

// Verify checks a token's signature, key and expiry and returns its claims.
func (t *Tokens) Verify(token string) (Claims, error) {
	var c Claims
	if !strings.HasPrefix(token, tokenPrefix) || len(token) > 1024 {
		return c, errBadToken
	}
	i := strings.LastIndexByte(token, '.')
	if i < len(tokenPrefix) {
		return c, errBadToken
	}
	msg, sig := token[:i], token[i+1:]
	raw, err := b64.DecodeString(msg[len(tokenPrefix):])
	if err != nil || json.Unmarshal(raw, &c) != nil || c.Meeting == "" || c.Participant == "" {
		return Claims{}, errBadToken
	}
	kid := c.Key
	if kid == "" {
		kid = legacyKeyID
	}
	key, ok := t.keys.key(kid, t.now())
	got, err := b64.DecodeString(sig)
	if key.Secret == nil || err != nil || !hmac.Equal(got, mac(key.Secret, msg)) {
		return Claims{}, errBadToken
	}
	if !ok {
		return Claims{}, stage.Errorf(stage.ErrUnauthenticated, "token signed with a retired key")
	}
	if t.now().Unix() >= c.Expires {
		return Claims{}, stage.Errorf(stage.ErrUnauthenticated, "token expired")
	}
	return c, nil
}

// settingAPIKeyHash is where the database keeps the API key's SHA-256:
// never the key itself.
const settingAPIKeyHash = "api_key_sha256"

// Keys are the server's secrets, made on first start.
type Keys struct {
	// Keyring signs and verifies participant tokens; nil makes one in
	// memory, whose tokens end with the process.
	Keyring    *Keyring
	APIKeyHash []byte
	// NewAPIKey is the API key in clear, set only on the start that made
	// it; it is not stored and cannot be shown again.
	NewAPIKey string
	// Generated is set when NewAPIKey was made here rather than given.
	Generated bool
}

// Bootstrap makes what a new data directory's database needs (create
// true): the API key (apiKey, or a random one) and the built-in presets.
// On later starts (create false) it reads the API key's hash, and refuses a
// database that has none: it is not a cocmd database. The token signing
// keys are not in the database: see OpenKeyring.
func Bootstrap(ctx context.Context, st store.Store, apiKey string, create bool) (Keys, error) {
	var k Keys
	var err error
	k.APIKeyHash, err = st.Setting(ctx, settingAPIKeyHash)
	switch {
	case err == nil:
		if apiKey != "" && subtle.ConstantTimeCompare(hashKey(apiKey), k.APIKeyHash) != 1 {
			return k, errors.New("the given API key is not the store's (the one it was created with, or the last rotate-api-key's)")
		}
		return k, nil
	case !create:
		return k, fmt.Errorf("the database has no API key: it is not a cocmd database, or it was never set up (%w)", err)
	case !errors.Is(err, stage.ErrNotFound):
		return k, err
	}
	if apiKey == "" {
		apiKey, k.Generated = newAPIKey(), true
	}
	for _, p := range stage.BuiltinPresets() {
		if err := st.CreatePreset(ctx, p); err != nil && !errors.Is(err, store.ErrConflict) {
			return k, err
		}
	}
	if k.APIKeyHash, err = st.SetSettingOnce(ctx, settingAPIKeyHash, hashKey(apiKey)); err != nil {
		return k, err
	}
	if subtle.ConstantTimeCompare(hashKey(apiKey), k.APIKeyHash) != 1 {
		// Another node of a cluster set it up first.
		if !k.Generated {
			return Keys{}, errors.New("the given API key is not the one the cluster was created with")
		}
		k.Generated = false
		return k, nil
	}
	k.NewAPIKey = apiKey
	return k, nil
}

// RotateAPIKey replaces the API key of the data directory behind st and
// returns the new key, in clear, for the caller to show once. A server
// running on that directory keeps the old key until it restarts.
func RotateAPIKey(ctx context.Context, st store.Store) (string, error) {
	if _, err := st.Setting(ctx, settingAPIKeyHash); err != nil {
		return "", fmt.Errorf("no API key to rotate (has cocmd serve ever run on this data directory?): %w", err)
	}
	key := newAPIKey()
	if err := st.SetSetting(ctx, settingAPIKeyHash, hashKey(key)); err != nil {
		return "", err
	}
	return key, nil
}

func newAPIKey() string { return "ck_" + strings.ToLower(rand.Text()) }

func hashKey(k string) []byte {
	h := sha256.Sum256([]byte(k))
	return h[:]
}

func newID(prefix string) string { return prefix + strings.ToLower(rand.Text()) }
