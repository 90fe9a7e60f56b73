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
// protocol.CloseReplaced: the newer one wins.
func (r *Registry) Connect(ctx context.Context, meetingID, pid string) (*Client, error) {
	var c *Client
	var err error
	derr := r.do(ctx, meetingID, func(m *Meeting) { c, err = m.connect(pid) })
	if derr != nil {
		return nil, derr
	}
	return c, err
}

func (m *Meeting) connect(pid string) (*Client, error) {
	p, ok := m.st.Participant(pid)
	if !ok {
		return nil, stage.Errorf(stage.ErrNotFound, "participant "+pid+" is not in the meeting")
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
	c.UserID = p.UserID
	m.attach(&p, c)
	resumed := old != nil || wasAway
	b, err := protocol.EncodeWelcome(m.seq, m.welcome(&p, resumed))
	if err != nil {
		return nil, err
	}
	c.Send(NewMessage(b))
	if !resumed {
		m.presence(&p, protocol.EventParticipantJoined, m.describe(&p))
	}
	m.checkIdle()
	m.log.Debug("participant connected", "participant", pid, "resumed", resumed)
	return c, nil
}

// onOwner runs fn on the owner of c's meeting if c is still its
// participant's connection (not replaced, not gone).
func (c *Client) onOwner(fn func(m *Meeting)) {
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
	c.onOwner(func(m *Meeting) {
		m.detach(c.ParticipantID)
		m.startGrace(c.ParticipantID)
		m.checkIdle()
	})
}

// Leave tells the meeting that c's participant left on purpose (its client
// closed the connection normally): it leaves the meeting now, without a
// grace period.
func (r *Registry) Leave(c *Client) {
	c.onOwner(func(m *Meeting) {
		m.detach(c.ParticipantID)
		m.depart(c.ParticipantID)
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
			m.depart(pid)
			m.checkIdle()
		})
	})
	m.away[pid] = t
}

// depart: the participant left the meeting for good.
func (m *Meeting) depart(pid string) {
	m.apply(m.st.Depart(pid))
	if p, ok := m.st.Participant(pid); ok {
		m.presence(&p, protocol.EventParticipantLeft, protocol.ParticipantLeft{ID: p.ID, UserID: p.UserID})
	}
	m.log.Debug("participant left", "participant", pid)
}

// Call executes a client's request and queues the response for it. It does
// not wait: the response follows the events the call caused.
func (r *Registry) Call(c *Client, req protocol.Request, params any) {
	c.onOwner(func(m *Meeting) {
		res, err := m.handle(c.ParticipantID, req.Method, params)
		b, eerr := protocol.EncodeResponse(req.ID, res, err)
		if eerr != nil {
			m.log.Error("encoding response", "err", eerr)
			return
		}
		c.Send(NewMessage(b))
	})
}

// handle runs one stage method for caller (a participant id, or
// stage.System).
func (m *Meeting) handle(caller, method string, params any) (any, error) {
	var o stage.Outcome
	var err error
	switch method {
	case protocol.MethodPing:
		return protocol.Empty{}, nil
	case protocol.MethodGetAccessRequests:
		reqs, err := m.st.AccessRequests(caller)
		if err != nil {
			return nil, err
		}
		return protocol.AccessRequests{Requests: nonNil(reqs)}, nil
	case protocol.MethodRequestAccess:
		o, err = m.st.RequestAccess(caller, m.now())
	case protocol.MethodCancelRequestAccess:
		o, err = m.st.CancelRequestAccess(caller)
	case protocol.MethodJoin:
		o, err = m.st.Join(caller)
	case protocol.MethodLeave:
		o, err = m.st.Leave(caller)
	case protocol.MethodGrantAccess, protocol.MethodDenyAccess, protocol.MethodKick:
		ids := params.(protocol.UserIDs).UserIDs
		switch method {
		case protocol.MethodGrantAccess:
			o, err = m.st.GrantAccess(caller, ids)
		case protocol.MethodDenyAccess:
			o, err = m.st.DenyAccess(caller, ids)
		default:
			o, err = m.st.Kick(caller, ids)
		}
		if err != nil {
			return nil, err
		}
		m.apply(o)
		res := protocol.BatchResult{Results: make([]protocol.UserResult, len(o.Results))}
		for i, r := range o.Results {
			res.Results[i].UserID = r.UserID
			if r.Err != nil {
				res.Results[i].Error = protocol.ErrorFrom(r.Err)
			}
		}
		return res, nil
	default:
		return nil, stage.Errorf(stage.ErrBadRequest, "unknown method "+method)
	}
	if err != nil {
		return nil, err
	}
	m.apply(o)
	p, _ := m.st.Participant(caller)
	return protocol.StatusResult{Status: p.Status}, nil
}

// Moderate runs grantAccess, denyAccess or kick (protocol method names) on
// behalf of the application's back end.
func (r *Registry) Moderate(ctx context.Context, meetingID, method string, userIDs []string) (protocol.BatchResult, error) {
	var res any
	var err error
	derr := r.do(ctx, meetingID, func(m *Meeting) {
		res, err = m.handle(stage.System, method, protocol.UserIDs{UserIDs: userIDs})
	})
	if derr != nil {
		return protocol.BatchResult{}, derr
	}
	if err != nil {
		return protocol.BatchResult{}, err
	}
	return res.(protocol.BatchResult), nil
}

// LiveState is the live session of a meeting, for the REST API.
type LiveState struct {
	Participants []protocol.Participant `json:"participants"` // the connected ones
	Requests     []stage.Request        `json:"requests"`     // oldest first
	Seq          uint64                 `json:"seq"`
}

// Live returns who is connected, with their statuses, and the pending
// requests.
func (r *Registry) Live(ctx context.Context, meetingID string) (LiveState, error) {
	var ls LiveState
	err := r.do(ctx, meetingID, func(m *Meeting) {
		ls.Participants = make([]protocol.Participant, 0, len(m.conns))
		for id := range m.conns {
			p, _ := m.st.Participant(id)
			ls.Participants = append(ls.Participants, m.describe(&p))
		}
		ls.Requests, ls.Seq = nonNil(m.st.Requests()), m.seq
	})
	return ls, err
}

// AddParticipant stores a new participant and makes it known to the live
// meeting.
func (r *Registry) AddParticipant(ctx context.Context, p store.Participant) error {
	var err error
	derr := r.do(ctx, p.MeetingID, func(m *Meeting) {
		var preset stage.Preset
		if preset, err = r.store.Preset(ctx, p.Preset); err != nil {
			return
		}
		if err = r.store.AddParticipant(ctx, p); err != nil {
			return
		}
		m.presets[p.ID] = p.Preset
		err = m.st.Add(stageParticipant(p, preset.Permissions))
		m.tellMedia(p.ID)
	})
	if derr != nil {
		return derr
	}
	return err
}

// SetPreset changes a participant's preset. A status the new preset does not
// allow becomes OFF_STAGE, and everyone is told.
func (r *Registry) SetPreset(ctx context.Context, meetingID, pid, preset string) error {
	var err error
	derr := r.do(ctx, meetingID, func(m *Meeting) {
		var p stage.Preset
		if p, err = r.store.Preset(ctx, preset); err != nil {
			return
		}
		if err = r.store.SetParticipantPreset(ctx, meetingID, pid, preset); err != nil {
			return
		}
		m.presets[pid] = preset
		m.setPermissions(pid, p)
	})
	if derr != nil {
		return derr
	}
	return err
}

func (m *Meeting) setPermissions(pid string, p stage.Preset) {
	o, err := m.st.SetPermissions(pid, p.Permissions)
	if err != nil {
		return
	}
	if sp, ok := m.st.Participant(pid); ok {
		m.classify(&sp)
	}
	m.sendTo(pid, protocol.EventPermissionsUpdate, protocol.PermissionsUpdate{Preset: p.Name, Permissions: p.Permissions})
	m.apply(o)
	m.tellMedia(pid) // the kinds may change without the status
}

// PresetChanged applies a preset's new permissions to every participant of
// every live meeting that uses it. Meetings not in memory read presets when
// they load.
func (r *Registry) PresetChanged(p stage.Preset) {
	for _, m := range r.loaded() {
		m.post(func() {
			for pid, name := range m.presets {
				if name == p.Name {
					m.setPermissions(pid, p)
				}
			}
		})
	}
}

// RemoveParticipant deletes a participant; a live connection is closed with
// protocol.CloseRemoved.
func (r *Registry) RemoveParticipant(ctx context.Context, meetingID, pid string) error {
	var err error
	derr := r.do(ctx, meetingID, func(m *Meeting) {
		p, ok := m.st.Participant(pid)
		if !ok {
			err = stage.Errorf(stage.ErrNotFound, "participant "+pid+" not found")
			return
		}
		if err = r.store.RemoveParticipant(ctx, meetingID, pid); err != nil {
			return
		}
		o, _ := m.st.Remove(pid)
		m.apply(o)
		m.tellMedia(pid)
		if c := m.conns[pid]; c != nil {
			c.Close(protocol.CloseRemoved, "removed from the meeting")
			m.detach(pid)
		}
		if t := m.away[pid]; t != nil {
			t.Stop()
			delete(m.away, pid)
		}
		delete(m.presets, pid)
		p.Status = stage.OffStage
		m.presence(&p, protocol.EventParticipantLeft, protocol.ParticipantLeft{ID: p.ID, UserID: p.UserID})
		m.checkIdle()
	})
	if derr != nil {
		return derr
	}
	return err
}

// UpdateMeeting changes a live meeting's settings with fn and stores them.
func (r *Registry) UpdateMeeting(ctx context.Context, meetingID string, fn func(*store.Meeting) error) (store.Meeting, error) {
	var info store.Meeting
	var err error
	derr := r.do(ctx, meetingID, func(m *Meeting) {
		info = m.info
		if err = fn(&info); err != nil {
			return
		}
		if err = r.store.UpdateMeeting(ctx, info); err != nil {
			return
		}
		m.info = info
		m.st.SetConfig(stageConfig(info))
		m.st.Each(func(p *stage.Participant) { m.tellMedia(p.ID) }) // the type may have changed
		m.scheduleExpiry()
		w := protocol.Meeting{ID: info.ID, Title: info.Title, Type: info.Type, MaxOnStage: info.MaxOnStage,
			StageRequestTTL: protocol.Seconds(info.StageRequestTTL)}
		m.broadcast(protocol.EventMeetingUpdate, w, "")
	})
	if derr != nil {
		return info, derr
	}
	return info, err
}

// EndMeeting ends a meeting: it is stored as ended, and every client is
// closed with protocol.CloseMeetingEnded.
func (r *Registry) EndMeeting(ctx context.Context, meetingID string) (store.Meeting, error) {
	var info store.Meeting
	var err error
	derr := r.do(ctx, meetingID, func(m *Meeting) {
		info = m.info
		info.EndedAt = r.now().UTC().Truncate(time.Millisecond)
		if err = r.store.UpdateMeeting(ctx, info); err != nil {
			return
		}
		m.info = info
		m.stop(protocol.CloseMeetingEnded, "the meeting has ended")
	})
	if derr != nil {
		return info, derr
	}
	return info, err
}
