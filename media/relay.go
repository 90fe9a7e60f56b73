package media

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/protocol"
)

// Tracks across the nodes of a cluster. Each node's SFU serves its own
// connections; a track published on one node (its origin) reaches the
// other nodes whose subscribers receive it, once per node: the origin
// sends each packet of a layer someone wants to the cluster once, and
// every node that wants it gets one copy, which its remote Track forwards
// to its subscribers exactly as the origin's Track does to its own
// (layer choice, rewriting, probes, retransmissions from its own cache).
//
// Control messages of a meeting, on one subject: a node announces its
// tracks (track) and their end (gone), asks the others to announce theirs
// (hello), says every half second which layers of which remote tracks its
// subscribers need (want: the origin sends only those, and counts them as
// needed in its dynacast), and asks for keyframes (pli). A node stops
// wanting a layer by not saying it again: the origin forgets a want after
// wantTTL.

// Relay carries tracks between the SFUs of a cluster (package cluster
// implements it on NATS).
type Relay interface {
	// Node names this node.
	Node() string
	// PublishControl sends a control message of meeting id to every node.
	PublishControl(id string, msg []byte) error
	// SubscribeControl hands meeting id's control messages to fn, in order.
	SubscribeControl(id string, fn func(msg []byte)) (stop func(), err error)
	// PacketSubject names where the packets of layer of track of meeting
	// id go; made once per track and layer, not per packet.
	PacketSubject(id, track string, layer int) string
	// PublishPacket sends packet p to the nodes that subscribed to its
	// track; subject is PacketSubject's.
	PublishPacket(subject string, p []byte) error
	// SubscribePackets hands the packets of track of meeting id to fn.
	SubscribePackets(id, track string, fn func(layer int, p []byte)) (stop func(), err error)
	// Alive reports whether node is alive.
	Alive(ctx context.Context, node string) (bool, error)
}

// wantEvery is how often a node says which layers it wants; wantTTL is
// how long the origin keeps a want not said again.
const (
	wantEvery = 500 * time.Millisecond
	wantTTL   = 2 * time.Second
)

// relayMsg is a control message.
type relayMsg struct {
	K      string     `json:"k"` // track, gone, hello, want, pli
	Node   string     `json:"node"`
	Track  string     `json:"track,omitempty"`
	Info   *trackInfo `json:"info,omitempty"`
	Layers []int      `json:"layers,omitempty"`
	Layer  int        `json:"layer,omitempty"`
}

// trackInfo is what a remote node needs of a track to forward it.
type trackInfo struct {
	ID        string          `json:"id"`
	PID       string          `json:"pid"`
	UID       string          `json:"uid"`
	Source    protocol.Source `json:"source"`
	Kind      string          `json:"kind"`
	Mime      string          `json:"mime"`
	ClockRate uint32          `json:"clock_rate"`
	Channels  uint16          `json:"channels,omitempty"`
	Fmtp      string          `json:"fmtp,omitempty"`
	PT        uint8           `json:"pt"`
	Feedback  []string        `json:"feedback,omitempty"` // "type param"
	Rids      []string        `json:"rids,omitempty"`     // of a simulcast track, smallest first
	LevelExt  uint8           `json:"level_ext,omitempty"`
}

// roomRelay is a room's part in the cluster.
type roomRelay struct {
	r     *Room
	relay Relay
	node  string
	stop  func()

	mu     sync.Mutex
	remote map[string]*Track               // remote tracks by id
	unsubs map[*Track]func()               // their packet subscriptions
	wants  map[*Track]map[string]wantEntry // local tracks: node -> its want
	closed bool
}

type wantEntry struct {
	mask uint32
	at   time.Time
}

// startRelay joins room r to the cluster, if the SFU has a relay.
func (r *Room) startRelay() {
	rel := r.sfu.relay
	if rel == nil {
		return
	}
	rr := &roomRelay{r: r, relay: rel, node: rel.Node(), remote: map[string]*Track{}, unsubs: map[*Track]func(){},
		wants: map[*Track]map[string]wantEntry{}}
	stop, err := rel.SubscribeControl(r.id, rr.onControl)
	if err != nil {
		r.sfu.log.Warn("joining the cluster's media", "meeting", r.id, "err", err)
		return
	}
	rr.stop = stop
	r.relay = rr
	rr.send(relayMsg{K: "hello"})
	r.sfu.wg.Add(1)
	go rr.loop()
}

func (rr *roomRelay) send(m relayMsg) {
	m.Node = rr.node
	b, err := json.Marshal(m)
	if err == nil {
		err = rr.relay.PublishControl(rr.r.id, b)
	}
	if err != nil {
		rr.r.sfu.log.Debug("relay control", "err", err)
	}
}

// info describes local track t.
func info(t *Track) *trackInfo {
	in := &trackInfo{ID: t.id, PID: t.pid, UID: t.uid, Source: t.source, Kind: t.kind.String(), Mime: t.codec.MimeType,
		ClockRate: t.codec.ClockRate, Channels: t.codec.Channels, Fmtp: t.codec.SDPFmtpLine, PT: uint8(t.codec.PayloadType),
		LevelExt: t.levels.ext}
	for _, fb := range t.codec.RTCPFeedback {
		in.Feedback = append(in.Feedback, fb.Type+" "+fb.Parameter)
	}
	t.layersMu.Lock()
	for _, l := range t.layers {
		in.Rids = append(in.Rids, l.rid)
	}
	t.layersMu.Unlock()
	return in
}

// announce tells the other nodes of local track t.
func (rr *roomRelay) announce(t *Track) {
	ex := &exporter{relay: rr.relay}
	for i := range ex.subjects {
		ex.subjects[i] = rr.relay.PacketSubject(rr.r.id, t.id, i)
	}
	t.export.Store(ex)
	rr.send(relayMsg{K: "track", Track: t.id, Info: info(t)})
}

// withdraw tells the other nodes local track t ended, or stops receiving
// remote track t.
func (rr *roomRelay) withdraw(t *Track) {
	if t.origin == "" {
		rr.send(relayMsg{K: "gone", Track: t.id})
		rr.mu.Lock()
		delete(rr.wants, t)
		rr.mu.Unlock()
		return
	}
	rr.mu.Lock()
	if rr.remote[t.id] == t {
		delete(rr.remote, t.id)
	}
	unsub := rr.unsubs[t]
	delete(rr.unsubs, t)
	rr.mu.Unlock()
	if unsub != nil {
		unsub()
	}
}

// onControl handles one control message.
func (rr *roomRelay) onControl(b []byte) {
	var m relayMsg
	if json.Unmarshal(b, &m) != nil || m.Node == rr.node {
		return
	}
	r := rr.r
	switch m.K {
	case "hello":
		r.mu.Lock()
		var own []*Track
		for _, t := range r.tracks {
			if t.origin == "" {
				own = append(own, t)
			}
		}
		r.mu.Unlock()
		for _, t := range own {
			rr.send(relayMsg{K: "track", Track: t.id, Info: info(t)})
		}
	case "track":
		if m.Info != nil {
			rr.addRemote(m.Node, m.Info)
		}
	case "gone":
		rr.mu.Lock()
		t := rr.remote[m.Track]
		rr.mu.Unlock()
		if t != nil && t.origin == m.Node {
			r.work.do(func() { r.unpublish(t) })
		}
	case "want":
		t := r.localTrack(m.Track)
		if t == nil {
			return
		}
		var mask uint32
		for _, l := range m.Layers {
			if l >= 0 && l < maxLayers {
				mask |= 1 << l
			}
		}
		rr.mu.Lock()
		if rr.wants[t] == nil {
			rr.wants[t] = map[string]wantEntry{}
		}
		rr.wants[t][m.Node] = wantEntry{mask: mask, at: time.Now()}
		rr.mu.Unlock()
		rr.export(t)
	case "pli":
		t := r.localTrack(m.Track)
		if t == nil {
			return
		}
		if t.simulcast {
			t.requestLayerKeyframe(t.layer(int32(m.Layer)))
		} else {
			t.requestKeyframe()
		}
	}
}

// localTrack returns the track with id published on this node.
func (r *Room) localTrack(id string) *Track {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.tracks {
		if t.id == id && t.origin == "" {
			return t
		}
	}
	return nil
}

// addRemote makes a remote track of node's track in, and sends it to this
// node's subscribers.
func (rr *roomRelay) addRemote(node string, in *trackInfo) {
	r := rr.r
	rr.mu.Lock()
	if rr.closed || rr.remote[in.ID] != nil {
		rr.mu.Unlock()
		return
	}
	t := newRemoteTrack(rr, node, in)
	rr.remote[in.ID] = t
	rr.mu.Unlock()
	var o outBuf
	unsub, err := rr.relay.SubscribePackets(r.id, in.ID, func(layer int, p []byte) {
		if t.simulcast {
			if l := t.layer(int32(layer)); l != nil {
				t.handleLayer(l, p, &o)
			}
			return
		}
		t.handle(p, &o)
	})
	if err != nil {
		rr.mu.Lock()
		delete(rr.remote, in.ID)
		rr.mu.Unlock()
		return
	}
	rr.mu.Lock()
	rr.unsubs[t] = unsub
	rr.mu.Unlock()
	r.mu.Lock()
	subs := r.addTrackLocked(t, nil)
	r.mu.Unlock()
	if t.simulcast {
		r.sfu.wg.Add(1)
		go func() {
			defer r.sfu.wg.Done()
			t.chooser()
		}()
	}
	for _, s := range subs {
		s.send(t)
	}
	r.sfu.log.Debug("remote track", "meeting", r.id, "track", in.ID, "node", node)
}

// newRemoteTrack returns the track of another node described by in.
func newRemoteTrack(rr *roomRelay, node string, in *trackInfo) *Track {
	kind := webrtc.NewRTPCodecType(in.Kind)
	codec := webrtc.RTPCodecParameters{PayloadType: webrtc.PayloadType(in.PT), RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: in.Mime, ClockRate: in.ClockRate, Channels: in.Channels, SDPFmtpLine: in.Fmtp}}
	for _, fb := range in.Feedback {
		typ, param, _ := cutSpace(fb)
		codec.RTCPFeedback = append(codec.RTCPFeedback, webrtc.RTCPFeedback{Type: typ, Parameter: param})
	}
	t := &Track{pid: in.PID, uid: in.UID, id: in.ID, source: in.Source, kind: kind, codec: codec, origin: node, relay: rr,
		batch: rr.r.sfu.batch, done: make(chan struct{})}
	t.downs.Store(&[]*downTrack{})
	if len(in.Rids) > 0 {
		t.simulcast, t.since = true, time.Now().UnixNano()
		t.cache = newPacketCache(1)
		for i, rid := range in.Rids {
			if i < maxLayers {
				t.layers = append(t.layers, &layer{idx: i, rid: rid, cache: newPacketCache(1024)})
			}
		}
		return t
	}
	t.levels.ext = in.LevelExt
	size := 128
	if kind == webrtc.RTPCodecTypeVideo {
		size = 1024
	}
	t.cache = newPacketCache(size)
	return t
}

func cutSpace(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// pli asks remote track t's origin for a keyframe of layer.
func (rr *roomRelay) pli(t *Track, layer int) {
	t.keyframeRequests.Add(1)
	rr.send(relayMsg{K: "pli", Track: t.id, Layer: layer})
}

// exporter sends a local track's packets to the nodes that want them
// (Track.exportMask says which layers), to subjects made once.
type exporter struct {
	relay    Relay
	subjects [maxLayers]string
}

// export recomputes which layers of local track t some node wants.
func (rr *roomRelay) export(t *Track) {
	ex := t.export.Load()
	if ex == nil {
		return
	}
	now := time.Now()
	rr.mu.Lock()
	var mask uint32
	for n, w := range rr.wants[t] {
		if now.Sub(w.at) > wantTTL {
			delete(rr.wants[t], n)
			continue
		}
		mask |= w.mask
	}
	rr.mu.Unlock()
	t.exportMask.Store(mask)
	// A layer another node needs is needed (dynacast).
	for i := range maxLayers {
		if mask&(1<<i) != 0 {
			if l := t.layer(int32(i)); l != nil {
				l.neededAt.Store(now.UnixNano())
			}
		}
	}
}

// loop says, every wantEvery, what this node wants of remote tracks,
// refreshes what the others want of its own, and drops the tracks of
// nodes that died.
func (rr *roomRelay) loop() {
	defer rr.r.sfu.wg.Done()
	tick := time.NewTicker(wantEvery)
	defer tick.Stop()
	var lastCheck time.Time
	for {
		select {
		case <-rr.r.done:
			return
		case <-tick.C:
		}
		r := rr.r
		r.mu.Lock()
		tracks := append([]*Track(nil), r.tracks...)
		r.mu.Unlock()
		origins := map[string][]*Track{}
		for _, t := range tracks {
			if t.origin == "" {
				rr.export(t)
				continue
			}
			origins[t.origin] = append(origins[t.origin], t)
			if len(*t.downs.Load()) == 0 {
				continue
			}
			var layers []int
			if !t.simulcast {
				layers = []int{0}
			} else {
				t.layersMu.Lock()
				for _, l := range t.layers {
					if !l.paused.Load() {
						layers = append(layers, l.idx)
					}
				}
				t.layersMu.Unlock()
			}
			rr.send(relayMsg{K: "want", Track: t.id, Layers: layers})
		}
		if time.Since(lastCheck) < time.Second {
			continue
		}
		lastCheck = time.Now()
		for node, ts := range origins {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			alive, err := rr.relay.Alive(ctx, node)
			cancel()
			if err == nil && !alive {
				r.sfu.log.Info("a node with tracks died", "meeting", r.id, "node", node)
				r.work.do(func() {
					for _, t := range ts {
						r.unpublish(t)
					}
				})
			}
		}
	}
}

// close leaves the cluster's media of the room.
func (rr *roomRelay) close() {
	rr.mu.Lock()
	rr.closed = true
	unsubs := rr.unsubs
	rr.unsubs = map[*Track]func(){}
	rr.mu.Unlock()
	for _, u := range unsubs {
		u()
	}
	if rr.stop != nil {
		rr.stop()
	}
}
