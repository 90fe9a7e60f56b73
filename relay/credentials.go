package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Credentials returns the TURN REST credentials of participant, valid for
// allocations until expires: the username is "<expiry unix seconds>:<participant>",
// the password the base64 HMAC-SHA1 of the username under secret. An
// external coturn run with use-auth-secret and the same secret accepts
// them too.
func Credentials(secret []byte, participant string, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + participant
	return username, Password(secret, username)
}

// Password is the password of a TURN REST username under secret.
func Password(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseUsername splits a TURN REST username into its expiry and
// participant.
func parseUsername(u string) (time.Time, string, error) {
	exp, who, ok := strings.Cut(u, ":")
	if !ok || who == "" {
		return time.Time{}, "", errors.New("not <expiry>:<participant>")
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", errors.New("the expiry is not a positive number of seconds")
	}
	return time.Unix(sec, 0), who, nil
}

// secretSize is the length of a generated shared secret.
const secretSize = 32

// LoadSecret reads the shared secret in path, creating it (secretSize
// random bytes, base64, mode 0600) when create is set and it does not
// exist. A secret given for an external TURN server is read as written
// (trailing newline cut), so that coturn's static-auth-secret works as is.
func LoadSecret(path string, create bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		raw := make([]byte, secretSize)
		rand.Read(raw)
		s := base64.RawURLEncoding.EncodeToString(raw)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("TURN secret: %w", err)
		}
		if _, err := f.WriteString(s + "\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("TURN secret %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("TURN secret %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("TURN secret %s: %w", path, err)
		}
		return []byte(s), nil
	}
	if err != nil {
		return nil, fmt.Errorf("TURN secret: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if len(s) < 16 {
		return nil, fmt.Errorf("TURN secret %s: %d bytes; at least 16 are needed", path, len(s))
	}
	return []byte(s), nil
}
