package client

import (
	"encoding/json"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// apply updates the client's view with one event and queues the event, both
// under the lock, so the view and the event order agree.
func (m *Meeting) apply(msg protocol.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch msg.Event {
	case protocol.EventStageStatusUpdate:
		var d protocol.StageStatusUpdate
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		m.self.Status = d.New
		m.events.push(StageStatusUpdate{Old: d.Old, New: d.New, Reason: d.Reason})
	case protocol.EventStageRequestApproved:
		m.events.push(StageRequestApproved{})
	case protocol.EventStageRequestRejected:
		var d protocol.StageRequestRejected
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		m.events.push(StageRequestRejected{Reason: d.Reason})
	case protocol.EventRemovedFromStage:
		m.events.push(RemovedFromStage{})
	case protocol.EventTokenExpiring:
		if m.opts.RefreshToken != nil {
			go m.refreshToken()
		}
	case protocol.EventNewStageRequest:
		var d protocol.NewStageRequest
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		m.events.push(NewStageRequest{Count: d.Count, Request: d.Request})
	case protocol.EventStageAccessRequestUpdate:
		var d protocol.StageAccessRequestUpdate
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		m.requests = d.Requests
		m.events.push(StageAccessRequestUpdate{Requests: clone(d.Requests)})
	case protocol.EventPeerStageStatusUpdate:
		var d protocol.PeerStageStatusUpdate
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		if p, ok := m.participants[d.Participant.ID]; ok {
			d.Participant.Connected = p.Connected
		}
		m.participants[d.Participant.ID] = d.Participant
		m.events.push(PeerStageStatusUpdate{Participant: fromWire(d.Participant), Old: d.Old, New: d.New, Reason: d.Reason})
	case protocol.EventParticipantJoined:
		var d protocol.Participant
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		m.participants[d.ID] = d
		m.events.push(ParticipantJoined{Participant: fromWire(d)})
	case protocol.EventParticipantLeft:
		var d protocol.ParticipantLeft
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		if p, ok := m.participants[d.ID]; ok {
			if p.Status == stage.OffStage {
				delete(m.participants, d.ID)
			} else {
				p.Connected = false
				m.participants[d.ID] = p
			}
		}
		m.events.push(ParticipantLeft{ID: d.ID, UserID: d.UserID})
	case protocol.EventPermissionsUpdate:
		var d protocol.PermissionsUpdate
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		m.self.Preset, m.self.Permissions = d.Preset, d.Permissions
		m.events.push(PermissionsUpdate{Preset: d.Preset, Permissions: d.Permissions})
	case protocol.EventParticipantCount:
		var d protocol.ParticipantCount
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		m.count = d.Count
	case protocol.EventMeetingUpdate:
		var d protocol.Meeting
		if err := json.Unmarshal(msg.Data, &d); err != nil {
			return err
		}
		m.info = d
		m.events.push(MeetingUpdate{Info: infoFromWire(d)})
	}
	return nil
}
