package client

import (
	"github.com/cocmd/cocmd/stage"
	"time"
)

// Participant is a participant of the meeting as this client knows it.
type Participant struct {
	ID        string
	UserID    string
	Name      string
	Preset    string
	Status    stage.Status
	Connected bool
}

// Event is something that happened in the meeting. Events arrive on
// Meeting.Events in the meeting's order; the concrete types are below.
type Event interface {
	// Name is the spec's event name, for example "peerStageStatusUpdate".
	Name() string
}

// StageStatusUpdate: this participant's own stage status changed. Missed is
// set when the change happened while the client was disconnected and was
// found in the snapshot it resumed from.
type StageStatusUpdate struct {
	Old, New stage.Status
	Reason   stage.Cause
	Missed   bool
}

// StageRequestApproved: a host accepted this participant's request, or
// invited it; it may now Join.
type StageRequestApproved struct{}

// StageRequestRejected: a host denied the request (Reason stage.CauseDeny)
// or it expired (stage.CauseExpire).
type StageRequestRejected struct{ Reason stage.Cause }

// RemovedFromStage: a host kicked this participant off the stage.
type RemovedFromStage struct{}

// NewStageRequest (hosts): a request was added; Count is the number pending.
type NewStageRequest struct {
	Count   int
	Request stage.Request
}

// StageAccessRequestUpdate (hosts): the pending requests, oldest first,
// after any change.
type StageAccessRequestUpdate struct {
	Requests []stage.Request
	Missed   bool // the list changed while the client was reconnecting
}

// PeerStageStatusUpdate: another participant's stage status changed.
type PeerStageStatusUpdate struct {
	Participant Participant
	Old, New    stage.Status
	Reason      stage.Cause
	Missed      bool
}

// ParticipantJoined: a participant connected (hosts learn of everyone,
// others of participants who are not OFF_STAGE).
type ParticipantJoined struct{ Participant Participant }

// ParticipantLeft: a participant left the meeting.
type ParticipantLeft struct{ ID, UserID string }

// PermissionsUpdate: this participant's preset changed.
type PermissionsUpdate struct {
	Preset      string
	Permissions stage.Permissions
}

// MeetingInfo is a meeting's settings.
type MeetingInfo struct {
	ID              string
	Title           string
	Type            stage.MeetingType
	MaxOnStage      int           // 0: no limit
	StageRequestTTL time.Duration // 0: requests never expire
}

// MeetingUpdate: the meeting's settings changed.
type MeetingUpdate struct{ Info MeetingInfo }

// Disconnected: the connection dropped; the client is reconnecting.
type Disconnected struct{ Err error }

// Reconnected: the client is connected again. Resumed is false when the
// server had already let the participant go (its pending request, if any,
// was dropped).
type Reconnected struct{ Resumed bool }

// Closed: the client stopped for good; Err says why (nil after Close).
// It is the last event.
type Closed struct{ Err error }

// Name implements Event.
func (StageStatusUpdate) Name() string { return "stageStatusUpdate" }

// Name implements Event.
func (MeetingUpdate) Name() string { return "meetingUpdate" }

// Name implements Event.
func (StageRequestApproved) Name() string { return "stageRequestApproved" }

// Name implements Event.
func (StageRequestRejected) Name() string { return "stageRequestRejected" }

// Name implements Event.
func (RemovedFromStage) Name() string { return "removedFromStage" }

// Name implements Event.
func (NewStageRequest) Name() string { return "newStageRequest" }

// Name implements Event.
func (StageAccessRequestUpdate) Name() string { return "stageAccessRequestUpdate" }

// Name implements Event.
func (PeerStageStatusUpdate) Name() string { return "peerStageStatusUpdate" }

// Name implements Event.
func (ParticipantJoined) Name() string { return "participantJoined" }

// Name implements Event.
func (ParticipantLeft) Name() string { return "participantLeft" }

// Name implements Event.
func (PermissionsUpdate) Name() string { return "permissionsUpdate" }

// Name implements Event.
func (Disconnected) Name() string { return "disconnected" }

// Name implements Event.
func (Reconnected) Name() string { return "reconnected" }

// Name implements Event.
func (Closed) Name() string { return "closed" }
