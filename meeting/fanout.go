package meeting

import (
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// describe returns how p appears to others.
func (m *Meeting) describe(p *stage.Participant) protocol.Participant {
	return protocol.Participant{ID: p.ID, UserID: p.UserID, Name: p.Name, Preset: m.presets[p.ID],
		Status: p.Status, Connected: m.conns[p.ID] != nil}
}

// encode assigns the next meeting sequence number to an event.
func (m *Meeting) encode(name string, data any) []byte {
	m.seq++
	b, err := protocol.EncodeEvent(m.seq, name, data)
	if err != nil {
		panic("meeting: encoding " + name + ": " + err.Error()) // our own structs always encode
	}
	return b
}

// sendTo queues an event for one participant, if it is connected.
func (m *Meeting) sendTo(id, name string, data any) {
	if c := m.conns[id]; c != nil {
		c.Send(m.encode(name, data))
	}
}

// broadcast queues one encoding of an event for every connected
// participant that want accepts.
func (m *Meeting) broadcast(name string, data any, want func(p *stage.Participant) bool) {
	var b []byte
	for id, c := range m.conns {
		p, ok := m.st.Participant(id)
		if !ok || !want(&p) {
			continue
		}
		if b == nil {
			b = m.encode(name, data)
		}
		c.Send(b)
	}
}

func isHost(p *stage.Participant) bool      { return p.Perms.IsHost() }
func acceptsRequests(p *stage.Participant) bool { return p.Perms.AcceptStageRequests }

// fanOut tells every participant about an outcome: each change to the
// participant it concerns and to everyone else, then the pending list to
// the hosts.
func (m *Meeting) fanOut(o stage.Outcome) {
	for _, c := range o.Changes {
		m.sendTo(c.ParticipantID, protocol.EventStageStatusUpdate,
			protocol.StageStatusUpdate{Old: c.From, New: c.To, Reason: c.Cause})
		switch {
		case c.To == stage.Accepted:
			m.sendTo(c.ParticipantID, protocol.EventStageRequestApproved, protocol.Empty{})
		case c.Cause == stage.CauseDeny || c.Cause == stage.CauseExpire:
			m.sendTo(c.ParticipantID, protocol.EventStageRequestRejected, protocol.StageRequestRejected{Reason: c.Cause})
		case c.Cause == stage.CauseKick && c.From == stage.OnStage:
			m.sendTo(c.ParticipantID, protocol.EventRemovedFromStage, protocol.Empty{})
		}
		p, ok := m.st.Participant(c.ParticipantID)
		if !ok { // removed: describe it from the change
			p = stage.Participant{ID: c.ParticipantID, UserID: c.UserID, Status: c.To}
		}
		if p.Perms.HiddenParticipant {
			continue
		}
		ev := protocol.PeerStageStatusUpdate{Participant: m.describe(&p), Old: c.From, New: c.To, Reason: c.Cause}
		self := c.ParticipantID
		m.broadcast(protocol.EventPeerStageStatusUpdate, ev, func(q *stage.Participant) bool { return q.ID != self })
	}
	if o.NewRequest {
		// Only requestAccess adds a request, one at a time, at the end.
		reqs := m.st.Requests()
		ev := protocol.NewStageRequest{Count: len(reqs), Request: reqs[len(reqs)-1]}
		m.broadcast(protocol.EventNewStageRequest, ev, acceptsRequests)
	}
	if o.RequestsChanged {
		m.broadcast(protocol.EventStageAccessRequestUpdate, protocol.StageAccessRequestUpdate{Requests: nonNil(m.st.Requests())}, acceptsRequests)
	}
}

func nonNil(r []stage.Request) []stage.Request {
	if r == nil {
		return []stage.Request{}
	}
	return r
}

// presence tells who should know that p arrived or left: hosts always,
// everyone when p is not OFF_STAGE. A hidden participant is never told about.
func (m *Meeting) presence(p *stage.Participant, name string, data any) {
	if p.Perms.HiddenParticipant {
		return
	}
	id, visible := p.ID, p.Status != stage.OffStage
	m.broadcast(name, data, func(q *stage.Participant) bool { return q.ID != id && (visible || isHost(q)) })
}

// welcome is the snapshot a connection starts from.
func (m *Meeting) welcome(self *stage.Participant, resumed bool) *protocol.Welcome {
	w := &protocol.Welcome{
		Protocol: protocol.Version,
		Meeting: protocol.Meeting{ID: m.info.ID, Title: m.info.Title, Type: m.info.Type,
			MaxOnStage: m.info.MaxOnStage, StageRequestTTL: protocol.Seconds(m.info.StageRequestTTL)},
		Self:         protocol.Self{Participant: m.describe(self), Permissions: self.Perms},
		Participants: []protocol.Participant{},
		Resumed:      resumed,
	}
	seen := map[string]bool{self.ID: true}
	add := func(p *stage.Participant) {
		if seen[p.ID] || p.Perms.HiddenParticipant {
			return
		}
		seen[p.ID] = true
		w.Participants = append(w.Participants, m.describe(p))
	}
	m.st.EachActive(add)
	for id := range m.conns {
		p, _ := m.st.Participant(id)
		if !p.Perms.HiddenParticipant {
			w.ParticipantCount++
		}
		if isHost(self) {
			add(&p)
		}
	}
	if self.Perms.AcceptStageRequests {
		w.Requests = nonNil(m.st.Requests())
	}
	return w
}
