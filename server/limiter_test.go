package server

import (
	"testing"
	"time"
)

// The token bucket: a burst at once, then the rate, never more than the
// burst saved up.
func TestLimiter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := newLimiter(2, 5, t0)
	for i := range 5 {
		if !l.allow(t0) {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if l.allow(t0) {
		t.Fatal("a request past the burst allowed")
	}
	if !l.allow(t0.Add(500*time.Millisecond)) || l.allow(t0.Add(500*time.Millisecond)) {
		t.Fatal("after 0.5 s at 2/s, exactly one more is allowed")
	}
	later := t0.Add(time.Hour)
	n := 0
	for l.allow(later) {
		n++
	}
	if n != 5 {
		t.Fatalf("after an hour idle, %d allowed at once; the burst is 5", n)
	}
}
