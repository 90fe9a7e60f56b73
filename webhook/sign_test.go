package webhook

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The Standard Webhooks scheme's published test vector: what a receiver's
// library computes, Sign computes.
func TestSign_standardVector(t *testing.T) {
	h := http.Header{}
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	at := time.Unix(1614265330, 0)
	body := []byte(`{"test": 2432232314}`)
	if err := Sign(h, []string{secret}, "msg_p5jXN8AQM9LWM0D4loKWxJek", at, body); err != nil {
		t.Fatal(err)
	}
	if got, want := h.Get(HeaderSignature), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	if h.Get(HeaderID) != "msg_p5jXN8AQM9LWM0D4loKWxJek" || h.Get(HeaderTimestamp) != "1614265330" {
		t.Fatalf("headers %v", h)
	}
	if err := Verify(secret, h, body, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
}

// Verify refuses what a receiver must not trust, each for a reason it
// says; during a rotation either secret verifies.
func TestVerify(t *testing.T) {
	old, cur := NewSecret(), NewSecret()
	if !ValidSecret(cur) || ValidSecret("whsec_!!") || ValidSecret("nope") {
		t.Fatal("ValidSecret")
	}
	now := time.Now()
	body := []byte(`{"type":"stage.granted"}`)
	signed := func(secrets ...string) http.Header {
		h := http.Header{}
		if err := Sign(h, secrets, "evt_1", now, body); err != nil {
			t.Fatal(err)
		}
		return h
	}
	h := signed(cur, old)
	if n := len(strings.Fields(h.Get(HeaderSignature))); n != 2 {
		t.Fatalf("%d signatures during a rotation", n)
	}
	for _, s := range []string{cur, old} {
		if err := Verify(s, h, body, now); err != nil {
			t.Errorf("rotation: %v", err)
		}
	}
	for _, c := range []struct {
		name   string
		secret string
		h      http.Header
		body   string
		now    time.Time
	}{
		{"another secret", NewSecret(), signed(cur), string(body), now},
		{"a changed body", cur, signed(cur), `{"type":"stage.denied"}`, now},
		{"too old", cur, signed(cur), string(body), now.Add(Tolerance + time.Second)},
		{"from the future", cur, signed(cur), string(body), now.Add(-Tolerance - time.Second)},
		{"no signature", cur, http.Header{HeaderID: {"evt_1"}, HeaderTimestamp: {"1"}}, string(body), now},
		{"a bad timestamp", cur, http.Header{HeaderID: {"evt_1"}, HeaderTimestamp: {"soon"}, HeaderSignature: {"v1,x"}}, string(body), now},
	} {
		if err := Verify(c.secret, c.h, []byte(c.body), c.now); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", c.name, err)
		}
	}
	if err := Verify("whsec_***", h, body, now); err == nil || errors.Is(err, ErrSignature) {
		t.Errorf("a malformed secret: %v", err)
	}
	if err := Sign(http.Header{}, []string{"whsec_***"}, "evt_1", now, body); err == nil {
		t.Error("signed with a malformed secret")
	}
}
