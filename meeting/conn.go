package meeting

import (
	"context"
	"time"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// Connect attaches a new connection for participant pid of meeting
// meetingID. The returned client's first message is the welcome snapshot. A
// connection that the participant already had is closed with
// protocol.CloseReplaced: the newer one wins. media, if not nil, goes in
// the welcome as it is: how this connection reaches media.
func (r *Registry) Connect(ctx context.Context, meetingID, pid string, media *protocol.MediaConfig) (*Client, error) {
	var c *Client
	err := r.do(ctx, meetingID, func(m *Meeting) error {
		var err error
		c, err = m.connect(pid, media)
		return err
	})
	if owner, ok := ownerOf(err); ok && r.cfg.Bus != nil {
		// Another node owns the meeting: connect through it.
		return r.connectProxy(ctx, meetingID, owner, pid, media)
	}
	return c, err
}

func (m *Meeting) connect(pid string, media *protocol.MediaConfig) (*Client, error) {
	c, welcome, err := m.attachConn(pid, media, "", "", false)
	if err != nil {
		return nil, err
	}
	c.Send(NewMessage(welcome))
	return c, nil
}

// attachConn makes a new connection of participant pid, held by this node
// (node "") or by node as its connection rid, and returns it with its
// welcome. moved: the connection was the participant's with the node that
// handed the meeting over, and goes on (no one is told it joined).
func (m *Meeting) attachConn(pid string, media *protocol.MediaConfig, node, rid string, moved bool) (*Client, []byte, error) {
	p, ok := m.st.Participant(pid)
	if !ok {
		return nil, nil, stage.Errorf(stage.ErrNotFound, "participant "+pid+" is not in the meeting")
	}
	old := m.conns[pid]
	if old != nil {
		old.Close(protocol.CloseReplaced, "replaced by a newer connection")
	}
	t, wasAway := m.away[pid]
	if wasAway {
		t.Stop()
		delete(m.away, pid)
	}
	c := newClient(m, pid, m.reg.cfg.QueueBytes)
	c.UserID, c.node, c.rid = p.UserID, node, rid
	if old != nil {
		m.detach(pid) // keeps the counts of remote connections right
	}
	m.attach(&p, c)
	resumed := old != nil || wasAway || moved
	w := m.welcome(&p, resumed)
	w.Media = media
	b, err := protocol.EncodeWelcome(m.seq, w)
	if err != nil {
		m.detach(pid)
		return nil, nil, err
	}
	if !resumed {
		m.presenceEntry(EventParticipantJoined, byParticipant(pid), &p)
		m.presence(&p, protocol.EventParticipantJoined, m.describe(&p))
	}
	m.checkIdle()
	m.log.Debug("participant connected", "participant", pid, "resumed", resumed, "node", node)
	return c, b, nil
}

// errReplaced answers a call made on a connection that a newer one of the
// same participant replaced, or that was closed by the meeting.
var errReplaced = stage.Errorf(stage.ErrNotFound, "this connection is no longer the participant's")

// call runs fn on the owner of c's meeting, if c is still its participant's
// connection, and waits for it. What fn queues for c reaches it before
// anything c's caller queues after call returns.
func (c *Client) call(ctx context.Context, fn func(m *Meeting) error) error {
	m := c.meeting
	var err error
	derr := m.do(ctx, func() {
		if m.conns[c.ParticipantID] != c {
			err = errReplaced
			return
		}
		err = fn(m)
	})
	switch {
	case derr == ErrStopped:
		return errReplaced // a stopped meeting has closed its clients
	case derr != nil:
		return unavailable(derr)
	}
	return err
}

// post runs fn on the owner of c's meeting, without waiting, if c is still
// its participant's connection (not replaced, not gone) when it runs.
func (c *Client) post(fn func(m *Meeting)) {
	m := c.meeting
	m.post(func() {
		if m.conns[c.ParticipantID] == c {
			fn(m)
		}
	})
}

// Disconnect tells the meeting that c's connection ended. The participant
// keeps its place for the grace period.
func (r *Registry) Disconnect(c *Client) {
	if c.proxy != nil {
		c.leaveRemote(opDisconnect)
		return
	}
	c.post(func(m *Meeting) {
		m.detach(c.ParticipantID)
		m.startGrace(c.ParticipantID)
		m.checkIdle()
	})
}

// Leave tells the meeting that c's participant left on purpose (its client
// closed the connection normally): it leaves the meeting now, without a
// grace period.
func (r *Registry) Leave(c *Client) {
	if c.proxy != nil {
		c.leaveRemote(opLeave)
		return
	}
	c.post(func(m *Meeting) {
		m.detach(c.ParticipantID)
		m.depart(c.ParticipantID, byParticipant(c.ParticipantID))
		m.checkIdle()
	})
}

func (m *Meeting) startGrace(pid string) {
	var t *time.Timer
	t = time.AfterFunc(m.reg.cfg.Grace, func() {
		m.post(func() {
			if m.away[pid] != t {
				return
			}
			delete(m.away, pid)
			m.depart(pid, bySystem) // gone for longer than the grace
			m.checkIdle()
		})
	})
	m.away[pid] = t
}

// depart: the participant left the meeting for good. Its pending request
// goes; if the store fails that, it is tried again while the participant
// stays away.
func (m *Meeting) depart(pid string, by store.Actor) {
	m.dropRequest(pid)
	if p, ok := m.st.Participant(pid); ok {
		m.presenceEntry(EventParticipantLeft, by, &p)
		m.presence(&p, protocol.EventParticipantLeft, protocol.ParticipantLeft{ID: p.ID, UserID: p.UserID})
	}
	m.log.Debug("participant left", "participant", pid)
}

func (m *Meeting) dropRequest(pid string) {
	if err := m.commit(m.st.Depart(pid), bySystem); err != nil {
		m.later(func() {
			if m.conns[pid] == nil && m.away[pid] == nil {
				m.dropRequest(pid)
			}
		})
	}
}
