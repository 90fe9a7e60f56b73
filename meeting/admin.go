package meeting

import (
	"context"
	"time"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// The application's back end (the REST API) manages meetings and their
// participants through these methods.

// LiveParticipant is a connected participant of a live meeting.
type LiveParticipant struct {
	ID, UserID, Name, Preset string
	Status                   stage.Status
}

// LiveState is the live session of a meeting.
type LiveState struct {
	Participants []LiveParticipant // the connected ones, in no order
	Requests     []stage.Request   // oldest first
	Seq          uint64            // the meeting's last event
	// Node, in a cluster, is the node that owns the meeting.
	Node string
}

// Live returns who is connected, with their statuses, and the pending
// requests.
func (r *Registry) Live(ctx context.Context, meetingID string) (LiveState, error) {
	var ls LiveState
	err := r.do(ctx, meetingID, func(m *Meeting) error {
		ls.Participants = make([]LiveParticipant, 0, len(m.conns))
		for id := range m.conns {
			p, _ := m.st.Participant(id)
			ls.Participants = append(ls.Participants, LiveParticipant{ID: p.ID, UserID: p.UserID, Name: p.Name,
				Preset: m.presets[p.ID], Status: p.Status})
		}
		ls.Requests, ls.Seq = nonNil(m.st.Requests()), m.seq
		if bus := r.cfg.Bus; bus != nil {
			ls.Node = bus.Node()
		}
		return nil
	})
	return ls, err
}

// AddParticipant stores a new participant and makes it known to the live
// meeting.
func (r *Registry) AddParticipant(ctx context.Context, p store.Participant) error {
	return r.do(ctx, p.MeetingID, func(m *Meeting) error {
		preset, err := r.store.Preset(ctx, p.Preset)
		if err != nil {
			return err
		}
		if err := r.store.AddParticipant(ctx, p); err != nil {
			return storeError(err)
		}
		m.presets[p.ID] = p.Preset
		if err := m.st.Add(stageParticipant(p, preset.Permissions)); err != nil {
			return err
		}
		m.tellMedia(p.ID)
		return nil
	})
}

// SetPreset changes a participant's preset. A status the new preset does not
// allow becomes OFF_STAGE, and everyone is told.
func (r *Registry) SetPreset(ctx context.Context, meetingID, pid, preset string) error {
	return r.do(ctx, meetingID, func(m *Meeting) error {
		p, err := r.store.Preset(ctx, preset)
		if err != nil {
			return err
		}
		o, err := m.st.SetPermissions(pid, p.Permissions)
		if err != nil {
			return err
		}
		sp, _ := m.st.Participant(pid)
		seq := m.seq
		events := append([]store.Event{m.logEvent(EventPresetChanged, byAPI, sp.ID, sp.UserID,
			presetChange{From: m.presets[pid], To: preset})}, m.stageEvents(o, byAPI)...)
		if err := r.store.SetParticipantPreset(ctx, meetingID, pid, preset, m.statuses(o), events); err != nil {
			m.st.Revert(o)
			m.seq = seq
			return storeError(err)
		}
		m.presets[pid] = preset
		m.permissionsChanged(pid, p, o)
		return nil
	})
}

// permissionsChanged tells everyone of a participant's new preset, whose
// outcome o is committed.
func (m *Meeting) permissionsChanged(pid string, p stage.Preset, o stage.Outcome) {
	if sp, ok := m.st.Participant(pid); ok {
		m.classify(&sp)
	}
	m.sendTo(pid, protocol.EventPermissionsUpdate, protocol.PermissionsUpdate{Preset: p.Name, Permissions: p.Permissions})
	m.publish(o)
	m.tellMedia(pid) // the kinds may change without the status
}

// PresetChanged applies a preset's new permissions, already stored, to
// every participant of every live meeting that uses it. Meetings not in
// memory read presets when they load.
func (r *Registry) PresetChanged(p stage.Preset) {
	for _, m := range r.loaded() {
		m.post(func() {
			for pid, name := range m.presets {
				if name == p.Name {
					m.presetChanged(pid, p)
				}
			}
		})
	}
}

// presetChanged applies p to participant pid, again later if the store
// fails the status change it causes.
func (m *Meeting) presetChanged(pid string, p stage.Preset) {
	if m.presets[pid] != p.Name {
		return // removed, or given another preset meanwhile
	}
	o, err := m.st.SetPermissions(pid, p.Permissions)
	if err != nil {
		return
	}
	if err := m.save(o, byAPI); err != nil {
		m.later(func() { m.presetChanged(pid, p) }) // tried again until the store takes it
		return
	}
	m.permissionsChanged(pid, p, o)
}

// RemoveParticipant deletes a participant; a live connection is closed with
// protocol.CloseRemoved.
func (r *Registry) RemoveParticipant(ctx context.Context, meetingID, pid string) error {
	return r.do(ctx, meetingID, func(m *Meeting) error {
		p, ok := m.st.Participant(pid)
		if !ok {
			return stage.Errorf(stage.ErrNotFound, "participant "+pid+" not found")
		}
		o, err := m.st.Remove(pid)
		if err != nil {
			return err
		}
		// Its row, statuses included, goes with the log entries.
		seq := m.seq
		events := append(m.stageEvents(o, byAPI), m.logEvent(EventParticipantRemoved, byAPI, p.ID, p.UserID, struct{}{}))
		if err := r.store.RemoveParticipant(ctx, meetingID, pid, events); err != nil {
			m.st.Revert(o)
			m.seq = seq
			return storeError(err)
		}
		m.publish(o)
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
		return nil
	})
}

// UpdateMeeting changes a live meeting's settings with fn and stores them.
func (r *Registry) UpdateMeeting(ctx context.Context, meetingID string, fn func(*store.Meeting) error) (store.Meeting, error) {
	var info store.Meeting
	err := r.do(ctx, meetingID, func(m *Meeting) error {
		info = m.info
		if err := fn(&info); err != nil {
			return err
		}
		ev := m.logEvent(EventMeetingUpdated, byAPI, "", "", meetingSettings(info))
		if err := r.store.UpdateMeeting(ctx, info, []store.Event{ev}); err != nil {
			m.seq--
			return storeError(err)
		}
		m.info = info
		m.st.SetConfig(stageConfig(info))
		m.st.Each(func(p *stage.Participant) { m.tellMedia(p.ID) }) // the type may have changed
		m.scheduleExpiry()
		w := protocol.Meeting{ID: info.ID, Title: info.Title, Type: info.Type, MaxOnStage: info.MaxOnStage,
			StageRequestTTL: protocol.Seconds(info.StageRequestTTL)}
		m.broadcast(protocol.EventMeetingUpdate, w, "")
		return nil
	})
	return info, err
}

// EndMeeting ends a meeting: it is stored as ended, and every client is
// closed with protocol.CloseMeetingEnded.
func (r *Registry) EndMeeting(ctx context.Context, meetingID string) (store.Meeting, error) {
	var info store.Meeting
	err := r.do(ctx, meetingID, func(m *Meeting) error {
		info = m.info
		info.EndedAt = r.now().UTC().Truncate(time.Millisecond)
		ev := m.logEvent(EventMeetingEnded, byAPI, "", "", struct{}{})
		if err := r.store.UpdateMeeting(ctx, info, []store.Event{ev}); err != nil {
			m.seq--
			return storeError(err)
		}
		m.info = info
		m.stop(protocol.CloseMeetingEnded, "the meeting has ended")
		return nil
	})
	return info, err
}
