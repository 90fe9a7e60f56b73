// Package store defines what cocmd keeps across restarts: presets, meetings,
// participants and their stage statuses with the pending requests' order.
// Package store/sqlite implements it in an embedded SQLite file.
package store

import (
	"context"
	"errors"
	"strconv"
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

// Event is one entry of a meeting's log: a stage change or a change of
// the meeting's or a participant's life, with who made it. The log is
// written in the same transaction as the change it tells of (a change and
// its entry are committed together or not at all) and is append-only: it
// is the meeting's audit log, and webhooks are delivered from it.
type Event struct {
	// N is the entry's place among every meeting's entries, in commit
	// order; set by the store when it reads an entry.
	N         int64
	MeetingID string
	Seq       uint64 // the meeting's sequence number: entries of a meeting are in Seq order
	Type      string // for example "stage.granted"; see docs/webhooks.md
	At        time.Time
	Actor     Actor
	// The participant the event is about, if any.
	ParticipantID string
	UserID        string
	// Data is the event's payload, a JSON object.
	Data []byte
}

// Actor is who made a change.
type Actor struct {
	Kind ActorKind
	// ID is the participant's id for ActorParticipant, empty otherwise.
	ID string
}

// ActorKind says what kind of actor made a change.
type ActorKind string

// The kinds of actor.
const (
	ActorParticipant ActorKind = "participant" // through its realtime connection
	ActorAPI         ActorKind = "api"         // the application's back end, through the REST API
	ActorSystem      ActorKind = "system"      // cocmd itself: an expiry, a disconnection, a preset's rules
)

// EventFilter selects entries of a meeting's log.
type EventFilter struct {
	ParticipantID string    // empty: any
	Types         []string  // empty: any
	From, To      time.Time // zero: unbounded; From inclusive, To exclusive
}

// Endpoint is a webhook endpoint the operator registered: the meetings'
// log entries committed after it was registered are delivered to it.
type Endpoint struct {
	ID         string
	URL        string
	EventTypes []string // empty: every type
	// Secrets sign the deliveries: the current one first, then the one
	// a rotation replaced, until SecretsUntil.
	Secrets      []string
	SecretsUntil time.Time
	CreatedAt    time.Time
	// StartN is the position (Event.N) after which entries are delivered
	// to it; set by CreateEndpoint.
	StartN   int64
	Status   EndpointStatus
	StatusAt time.Time
	Note     string // why it stopped, when it did
}

// EndpointStatus says whether an endpoint is delivered to.
type EndpointStatus string

// The statuses of an endpoint.
const (
	EndpointActive  EndpointStatus = "active"
	EndpointFailing EndpointStatus = "failing" // a delivery failed for too long: stopped until replayed
	EndpointGone    EndpointStatus = "gone"    // the receiver answered 410: stopped until replayed
)

// Attempt is one delivery of a log entry to an endpoint, and how it went.
type Attempt struct {
	EndpointID string
	EventID    string
	MeetingID  string
	Seq        uint64
	At         time.Time
	Status     int // the HTTP status; 0 when none came
	Latency    time.Duration
	Error      string // empty on success
}

// Webhooks is what webhook delivery keeps.
type Webhooks interface {
	// CreateEndpoint stores a new endpoint, delivered to from the log's
	// current end on, and returns it with StartN set.
	CreateEndpoint(ctx context.Context, e Endpoint) (Endpoint, error)
	Endpoint(ctx context.Context, id string) (Endpoint, error)
	Endpoints(ctx context.Context) ([]Endpoint, error)
	UpdateEndpoint(ctx context.Context, e Endpoint) error
	DeleteEndpoint(ctx context.Context, id string) error
	// PendingEvents returns up to limit log entries, in commit order,
	// past position after, that endpoint id has not been delivered yet
	// (whose Seq is above its cursor for their meeting).
	PendingEvents(ctx context.Context, id string, after int64, limit int) ([]Event, error)
	// Record logs attempts and moves endpoint id's cursors (meeting id →
	// seq: entries up to it are delivered, or were not for it), in one
	// transaction.
	Record(ctx context.Context, id string, attempts []Attempt, delivered map[string]uint64) error
	AddAttempt(ctx context.Context, a Attempt) error
	// Attempts returns endpoint id's attempts, newest first.
	Attempts(ctx context.Context, id string, page Page) ([]Attempt, string, error)
	// Prune deletes the log entries committed before logBefore (none if
	// it is zero) and the attempts made before attemptsBefore.
	Prune(ctx context.Context, logBefore, attemptsBefore time.Time) (entries, attempts int64, err error)
}

// Page selects a slice of a list: the items after cursor After (empty for
// the first page), at most Limit of them.
type Page struct {
	After string
	Limit int
}

// ParseCursor reads a page cursor that is a position (a row number, a
// sequence number): "" is the start; anything but a number is refused as
// a bad request.
func ParseCursor(c string) (int64, error) {
	if c == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(c, 10, 64)
	if err != nil || n < 0 {
		return 0, stage.Errorf(stage.ErrBadRequest, "bad cursor "+strconv.Quote(c))
	}
	return n, nil
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

	// CreateMeeting, UpdateMeeting, SetParticipantPreset and
	// RemoveParticipant write their change and events, the log entries
	// that tell of it, in one transaction.
	CreateMeeting(ctx context.Context, m Meeting, events []Event) error
	Meeting(ctx context.Context, id string) (Meeting, error)
	Meetings(ctx context.Context, page Page) ([]Meeting, string, error)
	UpdateMeeting(ctx context.Context, m Meeting, events []Event) error

	AddParticipant(ctx context.Context, p Participant) error
	Participant(ctx context.Context, meetingID, id string) (Participant, error)
	Participants(ctx context.Context, meetingID string, page Page) ([]Participant, string, error)
	AllParticipants(ctx context.Context, meetingID string) ([]Participant, error)
	// SetParticipantPreset changes a participant's preset and writes the
	// stage statuses the change caused, in one transaction.
	SetParticipantPreset(ctx context.Context, meetingID, id, preset string, statuses []Status, events []Event) error
	RemoveParticipant(ctx context.Context, meetingID, id string, events []Event) error

	// SaveStatuses writes stage statuses and the events that tell of
	// them (or of anything else: either may be empty) in one transaction.
	// When it returns nil they are durable; when it returns an error,
	// none was written.
	SaveStatuses(ctx context.Context, meetingID string, s []Status, events []Event) error
	// AppendEvents queues log entries that tell of no stored change (a
	// participant connected, or left after its grace) for the next
	// commit, in the order of the calls, without waiting for it; done, if
	// not nil, is told how it went, on the store's goroutine: it must not
	// block.
	AppendEvents(ctx context.Context, meetingID string, events []Event, done func(error))
	// LastEventSeq returns the Seq of the last entry of meeting
	// meetingID's log, 0 if it has none.
	LastEventSeq(ctx context.Context, meetingID string) (uint64, error)
	// Events returns entries of meeting meetingID's log, in Seq order, a
	// page at a time: the page's cursor is a Seq.
	Events(ctx context.Context, meetingID string, f EventFilter, page Page) ([]Event, string, error)

	Webhooks

	Close() error
}
