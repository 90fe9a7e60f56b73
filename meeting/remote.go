package meeting

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cocmd/cocmd/protocol"
	"github.com/cocmd/cocmd/stage"
)

// A meeting across the nodes of a cluster. One node owns the meeting (its
// Meeting runs there, see Ownership); a participant connected to another
// node talks to the owner through that node's proxy:
//
//   - calls: the proxy sends each of its connections' calls (connect, the
//     stage methods, disconnect, leave) to the owner as a request, which
//     the owner runs as it runs its own connections' (remoteRequest);
//   - events: the owner publishes what it sends to other nodes'
//     connections as frames, one per event for every node (a broadcast is
//     one frame, not one per recipient), numbered; each proxy hands a
//     frame to the connections it concerns, in order, and closes its
//     connections (which reconnect and start from a new welcome) if it
//     ever misses one.

// Bus carries calls and frames between the nodes of a cluster (package
// cluster implements it on NATS).
type Bus interface {
	// Node names this node.
	Node() string
	// Serve makes this node answer other nodes' requests to meeting id
	// with handle, until stop is called.
	Serve(id string, handle func(req []byte) []byte) (stop func(), err error)
	// Call sends a request to meeting id's owner and returns its answer.
	Call(ctx context.Context, id string, req []byte) ([]byte, error)
	// Publish sends a frame of meeting id to every node, in order.
	Publish(id string, frame []byte) error
	// Subscribe hands meeting id's frames to fn, one at a time, in order.
	Subscribe(id string, fn func(frame []byte)) (stop func(), err error)
	// Alive reports whether node is alive.
	Alive(ctx context.Context, node string) (bool, error)
}

// remoteVersion is the version of requests and frames between nodes. A
// node accepts its own and the one before (a rolling upgrade runs both),
// and refuses any other, saying so.
const remoteVersion = 1

// checkVersion refuses a message of a version this node does not speak.
func checkVersion(v int) error {
	if v != remoteVersion && v != remoteVersion-1 {
		return stage.Errorf(stage.ErrUnavailable, fmt.Sprintf("a node speaks version %d of the protocol between nodes; this node speaks %d and %d", v, remoteVersion-1, remoteVersion))
	}
	return nil
}

// The kinds of frame.
const (
	frameAll    = "all"    // every connection but Except's
	frameHosts  = "hosts"  // every host but Except
	frameAccept = "accept" // every host that accepts requests but Except
	frameTo     = "to"     // connection C of participant To
	frameClose  = "close"  // close connection C of participant To
	framePerms  = "perms"  // connection C of participant To has new permissions
	frameStop   = "stop"   // the owner unloaded the meeting: reconnect
	frameAllow  = "allow"  // what participant To may publish now (Media, OK)
	frameMove   = "move"   // the owner hands the meeting over: keep the connections (Away: its own participants)
)

// frame is what the owner sends its meeting's other nodes.
type frame struct {
	V      int                `json:"v"`
	Owner  string             `json:"owner"`
	N      uint64             `json:"n"` // frames of an owner are numbered from 1, with no gap
	K      string             `json:"k"`
	To     string             `json:"to,omitempty"`
	C      string             `json:"c,omitempty"`
	Except string             `json:"except,omitempty"`
	Data   json.RawMessage    `json:"data,omitempty"`
	Code   int                `json:"code,omitempty"`
	Reason string             `json:"reason,omitempty"`
	Perms  *stage.Permissions `json:"perms,omitempty"`
	Media  *stage.Media       `json:"media,omitempty"`
	OK     bool               `json:"ok,omitempty"`
	Away   []string           `json:"away,omitempty"`
	Kept   []keptConn         `json:"kept,omitempty"`
}

// keptConn is another node's connection that goes on across a hand-off.
type keptConn struct {
	PID  string `json:"pid"`
	Node string `json:"node"`
	C    string `json:"c"`
}

// handoff is what a node that handed a meeting over said of its
// connections: whichever node takes the meeting attaches the kept ones at
// once (their nodes attach them again, a no-op then) and gives the away
// ones the reconnect grace.
type handoff struct {
	away []string
	kept []keptConn
}

// publishFrame numbers f and sends it to the other nodes.
func (m *Meeting) publishFrame(f frame) {
	bus := m.reg.cfg.Bus
	if bus == nil {
		return
	}
	m.frameMu.Lock()
	defer m.frameMu.Unlock()
	m.frameN++
	f.V, f.Owner, f.N = remoteVersion, bus.Node(), m.frameN
	b, err := json.Marshal(f)
	if err == nil {
		err = bus.Publish(m.id, b)
	}
	if err != nil {
		// The other nodes will see the gap and have their connections
		// start again.
		m.log.Warn("publishing to the other nodes failed", "err", err)
	}
}

// frameCount returns the number of the last frame published.
func (m *Meeting) frameCount() uint64 {
	m.frameMu.Lock()
	defer m.frameMu.Unlock()
	return m.frameN
}

// The operations of a request.
const (
	opConnect    = "connect"
	opDisconnect = "disconnect"
	opLeave      = "leave"
	opCall       = "call"
)

// The methods of an opCall.
const (
	callPing     = "ping"
	callRequests = "requests"
	callRequest  = "request"
	callCancel   = "cancel"
	callJoin     = "join"
	callLeave    = "leave"
	callGrant    = "grant"
	callDeny     = "deny"
	callKick     = "kick"
)

// remoteReq is a request from a proxy to the owner.
type remoteReq struct {
	V       int                   `json:"v"`
	Op      string                `json:"op"`
	Node    string                `json:"node"`
	PID     string                `json:"pid"`
	C       string                `json:"c"` // the connection, on its node
	Method  string                `json:"method,omitempty"`
	UserIDs []string              `json:"user_ids,omitempty"`
	Media   *protocol.MediaConfig `json:"media,omitempty"`
	// Moved: a connection of the node's that goes on from the owner that
	// handed the meeting over (no welcome, no one told it joined).
	Moved bool `json:"moved,omitempty"`
}

// The answer's Resync, to a Moved connect: the connection was not kept by
// the new owner from the start (it took the meeting without the hand-off's
// word) and the meeting changed since: it may have missed events, and must
// start again with a welcome.

// remoteResp is the owner's answer.
type remoteResp struct {
	Node     string            `json:"node"` // the owner that answered
	Error    *wireError        `json:"error,omitempty"`
	Frame    uint64            `json:"frame"` // the last frame published before the answer
	Welcome  json.RawMessage   `json:"welcome,omitempty"`
	UserID   string            `json:"user_id,omitempty"`
	Perms    stage.Permissions `json:"perms"`
	Status   stage.Status      `json:"status,omitempty"`
	Results  []wireResult      `json:"results,omitempty"`
	Requests []stage.Request   `json:"requests,omitempty"`
	// What the connecting participant may publish now.
	Publish    stage.Media `json:"publish"`
	MayPublish bool        `json:"may_publish,omitempty"`
	Resync     bool        `json:"resync,omitempty"`
}

// wireResult is a stage.Result between nodes.
type wireResult struct {
	UserID string     `json:"user_id"`
	Error  *wireError `json:"error,omitempty"`
}

func toWireResults(rs []stage.Result) []wireResult {
	out := make([]wireResult, len(rs))
	for i, r := range rs {
		out[i] = wireResult{UserID: r.UserID, Error: toWire(r.Err)}
	}
	return out
}

func fromWireResults(ws []wireResult) []stage.Result {
	out := make([]stage.Result, len(ws))
	for i, w := range ws {
		out[i] = stage.Result{UserID: w.UserID, Err: w.Error.err()}
	}
	return out
}

type wireError struct {
	Code    stage.Code `json:"code"`
	Message string     `json:"message"`
}

func toWire(err error) *wireError {
	if err == nil {
		return nil
	}
	return &wireError{Code: stage.CodeOf(err), Message: err.Error()}
}

func (e *wireError) err() error {
	if e == nil {
		return nil
	}
	sentinel := stage.ErrorOf(e.Code)
	if sentinel == nil {
		sentinel = stage.ErrInternal
	}
	return stage.Errorf(sentinel, e.Message)
}

// serveRemote answers one request of another node; it runs on a goroutine
// of its own and waits for the owner.
func (m *Meeting) serveRemote(b []byte) []byte {
	var req remoteReq
	resp := &remoteResp{}
	err := json.Unmarshal(b, &req)
	if err == nil {
		err = checkVersion(req.V)
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var ferr error
		err = m.do(ctx, func() { ferr = m.remoteRequest(&req, resp) })
		cancel()
		switch {
		case errors.Is(err, ErrStopped):
			err = stage.Errorf(stage.ErrUnavailable, "the meeting moved; try again")
		case err != nil:
			err = unavailable(err)
		default:
			err = ferr
		}
	}
	resp.Error = toWire(err)
	resp.Node = m.reg.cfg.Bus.Node()
	out, _ := json.Marshal(resp)
	return out
}

// remoteRequest runs a request on the owner goroutine.
func (m *Meeting) remoteRequest(req *remoteReq, resp *remoteResp) error {
	defer func() { resp.Frame = m.frameCount() }()
	if req.Op == opConnect {
		return m.connectRemote(req, resp)
	}
	c := m.conns[req.PID]
	if c == nil || c.node != req.Node || c.rid != req.C {
		if req.Op == opCall {
			return errReplaced
		}
		return nil // replaced meanwhile: nothing to undo
	}
	switch req.Op {
	case opDisconnect:
		m.detach(req.PID)
		m.startGrace(req.PID)
		m.checkIdle()
		return nil
	case opLeave:
		m.detach(req.PID)
		m.depart(req.PID, byParticipant(req.PID))
		m.checkIdle()
		return nil
	case opCall:
		return m.remoteCall(c, req, resp)
	}
	return stage.Errorf(stage.ErrBadRequest, "unknown operation "+req.Op)
}

func (m *Meeting) connectRemote(req *remoteReq, resp *remoteResp) error {
	if req.Node == "" || req.C == "" {
		return stage.Errorf(stage.ErrBadRequest, "a remote connection needs its node and id")
	}
	if old := m.conns[req.PID]; req.Moved && old != nil && old.node == req.Node && old.rid == req.C {
		// Kept from the start: nothing to do.
		p, _ := m.st.Participant(req.PID)
		resp.UserID, resp.Perms = old.UserID, p.Perms
		resp.Publish, resp.MayPublish = m.st.Publishing(req.PID)
		return nil
	}
	c, welcome, err := m.attachConn(req.PID, req.Media, req.Node, req.C, req.Moved)
	if err != nil {
		return err
	}
	resp.Resync = req.Moved && m.seq != m.loadSeq
	p, _ := m.st.Participant(req.PID)
	resp.Welcome, resp.UserID, resp.Perms = welcome, c.UserID, p.Perms
	resp.Publish, resp.MayPublish = m.st.Publishing(req.PID)
	return nil
}

// remoteCall runs a stage method for connection c of another node.
func (m *Meeting) remoteCall(c *Client, req *remoteReq, resp *remoteResp) error {
	pid := c.ParticipantID
	self := func(rule selfRule) error {
		o, err := rule(m.st, pid, m.now())
		if err != nil {
			return err
		}
		if err := m.commit(o, byParticipant(pid)); err != nil {
			return err
		}
		p, _ := m.st.Participant(pid)
		resp.Status = p.Status
		return nil
	}
	batch := func(rule batchRule) (err error) {
		rs, err := m.moderate(pid, req.UserIDs, rule)
		resp.Results = toWireResults(rs)
		return err
	}
	switch req.Method {
	case callPing:
		return nil
	case callRequests:
		reqs, err := m.st.AccessRequests(pid)
		resp.Requests = nonNil(reqs)
		return err
	case callRequest:
		return self(func(s *stage.State, pid string, now time.Time) (stage.Outcome, error) {
			return s.RequestAccess(pid, now)
		})
	case callCancel:
		return self(func(s *stage.State, pid string, _ time.Time) (stage.Outcome, error) {
			return s.CancelRequestAccess(pid)
		})
	case callJoin:
		return self(func(s *stage.State, pid string, _ time.Time) (stage.Outcome, error) { return s.Join(pid) })
	case callLeave:
		return self(func(s *stage.State, pid string, _ time.Time) (stage.Outcome, error) { return s.Leave(pid) })
	case callGrant:
		return batch((*stage.State).GrantAccess)
	case callDeny:
		return batch((*stage.State).DenyAccess)
	case callKick:
		return batch((*stage.State).Kick)
	}
	return stage.Errorf(stage.ErrBadRequest, "unknown method "+req.Method)
}

// nodeCheckEvery is how often an owner checks that the nodes holding its
// connections are alive.
const nodeCheckEvery = time.Second

// watchNodes arms the check of the nodes holding connections, if it is not
// armed. A dead node's connections are dropped: their participants get
// the grace period to come back, through another node.
func (m *Meeting) watchNodes() {
	bus := m.reg.cfg.Bus
	if bus == nil || m.nodeTimer != nil || len(m.remoteNodes) == 0 {
		return
	}
	m.nodeTimer = time.AfterFunc(nodeCheckEvery, func() {
		m.post(func() {
			nodes := make([]string, 0, len(m.remoteNodes))
			for n := range m.remoteNodes {
				nodes = append(nodes, n)
			}
			go func() { // the check waits on NATS: not on the owner
				var dead []string
				for _, n := range nodes {
					ctx, cancel := context.WithTimeout(context.Background(), nodeCheckEvery)
					alive, err := bus.Alive(ctx, n)
					cancel()
					if err == nil && !alive {
						dead = append(dead, n)
					}
				}
				m.post(func() {
					m.nodeTimer = nil
					for _, n := range dead {
						m.dropNode(n)
					}
					m.watchNodes()
				})
			}()
		})
	})
}

// dropNode drops the connections node held.
func (m *Meeting) dropNode(node string) {
	for pid, c := range m.conns {
		if c.node == node {
			m.log.Info("the node of a connection died", "participant", pid, "node", node)
			m.detach(pid)
			m.startGrace(pid)
		}
	}
	m.checkIdle()
}

// proxy is, on a node that does not own a meeting, that meeting's
// connections to this node.
type proxy struct {
	reg   *Registry
	id    string
	owner string
	unsub func()
	done  chan struct{}
	ready chan struct{} // closed once subscribed: requests wait for it

	mu      sync.Mutex
	clients map[string]*Client // by participant
	lastN   uint64             // the last frame received (and applied); 0: none yet
	recent  []frame            // the last frames, for connections starting
	waiters []frameWaiter
	closed  bool
	// While the meeting moves (the owner handed it over): the owner that
	// left (owner is "" until the next one is known), and a channel closed
	// once the connections are attached to the next one; calls wait.
	movedFrom string
	moving    chan struct{}
	// turned is closed when a move starts: what a connection for another
	// owner waits for, with done (see proxyFor). A new one is made when
	// the move ends.
	turned chan struct{}
}

// turnLocked closes p.turned if it is open. p.mu is held.
func (p *proxy) turnLocked() {
	select {
	case <-p.turned:
	default:
		close(p.turned)
	}
}

type frameWaiter struct {
	n  uint64
	ch chan struct{}
}

// recentFrames is how many frames a proxy keeps for connections starting.
const recentFrames = 1024

// settleWithin bounds how long a connection for a meeting's new owner
// waits for the node's proxy to the previous owner to hear what became of
// it (see proxyFor).
const settleWithin = 3 * time.Second

// proxyFor returns the proxy of meeting id to owner, starting one.
//
// A proxy to another owner is replaced, its connections closed, only once
// it has had the time to hear what became of its owner: the lease may
// have moved before the proxy's frames said so, and when the owner
// handed the meeting over (its move frame on its way) the proxy's
// connections go on with the next owner, and the new one waits with them.
// An owner that died, the proxy notices itself (watchOwner).
func (r *Registry) proxyFor(ctx context.Context, id, owner string) (*proxy, error) {
	for waited := false; ; waited = true {
		r.mu.Lock()
		p := r.proxies[id]
		if p == nil {
			break
		}
		o, moving := p.ownerNow()
		if o == owner || moving {
			// While the meeting moves, its calls wait for the move.
			r.mu.Unlock()
			return p, nil
		}
		if waited {
			break
		}
		r.mu.Unlock()
		p.mu.Lock()
		turned := p.turned
		p.mu.Unlock()
		t := time.NewTimer(settleWithin)
		select {
		case <-turned:
		case <-p.done:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, unavailable(errors.New("the meeting is moving to another node"))
		}
		t.Stop()
	}
	p := &proxy{reg: r, id: id, owner: owner, clients: map[string]*Client{},
		done: make(chan struct{}), ready: make(chan struct{}), turned: make(chan struct{})}
	old := r.proxies[id]
	r.proxies[id] = p
	r.mu.Unlock()
	if old != nil {
		old.shut(protocol.CloseGoingAway, "the meeting moved to another node")
	}
	// Subscribed before any request goes out (they wait for ready): every
	// frame after a connection's welcome reaches this node.
	unsub, err := r.cfg.Bus.Subscribe(id, p.onFrame)
	if err != nil {
		p.shut(protocol.CloseGoingAway, "")
		close(p.ready)
		return nil, unavailable(err)
	}
	p.mu.Lock()
	p.unsub = unsub
	closed := p.closed
	p.mu.Unlock()
	close(p.ready)
	if closed {
		unsub()
	}
	go p.watchOwner()
	return p, nil
}

// allProxies returns the registry's proxies.
func (r *Registry) allProxies() []*proxy {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Collect(maps.Values(r.proxies))
}

// ownerNow returns the meeting's owner as the proxy knows it, and whether
// the meeting is moving.
func (p *proxy) ownerNow() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.owner, p.moving != nil
}

// onFrame applies one frame of the owner.
func (p *proxy) onFrame(b []byte) {
	var f frame
	if err := json.Unmarshal(b, &f); err != nil || checkVersion(f.V) != nil {
		p.reg.log.Warn("a frame this node cannot read", "meeting", p.id, "err", err)
		p.shut(protocol.CloseGoingAway, "the meeting's owner speaks another version")
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	if f.Owner != p.owner {
		if p.owner != "" || f.Owner == p.movedFrom {
			p.mu.Unlock()
			return
		}
		p.owner = f.Owner // the next owner's first frame
	}
	if p.lastN == 0 {
		// The first frame: a connection whose welcome is older than the
		// frame before it missed some (should never happen: the proxy
		// subscribes before asking).
		for pid, c := range p.clients {
			if c.from+1 < f.N {
				delete(p.clients, pid)
				c.Close(protocol.CloseGoingAway, "events went missing; reconnect")
			}
		}
	}
	switch {
	case p.lastN != 0 && f.N <= p.lastN:
		p.mu.Unlock()
		return
	case p.lastN != 0 && f.N != p.lastN+1:
		p.mu.Unlock()
		p.reg.log.Warn("frames from the meeting's owner went missing", "meeting", p.id, "after", p.lastN, "got", f.N)
		p.shut(protocol.CloseGoingAway, "events went missing; reconnect")
		return
	}
	if f.K == frameMove {
		// The owner hands the meeting over: the connections stay, and
		// are attached to the next owner; they get its every frame.
		p.movedFrom, p.owner, p.lastN, p.recent = p.owner, "", 0, nil
		for _, c := range p.clients {
			c.from = 0
		}
		p.moving = make(chan struct{})
		p.turnLocked()
		p.wake()
		p.mu.Unlock()
		go p.migrate(handoff{away: f.Away, kept: f.Kept})
		return
	}
	// Each connection gets the frames after its welcome's (Client.from).
	p.apply(&f, nil)
	p.lastN = f.N
	p.wake()
	p.recent = append(p.recent, f)
	if len(p.recent) > recentFrames {
		p.recent = p.recent[len(p.recent)-recentFrames:]
	}
	stop := f.K == frameStop
	p.mu.Unlock()
	if stop {
		p.shut(protocol.CloseGoingAway, "the meeting moved to another node")
	}
}

// apply hands f to the connections it concerns (only to only, if set);
// with p.mu held.
func (p *proxy) apply(f *frame, only *Client) {
	to := func(c *Client) bool { return (only == nil || c == only) && f.N > c.from }
	var msg *Message
	message := func() *Message {
		if msg == nil {
			msg = NewMessage(f.Data)
		}
		return msg
	}
	switch f.K {
	case frameAll, frameHosts, frameAccept:
		for pid, c := range p.clients {
			if pid == f.Except || !to(c) {
				continue
			}
			if f.K != frameAll && !hostFilter(f.K == frameAccept)(c.perms) {
				continue
			}
			c.Send(message())
		}
	case frameAllow:
		if md := p.reg.cfg.Media; md != nil && f.Media != nil && only == nil {
			md.Allow(p.id, f.To, *f.Media, f.OK)
		}
	case frameTo, frameClose, framePerms:
		c := p.clients[f.To]
		if c == nil || c.rid != f.C || !to(c) {
			return
		}
		switch f.K {
		case frameTo:
			c.Send(message())
		case frameClose:
			c.Close(f.Code, f.Reason)
		case framePerms:
			if f.Perms != nil {
				c.perms = *f.Perms
			}
		}
	}
}

// wake releases the calls waiting for frames up to p.lastN; with p.mu held.
func (p *proxy) wake() {
	k := 0
	for _, w := range p.waiters {
		if w.n <= p.lastN {
			close(w.ch)
		} else {
			p.waiters[k] = w
			k++
		}
	}
	p.waiters = p.waiters[:k]
}

// waitFrame waits until frame n is applied: the events a call caused reach
// its connection before its answer.
func (p *proxy) waitFrame(ctx context.Context, n uint64) error {
	p.mu.Lock()
	if p.lastN >= n || p.closed {
		p.mu.Unlock()
		return nil
	}
	w := frameWaiter{n: n, ch: make(chan struct{})}
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-p.done:
		return nil
	case <-ctx.Done():
		return unavailable(errors.New("the events of the call did not arrive"))
	}
}

// request sends req to the owner and returns its answer. While the
// meeting moves, requests but the move's own wait for it to end.
func (p *proxy) request(ctx context.Context, req remoteReq) (*remoteResp, error) {
	select {
	case <-p.ready:
	case <-ctx.Done():
		return nil, unavailable(ctx.Err())
	}
	p.mu.Lock()
	moving := p.moving
	p.mu.Unlock()
	if moving != nil && !req.Moved {
		select {
		case <-moving:
		case <-ctx.Done():
			return nil, unavailable(errors.New("the meeting is moving to another node"))
		}
	}
	req.V, req.Node = remoteVersion, p.reg.cfg.Bus.Node()
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	out, err := p.reg.cfg.Bus.Call(ctx, p.id, b)
	if err != nil {
		return nil, unavailable(err)
	}
	var resp remoteResp
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, unavailable(fmt.Errorf("the owner's answer: %w", err))
	}
	if req.Moved {
		p.mu.Lock()
		if p.owner == "" && resp.Error == nil {
			p.owner = resp.Node // answered before its first frame arrived
		}
		owner := p.owner
		p.mu.Unlock()
		if resp.Node != owner {
			return nil, unavailable(fmt.Errorf("two nodes answer for the meeting (%s, %s)", owner, resp.Node))
		}
		return &resp, resp.Error.err()
	}
	owner, _ := p.ownerNow()
	if resp.Node != owner && req.Op != opConnect {
		// Another node took the meeting over: this proxy's connections
		// start again, with it.
		p.shut(protocol.CloseGoingAway, "the meeting moved to another node")
		return nil, unavailable(errors.New("the meeting moved to another node"))
	}
	if req.Op == opConnect && resp.Node != owner && resp.Error == nil {
		// Taken over between this node's look and the request.
		p.shut(protocol.CloseGoingAway, "the meeting moved to another node")
		return nil, unavailable(errors.New("the meeting moved to another node; try again"))
	}
	return &resp, resp.Error.err()
}

// connectProxy connects participant pid of meeting id, owned by owner,
// through this node.
func (r *Registry) connectProxy(ctx context.Context, id, owner, pid string, media *protocol.MediaConfig) (*Client, error) {
	p, err := r.proxyFor(ctx, id, owner)
	if err != nil {
		return nil, err
	}
	c := &Client{ParticipantID: pid, meetingID: id, proxy: p, rid: newConnID(), limit: r.cfg.QueueBytes}
	resp, err := p.request(ctx, remoteReq{Op: opConnect, PID: pid, C: c.rid, Media: media})
	if err != nil {
		p.release(c)
		return nil, err
	}
	c.UserID = resp.UserID
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, unavailable(errors.New("the meeting moved to another node"))
	}
	// The frames after the welcome's: those received already are sent
	// now, from the recent ones; those to come as they come. (The answer
	// may also overtake frames before it: c.from keeps them from c.)
	c.from = resp.Frame
	var missed []frame
	if p.lastN > resp.Frame {
		for _, f := range p.recent {
			if f.N > resp.Frame {
				missed = append(missed, f)
			}
		}
		if uint64(len(missed)) != p.lastN-resp.Frame {
			go p.request(context.Background(), remoteReq{Op: opDisconnect, PID: pid, C: c.rid})
			return nil, unavailable(errors.New("this node fell behind the meeting; try again"))
		}
	}
	if old := p.clients[pid]; old != nil {
		old.Close(protocol.CloseReplaced, "replaced by a newer connection")
	}
	c.perms = resp.Perms
	p.clients[pid] = c
	if md := r.cfg.Media; md != nil {
		md.Allow(id, pid, resp.Publish, resp.MayPublish)
	}
	c.Send(NewMessage(resp.Welcome))
	for i := range missed {
		p.apply(&missed[i], c)
	}
	return c, nil
}

// release forgets connection c; the proxy ends with its last connection.
func (p *proxy) release(c *Client) {
	p.mu.Lock()
	if p.clients[c.ParticipantID] == c {
		delete(p.clients, c.ParticipantID)
	}
	empty := len(p.clients) == 0
	p.mu.Unlock()
	if empty {
		p.shut(protocol.CloseGoingAway, "")
	}
}

// shut closes every connection of the proxy with code and reason and ends
// it.
func (p *proxy) shut(code int, reason string) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	clients := p.clients
	p.clients = map[string]*Client{}
	unsub := p.unsub
	p.wake()
	close(p.done)
	p.mu.Unlock()
	for _, c := range clients {
		c.Close(code, reason)
	}
	if unsub != nil {
		unsub()
	}
	if md := p.reg.cfg.Media; md != nil {
		md.Forget(p.id) // this node's media of the meeting ends with its connections
	}
	p.reg.mu.Lock()
	if p.reg.proxies[p.id] == p {
		delete(p.reg.proxies, p.id)
	}
	p.reg.mu.Unlock()
}

// DropRemote closes, with "going away" and reason, every connection this
// node holds for meetings other nodes own: when the node is cut off from
// the cluster, the owners drop those connections, and their clients must
// reconnect through a node that reaches the cluster.
func (r *Registry) DropRemote(reason string) {
	for _, p := range r.allProxies() {
		owner, _ := p.ownerNow()
		r.log.Warn("closing the connections to a meeting of another node", "meeting", p.id, "owner", owner, "why", reason)
		p.shut(protocol.CloseGoingAway, reason)
	}
}

// moveWithin bounds a hand-off, seen from a proxy: past it, its
// connections are closed, and reconnect.
const moveWithin = 30 * time.Second

// migrate attaches the proxy's connections to the meeting's next owner
// after the last one handed it over (h: what it said of its connections):
// this node takes the meeting if no other did, then each connection is
// attached to the owner as it was, without a welcome (the owner that heard
// h attached them already). If that fails the connections are closed and
// reconnect, as after a crash.
func (p *proxy) migrate(h handoff) {
	ctx, cancel := context.WithTimeout(context.Background(), moveWithin)
	defer cancel()
	err := p.reattach(ctx, h)
	p.mu.Lock()
	moving := p.moving
	p.moving, p.movedFrom, p.turned = nil, "", make(chan struct{})
	p.mu.Unlock()
	if moving != nil {
		close(moving)
	}
	if err != nil {
		p.reg.log.Warn("the meeting's connections could not follow it to its next owner", "meeting", p.id, "err", err)
		p.shut(protocol.CloseGoingAway, "the meeting moved to another node")
		return
	}
	owner, _ := p.ownerNow()
	p.reg.log.Info("the meeting's connections follow it to its next owner", "meeting", p.id, "owner", owner)
}

func (p *proxy) reattach(ctx context.Context, h handoff) error {
	p.mu.Lock()
	old := p.movedFrom
	p.mu.Unlock()
	r := p.reg
	r.mu.Lock()
	if r.handoffs == nil {
		r.handoffs = map[string]handoff{}
	}
	r.handoffs[p.id] = h
	r.mu.Unlock()
	defer r.takeHandoff(p.id)
	retry := func(err error) error {
		if ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-p.done:
			return errors.New("the proxy ended")
		case <-time.After(50 * time.Millisecond):
			return nil
		}
	}
	// Take the meeting, unless another node did: the first to ask once
	// the last owner let go gets it.
	for {
		_, err := r.get(ctx, p.id)
		if err == nil {
			break
		}
		if owner, ok := ownerOf(err); ok && owner != old {
			break
		}
		if err := retry(err); err != nil {
			return err
		}
	}
	p.mu.Lock()
	clients := make([]*Client, 0, len(p.clients))
	for _, c := range p.clients {
		clients = append(clients, c)
	}
	p.mu.Unlock()
	for _, c := range clients {
		for {
			resp, err := p.request(ctx, remoteReq{Op: opConnect, PID: c.ParticipantID, C: c.rid, Moved: true})
			if err == nil {
				p.mu.Lock()
				c.perms = resp.Perms
				p.mu.Unlock()
				if resp.Resync {
					c.Close(protocol.CloseGoingAway, "the meeting moved to another node; reconnect")
				}
				break
			}
			if code := stage.CodeOf(err); code != stage.CodeUnavailable {
				return err
			}
			if err := retry(err); err != nil {
				return err
			}
		}
	}
	return nil
}

// takeHandoff returns and forgets what the last owner of meeting id said
// of its connections when it handed it over, if this node heard it.
func (r *Registry) takeHandoff(id string) handoff {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.handoffs[id]
	delete(r.handoffs, id)
	return h
}

// handOff ends the meeting on this node, which stops, for another to take
// it over without a pause: the other nodes keep their connections to it
// and attach them to the next owner (frameMove), this node's own are
// closed and reconnect through another node, and the next owner gives
// them the grace. Without other nodes it is stop.
func (m *Meeting) handOff() {
	if m.stopServe == nil {
		m.stop(protocol.CloseGoingAway, "server shutting down")
		return
	}
	// Nothing more is answered nor committed here.
	m.stopServe()
	m.stopServe = nil
	var away []string
	var kept []keptConn
	for pid, c := range m.conns {
		if c.node == "" {
			away = append(away, pid)
		} else {
			kept = append(kept, keptConn{PID: pid, Node: c.node, C: c.rid})
		}
	}
	for pid := range m.away {
		away = append(away, pid)
	}
	m.publishFrame(frame{K: frameMove, Away: away, Kept: kept})
	// A node of the previous version knows no move: it stops, and its
	// connections reconnect. The others ignore what this node sends now.
	m.publishFrame(frame{K: frameStop})
	m.stop(protocol.CloseGoingAway, "server shutting down")
}

// ownerCheckEvery is how often a proxy checks that the owner is alive.
const ownerCheckEvery = time.Second

// watchOwner closes the proxy's connections when the owner dies: they
// reconnect, and a node takes the meeting over.
func (p *proxy) watchOwner() {
	t := time.NewTicker(ownerCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		p.mu.Lock()
		owner := p.owner
		p.mu.Unlock()
		if owner == "" {
			continue // moving
		}
		ctx, cancel := context.WithTimeout(context.Background(), ownerCheckEvery)
		alive, err := p.reg.cfg.Bus.Alive(ctx, owner)
		cancel()
		if err == nil && !alive {
			p.reg.log.Warn("the meeting's owner died", "meeting", p.id, "owner", owner)
			p.shut(protocol.CloseGoingAway, "the meeting's node went away")
			return
		}
	}
}

// call runs a stage method on the owner for proxied connection c.
func (c *Client) callRemote(ctx context.Context, method string, userIDs []string) (*remoteResp, error) {
	p := c.proxy
	resp, err := p.request(ctx, remoteReq{Op: opCall, PID: c.ParticipantID, C: c.rid, Method: method, UserIDs: userIDs})
	if resp != nil {
		if werr := p.waitFrame(ctx, resp.Frame); werr != nil && err == nil {
			err = werr
		}
	}
	return resp, err
}

// leaveRemote tells the owner that proxied connection c ended: op is
// opDisconnect or opLeave.
func (c *Client) leaveRemote(op string) {
	p := c.proxy
	p.release(c)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := p.request(ctx, remoteReq{Op: op, PID: c.ParticipantID, C: c.rid}); err != nil {
			p.reg.log.Debug("telling the owner a connection ended", "meeting", p.id, "err", err)
		}
	}()
}

// ownerOf returns the node that owns the meeting, if err says another node
// does.
func ownerOf(err error) (string, bool) {
	var e interface{ OwnerNode() string }
	if errors.As(err, &e) {
		return e.OwnerNode(), true
	}
	return "", false
}

// newConnID names a connection on its node.
func newConnID() string { return rand.Text()[:16] }
