package meeting

import (
	"sync"

	"github.com/cocmd/cocmd/protocol"
)

// Client is one connection of a participant to a live meeting. The meeting
// puts the messages meant for it in a bounded queue; the connection's writer
// takes them out with Next. A client whose queue outgrows its limit is
// closed with protocol.CloseSlowConsumer instead of slowing the meeting.
type Client struct {
	// ParticipantID is the participant this connection speaks for.
	ParticipantID string

	mu     sync.Mutex
	queue  [][]byte
	bytes  int
	limit  int
	wake   chan struct{}
	closed bool
	code   int
	reason string
}

func newClient(participantID string, limit int) *Client {
	return &Client{ParticipantID: participantID, limit: limit, wake: make(chan struct{}, 1)}
}

// Send queues b for the connection. It reports false if the client is
// closed; a client whose queue would pass its limit is closed instead.
func (c *Client) Send(b []byte) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	if c.bytes+len(b) > c.limit {
		c.closeLocked(protocol.CloseSlowConsumer, "too far behind")
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, b)
	c.bytes += len(b)
	c.mu.Unlock()
	c.signal()
	return true
}

func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Close closes the client with a WebSocket close code and reason. Messages
// already queued are still delivered by Next, except when the client is
// closed for being slow, when they are dropped.
func (c *Client) Close(code int, reason string) {
	c.mu.Lock()
	c.closeLocked(code, reason)
	c.mu.Unlock()
	c.signal()
}

func (c *Client) closeLocked(code int, reason string) {
	if c.closed {
		return
	}
	c.closed, c.code, c.reason = true, code, reason
	if code == protocol.CloseSlowConsumer {
		c.queue, c.bytes = nil, 0
	}
}

// Wake returns a channel that receives when Next has something to return.
func (c *Client) Wake() <-chan struct{} { return c.wake }

// Next appends the queued messages to dst and returns it. closed is true
// once the client is closed and its queue drained; code and reason then say
// why.
func (c *Client) Next(dst [][]byte) (msgs [][]byte, closed bool, code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dst = append(dst, c.queue...)
	clear(c.queue)
	c.queue, c.bytes = c.queue[:0], 0
	if cap(c.queue) > 64 {
		c.queue = nil // do not keep a burst's backing array
	}
	return dst, c.closed, c.code, c.reason
}
