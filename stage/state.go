package stage

import (
	"fmt"
	"slices"
	"time"
)

// System is the caller id of the application's back end (the REST API key):
// it holds every moderation permission.
const System = ""

// Participant is one participant's stage-relevant state.
type Participant struct {
	ID          string
	UserID      string
	Name        string
	Perms       Permissions
	Status      Status
	RequestedAt time.Time // when the pending request was made; zero unless Requested
	RequestSeq  uint64    // arrival order of the pending request; 0 unless Requested
}

// Request is a pending request to join the stage.
type Request struct {
	ParticipantID string    `json:"participant_id"`
	UserID        string    `json:"user_id"`
	Name          string    `json:"name"`
	RequestedAt   time.Time `json:"requested_at"`
}

// Change is one participant's status change.
type Change struct {
	ParticipantID string
	UserID        string
	From, To      Status
	Cause         Cause
}

// Result is the outcome for one user id of a batch method.
type Result struct {
	UserID string
	Err    error // nil on success
}

// Outcome is what a successful command did.
type Outcome struct {
	Changes         []Change
	NewRequest      bool     // a request was added to the pending list
	RequestsChanged bool     // the pending list changed
	Results         []Result // batch methods only: one per user id, in call order

	undo []func() // restores the state as it was, run last to first
}

// Revert undoes o, which must be the last outcome the state produced: every
// status, pending request, its order and the permissions it changed are as
// they were before the command. The meeting reverts an outcome it could not
// make durable.
func (s *State) Revert(o Outcome) {
	for i := len(o.undo) - 1; i >= 0; i-- {
		o.undo[i]()
	}
}

func (o *Outcome) add(c Change) {
	o.Changes = append(o.Changes, c)
	if c.From == Requested || c.To == Requested {
		o.RequestsChanged = true
		if c.To == Requested {
			o.NewRequest = true
		}
	}
}

// Config is a meeting's stage settings.
type Config struct {
	Type       MeetingType
	MaxOnStage int           // 0: no limit on ON_STAGE + ACCEPTED
	RequestTTL time.Duration // 0: requests never expire
}

// State is the stage of one meeting. It is not safe for concurrent use: the
// meeting's owner is its only user.
type State struct {
	cfg     Config
	byID    map[string]*Participant
	byUser  map[string]*Participant
	pending []*Participant          // Requested participants, in arrival order
	active  map[string]*Participant // participants not OFF_STAGE, by id
	lastSeq uint64
}

// New returns an empty stage with cfg.
func New(cfg Config) *State {
	return &State{cfg: cfg, byID: map[string]*Participant{}, byUser: map[string]*Participant{}, active: map[string]*Participant{}}
}

// Config returns the stage settings.
func (s *State) Config() Config { return s.cfg }

// SetConfig replaces the stage settings. It changes no status: a lower
// max_on_stage applies to the next grant or join.
func (s *State) SetConfig(cfg Config) { s.cfg = cfg }

// Add inserts a participant with its stored status, as on load or when the
// participant is added to a live meeting. A participant whose permissions do
// not allow its status is put OFF_STAGE without a change being reported.
func (s *State) Add(p Participant) error {
	if _, ok := s.byID[p.ID]; ok {
		return fmt.Errorf("stage: participant %s already present", p.ID)
	}
	if _, ok := s.byUser[p.UserID]; ok {
		return fmt.Errorf("stage: user %s already present", p.UserID)
	}
	if !p.Perms.mayBeOnStage() || s.cfg.Type != Webinar {
		p.Status = OffStage
	}
	if p.Status != Requested {
		p.RequestedAt, p.RequestSeq = time.Time{}, 0
	}
	pp := &p
	s.byID[p.ID], s.byUser[p.UserID] = pp, pp
	if p.Status != OffStage {
		s.active[p.ID] = pp
	}
	if p.Status == Requested {
		if p.RequestSeq == 0 {
			p.RequestSeq = s.lastSeq + 1
		}
		s.lastSeq = max(s.lastSeq, p.RequestSeq)
		i, _ := slices.BinarySearchFunc(s.pending, pp.RequestSeq, func(e *Participant, seq uint64) int {
			return compareUint(e.RequestSeq, seq)
		})
		s.pending = slices.Insert(s.pending, i, pp)
	}
	return nil
}

func compareUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Remove deletes a participant (removed from the meeting). If it was not
// OFF_STAGE, the outcome reports its change to OFF_STAGE.
func (s *State) Remove(id string) (Outcome, error) {
	p, ok := s.byID[id]
	if !ok {
		return Outcome{}, Errorf(ErrNotFound, "participant "+id+" not found")
	}
	var o Outcome
	if p.Status != OffStage {
		s.set(&o, p, OffStage, CauseRemoved)
	}
	active, wasActive := s.active[id]
	delete(s.byID, id)
	delete(s.byUser, p.UserID)
	delete(s.active, id)
	o.undo = append(o.undo, func() {
		s.byID[id], s.byUser[p.UserID] = p, p
		if wasActive {
			s.active[id] = active
		}
	})
	return o, nil
}

// Participant returns a copy of the participant with id.
func (s *State) Participant(id string) (Participant, bool) {
	p, ok := s.byID[id]
	if !ok {
		return Participant{}, false
	}
	return *p, true
}

// ByUser returns a copy of the participant with user id uid.
func (s *State) ByUser(uid string) (Participant, bool) {
	p, ok := s.byUser[uid]
	if !ok {
		return Participant{}, false
	}
	return *p, true
}

// Len returns the number of participants.
func (s *State) Len() int { return len(s.byID) }

// Each calls fn with every participant, in no particular order. fn must not
// modify the state.
func (s *State) Each(fn func(p *Participant)) {
	for _, p := range s.byID {
		fn(p)
	}
}

// EachActive calls fn with every participant who is not OFF_STAGE, in no
// particular order. It costs the size of the stage, not of the meeting.
func (s *State) EachActive(fn func(p *Participant)) {
	for _, p := range s.active {
		fn(p)
	}
}

// Requests returns the pending requests, oldest first.
func (s *State) Requests() []Request {
	out := make([]Request, len(s.pending))
	for i, p := range s.pending {
		out[i] = Request{ParticipantID: p.ID, UserID: p.UserID, Name: p.Name, RequestedAt: p.RequestedAt}
	}
	return out
}

// set moves p to status to and records the change. It is the only place a
// status is written.
func (s *State) set(o *Outcome, p *Participant, to Status, cause Cause) {
	from, at, seq, pos := p.Status, p.RequestedAt, p.RequestSeq, -1
	if from == Requested {
		pos = slices.Index(s.pending, p)
		s.pending = slices.Delete(s.pending, pos, pos+1)
		p.RequestedAt, p.RequestSeq = time.Time{}, 0
	}
	s.setStatus(p, to)
	o.add(Change{ParticipantID: p.ID, UserID: p.UserID, From: from, To: to, Cause: cause})
	o.undo = append(o.undo, func() {
		if p.Status == Requested {
			i := slices.Index(s.pending, p)
			s.pending = slices.Delete(s.pending, i, i+1)
		}
		s.setStatus(p, from)
		p.RequestedAt, p.RequestSeq = at, seq
		if from == Requested {
			s.pending = slices.Insert(s.pending, pos, p)
		}
	})
}

// setStatus writes p's status and keeps the active set in step.
func (s *State) setStatus(p *Participant, to Status) {
	p.Status = to
	if to == OffStage {
		delete(s.active, p.ID)
	} else {
		s.active[p.ID] = p
	}
}

func (s *State) request(o *Outcome, p *Participant, now time.Time) {
	s.set(o, p, Requested, CauseRequest)
	last := s.lastSeq
	o.undo = append(o.undo, func() { s.lastSeq = last })
	s.lastSeq++
	p.RequestSeq, p.RequestedAt = s.lastSeq, now
	s.pending = append(s.pending, p)
}

// occupied counts ON_STAGE and ACCEPTED participants.
func (s *State) occupied() int {
	n := 0
	for _, p := range s.active {
		if p.Status == OnStage || p.Status == Accepted {
			n++
		}
	}
	return n
}

func (s *State) hasRoom() bool {
	return s.cfg.MaxOnStage <= 0 || s.occupied() < s.cfg.MaxOnStage
}

// self returns the calling participant after the checks every self method
// shares: the meeting and the preset have a stage, and the caller may ever be
// on it.
func (s *State) self(id string) (*Participant, error) {
	p, ok := s.byID[id]
	if !ok {
		return nil, Errorf(ErrNotFound, "participant "+id+" not found")
	}
	if s.cfg.Type != Webinar {
		return nil, Errorf(ErrStageDisabled, "meeting type "+s.cfg.Type.String()+" has no stage")
	}
	if !p.Perms.StageEnabled {
		return nil, Errorf(ErrStageDisabled, "the participant's preset has no stage")
	}
	return p, nil
}

func mayNeverBeOnStage(p *Participant) error {
	if p.Perms.HiddenParticipant {
		return Errorf(ErrPermissionDenied, "a hidden participant is never on stage")
	}
	if p.Perms.StageAccess == NotAllowed {
		return Errorf(ErrPermissionDenied, "stage_access is NOT_ALLOWED")
	}
	return nil
}

func invalid(method string, st Status) error {
	return Errorf(ErrInvalidStageStatus, method+" is invalid from "+st.String())
}

// RequestAccess asks for the stage on behalf of participant id.
func (s *State) RequestAccess(id string, now time.Time) (Outcome, error) {
	p, err := s.self(id)
	if err != nil {
		return Outcome{}, err
	}
	if err := mayNeverBeOnStage(p); err != nil {
		return Outcome{}, err
	}
	var o Outcome
	switch p.Status {
	case Requested:
		return o, nil
	case OffStage:
		if p.Perms.StageAccess == Allowed {
			if !s.hasRoom() {
				return Outcome{}, Errorf(ErrStageFull, "the stage is full")
			}
			s.set(&o, p, Accepted, CauseAutoAccept)
			return o, nil
		}
		s.request(&o, p, now)
		return o, nil
	}
	return Outcome{}, invalid("requestAccess", p.Status)
}

// CancelRequestAccess withdraws participant id's pending request.
func (s *State) CancelRequestAccess(id string) (Outcome, error) {
	p, err := s.self(id)
	if err != nil {
		return Outcome{}, err
	}
	if p.Status != Requested {
		return Outcome{}, Errorf(ErrNoRequestToCancel, "no pending request (status "+p.Status.String()+")")
	}
	var o Outcome
	s.set(&o, p, OffStage, CauseCancel)
	return o, nil
}

// Join puts participant id on the stage.
func (s *State) Join(id string) (Outcome, error) {
	p, err := s.self(id)
	if err != nil {
		return Outcome{}, err
	}
	if err := mayNeverBeOnStage(p); err != nil {
		return Outcome{}, err
	}
	var o Outcome
	switch {
	case p.Status == Accepted:
		// Already counted by max_on_stage.
	case (p.Status == OffStage || p.Status == Requested) && p.Perms.StageAccess == Allowed:
		if !s.hasRoom() {
			return Outcome{}, Errorf(ErrStageFull, "the stage is full")
		}
	default:
		return Outcome{}, invalid("join", p.Status)
	}
	s.set(&o, p, OnStage, CauseJoin)
	return o, nil
}

// Leave takes participant id off the stage, or declines its invitation.
func (s *State) Leave(id string) (Outcome, error) {
	p, err := s.self(id)
	if err != nil {
		return Outcome{}, err
	}
	if p.Status != OnStage && p.Status != Accepted {
		return Outcome{}, invalid("leave", p.Status)
	}
	var o Outcome
	s.set(&o, p, OffStage, CauseLeave)
	return o, nil
}

// moderator checks that caller (a participant id, or System) may moderate
// with the permission that need selects.
func (s *State) moderator(caller string, need func(Permissions) bool, what string) error {
	if s.cfg.Type != Webinar {
		return Errorf(ErrStageDisabled, "meeting type "+s.cfg.Type.String()+" has no stage")
	}
	if caller == System {
		return nil
	}
	p, ok := s.byID[caller]
	if !ok {
		return Errorf(ErrNotFound, "participant "+caller+" not found")
	}
	if !p.Perms.StageEnabled {
		return Errorf(ErrStageDisabled, "the participant's preset has no stage")
	}
	if !need(p.Perms) {
		return Errorf(ErrPermissionDenied, what+" permission required")
	}
	return nil
}

func canAccept(p Permissions) bool { return p.AcceptStageRequests }
func canKick(p Permissions) bool   { return p.KickParticipant }

// target resolves one user id of a batch method.
func (s *State) target(uid string) (*Participant, error) {
	p, ok := s.byUser[uid]
	if !ok {
		return nil, Errorf(ErrNotFound, "user "+uid+" is not in the meeting")
	}
	if !p.Perms.StageEnabled {
		return nil, Errorf(ErrPermissionDenied, "user "+uid+" has no stage")
	}
	if err := mayNeverBeOnStage(p); err != nil {
		return nil, Errorf(ErrPermissionDenied, "user "+uid+" may never be on stage")
	}
	return p, nil
}

// batch applies fn to each user id on its own.
func (s *State) batch(uids []string, fn func(o *Outcome, p *Participant) error) Outcome {
	var o Outcome
	for _, uid := range uids {
		p, err := s.target(uid)
		if err == nil {
			err = fn(&o, p)
		}
		o.Results = append(o.Results, Result{UserID: uid, Err: err})
	}
	return o
}

// GrantAccess accepts the requests of, or invites, the users uids.
func (s *State) GrantAccess(caller string, uids []string) (Outcome, error) {
	if err := s.moderator(caller, canAccept, "accept_stage_requests"); err != nil {
		return Outcome{}, err
	}
	return s.batch(uids, func(o *Outcome, p *Participant) error {
		switch p.Status {
		case Accepted, OnStage:
			return nil
		}
		if !s.hasRoom() {
			return Errorf(ErrStageFull, "the stage is full")
		}
		s.set(o, p, Accepted, CauseGrant)
		return nil
	}), nil
}

// DenyAccess rejects the requests of, or withdraws the invitations of, uids.
func (s *State) DenyAccess(caller string, uids []string) (Outcome, error) {
	if err := s.moderator(caller, canAccept, "accept_stage_requests"); err != nil {
		return Outcome{}, err
	}
	return s.batch(uids, func(o *Outcome, p *Participant) error {
		if p.Status != Requested && p.Status != Accepted {
			return invalid("denyAccess", p.Status)
		}
		s.set(o, p, OffStage, CauseDeny)
		return nil
	}), nil
}

// Kick takes the users uids off the stage, or withdraws their acceptance.
func (s *State) Kick(caller string, uids []string) (Outcome, error) {
	if err := s.moderator(caller, canKick, "kick_participant"); err != nil {
		return Outcome{}, err
	}
	return s.batch(uids, func(o *Outcome, p *Participant) error {
		if p.Status != OnStage && p.Status != Accepted {
			return invalid("kick", p.Status)
		}
		s.set(o, p, OffStage, CauseKick)
		return nil
	}), nil
}

// AccessRequests returns the pending requests for caller, oldest first.
func (s *State) AccessRequests(caller string) ([]Request, error) {
	if err := s.moderator(caller, canAccept, "accept_stage_requests"); err != nil {
		return nil, err
	}
	return s.Requests(), nil
}

// Depart removes the pending request of participant id, who left the
// meeting. Any other status is kept: it is the participant's, and it finds
// it again when it comes back.
func (s *State) Depart(id string) Outcome {
	var o Outcome
	if p, ok := s.byID[id]; ok && p.Status == Requested {
		s.set(&o, p, OffStage, CauseDepart)
	}
	return o
}

// Expire turns every request older than the meeting's TTL at now into
// OFF_STAGE.
func (s *State) Expire(now time.Time) Outcome {
	var o Outcome
	if s.cfg.RequestTTL <= 0 {
		return o
	}
	for len(s.pending) > 0 && !now.Before(s.pending[0].RequestedAt.Add(s.cfg.RequestTTL)) {
		s.set(&o, s.pending[0], OffStage, CauseExpire)
	}
	return o
}

// NextExpiry returns when the oldest pending request expires.
func (s *State) NextExpiry() (time.Time, bool) {
	if s.cfg.RequestTTL <= 0 || len(s.pending) == 0 {
		return time.Time{}, false
	}
	return s.pending[0].RequestedAt.Add(s.cfg.RequestTTL), true
}

// SetPermissions replaces participant id's permissions. A status the new
// permissions do not allow becomes OFF_STAGE.
func (s *State) SetPermissions(id string, perms Permissions) (Outcome, error) {
	p, ok := s.byID[id]
	if !ok {
		return Outcome{}, Errorf(ErrNotFound, "participant "+id+" not found")
	}
	var o Outcome
	old := p.Perms
	p.Perms = perms
	o.undo = append(o.undo, func() { p.Perms = old })
	if p.Status != OffStage && (!perms.mayBeOnStage() || s.cfg.Type != Webinar) {
		s.set(&o, p, OffStage, CausePermissions)
	}
	return o, nil
}

// Publishing returns which kinds of media participant id may publish now,
// and false if it may publish nothing because of its stage status (or
// because it is hidden, or unknown). In a webinar only ON_STAGE
// participants publish; where there is no stage (a GROUP_CALL meeting, or
// a preset with stage_enabled false) the preset's media permissions alone
// decide.
func (s *State) Publishing(id string) (Media, bool) {
	p, ok := s.byID[id]
	if !ok || p.Perms.HiddenParticipant {
		return Media{}, false
	}
	if s.cfg.Type == Webinar && p.Perms.StageEnabled && p.Status != OnStage {
		return Media{}, false
	}
	return p.Perms.Media, true
}
