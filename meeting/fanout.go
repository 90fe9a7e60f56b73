package meeting

import (
	"runtime"
	"slices"
	"sync"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// describe returns how p appears to others.
func (m *Meeting) describe(p *stage.Participant) protocol.Participant {
	return protocol.Participant{ID: p.ID, UserID: p.UserID, Name: p.Name, Preset: m.presets[p.ID],
		Status: p.Status, Connected: m.conns[p.ID] != nil}
}

// encode assigns the next meeting sequence number to an event.
func (m *Meeting) encode(name string, data any) *Message {
	m.seq++
	b, err := protocol.EncodeEvent(m.seq, name, data)
	if err != nil {
		panic("meeting: encoding " + name + ": " + err.Error()) // our own structs always encode
	}
	return NewMessage(b)
}

// sendTo queues an event for one participant, if it is connected.
func (m *Meeting) sendTo(id, name string, data any) {
	if c := m.conns[id]; c != nil {
		c.Send(m.encode(name, data))
	}
}

// broadcast queues one encoding of an event for every connected
// participant but except.
func (m *Meeting) broadcast(name string, data any, except string) {
	if len(m.conns) == 0 || (len(m.conns) == 1 && m.conns[except] != nil) {
		return
	}
	b := m.encode(name, data)
	if m.remoteConns > 0 {
		// The other nodes' participants: one frame for all of them.
		m.publishFrame(frame{K: frameAll, Except: except, Data: b.Data})
	}
	skip := m.conns[except] // compare pointers, not ids, in the loop
	if len(m.conns) < parallelFanOut || runtime.GOMAXPROCS(0) == 1 {
		for _, c := range m.conns {
			if c != skip && c.node == "" {
				c.Send(b)
			}
		}
		return
	}
	// A big audience on several cores: each core takes a share of the
	// sends (which may write to sockets directly), and the owner waits, so
	// the next event still follows this one on every connection.
	to := m.fanOutScratch[:0]
	for _, c := range m.conns {
		if c != skip && c.node == "" {
			to = append(to, c)
		}
	}
	var wg sync.WaitGroup
	n := runtime.GOMAXPROCS(0)
	for part := range slices.Chunk(to, (len(to)+n-1)/n) {
		wg.Go(func() {
			for _, c := range part {
				c.Send(b)
			}
		})
	}
	wg.Wait()
	clear(to)
	m.fanOutScratch = to[:0]
}

// parallelFanOut is the audience size from which a broadcast is shared out
// among the cores.
const parallelFanOut = 512

// toHosts queues one encoding of an event for every connected host (but
// except): those who accept requests if accept, else every host.
func (m *Meeting) toHosts(name string, data any, except string, accept bool) {
	want := hostFilter(accept)
	var b *Message
	remote := false
	for id, c := range m.hostConns {
		if p, ok := m.st.Participant(id); !ok || id == except || !want(p.Perms) {
			continue
		}
		if b == nil {
			b = m.encode(name, data)
		}
		if c.node != "" {
			remote = true // one frame for every node, below
			continue
		}
		c.Send(b)
	}
	if remote {
		k := frameHosts
		if accept {
			k = frameAccept
		}
		m.publishFrame(frame{K: k, Except: except, Data: b.Data})
	}
}

// hostFilter returns the test of toHosts' recipients.
func hostFilter(accept bool) func(stage.Permissions) bool {
	if accept {
		return func(p stage.Permissions) bool { return p.AcceptStageRequests }
	}
	return stage.Permissions.IsHost
}

// attach makes c the connection of participant p.
func (m *Meeting) attach(p *stage.Participant, c *Client) {
	m.conns[p.ID] = c
	if c.node != "" {
		m.remoteConns++
		m.remoteNodes[c.node]++
		m.watchNodes()
	}
	m.classify(p)
}

// classify files a connected participant under hosts and hidden by its
// current permissions.
func (m *Meeting) classify(p *stage.Participant) {
	c := m.conns[p.ID]
	delete(m.hostConns, p.ID)
	delete(m.hiddenConns, p.ID)
	if c == nil {
		return
	}
	if p.Perms.IsHost() {
		m.hostConns[p.ID] = c
	}
	if p.Perms.HiddenParticipant {
		m.hiddenConns[p.ID] = struct{}{}
	}
	if c.node != "" {
		perms := p.Perms
		m.publishFrame(frame{K: framePerms, To: p.ID, C: c.rid, Perms: &perms})
	}
}

// detach forgets participant id's connection.
func (m *Meeting) detach(id string) {
	if c := m.conns[id]; c != nil && c.node != "" {
		m.remoteConns--
		if m.remoteNodes[c.node]--; m.remoteNodes[c.node] == 0 {
			delete(m.remoteNodes, c.node)
		}
	}
	delete(m.conns, id)
	delete(m.hostConns, id)
	delete(m.hiddenConns, id)
}

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
		case c.Cause == stage.CauseKick: // on stage, or an invitation withdrawn
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
		m.broadcast(protocol.EventPeerStageStatusUpdate, ev, c.ParticipantID)
	}
	if o.NewRequest {
		// Only requestAccess adds a request, one at a time, at the end.
		reqs := m.st.Requests()
		ev := protocol.NewStageRequest{Count: len(reqs), Request: reqs[len(reqs)-1]}
		m.toHosts(protocol.EventNewStageRequest, ev, "", true)
	}
	if o.RequestsChanged {
		m.toHosts(protocol.EventStageAccessRequestUpdate, protocol.StageAccessRequestUpdate{Requests: nonNil(m.st.Requests())}, "", true)
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
	if p.Status != stage.OffStage {
		m.broadcast(name, data, p.ID)
	} else {
		m.toHosts(name, data, p.ID, false)
	}
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
	w.ParticipantCount = m.count()
	if self.Perms.IsHost() {
		for id := range m.conns {
			p, _ := m.st.Participant(id)
			add(&p)
		}
	}
	if self.Perms.AcceptStageRequests {
		w.Requests = nonNil(m.st.Requests())
	}
	return w
}
