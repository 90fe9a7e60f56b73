package meeting

import (
	"bytes"
	"sync"
	"testing"

	"github.com/cocmd/cocmd/protocol"
)

func TestClient_queueAndIdle(t *testing.T) {
	c := newClient(nil, "p", 100)
	starts := 0
	c.SetWriter(func() { starts++ }, nil)
	if starts != 0 {
		t.Fatal("started with nothing queued")
	}
	c.Send(NewMessage([]byte("a")))
	c.Send(NewMessage([]byte("b")))
	if starts != 1 {
		t.Fatalf("%d starts for two messages", starts)
	}
	b := c.Take(nil)
	if len(b.Messages) != 2 || b.Idle {
		t.Fatalf("%+v", b)
	}
	if b = c.Take(nil); !b.Idle {
		t.Fatalf("empty queue not idle: %+v", b)
	}
	c.Send(NewMessage([]byte("c")))
	if starts != 2 {
		t.Fatal("an idle client did not start a writer")
	}
}

func TestClient_slowConsumerIsClosed(t *testing.T) {
	c := newClient(nil, "p", 10)
	c.SetWriter(func() {}, nil)
	if !c.Send(NewMessage(bytes.Repeat([]byte("x"), 8))) {
		t.Fatal("first message refused")
	}
	if c.Send(NewMessage(bytes.Repeat([]byte("x"), 8))) {
		t.Fatal("message over the limit accepted")
	}
	b := c.Take(nil)
	if !b.Closed || b.Code != protocol.CloseSlowConsumer || len(b.Messages) != 0 {
		t.Fatalf("%+v", b)
	}
	if c.Send(NewMessage([]byte("y"))) {
		t.Fatal("closed client accepted a message")
	}
}

func TestClient_directWrite(t *testing.T) {
	c := newClient(nil, "p", 1000)
	var written [][]byte
	full := false
	c.SetWriter(func() {}, func(m *Message) ([]byte, bool) {
		if full {
			return nil, false
		}
		written = append(written, m.Data)
		if len(m.Data) > 3 { // the socket took only 3 bytes
			full = true
			return m.Data[3:], true
		}
		return nil, true
	})
	c.Send(NewMessage([]byte("ab")))
	c.Send(NewMessage([]byte("cdefg")))
	c.Send(NewMessage([]byte("h")))
	if len(written) != 2 {
		t.Fatalf("direct writes %q", written)
	}
	b := c.Take(nil)
	if string(b.Partial) != "fg" || len(b.Messages) != 1 || string(b.Messages[0].Data) != "h" {
		t.Fatalf("after a partial write: %q %d", b.Partial, len(b.Messages))
	}
}

func TestMessage_preparedOnce(t *testing.T) {
	m := NewMessage([]byte("x"))
	var n int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			m.Prepared(func(b []byte) any { mu.Lock(); n++; mu.Unlock(); return len(b) })
		})
	}
	wg.Wait()
	if n != 1 {
		t.Fatalf("prepared %d times", n)
	}
}
