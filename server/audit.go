package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/store"
)

// AuditEntry is an entry of a meeting's log as the REST API shows it:
// what changed, when, and who did it. docs/webhooks.md lists the types
// and their data.
type AuditEntry struct {
	ID            string          `json:"id"` // the same id as the webhook that tells of it
	Seq           uint64          `json:"seq"`
	Type          string          `json:"type"`
	At            time.Time       `json:"at"`
	Actor         AuditActor      `json:"actor"`
	ParticipantID string          `json:"participant_id,omitempty"`
	UserID        string          `json:"user_id,omitempty"`
	Data          json.RawMessage `json:"data"`
}

// AuditActor is who made a change: a participant (its id), the
// application's back end through the REST API ("api"), or cocmd itself
// ("system": an expiry, a disconnection).
type AuditActor struct {
	Kind          store.ActorKind `json:"kind"`
	ParticipantID string          `json:"participant_id,omitempty"`
}

// EventID is the id of a meeting's log entry, the same in the audit log
// and in the webhook that tells of it: a receiver can tell a redelivery
// by it.
func EventID(meetingID string, seq uint64) string {
	return "evt_" + strings.TrimPrefix(meetingID, "mtg_") + "_" + strconv.FormatUint(seq, 10)
}

func auditJSON(e store.Event) AuditEntry {
	return AuditEntry{ID: EventID(e.MeetingID, e.Seq), Seq: e.Seq, Type: e.Type, At: e.At.UTC(),
		Actor:         AuditActor{Kind: e.Actor.Kind, ParticipantID: e.Actor.ID},
		ParticipantID: e.ParticipantID, UserID: e.UserID, Data: json.RawMessage(e.Data)}
}

// audit is GET /v1/meetings/{id}/audit: the meeting's log, oldest first,
// a page at a time, filtered by participant_id, type (comma-separated)
// and a time range (from, inclusive, to, exclusive; RFC 3339).
func (s *Server) audit(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.store.Meeting(r.Context(), id); err != nil {
		return err
	}
	p, err := page(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.EventFilter{ParticipantID: q.Get("participant_id")}
	if v := q.Get("type"); v != "" {
		for _, t := range strings.Split(v, ",") {
			if !slices.Contains(meeting.EventTypes, t) {
				return badRequest("unknown event type " + strconv.Quote(t) + "; known: " + strings.Join(meeting.EventTypes, ", "))
			}
			f.Types = append(f.Types, t)
		}
	}
	for _, b := range []struct {
		name string
		to   *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if v := q.Get(b.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return badRequest(b.name + " must be a time in RFC 3339, as 2026-12-01T10:00:00Z")
			}
			*b.to = t
		}
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return badRequest("from must be before to")
	}
	events, next, err := s.store.Events(r.Context(), id, f, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, listOf(events, next, auditJSON))
	return nil
}
