// Package webhook signs and verifies cocmd's webhooks by the Standard
// Webhooks scheme (https://www.standardwebhooks.com): an endpoint's secret
// is "whsec_" and the base64 of its key; each delivery carries the headers
// webhook-id, webhook-timestamp (Unix seconds) and webhook-signature,
// "v1," and the base64 HMAC-SHA256 under the key of "id.timestamp.body",
// several space-separated while a secret is being rotated. A receiver can
// verify with any Standard Webhooks library, or with Verify.
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of a signed delivery.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix starts every secret.
const secretPrefix = "whsec_"

// Tolerance is how far a delivery's timestamp may be from the receiver's
// clock, either way, for Verify to accept it: older is a replay.
const Tolerance = 5 * time.Minute

// ErrSignature is matched (errors.Is) by Verify's error for a delivery
// that is not signed by the secret, or is too old or too new.
var ErrSignature = errors.New("webhook: bad signature")

// NewSecret returns a new random secret: "whsec_" and the base64 of 32
// bytes.
func NewSecret() string {
	key := make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand)
	return secretPrefix + base64.StdEncoding.EncodeToString(key)
}

// key decodes a secret into its key.
func key(secret string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, secretPrefix))
	if err != nil || len(k) == 0 {
		return nil, fmt.Errorf("webhook: a secret is %q and the base64 of its key", secretPrefix)
	}
	return k, nil
}

// ValidSecret reports whether secret is one Sign can use.
func ValidSecret(secret string) bool {
	_, err := key(secret)
	return err == nil && strings.HasPrefix(secret, secretPrefix)
}

func signature(k []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Sign sets the headers of a delivery of body with message id at ts,
// signed by each of secrets (the current one first, then one being
// rotated out).
func Sign(h http.Header, secrets []string, id string, ts time.Time, body []byte) error {
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		k, err := key(s)
		if err != nil {
			return err
		}
		sigs = append(sigs, signature(k, id, ts.Unix(), body))
	}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, strings.Join(sigs, " "))
	return nil
}

// Verify checks that a delivery of body with headers h is signed by
// secret and was sent within Tolerance of now. Its error matches
// ErrSignature when the delivery is not to be trusted.
func Verify(secret string, h http.Header, body []byte, now time.Time) error {
	k, err := key(secret)
	if err != nil {
		return err
	}
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return fmt.Errorf("%w: missing %s, %s or %s", ErrSignature, HeaderID, HeaderTimestamp, HeaderSignature)
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrSignature, tsText)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > Tolerance || d < -Tolerance {
		return fmt.Errorf("%w: timestamp %v away from now", ErrSignature, d.Round(time.Second))
	}
	want := signature(k, id, ts, body)
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("%w: no signature matches", ErrSignature)
}
