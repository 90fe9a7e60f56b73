package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cocmd/cocmd/stage"
)

// The subjects between nodes, under the prefix:
//
//	<prefix>.call.<meeting>  requests to a meeting's owner (queue group "owner")
//	<prefix>.ev.<meeting>    the owner's frames of a meeting, to every node
//	<prefix>.http.<node>     REST requests forwarded to a node

// counters of the traffic between nodes, for the metrics.
type counters struct {
	Calls, CallErrors, Frames, FramesIn, Forwards atomic.Int64
	PacketsOut, PacketsIn                         atomic.Int64 // media relayed
}

// Serve implements meeting.Bus: this node answers the requests of other
// nodes to meeting id, each on a goroutine of its own.
func (n *Node) Serve(id string, handle func(req []byte) []byte) (func(), error) {
	sub, err := n.nc.QueueSubscribe(n.cfg.Prefix+".call."+keyOf(id), "owner", func(msg *nats.Msg) {
		go func() {
			if err := msg.Respond(handle(msg.Data)); err != nil {
				n.log.Debug("answering a node", "err", err)
			}
		}()
	})
	if err != nil {
		return nil, err
	}
	return func() { sub.Unsubscribe() }, nil
}

// Call implements meeting.Bus.
func (n *Node) Call(ctx context.Context, id string, req []byte) ([]byte, error) {
	n.counts.Calls.Add(1)
	msg, err := n.nc.RequestWithContext(ctx, n.cfg.Prefix+".call."+keyOf(id), req)
	if err != nil {
		n.counts.CallErrors.Add(1)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, errors.New("the meeting's owner is gone")
		}
		return nil, err
	}
	return msg.Data, nil
}

// Publish implements meeting.Bus.
func (n *Node) Publish(id string, frame []byte) error {
	n.counts.Frames.Add(1)
	return n.nc.Publish(n.cfg.Prefix+".ev."+keyOf(id), frame)
}

// Subscribe implements meeting.Bus.
func (n *Node) Subscribe(id string, fn func(frame []byte)) (func(), error) {
	sub, err := n.nc.Subscribe(n.cfg.Prefix+".ev."+keyOf(id), func(msg *nats.Msg) {
		n.counts.FramesIn.Add(1)
		fn(msg.Data)
	})
	if err != nil {
		return nil, err
	}
	// A proxy that falls behind loses frames and starts its connections
	// again; give it room first.
	sub.SetPendingLimits(1<<16, 256<<20)
	return func() { sub.Unsubscribe() }, nil
}

// Node implements meeting.Bus.
func (n *Node) Node() string { return n.cfg.Node }

// OwnerNode lets callers tell, without this package, which node owns the
// meeting.
func (e *ElsewhereError) OwnerNode() string { return e.Node }

// forwarded is a REST request sent to another node, and its answer.
type forwarded struct {
	Method string      `json:"method,omitempty"`
	URL    string      `json:"url,omitempty"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
	Status int         `json:"status,omitempty"`
}

// ForwardedHeader marks a request another node forwarded: it is not
// forwarded again.
const ForwardedHeader = "X-Cocmd-Forwarded"

// ServeForwarded serves, with h, the REST requests other nodes forward to
// this one, until stop is called.
func (n *Node) ServeForwarded(h http.Handler) (stop func(), err error) {
	sub, err := n.nc.Subscribe(n.cfg.Prefix+".http."+n.cfg.Node, func(msg *nats.Msg) {
		go func() {
			out := n.serveForwarded(h, msg.Data)
			b, _ := json.Marshal(out)
			msg.Respond(b)
		}()
	})
	if err != nil {
		return nil, err
	}
	return func() { sub.Unsubscribe() }, nil
}

func (n *Node) serveForwarded(h http.Handler, b []byte) forwarded {
	var in forwarded
	if err := json.Unmarshal(b, &in); err != nil {
		return forwarded{Status: http.StatusBadRequest, Body: []byte(`{"error":{"code":"BAD_REQUEST","message":"a forwarded request this node cannot read"}}`)}
	}
	u, err := url.ParseRequestURI(in.URL)
	if err != nil {
		return forwarded{Status: http.StatusBadRequest}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, in.Method, u.String(), bytes.NewReader(in.Body))
	if err != nil {
		return forwarded{Status: http.StatusBadRequest}
	}
	r.Header = in.Header
	r.Header.Set(ForwardedHeader, "1")
	r.RemoteAddr = "127.0.0.1:0"
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	h.ServeHTTP(rec, r)
	return forwarded{Status: rec.status, Header: rec.header, Body: rec.body.Bytes()}
}

// recorder is the http.ResponseWriter of a forwarded request.
type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int) {
	if !r.wrote {
		r.status, r.wrote = s, true
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}

// Forward sends REST request r (with its body, read already) to node and
// writes node's answer to w.
func (n *Node) Forward(ctx context.Context, node string, r *http.Request, body []byte, w http.ResponseWriter) error {
	n.counts.Forwards.Add(1)
	hdr := http.Header{}
	for _, k := range []string{"Authorization", "Content-Type", "Accept"} {
		if v := r.Header.Values(k); len(v) > 0 {
			hdr[k] = v
		}
	}
	b, err := json.Marshal(forwarded{Method: r.Method, URL: r.URL.RequestURI(), Header: hdr, Body: body})
	if err != nil {
		return err
	}
	msg, err := n.nc.RequestWithContext(ctx, n.cfg.Prefix+".http."+node, b)
	if err != nil {
		return stage.Errorf(stage.ErrUnavailable, fmt.Sprintf("forwarding to node %s: %v", node, err))
	}
	var out forwarded
	if err := json.Unmarshal(msg.Data, &out); err != nil {
		return stage.Errorf(stage.ErrUnavailable, "node "+node+" answered in a form this node cannot read")
	}
	for k, v := range out.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(out.Status)
	_, err = w.Write(out.Body)
	return err
}

// PublishControl implements media.Relay.
func (n *Node) PublishControl(id string, msg []byte) error {
	return n.nc.Publish(n.cfg.Prefix+".media."+keyOf(id), msg)
}

// SubscribeControl implements media.Relay.
func (n *Node) SubscribeControl(id string, fn func(msg []byte)) (func(), error) {
	sub, err := n.nc.Subscribe(n.cfg.Prefix+".media."+keyOf(id), func(msg *nats.Msg) { fn(msg.Data) })
	if err != nil {
		return nil, err
	}
	return func() { sub.Unsubscribe() }, nil
}

// PacketSubject implements media.Relay.
func (n *Node) PacketSubject(id, track string, layer int) string {
	return n.cfg.Prefix + ".rtp." + keyOf(id) + "." + keyOf(track) + "." + string(rune('0'+layer))
}

// PublishPacket implements media.Relay: one NATS message per packet, which
// the NATS servers copy to each subscribed node once.
func (n *Node) PublishPacket(subject string, p []byte) error {
	n.counts.PacketsOut.Add(1)
	return n.nc.Publish(subject, p)
}

// SubscribePackets implements media.Relay.
func (n *Node) SubscribePackets(id, track string, fn func(layer int, p []byte)) (func(), error) {
	sub, err := n.nc.Subscribe(n.cfg.Prefix+".rtp."+keyOf(id)+"."+keyOf(track)+".*", func(msg *nats.Msg) {
		n.counts.PacketsIn.Add(1)
		s := msg.Subject
		fn(int(s[len(s)-1]-'0'), msg.Data)
	})
	if err != nil {
		return nil, err
	}
	sub.SetPendingLimits(1<<16, 64<<20)
	return func() { sub.Unsubscribe() }, nil
}

// WriteMetrics writes the node's figures in the Prometheus text format.
func (n *Node) WriteMetrics(w io.Writer) error {
	n.mu.Lock()
	held := len(n.held)
	n.mu.Unlock()
	c := &n.counts
	ready := 1
	if n.Ready() != nil {
		ready = 0
	}
	_, err := fmt.Fprintf(w, `# HELP cocmd_cluster_ready Whether this node reaches NATS and takes connections.
# TYPE cocmd_cluster_ready gauge
cocmd_cluster_ready{node=%[1]q} %[2]d
# HELP cocmd_cluster_leases Meetings (and jobs) this node owns.
# TYPE cocmd_cluster_leases gauge
cocmd_cluster_leases{node=%[1]q} %[3]d
# HELP cocmd_cluster_calls_total Calls this node sent to other nodes' meetings (NATS round trips), and those that failed.
# TYPE cocmd_cluster_calls_total counter
cocmd_cluster_calls_total{node=%[1]q} %[4]d
cocmd_cluster_call_errors_total{node=%[1]q} %[5]d
# HELP cocmd_cluster_frames_total Event frames this node published for its meetings, and received for others'.
# TYPE cocmd_cluster_frames_total counter
cocmd_cluster_frames_total{node=%[1]q,dir="out"} %[6]d
cocmd_cluster_frames_total{node=%[1]q,dir="in"} %[7]d
# HELP cocmd_cluster_forwards_total REST calls this node forwarded to a meeting's owner.
# TYPE cocmd_cluster_forwards_total counter
cocmd_cluster_forwards_total{node=%[1]q} %[8]d
# HELP cocmd_cluster_rtp_packets_total Media packets this node relayed to other nodes, and received from them.
# TYPE cocmd_cluster_rtp_packets_total counter
cocmd_cluster_rtp_packets_total{node=%[1]q,dir="out"} %[9]d
cocmd_cluster_rtp_packets_total{node=%[1]q,dir="in"} %[10]d
`, n.cfg.Node, ready, held, c.Calls.Load(), c.CallErrors.Load(), c.Frames.Load(), c.FramesIn.Load(), c.Forwards.Load(),
		c.PacketsOut.Load(), c.PacketsIn.Load())
	return err
}
