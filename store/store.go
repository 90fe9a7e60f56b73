// Package store defines what cocmd keeps across restarts: presets, meetings,
// participants and their stage statuses with the pending requests' order.
// Package store/sqlite implements it in an embedded SQLite file.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/cocmd/cocmd/stage"
)

// ErrNotFound is returned for an unknown id; it wraps stage.ErrNotFound.
var ErrNotFound = stage.Errorf(stage.ErrNotFound, "not found")

// ErrConflict is matched (errors.Is) by the error of a write that would
// break a uniqueness or referential rule: a second participant with the same
// user id, a preset in use. That error, a *ConflictError, also matches
// stage.ErrBadRequest, its wire code.
var ErrConflict = errors.New("conflict")

// ConflictError is a conflict with a message for people.
type ConflictError struct{ Msg string }

// Error implements error.
func (e *ConflictError) Error() string { return e.Msg }

// Unwrap lets errors.Is match both ErrConflict and stage.ErrBadRequest.
func (e *ConflictError) Unwrap() []error { return []error{ErrConflict, stage.ErrBadRequest} }

// Meeting is a stored meeting.
type Meeting struct {
	ID              string
	Title           string
	Type            stage.MeetingType
	MaxOnStage      int
	StageRequestTTL time.Duration
	CreatedAt       time.Time
	EndedAt         time.Time // zero while the meeting is live
}

// Ended reports whether the meeting has ended.
func (m Meeting) Ended() bool { return !m.EndedAt.IsZero() }

// Participant is a stored participant with its stage status.
type Participant struct {
	ID          string
	MeetingID   string
	UserID      string
	Name        string
	Preset      string
	CreatedAt   time.Time
	Status      stage.Status
	RequestedAt time.Time
	RequestSeq  uint64
}

// Status is the stored stage state of one participant.
type Status struct {
	ParticipantID string
	Status        stage.Status
	RequestedAt   time.Time
	RequestSeq    uint64
}

// Page selects a slice of a list: the items after cursor After (empty for
// the first page), at most Limit of them.
type Page struct {
	After string
	Limit int
}

// Store is everything cocmd persists.
type Store interface {
	// Setting returns a stored value, or ErrNotFound.
	Setting(ctx context.Context, key string) ([]byte, error)
	// SetSettingOnce stores value under key unless a value is there, and
	// returns the value stored.
	SetSettingOnce(ctx context.Context, key string, value []byte) ([]byte, error)
	// SetSetting stores value under key, replacing any value there.
	SetSetting(ctx context.Context, key string, value []byte) error
	// DeleteSetting removes key, if it is there.
	DeleteSetting(ctx context.Context, key string) error

	CreatePreset(ctx context.Context, p stage.Preset) error
	Preset(ctx context.Context, name string) (stage.Preset, error)
	Presets(ctx context.Context) ([]stage.Preset, error)
	UpdatePreset(ctx context.Context, p stage.Preset) error
	DeletePreset(ctx context.Context, name string) error

	CreateMeeting(ctx context.Context, m Meeting) error
	Meeting(ctx context.Context, id string) (Meeting, error)
	Meetings(ctx context.Context, page Page) ([]Meeting, string, error)
	UpdateMeeting(ctx context.Context, m Meeting) error

	AddParticipant(ctx context.Context, p Participant) error
	Participant(ctx context.Context, meetingID, id string) (Participant, error)
	Participants(ctx context.Context, meetingID string, page Page) ([]Participant, string, error)
	AllParticipants(ctx context.Context, meetingID string) ([]Participant, error)
	// SetParticipantPreset changes a participant's preset and writes the
	// stage statuses the change caused, in one transaction.
	SetParticipantPreset(ctx context.Context, meetingID, id, preset string, statuses []Status) error
	RemoveParticipant(ctx context.Context, meetingID, id string) error

	// SaveStatuses writes stage statuses in one transaction. When it
	// returns nil they are durable; when it returns an error, none was
	// written.
	SaveStatuses(ctx context.Context, meetingID string, s []Status) error

	Close() error
}
