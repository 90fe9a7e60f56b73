package client

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cocmd/cocmd/stage"
)

func TestQueue_orderAndClose(t *testing.T) {
	defer goleak.VerifyNone(t)
	q := newQueue()
	for i := range 100 {
		q.push(StageRequestRejected{Reason: stage.Cause(i % 3)})
	}
	q.push(Closed{})
	q.close()
	n := 0
	for e := range q.out {
		if r, ok := e.(StageRequestRejected); ok && r.Reason != stage.Cause(n%3) {
			t.Fatalf("event %d out of order", n)
		}
		n++
	}
	if n != 101 {
		t.Fatalf("%d events", n)
	}
}

func TestQueue_discardUnread(t *testing.T) {
	defer goleak.VerifyNone(t)
	q := newQueue()
	q.push(Reconnected{})
	q.push(Reconnected{})
	time.Sleep(10 * time.Millisecond) // the pump is blocked on the unread channel
	q.discard()
	q.close()
}

func TestRealtimeURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://localhost:8080":     "ws://localhost:8080/v1/realtime",
		"https://meet.example.com/": "wss://meet.example.com/v1/realtime",
		"https://example.com/cocmd": "wss://example.com/cocmd/v1/realtime",
	} {
		if got, err := realtimeURL(in); err != nil || got != want {
			t.Errorf("%s: %s %v", in, got, err)
		}
	}
	if _, err := realtimeURL("ftp://x"); err == nil {
		t.Error("ftp accepted")
	}
}

func TestBatchError_is(t *testing.T) {
	err := error(&BatchError{Failed: []*UserError{
		{UserID: "a", Err: stage.Errorf(stage.ErrNotFound, "no a")},
		{UserID: "b", Err: stage.Errorf(stage.ErrStageFull, "full")},
	}})
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrStageFull) || errors.Is(err, ErrPermissionDenied) {
		t.Fatal(err)
	}
	var ue *UserError
	if !errors.As(err, &ue) || ue.UserID != "a" {
		t.Fatal(ue)
	}
}
