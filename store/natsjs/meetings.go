package natsjs

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cocmd/cocmd/store"
)

// formatVersion is the version of record this code writes. It reads
// records of its own version and of the one before; a record of a later
// version stops the view of that meeting (it is logged, never guessed at).
const formatVersion = 1

// record is one message of a meeting's subject: what one commit changed.
// Its JSON is the wire format between nodes: fields are only ever added.
type record struct {
	V       int    `json:"v"`
	ID      string `json:"id"` // random: tells whether an unanswered write landed
	Meeting string `json:"meeting"`
	Node    string `json:"node,omitempty"`
	// Epoch, when not zero, marks a node taking the meeting over: records
	// after it are that node's until the next epoch.
	Epoch   uint64   `json:"epoch,omitempty"`
	Changes []change `json:"changes,omitempty"`
}

// change is one write of the store.Store interface; exactly one of its
// fields but Events is set, or none for events alone.
type change struct {
	Create    *store.Meeting     `json:"create,omitempty"`
	Update    *store.Meeting     `json:"update,omitempty"`
	Add       *store.Participant `json:"add,omitempty"`
	SetPreset *presetChange      `json:"set_preset,omitempty"`
	Remove    string             `json:"remove,omitempty"`
	Statuses  []store.Status     `json:"statuses,omitempty"`
	Events    []store.Event      `json:"events,omitempty"`
}

type presetChange struct {
	ID     string `json:"id"`
	Preset string `json:"preset"`
}

// perRecord spaces positions (meetings', participants' and entries' n)
// within one record: n = stream sequence × perRecord + index.
const perRecord = 1 << 12

// mstate is the view of one meeting.
type mstate struct {
	info    store.Meeting
	n       int64
	parts   map[string]*pstate
	order   []*pstate // by n
	byUser  map[string]string
	subjSeq uint64 // the stream sequence of the meeting's last record
	owner   string // the node of the last epoch
	epoch   uint64
	events  []store.Event
	lastSeq uint64 // the Seq of the last entry of its log
}

type pstate struct {
	p store.Participant
	n int64
}

// eventRef places an entry of some meeting's log in commit order.
type eventRef struct {
	m *mstate
	i int
}

// applyRecord folds one message of the meetings stream into the view.
func (s *Store) applyRecord(seq uint64, data []byte) {
	var r record
	err := json.Unmarshal(data, &r)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.applied.advance(seq)
	if err != nil || r.V > formatVersion {
		return
	}
	var m *mstate
	if len(r.Changes) > 0 && r.Changes[0].Create != nil {
		c := r.Changes[0].Create
		if s.meetings[c.ID] == nil {
			m = &mstate{info: *c, n: int64(seq) * perRecord, parts: map[string]*pstate{}, byUser: map[string]string{}}
			s.meetings[c.ID] = m
			s.order = append(s.order, m)
		}
	}
	if m == nil {
		m = s.meetings[r.Meeting]
	}
	if m == nil {
		// An epoch record of a meeting being created elsewhere, or the
		// records of a meeting whose creation this view never saw.
		return
	}
	m.subjSeq = seq
	if r.Epoch != 0 {
		m.owner, m.epoch = r.Node, r.Epoch
	}
	k := int64(0)
	for _, c := range r.Changes {
		switch {
		case c.Update != nil:
			m.info = *c.Update
		case c.Add != nil:
			if _, dup := m.parts[c.Add.ID]; !dup {
				ps := &pstate{p: *c.Add, n: int64(seq)*perRecord + k}
				k++
				m.parts[ps.p.ID], m.byUser[ps.p.UserID] = ps, ps.p.ID
				m.order = append(m.order, ps)
			}
		case c.SetPreset != nil:
			if ps := m.parts[c.SetPreset.ID]; ps != nil {
				ps.p.Preset = c.SetPreset.Preset
			}
		case c.Remove != "":
			if ps := m.parts[c.Remove]; ps != nil {
				delete(m.parts, c.Remove)
				delete(m.byUser, ps.p.UserID)
				m.order = slices.DeleteFunc(m.order, func(x *pstate) bool { return x == ps })
			}
		}
		for _, st := range c.Statuses {
			if ps := m.parts[st.ParticipantID]; ps != nil {
				ps.p.Status, ps.p.RequestedAt, ps.p.RequestSeq = st.Status, st.RequestedAt, st.RequestSeq
			}
		}
		for _, e := range c.Events {
			e.N, e.MeetingID = int64(seq)*perRecord+k, m.info.ID
			k++
			m.events = append(m.events, e)
			m.lastSeq = max(m.lastSeq, e.Seq)
			s.log = append(s.log, eventRef{m, len(m.events) - 1})
		}
	}
}

// subject returns the subject of meeting id's records.
func (s *Store) subject(id string) string { return s.cfg.Prefix + ".m." + token(id) }

// writer serializes the writes of one meeting and chains them: each is
// conditional on the previous one being the subject's last record.
type writer struct {
	id      string
	queue   []*write
	busy    bool
	known   bool   // last is the subject's last sequence, as far as this node knows
	last    uint64 // the subject's last sequence
	epoch   uint64 // the epoch this node claimed; 0 if it claims none
	fenced  bool   // another node wrote after this node's epoch
	onFence func()
}

// write is one call waiting for its commit.
type write struct {
	c     change
	check func(m *mstate, b *batch) error
	done  func(error)
	claim *claim // set: the write is an epoch record, committed alone
}

// claim is a node taking a meeting over.
type claim struct {
	epoch   uint64
	onFence func()
}

// batch is what earlier writes of one commit did, for the checks of the
// later ones.
type batch struct {
	lastSeq uint64          // of the entries taken
	users   map[string]bool // user ids added
	added   map[string]bool // participant ids added
	removed map[string]bool
}

func (b *batch) has(m *mstate, pid string) bool {
	if b.removed[pid] {
		return false
	}
	_, ok := m.parts[pid]
	return ok || b.added[pid]
}

// submit queues w for meeting id's next commit.
func (s *Store) submit(id string, w *write) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		w.done(unavailable(errors.New("the store is closed")))
		return
	}
	wr := s.writers[id]
	if wr == nil {
		wr = &writer{id: id}
		s.writers[id] = wr
	}
	if wr.fenced && w.claim == nil {
		s.mu.Unlock()
		w.done(ErrFenced)
		return
	}
	wr.queue = append(wr.queue, w)
	start := !wr.busy
	wr.busy = true
	s.mu.Unlock()
	if start {
		go s.commitLoop(wr)
	}
}

// submitWait queues a write and waits for its outcome. Once queued, a
// write is never abandoned half-way, whatever ctx does.
func (s *Store) submitWait(id string, c change, check func(*mstate, *batch) error) error {
	ch := make(chan error, 1)
	s.submit(id, &write{c: c, check: check, done: func(err error) { ch <- err }})
	return <-ch
}

// maxBatch bounds the writes of one record.
const maxBatch = 256

// commitLoop commits wr's queue, a batch at a time, until it is empty.
func (s *Store) commitLoop(wr *writer) {
	for {
		s.mu.Lock()
		n := min(len(wr.queue), maxBatch)
		if n == 0 {
			wr.busy = false
			if wr.epoch == 0 && s.writers[wr.id] == wr {
				// Not this node's meeting (a creation, say): forget it;
				// a later write reads the last sequence again.
				delete(s.writers, wr.id)
			}
			s.mu.Unlock()
			return
		}
		// A claim is committed alone, and nothing queued before it
		// joins the writes after it.
		if wr.queue[0].claim != nil {
			n = 1
		} else if i := slices.IndexFunc(wr.queue[:n], func(w *write) bool { return w.claim != nil }); i > 0 {
			n = i
		}
		group := slices.Clone(wr.queue[:n])
		wr.queue = wr.queue[n:]
		fenced := wr.fenced && group[0].claim == nil
		s.mu.Unlock()
		switch {
		case group[0].claim != nil:
			group[0].done(s.commitClaim(wr, group[0].claim))
		case fenced:
			for _, w := range group {
				w.done(ErrFenced)
			}
		default:
			s.commit(wr, group)
		}
	}
}

// commit writes group as one record after the meeting's last one.
func (s *Store) commit(wr *writer, group []*write) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	fail := func(err error) {
		for _, w := range group {
			w.done(err)
		}
	}
	if err := s.learnLast(ctx, wr); err != nil {
		fail(err)
		return
	}
	// Check each write against the view, which holds every record up to
	// the subject's last.
	b := &batch{users: map[string]bool{}, added: map[string]bool{}, removed: map[string]bool{}}
	var ok []*write
	var changes []change
	s.mu.Lock()
	m := s.meetings[wr.id]
	for _, w := range group {
		if err := checkSeqs(m, b, w.c.Events); err != nil {
			s.mu.Unlock()
			w.done(err)
			s.mu.Lock()
			continue
		}
		if w.check != nil {
			if err := w.check(m, b); err != nil {
				s.mu.Unlock()
				w.done(err)
				s.mu.Lock()
				continue
			}
		}
		if a := w.c.Add; a != nil {
			b.users[a.UserID], b.added[a.ID] = true, true
		}
		if w.c.Remove != "" {
			b.removed[w.c.Remove] = true
		}
		if n := len(w.c.Events); n > 0 {
			b.lastSeq = w.c.Events[n-1].Seq
		}
		ok, changes = append(ok, w), append(changes, w.c)
	}
	s.mu.Unlock()
	if len(ok) == 0 {
		return
	}
	group = ok
	r := record{V: formatVersion, ID: rand.Text(), Meeting: wr.id, Node: s.cfg.Node, Changes: changes}
	seq, err := s.publish(wr, r)
	if err != nil {
		fail(err)
		return
	}
	if err := s.waitFor(ctx, &s.applied, seq); err != nil {
		// Committed, but the view is behind: the write happened.
		_ = err
	}
	for _, w := range group {
		w.done(nil)
	}
}

// checkSeqs refuses entries whose Seq does not follow the meeting's log.
func checkSeqs(m *mstate, b *batch, events []store.Event) error {
	last := b.lastSeq
	if m != nil {
		last = max(last, m.lastSeq)
	}
	for _, e := range events {
		if e.Seq <= last {
			return &store.ConflictError{Msg: fmt.Sprintf("log entry %d of meeting %q does not follow entry %d", e.Seq, e.MeetingID, last)}
		}
		last = e.Seq
	}
	return nil
}

// learnLast reads the subject's last sequence through the stream's leader,
// when this node does not know it, and waits for the view to hold it.
func (s *Store) learnLast(ctx context.Context, wr *writer) error {
	s.mu.Lock()
	known, last := wr.known, wr.last
	s.mu.Unlock()
	if !known {
		msg, err := s.meetingsStream.GetLastMsgForSubject(ctx, s.subject(wr.id))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			last = 0
		case err != nil:
			return unavailable(err)
		default:
			last = msg.Sequence
		}
		s.mu.Lock()
		wr.known, wr.last = true, last
		s.mu.Unlock()
	}
	return s.waitFor(ctx, &s.applied, last)
}

// publish writes r conditional on the subject's last sequence being
// wr.last and returns its sequence. A write JetStream refused for another
// last sequence fences a claimed writer. A write whose answer never came
// is looked up: if it landed, it succeeded; if it did not, it is sent
// again, the same record (its ID makes JetStream drop a second copy),
// until outcomeWait has passed: the stream may be electing a new leader
// (after losing one, 4–9 s in nats-server), and writes work again once it
// has one. If the outcome cannot be told, the meeting is fenced (its
// owner drops its copy and reloads the truth, which every participant
// feels).
func (s *Store) publish(wr *writer, r record) (uint64, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	last := wr.last
	s.mu.Unlock()
	msg := nats.NewMsg(s.subject(wr.id))
	msg.Data = data
	deadline := time.Now().Add(outcomeWait)
	for {
		pctx, cancel := context.WithTimeout(context.Background(), min(s.cfg.Timeout, time.Until(deadline)))
		ack, err := s.js.PublishMsg(pctx, msg, jetstream.WithExpectLastSequencePerSubject(last), jetstream.WithMsgID(r.ID))
		cancel()
		if err == nil {
			s.setLast(wr, ack.Sequence)
			return ack.Sequence, nil
		}
		if isWrongLast(err) {
			s.fence(wr)
			return 0, ErrFenced
		}
		seq, landed, known := s.lookup(wr, r.ID, last, deadline)
		switch {
		case landed:
			s.setLast(wr, seq)
			return seq, nil
		case !known:
			s.fence(wr)
			return 0, unavailable(fmt.Errorf("the outcome of a write is unknown: %w", err))
		case seq != last: // another node wrote
			s.fence(wr)
			return 0, ErrFenced
		case time.Until(deadline) <= 0:
			return 0, unavailable(err) // not written: nothing changed
		}
	}
}

// lookup asks the stream's leader for the subject's last record, until
// it answers or deadline passes: its sequence, whether it is record id,
// and whether the leader answered.
func (s *Store) lookup(wr *writer, id string, last uint64, deadline time.Time) (seq uint64, landed, known bool) {
	for time.Until(deadline) > 0 {
		// Each ask short: one sent to a lost leader is never answered.
		ctx, cancel := context.WithTimeout(context.Background(), min(time.Second, time.Until(deadline)))
		got, err := s.meetingsStream.GetLastMsgForSubject(ctx, s.subject(wr.id))
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return 0, false, true
		case err == nil:
			var lr record
			return got.Sequence, json.Unmarshal(got.Data, &lr) == nil && lr.ID == id, true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last, false, false
}

func (s *Store) setLast(wr *writer, seq uint64) {
	s.mu.Lock()
	wr.known, wr.last = true, seq
	s.mu.Unlock()
}

// fence marks wr as no longer this node's to write: a claimed writer tells
// its owner; an unclaimed one forgets the last sequence it knew.
func (s *Store) fence(wr *writer) {
	s.mu.Lock()
	wr.known = false
	var tell func()
	if wr.epoch != 0 {
		wr.fenced, tell = true, wr.onFence
	}
	s.mu.Unlock()
	if tell != nil {
		tell()
	}
}

// Claim makes this node meeting id's writer from epoch on, which the
// caller's lease gave it (epochs grow across owners): it reads the
// meeting's last record through the stream's leader and writes an epoch
// record after it, so that a node that wrote before, and did not see this
// record, has every later write refused (its writes are conditional on its
// own last record being the subject's last). When Claim returns, the view
// holds everything up to the epoch record: the meeting may be loaded from
// this store. onFence is called, once, if another node's record ever
// follows. It returns a stage.ErrNotFound error for a meeting that does
// not exist.
func (s *Store) Claim(ctx context.Context, id string, epoch uint64, onFence func()) error {
	ch := make(chan error, 1)
	s.submit(id, &write{claim: &claim{epoch: epoch, onFence: onFence}, done: func(err error) { ch <- err }})
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return unavailable(ctx.Err())
	}
}

// commitClaim writes an epoch record; run by the writer's commit loop.
func (s *Store) commitClaim(wr *writer, c *claim) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	for try := 0; try < 5; try++ {
		s.mu.Lock()
		wr.known, wr.epoch, wr.fenced, wr.onFence = false, 0, false, nil
		s.mu.Unlock()
		if err := s.learnLast(ctx, wr); err != nil {
			return err
		}
		s.mu.Lock()
		m := s.meetings[wr.id]
		last := wr.last
		s.mu.Unlock()
		if m == nil {
			return notFound("meeting", wr.id)
		}
		r := record{V: formatVersion, ID: rand.Text(), Meeting: wr.id, Node: s.cfg.Node, Epoch: c.epoch}
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		msg := nats.NewMsg(s.subject(wr.id))
		msg.Data = data
		ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(last), jetstream.WithMsgID(r.ID))
		if isWrongLast(err) {
			continue // the previous owner wrote meanwhile: read again
		}
		if err != nil {
			return unavailable(err)
		}
		s.mu.Lock()
		wr.known, wr.last, wr.epoch, wr.onFence = true, ack.Sequence, c.epoch, c.onFence
		s.mu.Unlock()
		return s.waitFor(ctx, &s.applied, ack.Sequence)
	}
	return unavailable(errors.New("another node kept writing to the meeting"))
}

// Release says this node no longer writes meeting id (it handed it over or
// unloaded it).
func (s *Store) Release(id string) {
	s.mu.Lock()
	if wr := s.writers[id]; wr != nil && !wr.busy {
		delete(s.writers, id)
	} else if wr != nil {
		wr.epoch, wr.onFence = 0, nil
	}
	s.mu.Unlock()
}

// Owner returns the node that last claimed meeting id, and its epoch, as
// this node's view has it.
func (s *Store) Owner(id string) (string, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.meetings[id]; m != nil {
		return m.owner, m.epoch
	}
	return "", 0
}

// meetingMust is the check of a write to an existing meeting.
func meetingMust(id string) func(*mstate, *batch) error {
	return func(m *mstate, _ *batch) error {
		if m == nil {
			return notFound("meeting", id)
		}
		return nil
	}
}

// CreateMeeting implements store.Store.
func (s *Store) CreateMeeting(ctx context.Context, m store.Meeting, events []store.Event) error {
	return s.submitWait(m.ID, change{Create: &m, Events: events}, func(x *mstate, _ *batch) error {
		if x != nil {
			return &store.ConflictError{Msg: "meeting " + strconv.Quote(m.ID) + " already exists"}
		}
		return nil
	})
}

// Meeting implements store.Store.
func (s *Store) Meeting(ctx context.Context, id string) (store.Meeting, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.meetings[id]
	if m == nil {
		return store.Meeting{}, notFound("meeting", id)
	}
	return m.info, nil
}

// page returns the items of a list sorted by position pos after the
// page's cursor.
func page[T any](items []T, pos func(T) int64, p store.Page) ([]T, string, error) {
	after, err := store.ParseCursor(p.After)
	if err != nil {
		return nil, "", err
	}
	i := sort.Search(len(items), func(i int) bool { return pos(items[i]) > after })
	var out []T
	for ; i < len(items); i++ {
		if len(out) == p.Limit {
			return out, strconv.FormatInt(pos(out[len(out)-1]), 10), nil
		}
		out = append(out, items[i])
	}
	return out, "", nil
}

// Meetings implements store.Store.
func (s *Store) Meetings(ctx context.Context, p store.Page) ([]store.Meeting, string, error) {
	s.mu.Lock()
	ms, next, err := page(s.order, func(m *mstate) int64 { return m.n }, p)
	out := make([]store.Meeting, len(ms))
	for i, m := range ms {
		out[i] = m.info
	}
	s.mu.Unlock()
	return out, next, err
}

// UpdateMeeting implements store.Store.
func (s *Store) UpdateMeeting(ctx context.Context, m store.Meeting, events []store.Event) error {
	return s.submitWait(m.ID, change{Update: &m, Events: events}, meetingMust(m.ID))
}

// AddParticipant implements store.Store.
func (s *Store) AddParticipant(ctx context.Context, p store.Participant) error {
	if _, _, ok := s.presets.get(token(p.Preset)); !ok {
		if err := s.presets.sync(ctx); err != nil {
			return err
		}
	}
	return s.submitWait(p.MeetingID, change{Add: &p}, func(m *mstate, b *batch) error {
		if m == nil {
			return notFound("meeting", p.MeetingID)
		}
		if _, _, ok := s.presets.get(token(p.Preset)); !ok {
			return notFound("preset", p.Preset)
		}
		if _, dup := m.byUser[p.UserID]; dup || b.users[p.UserID] {
			return &store.ConflictError{Msg: "user " + strconv.Quote(p.UserID) + " is already a participant of the meeting"}
		}
		if b.has(m, p.ID) {
			return &store.ConflictError{Msg: "participant " + strconv.Quote(p.ID) + " already exists"}
		}
		return nil
	})
}

// Participant implements store.Store.
func (s *Store) Participant(ctx context.Context, meetingID, id string) (store.Participant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.meetings[meetingID]; m != nil {
		if ps := m.parts[id]; ps != nil {
			return ps.p, nil
		}
	}
	return store.Participant{}, notFound("participant", id)
}

// Participants implements store.Store.
func (s *Store) Participants(ctx context.Context, meetingID string, p store.Page) ([]store.Participant, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.meetings[meetingID]
	if m == nil {
		return nil, "", nil
	}
	ps, next, err := page(m.order, func(p *pstate) int64 { return p.n }, p)
	out := make([]store.Participant, len(ps))
	for i, x := range ps {
		out[i] = x.p
	}
	return out, next, err
}

// AllParticipants implements store.Store.
func (s *Store) AllParticipants(ctx context.Context, meetingID string) ([]store.Participant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.meetings[meetingID]
	if m == nil {
		return nil, nil
	}
	out := make([]store.Participant, len(m.order))
	for i, x := range m.order {
		out[i] = x.p
	}
	return out, nil
}

// SetParticipantPreset implements store.Store.
func (s *Store) SetParticipantPreset(ctx context.Context, meetingID, id, preset string, statuses []store.Status, events []store.Event) error {
	return s.submitWait(meetingID, change{SetPreset: &presetChange{ID: id, Preset: preset}, Statuses: statuses, Events: events}, func(m *mstate, b *batch) error {
		if m == nil || !b.has(m, id) {
			return notFound("participant", id)
		}
		if _, _, ok := s.presets.get(token(preset)); !ok {
			return notFound("preset", preset)
		}
		return nil
	})
}

// RemoveParticipant implements store.Store.
func (s *Store) RemoveParticipant(ctx context.Context, meetingID, id string, events []store.Event) error {
	return s.submitWait(meetingID, change{Remove: id, Events: events}, func(m *mstate, b *batch) error {
		if m == nil || !b.has(m, id) {
			return notFound("participant", id)
		}
		return nil
	})
}

// SaveStatuses implements store.Store: the statuses and entries of every
// call waiting for the meeting's writer go in one record.
func (s *Store) SaveStatuses(ctx context.Context, meetingID string, st []store.Status, events []store.Event) error {
	if len(st) == 0 && len(events) == 0 {
		return nil
	}
	return s.submitWait(meetingID, change{Statuses: st, Events: events}, nil)
}

// AppendEvents implements store.Store: queued now, in the order of the
// calls, before any later write of the meeting.
func (s *Store) AppendEvents(ctx context.Context, meetingID string, events []store.Event, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	s.submit(meetingID, &write{c: change{Events: events}, done: done})
}

// LastEventSeq implements store.Store.
func (s *Store) LastEventSeq(ctx context.Context, meetingID string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.meetings[meetingID]; m != nil {
		return m.lastSeq, nil
	}
	return 0, nil
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, meetingID string, f store.EventFilter, p store.Page) ([]store.Event, string, error) {
	after, err := store.ParseCursor(p.After)
	if err != nil {
		return nil, "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.meetings[meetingID]
	if m == nil {
		return nil, "", nil
	}
	var out []store.Event
	for _, e := range m.events {
		if e.Seq <= uint64(after) || !matches(e, f) {
			continue
		}
		if len(out) == p.Limit {
			return out, strconv.FormatUint(out[len(out)-1].Seq, 10), nil
		}
		out = append(out, e)
	}
	return out, "", nil
}

func matches(e store.Event, f store.EventFilter) bool {
	switch {
	case f.ParticipantID != "" && e.ParticipantID != f.ParticipantID,
		len(f.Types) > 0 && !slices.Contains(f.Types, e.Type),
		!f.From.IsZero() && e.At.Before(f.From),
		!f.To.IsZero() && !e.At.Before(f.To):
		return false
	}
	return true
}
