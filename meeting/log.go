package meeting

import (
	"context"
	"encoding/json"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// The meeting's log (store.Event): every change of the stage, of a
// participant's preset or presence in the meeting, and of the meeting,
// written in the same transaction as the change, with who made it. It is
// the meeting's audit log (GET /v1/meetings/{id}/audit) and what webhooks
// tell. The types and payloads are in docs/webhooks.md.

// Event types of the log.
const (
	EventStageRequested     = "stage.requested"
	EventStageCancelled     = "stage.cancelled"
	EventStageExpired       = "stage.expired"
	EventStageGranted       = "stage.granted"
	EventStageDenied        = "stage.denied"
	EventStageJoined        = "stage.joined"
	EventStageLeft          = "stage.left"
	EventStageKicked        = "stage.kicked"
	EventParticipantJoined  = "participant.joined"
	EventParticipantLeft    = "participant.left"
	EventPresetChanged      = "participant.preset_changed"
	EventParticipantRemoved = "participant.removed"
	EventMeetingStarted     = "meeting.started"
	EventMeetingUpdated     = "meeting.updated"
	EventMeetingEnded       = "meeting.ended"
)

// EventTypes lists every event type of the log.
var EventTypes = []string{EventStageRequested, EventStageCancelled, EventStageExpired, EventStageGranted,
	EventStageDenied, EventStageJoined, EventStageLeft, EventStageKicked, EventParticipantJoined, EventParticipantLeft, EventPresetChanged,
	EventParticipantRemoved, EventMeetingStarted, EventMeetingUpdated, EventMeetingEnded}

// stageEventType is the type of the log entry of a status change, by its
// cause: a request dropped because its participant left the meeting is
// cancelled by the system; a status a new preset no longer allows ends as
// a kick by whoever changed the preset; a removal ends the stage as a
// leave (participant.removed follows).
var stageEventType = map[stage.Cause]string{
	stage.CauseRequest: EventStageRequested, stage.CauseAutoAccept: EventStageGranted,
	stage.CauseCancel: EventStageCancelled, stage.CauseGrant: EventStageGranted,
	stage.CauseDeny: EventStageDenied, stage.CauseJoin: EventStageJoined, stage.CauseLeave: EventStageLeft,
	stage.CauseKick: EventStageKicked, stage.CauseExpire: EventStageExpired, stage.CauseDepart: EventStageCancelled,
	stage.CausePermissions: EventStageKicked, stage.CauseRemoved: EventStageLeft,
}

// Actors.
var (
	byAPI    = store.Actor{Kind: store.ActorAPI}
	bySystem = store.Actor{Kind: store.ActorSystem}
)

func byParticipant(pid string) store.Actor {
	return store.Actor{Kind: store.ActorParticipant, ID: pid}
}

// StageChange is the payload of a stage.* event.
type StageChange struct {
	From   stage.Status `json:"from"`
	To     stage.Status `json:"to"`
	Reason stage.Cause  `json:"reason"`
}

// presetChange is the payload of participant.preset_changed.
type presetChange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// meetingSettings is the payload of meeting.started and meeting.updated.
func meetingSettings(m store.Meeting) protocol.Meeting {
	return protocol.Meeting{ID: m.ID, Title: m.Title, Type: m.Type, MaxOnStage: m.MaxOnStage,
		StageRequestTTL: protocol.Seconds(m.StageRequestTTL)}
}

// emptyObject is the payload of entries that carry none.
var emptyObject = json.RawMessage("{}")

// logEvent returns the meeting's next log entry: it takes the meeting's
// next sequence number.
func (m *Meeting) logEvent(typ string, by store.Actor, pid, uid string, data any) store.Event {
	m.seq++
	b, err := json.Marshal(data)
	if err != nil {
		panic("meeting: encoding " + typ + ": " + err.Error()) // our own structs always encode
	}
	return store.Event{MeetingID: m.id, Seq: m.seq, Type: typ, At: m.now(), Actor: by,
		ParticipantID: pid, UserID: uid, Data: b}
}

// stageEvents returns the log entries of o's status changes, made by by;
// an expiry and a departure are the system's whoever caused them.
func (m *Meeting) stageEvents(o stage.Outcome, by store.Actor) []store.Event {
	if len(o.Changes) == 0 {
		return nil
	}
	out := make([]store.Event, 0, len(o.Changes))
	for _, c := range o.Changes {
		actor := by
		if c.Cause == stage.CauseExpire || c.Cause == stage.CauseDepart {
			actor = bySystem
		}
		out = append(out, m.logEvent(stageEventType[c.Cause], actor, c.ParticipantID, c.UserID,
			StageChange{From: c.From, To: c.To, Reason: c.Cause}))
	}
	return out
}

// MeetingStarted is the first entry of a new meeting's log, for the store
// to write with the meeting: its seq is below any the meeting's owner will
// give, as those start from the time it loads the meeting.
func MeetingStarted(m store.Meeting) store.Event {
	b, _ := json.Marshal(meetingSettings(m))
	return store.Event{MeetingID: m.ID, Seq: uint64(m.CreatedAt.UnixMilli()) * 1000, Type: EventMeetingStarted,
		At: m.CreatedAt, Actor: byAPI, Data: b}
}

// presenceEntry logs that participant p joined or left the meeting: an
// entry that tells of no stored change, queued without waiting (a
// thousand viewers joining do not wait for a thousand commits); the store
// commits it in order with the meeting's other entries. If the commit
// fails, the entry is missing from the log, and that is logged.
func (m *Meeting) presenceEntry(typ string, by store.Actor, p *stage.Participant) {
	ev := m.logEvent(typ, by, p.ID, p.UserID, emptyObject)
	pid := p.ID
	m.reg.store.AppendEvents(context.Background(), m.id, []store.Event{ev}, func(err error) {
		if err != nil {
			m.log.Error("logging a presence entry failed", "type", typ, "participant", pid, "err", err)
		}
	})
}
