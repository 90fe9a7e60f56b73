package meeting

import (
	"sync"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// Message is one outbound message. A broadcast shares one Message among
// every recipient's queue, so that the transport can encode it for the wire
// once (Prepared) instead of once per recipient.
type Message struct {
	Data     []byte
	once     sync.Once
	prepared any
}

// NewMessage returns a message holding b.
func NewMessage(b []byte) *Message { return &Message{Data: b} }

// Prepared returns prepare(Data), computed on the first call only.
func (m *Message) Prepared(prepare func([]byte) any) any {
	m.once.Do(func() { m.prepared = prepare(m.Data) })
	return m.prepared
}

// Client is one connection of a participant to a live meeting: a bounded
// outbound queue between the meeting and the connection's writer.
//
// The writer does not wait for messages on a goroutine of its own: when the
// queue goes from idle to busy, the client calls the transport's start
// function, which runs a writer that drains it with Take until Take reports
// it idle again. An idle connection so costs no goroutine on the write side.
//
// A client whose queue would outgrow its limit is closed with
// protocol.CloseSlowConsumer instead of slowing the meeting.
type Client struct {
	// ParticipantID is the participant this connection speaks for.
	ParticipantID string
	// UserID is that participant's user id.
	UserID string

	meeting   *Meeting
	meetingID string
	// node, on a meeting's owner, is the node holding this connection,
	// when another one does ("" here): what is sent to it goes there as
	// frames (see remote.go), and rid names the connection on that node.
	node string
	rid  string
	// proxy, on a node that is not the meeting's owner, forwards this
	// connection's calls to the owner; from is the owner's frame its
	// welcome follows (guarded by the proxy's lock).
	proxy *proxy
	from  uint64
	perms stage.Permissions // its participant's, for the host-only frames (proxy's lock)

	mu      sync.Mutex
	start   func()
	direct  func(*Message) (rest []byte, ok bool)
	partial []byte // the unwritten end of a message the direct path began
	running bool
	queue   []*Message
	bytes   int
	limit   int
	ping    bool
	closed  bool
	code    int
	reason  string
}

func newClient(m *Meeting, participantID string, limit int) *Client {
	c := &Client{ParticipantID: participantID, meeting: m, limit: limit}
	if m != nil {
		c.meetingID = m.id
	}
	return c
}

// SetWriter installs the transport's writer and, if messages are already
// queued, starts it. start is called with the client's lock held: it must
// only launch the writer (for example with a go statement), never block or
// call back into the client.
//
// direct, if not nil, is tried first when a message finds the client idle:
// it writes the message at once without blocking, on the sender's goroutine,
// and returns what it could not write (ok false: nothing could be written,
// or the connection failed). That spares an idle connection the start of a
// writer for every message of a broadcast. It is called without the lock.
func (c *Client) SetWriter(start func(), direct func(*Message) (rest []byte, ok bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.start, c.direct = start, direct
	c.kickLocked()
}

func (c *Client) kickLocked() {
	if c.running || c.start == nil {
		return
	}
	if len(c.queue) == 0 && c.partial == nil && !c.ping && !c.closed {
		return
	}
	c.running = true
	c.start()
}

// Send queues m for the connection. It reports false if the client is
// closed; a client whose queue would pass its limit is closed instead.
func (c *Client) Send(m *Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if c.node != "" {
		// On the owner, for a connection another node holds: called by
		// the owner goroutine only.
		c.meeting.publishFrame(frame{K: frameTo, To: c.ParticipantID, C: c.rid, Data: m.Data})
		return true
	}
	if c.direct != nil && !c.running && len(c.queue) == 0 && c.partial == nil && !c.ping {
		// Idle: write it now. running keeps any writer out meanwhile.
		c.running = true
		c.mu.Unlock()
		rest, ok := c.direct(m)
		c.mu.Lock()
		c.running = false
		if ok && rest == nil {
			c.kickLocked() // for whatever came in meanwhile
			return true
		}
		if ok {
			c.partial = rest
			c.kickLocked()
			return true
		}
		// Nothing written: queue it in front of whatever came meanwhile.
		c.queue = append(c.queue, nil)
		copy(c.queue[1:], c.queue)
		c.queue[0] = m
		c.bytes += len(m.Data)
		c.kickLocked()
		return true
	}
	if c.bytes+len(m.Data) > c.limit {
		c.closeLocked(protocol.CloseSlowConsumer, "too far behind")
		c.kickLocked()
		return false
	}
	c.queue = append(c.queue, m)
	c.bytes += len(m.Data)
	c.kickLocked()
	return true
}

// RequestPing asks the writer to send a keepalive ping.
func (c *Client) RequestPing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ping = true
	c.kickLocked()
}

// Close closes the client with a WebSocket close code and reason. Messages
// already queued are still delivered, except when the client is closed for
// being slow, when they are dropped.
func (c *Client) Close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.node != "" && !c.closed {
		c.meeting.publishFrame(frame{K: frameClose, To: c.ParticipantID, C: c.rid, Code: code, Reason: reason})
	}
	c.closeLocked(code, reason)
	c.kickLocked()
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

// Batch is what the writer has to do next.
type Batch struct {
	// Partial, if set, is the end of a message the direct path began: it
	// goes out before Messages.
	Partial  []byte
	Messages []*Message
	Ping     bool
	// Closed is set once the client is closed and its queue drained; Code
	// and Reason say why.
	Closed bool
	Code   int
	Reason string
	// Idle is set when there is nothing to do: the writer must return,
	// and the client will start a new one when there is.
	Idle bool
}

// Take appends the queued messages to dst and returns the batch to write.
func (c *Client) Take(dst []*Message) Batch {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := Batch{Partial: c.partial, Messages: append(dst, c.queue...), Ping: c.ping, Closed: c.closed, Code: c.code, Reason: c.reason}
	clear(c.queue)
	c.queue, c.bytes, c.ping, c.partial = c.queue[:0], 0, false, nil
	if cap(c.queue) > 64 {
		c.queue = nil // do not keep a burst's backing array
	}
	if len(b.Messages) == 0 && b.Partial == nil && !b.Ping && !b.Closed {
		c.running = false
		b.Idle = true
	}
	return b
}

// MeetingID returns the id of the client's meeting.
func (c *Client) MeetingID() string { return c.meetingID }
