// Package meeting runs live meetings. Each live meeting has one owner
// goroutine that applies commands in order — stage methods from clients and
// from the REST API, connections, departures, request expiry — by calling
// the pure stage rules, writes the result through to the store and fans the
// events out to its clients' bounded queues, in one order per meeting.
//
// The owner waits on the store and on nothing else: it queues messages
// (a write it tries on an idle socket never blocks), and the media plane's
// methods it calls return at once, leaving peer connections to the media
// plane's own goroutines.
package meeting

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"
)

// Store is what a live meeting reads and writes.
type Store interface {
	Meeting(ctx context.Context, id string) (store.Meeting, error)
	UpdateMeeting(ctx context.Context, m store.Meeting, events []store.Event) error
	Presets(ctx context.Context) ([]stage.Preset, error)
	Preset(ctx context.Context, name string) (stage.Preset, error)
	AllParticipants(ctx context.Context, meetingID string) ([]store.Participant, error)
	AddParticipant(ctx context.Context, p store.Participant) error
	SetParticipantPreset(ctx context.Context, meetingID, id, preset string, statuses []store.Status, events []store.Event) error
	RemoveParticipant(ctx context.Context, meetingID, id string, events []store.Event) error
	SaveStatuses(ctx context.Context, meetingID string, s []store.Status, events []store.Event) error
	AppendEvents(ctx context.Context, meetingID string, events []store.Event, done func(error))
	// LastEventSeq returns the Seq of the meeting's last log entry (0:
	// none).
	LastEventSeq(ctx context.Context, meetingID string) (uint64, error)
}

// Config holds the settings of live meetings.
type Config struct {
	// Grace is how long a disconnected participant keeps its place (its
	// pending request, its presence) before it has left the meeting.
	Grace time.Duration
	// QueueBytes bounds each client's outbound queue.
	QueueBytes int
	// Idle is how long a meeting with nobody connected stays in memory.
	Idle time.Duration
	// CountEvery is how often everyone is told how many participants are
	// connected (when it changed); default 5s.
	CountEvery time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the meetings' logs; nil means slog.Default().
	Logger *slog.Logger
	// Media is told who may publish what; nil when the server has no
	// media plane.
	Media Media
	// Ownership, in a cluster, makes this node a meeting's owner before
	// the meeting loads here; nil on a single node.
	Ownership Ownership
	// Bus, in a cluster, carries the calls and events of meetings owned
	// by another node for this node's connections (see remote.go).
	Bus Bus
}

// Ownership decides which node of a cluster runs a meeting: one at a time.
type Ownership interface {
	// Acquire makes this node the owner of meeting id, or fails (another
	// live node owns it: a stage.ErrUnavailable error). The channel it
	// returns is closed when this node stops being the owner; the meeting
	// then unloads, closing its clients with "going away" so that they
	// reconnect, to the new owner.
	Acquire(ctx context.Context, id string) (lost <-chan struct{}, err error)
	// Release gives meeting id up, once it unloaded. It must not block.
	Release(id string)
}

// Media is the media plane as a meeting sees it. The owner calls it after
// every change of who may publish: status changes, preset changes, a
// participant removed, the meeting's type changed, the meeting loaded and
// unloaded. Its methods must return at once: they may take a short lock,
// never one held across network I/O, and leave peer connections to
// goroutines of their own.
type Media interface {
	// Allow says what participant pid may publish now: the kinds in m if
	// ok, nothing otherwise. Tracks no longer allowed stop at once.
	Allow(meetingID, pid string, m stage.Media, ok bool)
	// Forget says the meeting is no longer live.
	Forget(meetingID string)
}

// ErrStopped is returned by a meeting that has been unloaded; the Registry
// retries with a fresh one.
var ErrStopped = errors.New("meeting: stopped")

// ErrEnded is returned for a meeting that has ended.
var ErrEnded = stage.Errorf(stage.ErrNotFound, "the meeting has ended")

// storeError is err, a write the store failed, as the caller sees it: the
// store's own verdicts (not found, conflict) as they are, anything else
// (busy, full, I/O) as stage.ErrUnavailable.
func storeError(err error) error {
	if stage.CodeOf(err) == stage.CodeInternal {
		return unavailable(err)
	}
	return err
}

// unavailable wraps err, which kept a command from running or from being
// made durable, as stage.ErrUnavailable: the caller may retry.
func unavailable(err error) error {
	return stage.Errorf(stage.ErrUnavailable, "the meeting could not serve the call: "+err.Error())
}

// Meeting is one live meeting. Its methods are safe for concurrent use: each
// hands a command to the owner goroutine.
type Meeting struct {
	id      string
	reg     *Registry
	log     *slog.Logger
	cmds    chan func()
	stopped chan struct{}

	// Owned by the run goroutine.
	info          store.Meeting
	st            *stage.State
	presets       map[string]string // participant id -> preset name
	conns         map[string]*Client
	hostConns     map[string]*Client     // the connected hosts (accept requests or kick)
	hiddenConns   map[string]struct{}    // the connected hidden participants
	fanOutScratch []*Client              // reused by broadcast
	away          map[string]*time.Timer // disconnected, within grace
	seq           uint64
	loadSeq       uint64 // seq when the meeting was loaded here
	expiry        *time.Timer
	idle          *time.Timer
	counter       *time.Timer // the next participantCount
	counted       int         // the count everyone was last told
	stopping      bool
	remoteConns   int            // connections other nodes hold
	remoteNodes   map[string]int // those nodes, and how many each holds
	nodeTimer     *time.Timer    // the next check of those nodes
	stopServe     func()         // stops answering other nodes

	frameMu sync.Mutex
	frameN  uint64 // frames published to other nodes
}

// load reads meeting id from the store into a new, not yet started, owner.
func (r *Registry) load(ctx context.Context, id string) (*Meeting, error) {
	info, err := r.store.Meeting(ctx, id)
	if err != nil {
		return nil, err
	}
	if info.Ended() {
		return nil, ErrEnded
	}
	presets, err := r.store.Presets(ctx)
	if err != nil {
		return nil, err
	}
	perms := make(map[string]stage.Permissions, len(presets))
	for _, p := range presets {
		perms[p.Name] = p.Permissions
	}
	parts, err := r.store.AllParticipants(ctx, id)
	if err != nil {
		return nil, err
	}
	m := &Meeting{
		id:          id,
		reg:         r,
		log:         r.log.With("meeting", id),
		cmds:        make(chan func(), 256),
		stopped:     make(chan struct{}),
		info:        info,
		st:          stage.New(stageConfig(info)),
		presets:     make(map[string]string, len(parts)),
		conns:       map[string]*Client{},
		hostConns:   map[string]*Client{},
		hiddenConns: map[string]struct{}{},
		away:        map[string]*time.Timer{},
		remoteNodes: map[string]int{},
	}
	// Sequence numbers start from the load time, so that they keep growing
	// across reloads and restarts (a meeting makes far fewer than 1,000
	// events a millisecond) and stay exact in JSON (under 2^53).
	m.seq = uint64(r.now().UnixMilli()) * 1000
	// ... and after every entry of the meeting's log, whatever the clock
	// did meanwhile.
	last, err := r.store.LastEventSeq(ctx, id)
	if err != nil {
		return nil, err
	}
	m.seq = max(m.seq, last)
	for _, p := range parts {
		if err := m.st.Add(stageParticipant(p, perms[p.Preset])); err != nil {
			return nil, err
		}
		m.presets[p.ID] = p.Preset
	}
	return m, nil
}

func stageConfig(m store.Meeting) stage.Config {
	return stage.Config{Type: m.Type, MaxOnStage: m.MaxOnStage, RequestTTL: m.StageRequestTTL}
}

func stageParticipant(p store.Participant, perms stage.Permissions) stage.Participant {
	return stage.Participant{ID: p.ID, UserID: p.UserID, Name: p.Name, Perms: perms,
		Status: p.Status, RequestedAt: p.RequestedAt, RequestSeq: p.RequestSeq}
}

// init queues the owner's first command, before the owner runs: the media
// plane learns who may publish, and requests that were pending before a
// restart, whose participants are away, get the grace period for them to
// come back.
func (m *Meeting) init() {
	m.cmds <- func() {
		m.st.Each(func(p *stage.Participant) { m.tellMedia(p.ID) })
		for _, r := range m.st.Requests() {
			m.startGrace(r.ParticipantID)
		}
		// Handed over by a node that stopped: the other nodes'
		// connections go on here from the start (no event is lost for
		// them), its own participants have the grace to come back
		// (through any node) as if they had dropped.
		h := m.reg.takeHandoff(m.id)
		for _, k := range h.kept {
			if p, ok := m.st.Participant(k.PID); ok && m.conns[k.PID] == nil && k.Node != "" && k.C != "" {
				c := newClient(m, k.PID, m.reg.cfg.QueueBytes)
				c.UserID, c.node, c.rid = p.UserID, k.Node, k.C
				m.attach(&p, c)
			}
		}
		for _, pid := range h.away {
			if _, ok := m.st.Participant(pid); ok && m.conns[pid] == nil && m.away[pid] == nil {
				m.startGrace(pid)
			}
		}
		m.loadSeq = m.seq
		if err := m.commit(m.st.Expire(m.now()), bySystem); err != nil {
			m.armExpiry(retryEvery)
		} else {
			m.scheduleExpiry()
		}
		m.checkIdle()
		m.counter = time.AfterFunc(m.reg.cfg.CountEvery, func() { m.post(m.tellCount) })
	}
}

// tellMedia tells the media plane what participant pid may publish now.
func (m *Meeting) tellMedia(pid string) {
	kinds, ok := m.st.Publishing(pid)
	if md := m.reg.cfg.Media; md != nil {
		md.Allow(m.id, pid, kinds, ok)
	}
	if m.remoteConns > 0 {
		// The participant may publish through another node's media
		// plane: every node hears (a kick stops the track at its origin).
		m.publishFrame(frame{K: frameAllow, To: pid, Media: &kinds, OK: ok})
	}
}

func (m *Meeting) run() {
	defer close(m.stopped)
	for fn := range m.cmds {
		fn()
		if m.stopping {
			return
		}
	}
}

// post hands fn to the owner without waiting for it to run.
func (m *Meeting) post(fn func()) bool {
	select {
	case m.cmds <- fn:
		return true
	case <-m.stopped:
		return false
	}
}

// do runs fn on the owner and waits for it.
func (m *Meeting) do(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case m.cmds <- func() { fn(); close(done) }:
	case <-m.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-m.stopped:
		// The command may have been the one that stopped the meeting.
		select {
		case <-done:
			return nil
		default:
			return ErrStopped
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Meeting) now() time.Time { return m.reg.now().Truncate(time.Millisecond) }

// stop ends the owner: every client is closed with code and reason.
func (m *Meeting) stop(code int, reason string) {
	for _, c := range m.conns {
		c.Close(code, reason)
	}
	for _, t := range m.away {
		t.Stop()
	}
	if m.expiry != nil {
		m.expiry.Stop()
	}
	if m.idle != nil {
		m.idle.Stop()
	}
	m.counter.Stop()
	if m.nodeTimer != nil {
		m.nodeTimer.Stop()
	}
	if m.stopServe != nil {
		m.stopServe()
		m.publishFrame(frame{K: frameStop})
	}
	if md := m.reg.cfg.Media; md != nil {
		md.Forget(m.id)
	}
	m.stopping = true
	m.reg.forget(m)
}

// count is the number of connected participants others may know of.
func (m *Meeting) count() int { return len(m.conns) - len(m.hiddenConns) }

// tellCount tells everyone how many are connected, if that changed. Viewers
// are not told of each other's comings and goings (that would be N² messages
// for N viewers); this is their audience count.
func (m *Meeting) tellCount() {
	if n := m.count(); n != m.counted {
		m.counted = n
		m.broadcast(protocol.EventParticipantCount, protocol.ParticipantCount{Count: n}, "")
	}
	m.counter.Reset(m.reg.cfg.CountEvery)
}

// checkIdle unloads the meeting after a while with nobody connected or
// coming back.
func (m *Meeting) checkIdle() {
	if m.idle != nil {
		m.idle.Stop()
		m.idle = nil
	}
	if len(m.conns) > 0 || len(m.away) > 0 {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(m.reg.cfg.Idle, func() {
		m.post(func() {
			if m.idle == t && len(m.conns) == 0 && len(m.away) == 0 {
				m.log.Debug("unloading idle meeting")
				m.stop(protocol.CloseGoingAway, "idle")
			}
		})
	})
	m.idle = t
}

// retryEvery is how long a change the meeting makes on its own (a request
// expiring, a requester leaving, a preset's new permissions) waits before
// it is tried again after the store failed it.
const retryEvery = time.Second

// scheduleExpiry arms the timer of the oldest pending request.
func (m *Meeting) scheduleExpiry() { m.armExpiry(0) }

// armExpiry arms the expiry timer, no sooner than after wait.
func (m *Meeting) armExpiry(wait time.Duration) {
	if m.expiry != nil {
		m.expiry.Stop()
		m.expiry = nil
	}
	at, ok := m.st.NextExpiry()
	if !ok {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(max(at.Sub(m.reg.now()), wait), func() {
		m.post(func() {
			if m.expiry != t {
				return
			}
			m.expiry = nil
			if err := m.commit(m.st.Expire(m.now()), bySystem); err != nil {
				m.armExpiry(retryEvery)
				return
			}
			if m.expiry == nil {
				m.scheduleExpiry()
			}
		})
	})
	m.expiry = t
}

// storeTimeout bounds one write of the owner to the store.
const storeTimeout = 30 * time.Second

// statuses returns the records o changes in the store. A participant that
// was removed has no row any more.
func (m *Meeting) statuses(o stage.Outcome) []store.Status {
	recs := make([]store.Status, 0, len(o.Changes))
	for _, c := range o.Changes {
		p, ok := m.st.Participant(c.ParticipantID)
		if !ok {
			continue
		}
		recs = append(recs, store.Status{ParticipantID: p.ID, Status: p.Status, RequestedAt: p.RequestedAt, RequestSeq: p.RequestSeq})
	}
	return recs
}

// commit makes an outcome of the stage rules durable, with the log
// entries that tell of it (made by by), then tells everyone:
// the media plane, the clients, the expiry timer. It is the one path every
// status change takes. If the store fails, the state is reverted, nobody
// is told anything, and the error is stage.ErrUnavailable.
func (m *Meeting) commit(o stage.Outcome, by store.Actor) error {
	if err := m.save(o, by); err != nil {
		return err
	}
	m.publish(o)
	return nil
}

// save writes the statuses o changed and their log entries (made by by);
// if the store fails, it reverts o and returns stage.ErrUnavailable.
func (m *Meeting) save(o stage.Outcome, by store.Actor) error {
	recs := m.statuses(o)
	seq := m.seq
	events := m.stageEvents(o, by)
	if len(recs) == 0 && len(events) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	err := m.reg.store.SaveStatuses(ctx, m.id, recs, events)
	cancel()
	if err != nil {
		m.st.Revert(o)
		m.seq = seq // the entries were not written: their numbers are free
		m.log.Error("saving stage statuses failed; the change is undone", "err", err)
		return unavailable(err)
	}
	return nil
}

// publish tells everyone about a committed outcome.
func (m *Meeting) publish(o stage.Outcome) {
	for _, c := range o.Changes {
		m.tellMedia(c.ParticipantID)
	}
	m.fanOut(o)
	if o.RequestsChanged {
		m.scheduleExpiry()
	}
}

// later runs fn on the owner after retryEvery, unless the meeting stopped.
func (m *Meeting) later(fn func()) {
	time.AfterFunc(retryEvery, func() { m.post(fn) })
}
