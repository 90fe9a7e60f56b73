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
	Expires     int64  `json:"exp"` // unix seconds
}

// Tokens signs and verifies participant tokens: "v1.<claims>.<hmac>", both
// parts unpadded base64url, HMAC-SHA256 over "v1.<claims>".
type Tokens struct {
	secret []byte
	now    func() time.Time
}

// NewTokens returns a signer with secret; now may be nil for time.Now.
func NewTokens(secret []byte, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	return &Tokens{secret: secret, now: now}
}

const tokenPrefix = "v1."

var b64 = base64.RawURLEncoding

func (t *Tokens) mac(msg string) []byte {
	h := hmac.New(sha256.New, t.secret)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// Sign returns a token for participant pid of meeting mid, valid for ttl.
func (t *Tokens) Sign(mid, pid string, ttl time.Duration) (string, time.Time) {
	exp := t.now().Add(ttl).Truncate(time.Second)
	b, _ := json.Marshal(Claims{Meeting: mid, Participant: pid, Expires: exp.Unix()})
	msg := tokenPrefix + b64.EncodeToString(b)
	return msg + "." + b64.EncodeToString(t.mac(msg)), exp
}

var errBadToken = stage.Errorf(stage.ErrUnauthenticated, "invalid token")

// Verify checks a token's signature and expiry and returns its claims.
func (t *Tokens) Verify(token string) (Claims, error) {
	var c Claims
	if !strings.HasPrefix(token, tokenPrefix) || len(token) > 1024 {
		return c, errBadToken
	}
	i := strings.LastIndexByte(token, '.')
	msg, sig := token[:i], token[i+1:]
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, t.mac(msg)) {
		return c, errBadToken
	}
	raw, err := b64.DecodeString(msg[len(tokenPrefix):])
	if err != nil || json.Unmarshal(raw, &c) != nil || c.Meeting == "" || c.Participant == "" {
		return c, errBadToken
	}
	if t.now().Unix() >= c.Expires {
		return c, stage.Errorf(stage.ErrUnauthenticated, "token expired")
	}
	return c, nil
}

// Settings keys.
const (
	settingTokenSecret = "token_secret"
	settingAPIKeyHash  = "api_key_sha256"
)

// Keys are the server's secrets, made on first start.
type Keys struct {
	TokenSecret []byte
	APIKeyHash  []byte
	// NewAPIKey is the API key in clear, set only on the start that made
	// it; it is not stored and cannot be shown again.
	NewAPIKey string
	// Generated is set when NewAPIKey was made here rather than given.
	Generated bool
}

// Bootstrap makes what a new data directory needs (create true): the token
// secret, the API key (apiKey, or a random one) and the built-in presets.
// On later starts (create false) it reads the secrets, and refuses a
// database that has none: it is not a cocmd database.
func Bootstrap(ctx context.Context, st store.Store, apiKey string, create bool) (Keys, error) {
	var k Keys
	if !create {
		if _, err := st.Setting(ctx, settingAPIKeyHash); err != nil {
			return k, fmt.Errorf("the database has no API key: it is not a cocmd database, or it was never set up (%w)", err)
		}
	}
	secret, err := st.SetSettingOnce(ctx, settingTokenSecret, []byte(rand.Text()+rand.Text()))
	if err != nil {
		return k, err
	}
	k.TokenSecret = secret
	k.APIKeyHash, err = st.Setting(ctx, settingAPIKeyHash)
	if err == nil {
		if apiKey != "" && subtle.ConstantTimeCompare(hashKey(apiKey), k.APIKeyHash) != 1 {
			return k, errors.New("the given API key is not the one this data directory was created with")
		}
		return k, nil
	}
	if !errors.Is(err, stage.ErrNotFound) {
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
