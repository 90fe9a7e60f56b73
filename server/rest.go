package server

import (
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// The REST representations.

// Meeting is a meeting as the REST API shows it.
type Meeting struct {
	ID              string            `json:"id"`
	Title           string            `json:"title"`
	Type            stage.MeetingType `json:"type"`
	MaxOnStage      int               `json:"max_on_stage"`
	StageRequestTTL int               `json:"stage_request_ttl"` // seconds; 0: requests never expire
	Status          string            `json:"status"`            // LIVE or ENDED
	CreatedAt       time.Time         `json:"created_at"`
	EndedAt         *time.Time        `json:"ended_at,omitempty"`
}

func meetingJSON(m store.Meeting) Meeting {
	out := Meeting{ID: m.ID, Title: m.Title, Type: m.Type, MaxOnStage: m.MaxOnStage,
		StageRequestTTL: protocol.Seconds(m.StageRequestTTL), Status: "LIVE", CreatedAt: m.CreatedAt}
	if m.Ended() {
		out.Status, out.EndedAt = "ENDED", &m.EndedAt
	}
	return out
}

// Participant is a participant as the REST API shows it.
type Participant struct {
	ID          string       `json:"id"`
	MeetingID   string       `json:"meeting_id"`
	UserID      string       `json:"user_id"`
	Name        string       `json:"name"`
	Preset      string       `json:"preset"`
	StageStatus stage.Status `json:"stage_status"`
	RequestedAt *time.Time   `json:"requested_at,omitempty"`
	CreatedAt   time.Time    `json:"created_at"`
}

func participantJSON(p store.Participant) Participant {
	out := Participant{ID: p.ID, MeetingID: p.MeetingID, UserID: p.UserID, Name: p.Name, Preset: p.Preset,
		StageStatus: p.Status, CreatedAt: p.CreatedAt}
	if !p.RequestedAt.IsZero() {
		out.RequestedAt = &p.RequestedAt
	}
	return out
}

// List is one page of a list; NextCursor is empty on the last page.
type List[T any] struct {
	Data       []T    `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// listOf turns one page of stored items into its REST form.
func listOf[S, T any](items []S, next string, conv func(S) T) List[T] {
	out := List[T]{Data: make([]T, len(items)), NextCursor: next}
	for i, v := range items {
		out.Data[i] = conv(v)
	}
	return out
}

func badRequest(msg string) error { return stage.Errorf(stage.ErrBadRequest, msg) }

var presetName = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

func page(r *http.Request) (store.Page, error) {
	p := store.Page{After: r.URL.Query().Get("cursor"), Limit: 50}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return p, badRequest("limit must be 1 to 500")
		}
		p.Limit = n
	}
	return p, nil
}

// Presets.

func (s *Server) listPresets(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.store.Presets(r.Context())
	if err != nil {
		return err
	}
	if ps == nil {
		ps = []stage.Preset{}
	}
	writeJSON(w, http.StatusOK, List[stage.Preset]{Data: ps})
	return nil
}

func (s *Server) createPreset(w http.ResponseWriter, r *http.Request) error {
	var p stage.Preset
	if err := decode(r, &p); err != nil {
		return err
	}
	if !presetName.MatchString(p.Name) {
		return badRequest("preset name must be 1 to 64 of a-z, 0-9, _ and -")
	}
	if err := s.store.CreatePreset(r.Context(), p); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, p)
	return nil
}

func (s *Server) getPreset(w http.ResponseWriter, r *http.Request) error {
	p, err := s.store.Preset(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (s *Server) updatePreset(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Permissions *stage.Permissions `json:"permissions"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Permissions == nil {
		return badRequest("permissions are required")
	}
	p := stage.Preset{Name: r.PathValue("name"), Permissions: *body.Permissions}
	if err := s.store.UpdatePreset(r.Context(), p); err != nil {
		return err
	}
	s.reg.PresetChanged(p)
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (s *Server) deletePreset(w http.ResponseWriter, r *http.Request) error {
	if err := s.store.DeletePreset(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Meetings.

// meetingInput is the body of create and update; pointers tell absent
// fields from zero ones.
type meetingInput struct {
	Title           *string            `json:"title"`
	Type            *stage.MeetingType `json:"type"`
	MaxOnStage      *int               `json:"max_on_stage"`
	StageRequestTTL *int               `json:"stage_request_ttl"`
}

func (in meetingInput) apply(m *store.Meeting) error {
	if in.Title != nil {
		title, err := cleanText("title", *in.Title, maxTitleRunes, 0)
		if err != nil {
			return err
		}
		m.Title = title
	}
	if in.MaxOnStage != nil {
		if *in.MaxOnStage < 0 || *in.MaxOnStage > 10000 {
			return badRequest("max_on_stage must be 0 (no limit) to 10000")
		}
		m.MaxOnStage = *in.MaxOnStage
	}
	if in.StageRequestTTL != nil {
		if *in.StageRequestTTL < 0 || *in.StageRequestTTL > 86400 {
			return badRequest("stage_request_ttl must be 0 (never) to 86400 seconds")
		}
		m.StageRequestTTL = time.Duration(*in.StageRequestTTL) * time.Second
	}
	return nil
}

func (s *Server) createMeeting(w http.ResponseWriter, r *http.Request) error {
	var in meetingInput
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Title == nil || in.Type == nil {
		return badRequest("title and type are required")
	}
	m := store.Meeting{ID: newID("mtg_"), Type: *in.Type, CreatedAt: s.cfg.Now().UTC().Truncate(time.Millisecond)}
	if err := in.apply(&m); err != nil {
		return err
	}
	if err := s.store.CreateMeeting(r.Context(), m, []store.Event{meeting.MeetingStarted(m)}); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, meetingJSON(m))
	return nil
}

func (s *Server) listMeetings(w http.ResponseWriter, r *http.Request) error {
	p, err := page(r)
	if err != nil {
		return err
	}
	ms, next, err := s.store.Meetings(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, listOf(ms, next, meetingJSON))
	return nil
}

func (s *Server) getMeeting(w http.ResponseWriter, r *http.Request) error {
	m, err := s.store.Meeting(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, meetingJSON(m))
	return nil
}

func (s *Server) updateMeeting(w http.ResponseWriter, r *http.Request) error {
	var in meetingInput
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Type != nil {
		return badRequest("a meeting's type cannot change")
	}
	m, err := s.reg.UpdateMeeting(r.Context(), r.PathValue("id"), in.apply)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, meetingJSON(m))
	return nil
}

func (s *Server) endMeeting(w http.ResponseWriter, r *http.Request) error {
	m, err := s.reg.EndMeeting(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, meetingJSON(m))
	return nil
}

// Participants.

// AddedParticipant is the answer to adding a participant or renewing its
// token.
type AddedParticipant struct {
	Participant    Participant `json:"participant"`
	Token          string      `json:"token"`
	TokenExpiresAt time.Time   `json:"token_expires_at"`
}

func (s *Server) tokenTTL(seconds *int) (time.Duration, error) {
	if seconds == nil {
		return s.cfg.TokenTTL, nil
	}
	if *seconds < 1 || *seconds > 30*86400 {
		return 0, badRequest("token_ttl must be 1 to 2592000 seconds")
	}
	return time.Duration(*seconds) * time.Second, nil
}

func (s *Server) addParticipant(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name     string `json:"name"`
		UserID   string `json:"user_id"`
		Preset   string `json:"preset"`
		TokenTTL *int   `json:"token_ttl"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	var err error
	if in.Name, err = cleanText("name", in.Name, maxNameRunes, 0); err != nil {
		return err
	}
	if in.UserID, err = cleanText("user_id", in.UserID, 0, maxUserIDLen); err != nil {
		return err
	}
	if in.Preset == "" {
		return badRequest("preset is required")
	}
	ttl, err := s.tokenTTL(in.TokenTTL)
	if err != nil {
		return err
	}
	p := store.Participant{ID: newID("prt_"), MeetingID: r.PathValue("id"), UserID: in.UserID, Name: in.Name,
		Preset: in.Preset, CreatedAt: s.cfg.Now().UTC().Truncate(time.Millisecond), Status: stage.OffStage}
	if err := s.reg.AddParticipant(r.Context(), p); err != nil {
		return err
	}
	tok, exp := s.tokens.Sign(p.MeetingID, p.ID, ttl)
	writeJSON(w, http.StatusCreated, AddedParticipant{Participant: participantJSON(p), Token: tok, TokenExpiresAt: exp.UTC()})
	return nil
}

func (s *Server) listParticipants(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.store.Meeting(r.Context(), id); err != nil {
		return err
	}
	p, err := page(r)
	if err != nil {
		return err
	}
	ps, next, err := s.store.Participants(r.Context(), id, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, listOf(ps, next, participantJSON))
	return nil
}

func (s *Server) getParticipant(w http.ResponseWriter, r *http.Request) error {
	p, err := s.store.Participant(r.Context(), r.PathValue("id"), r.PathValue("pid"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, participantJSON(p))
	return nil
}

func (s *Server) updateParticipant(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Preset string `json:"preset"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Preset == "" {
		return badRequest("preset is required")
	}
	mid, pid := r.PathValue("id"), r.PathValue("pid")
	if err := s.reg.SetPreset(r.Context(), mid, pid, in.Preset); err != nil {
		return err
	}
	return s.getParticipant(w, r)
}

func (s *Server) removeParticipant(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.RemoveParticipant(r.Context(), r.PathValue("id"), r.PathValue("pid")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) newToken(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		TokenTTL *int `json:"token_ttl"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, &in); err != nil {
			return err
		}
	}
	ttl, err := s.tokenTTL(in.TokenTTL)
	if err != nil {
		return err
	}
	p, err := s.store.Participant(r.Context(), r.PathValue("id"), r.PathValue("pid"))
	if err != nil {
		return err
	}
	tok, exp := s.tokens.Sign(p.MeetingID, p.ID, ttl)
	writeJSON(w, http.StatusOK, AddedParticipant{Participant: participantJSON(p), Token: tok, TokenExpiresAt: exp.UTC()})
	return nil
}

// The live session.

// Live is the live session of a meeting as the REST API shows it.
type Live struct {
	Participants []protocol.Participant `json:"participants"` // the connected ones
	Requests     []stage.Request        `json:"requests"`     // oldest first
	Seq          uint64                 `json:"seq"`
	// Node, in a cluster, is the node that owns the meeting now.
	Node string `json:"node,omitempty"`
}

func (s *Server) live(w http.ResponseWriter, r *http.Request) error {
	ls, err := s.reg.Live(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	out := Live{Participants: make([]protocol.Participant, len(ls.Participants)), Requests: ls.Requests, Seq: ls.Seq, Node: ls.Node}
	for i, p := range ls.Participants {
		out.Participants[i] = protocol.Participant{ID: p.ID, UserID: p.UserID, Name: p.Name, Preset: p.Preset,
			Status: p.Status, Connected: true}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) moderate(w http.ResponseWriter, r *http.Request) error {
	call, ok := moderation[r.PathValue("action")]
	if !ok {
		return stage.Errorf(stage.ErrNotFound, "no stage action "+strconv.Quote(r.PathValue("action"))+" (grant, deny, kick)")
	}
	var in protocol.UserIDs
	if err := decode(r, &in); err != nil {
		return err
	}
	if len(in.UserIDs) == 0 || len(in.UserIDs) > protocol.MaxBatch {
		return badRequest("user_ids must name 1 to " + strconv.Itoa(protocol.MaxBatch) + " users")
	}
	res, err := call(s.reg, r.Context(), r.PathValue("id"), nfc(in.UserIDs))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, batchResult(res))
	return nil
}

// Token signing keys.

// SigningKeyInfo is a signing key as the REST API shows it: never its
// secret.
type SigningKeyInfo struct {
	ID       string     `json:"id"`
	Created  time.Time  `json:"created_at"`
	RetireAt *time.Time `json:"retire_at,omitempty"`
	Current  bool       `json:"current"`
}

func (s *Server) signingKeys() List[SigningKeyInfo] {
	keys := s.keyring.Keys()
	out := List[SigningKeyInfo]{Data: make([]SigningKeyInfo, len(keys))}
	for i, k := range keys {
		out.Data[i] = SigningKeyInfo{ID: k.ID, Created: k.Created, RetireAt: k.RetireAt, Current: i == len(keys)-1}
	}
	return out
}

func (s *Server) listSigningKeys(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.signingKeys())
	return nil
}

// rotateSigningKey makes a new signing key for new tokens; the older keys
// retire after retire_after seconds (default a day; 0: now), and with them
// the tokens they signed and the connections those opened.
func (s *Server) rotateSigningKey(w http.ResponseWriter, r *http.Request) error {
	in := struct {
		RetireAfter *int `json:"retire_after"`
	}{}
	if r.ContentLength != 0 {
		if err := decode(r, &in); err != nil {
			return err
		}
	}
	grace := 24 * time.Hour
	if in.RetireAfter != nil {
		if *in.RetireAfter < 0 || *in.RetireAfter > 30*86400 {
			return badRequest("retire_after must be 0 to 2592000 seconds")
		}
		grace = time.Duration(*in.RetireAfter) * time.Second
	}
	if _, err := s.keyring.Rotate(s.cfg.Now(), grace); err != nil {
		return stage.Errorf(stage.ErrUnavailable, "saving the new key: "+err.Error())
	}
	if grace == 0 {
		s.sweep(false) // the old keys' connections close now
	}
	s.log.Info("signing key rotated", "retire_after", grace)
	writeJSON(w, http.StatusOK, s.signingKeys())
	return nil
}
