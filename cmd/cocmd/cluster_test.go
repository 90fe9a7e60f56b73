package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/internal/natstest"
	"github.com/cocmd/cocmd/stage"
)

// testCluster is three cocmd nodes, each with an embedded NATS server, on
// loopback.
type testCluster struct {
	t      *testing.T
	bin    string
	addrs  []string // HTTP
	routes []string
	dirs   []string
	cmds   []*exec.Cmd
	wrap   [][]string // per node, what its command line starts with (ip netns exec NAME)
	extra  [][]string // per node, more flags
	nats   string     // if set, the nodes use this NATS cluster (-nats) instead of embedded servers
	secret string     // the file of -cluster-secret-file
}

func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := newCluster(t, n)
	c.run()
	return c
}

// newCluster prepares n nodes on loopback addresses; run starts them.
func newCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t, bin: binary(t), secret: filepath.Join(t.TempDir(), "cluster-secret")}
	if err := os.WriteFile(c.secret, []byte("a-cluster-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range n {
		c.addrs = append(c.addrs, freeAddr(t))
		c.routes = append(c.routes, freeAddr(t))
		c.dirs = append(c.dirs, t.TempDir())
	}
	c.wrap, c.extra = make([][]string, n), make([][]string, n)
	return c
}

// run starts every node and waits until each is ready.
func (c *testCluster) run() {
	c.t.Helper()
	c.startAll()
	for i := range c.addrs {
		c.waitReady(i)
	}
}

// startAll starts every node at once, and kills those still running when
// the test ends.
func (c *testCluster) startAll() {
	t, n := c.t, len(c.addrs)
	t.Helper()
	c.cmds = make([]*exec.Cmd, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { c.start(i) })
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, cmd := range c.cmds {
			if cmd != nil && cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		}
	})
}

// start runs node i.
func (c *testCluster) start(i int) {
	level := os.Getenv("COCMD_TEST_LOG_LEVEL") // to see the nodes' log
	if level == "" {
		level = "warn"
	}
	args := []string{c.bin, "serve", "-listen", c.addrs[i], "-data", c.dirs[i], "-api-key", testKey, "-log-level", level,
		"-node", fmt.Sprint("n", i), "-turn=false", "-media-listen", "127.0.0.1:0", "-ping-interval", "1s"}
	if c.nats != "" {
		args = append(args, "-nats", c.nats)
	} else {
		args = append(args, "-cluster-listen", c.routes[i], "-cluster-routes", strings.Join(c.routes, ","), "-cluster-secret-file", c.secret)
	}
	args = append(args, c.extra[i]...)
	cmd, err := startServe(append(slices.Clone(c.wrap[i]), args...), 2*time.Minute)
	if err != nil {
		c.t.Error(err)
		return
	}
	c.cmds[i] = cmd
}

// waitReady waits until node i answers /readyz.
func (c *testCluster) waitReady(i int) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + c.addrs[i] + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("node %d is not ready after a minute", i)
}

func (c *testCluster) base(i int) string { return "http://" + c.addrs[i] }

// webinar creates a webinar through node i and returns its id.
func (c *testCluster) webinar(i int, title string) string {
	var m struct{ ID string }
	rest(c.t, c.base(i), "POST", "/v1/meetings", map[string]any{"title": title, "type": "WEBINAR"}, &m)
	return m.ID
}

// reconnecting are the SDK options of the cluster tests' participants:
// quick to reconnect, and to notice a silent node (the nodes ping every
// second) after readTimeout.
func reconnecting(readTimeout time.Duration) *client.Options {
	return &client.Options{ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond, ReadTimeout: readTimeout}
}

// noErr fails the test with err, if any.
func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// within retries fn until it succeeds, for a minute (a cluster
// recovering, a client reconnecting), and fails the test with what.
func within(t *testing.T, what string, fn func() error) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// live returns node i's answer to GET /v1/meetings/{id}/live.
func (c *testCluster) live(i int, id string) (live, error) {
	var l live
	req, _ := http.NewRequest("GET", c.base(i)+"/v1/meetings/"+id+"/live", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	hc := http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return l, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return l, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return l, json.NewDecoder(resp.Body).Decode(&l)
}

// balancer is a TCP load balancer in front of the nodes: each connection
// goes to the first node in its order that accepts it. One per
// participant, to place it on a node of the test's choosing.
func (c *testCluster) balancer(first int) string {
	c.t.Helper()
	order := []string{}
	for k := range c.addrs {
		order = append(order, c.addrs[(first+k)%len(c.addrs)])
	}
	return "http://" + proxyTCP(c.t, func() (net.Conn, error) {
		for _, a := range order {
			// As a balancer would: only to a node whose /readyz answers
			// (a frozen one still accepts TCP).
			hc := http.Client{Timeout: 500 * time.Millisecond}
			resp, err := hc.Get("http://" + a + "/readyz")
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				continue
			}
			if out, err := net.DialTimeout("tcp", a, time.Second); err == nil {
				return out, nil
			}
		}
		return nil, errors.New("no node is ready")
	})
}

// proxyTCP listens on a loopback port until the test ends and pipes each
// connection to the one dial makes; it returns its address.
func proxyTCP(t *testing.T, dial func() (net.Conn, error)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := dial()
				if err != nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, in); out.Close() }()
				io.Copy(in, out)
			}()
		}
	}()
	return ln.Addr().String()
}

// agree waits until every participant of all sees every status of want
// (and the pending requests) as the owner has them, and every node — of
// nodes, or every running one if nil — answers /live of meeting id with
// the same view; it returns the owner's name. It fails the test after two
// minutes (a recovery under load, not a timing).
func (c *testCluster) agree(id string, all []*client.Meeting, want map[string]stage.Status, when string, nodes []int) string {
	t := c.t
	t.Helper()
	// Every participant sees every other's status as the owner has it.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		bad := ""
		for _, cl := range all {
			self := cl.Self().UserID
			if cl.Stage.Status() != want[self] {
				bad = fmt.Sprintf("%s sees itself %v, want %v", self, cl.Stage.Status(), want[self])
			}
			for uid, st := range want {
				if p, ok := cl.Participant(uid); ok && st != stage.OffStage && p.Status != st {
					bad = fmt.Sprintf("%s sees %s %v, want %v", self, uid, p.Status, st)
				}
			}
		}
		var views []string
		var owner string
		for i := range c.addrs {
			if c.cmds[i].ProcessState != nil || nodes != nil && !slices.Contains(nodes, i) {
				continue
			}
			l, err := c.live(i, id)
			if err != nil {
				// Recovering (JetStream electing, a forward timing
				// out): not yet.
				bad = fmt.Sprintf("node %d: %v", i, err)
				continue
			}
			views = append(views, l.view())
			owner = l.Node
			if len(l.Participants) != len(want) && bad == "" {
				bad = fmt.Sprintf("node %d: %d participants connected, want %d: %s", i, len(l.Participants), len(want), l.view())
			}
		}
		if bad == "" && len(slices.Compact(views)) != 1 {
			bad = fmt.Sprintf("the nodes answer differently: %v", views)
		}
		if bad == "" {
			t.Logf("%s: every participant and node agree: %s, owner %s", when, views[0], owner)
			return owner
		}
		if time.Now().After(deadline) {
			for _, cl := range all {
				t.Logf("%s: connected %v, err %v", cl.Self().UserID, cl.Connected(), cl.Err())
			}
			t.Fatalf("%s: %s", when, bad)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// live is the REST /live answer.
type live struct {
	Participants []struct {
		UserID string       `json:"user_id"`
		Status stage.Status `json:"stage_status"`
	} `json:"participants"`
	Requests []stage.Request `json:"requests"`
	Node     string          `json:"node"`
}

// view is the stage as one answer tells it: user → status, and the
// pending requests' users in order.
func (l live) view() string {
	var ps []string
	for _, p := range l.Participants {
		ps = append(ps, p.UserID+":"+p.Status.String())
	}
	sort.Strings(ps)
	var rs []string
	for _, r := range l.Requests {
		rs = append(rs, r.UserID)
	}
	return fmt.Sprint(ps, rs)
}

// TestBinary_cluster runs one webinar over three nodes, its participants
// spread over them: the stage story works from every node, REST answers
// the same on every node; the owner is SIGKILLed and the webinar goes on
// on the others, its participants reconnecting by themselves, nothing
// acknowledged lost.
func TestBinary_cluster(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var m struct{ ID string }
	rest(t, c.base(1), "POST", "/v1/meetings", map[string]any{"title": "Three nodes", "type": "WEBINAR"}, &m)

	// The host on node 0, viewers on every node; the meeting runs where
	// it was first needed.
	placed := map[string]int{}
	byUID := map[string]*client.Meeting{}
	join := func(uid, preset string, node int) *client.Meeting {
		placed[uid] = node
		cl := joinAt(ctx, t, c.base((node+1)%3), c.balancer(node), m.ID, uid, preset, &client.Options{ReconnectMin: 50 * time.Millisecond,
			ReconnectMax: 300 * time.Millisecond, ReadTimeout: 4 * time.Second}) // the nodes ping every second
		byUID[uid] = cl
		return cl
	}
	host := join("host", "webinar_host", 0)
	vs := map[string]*client.Meeting{}
	names := []string{"v0", "v1", "v2", "v3", "v4", "v5"}
	for i, n := range names {
		vs[n] = join(n, "webinar_viewer", i%3)
	}
	all := append([]*client.Meeting{host}, vs["v0"], vs["v1"], vs["v2"], vs["v3"], vs["v4"], vs["v5"])

	noErr(t, host.Stage.Join(ctx))
	for _, n := range []string{"v1", "v2", "v4", "v5"} {
		noErr(t, vs[n].Stage.RequestAccess(ctx)) // from nodes 1 and 2
	}
	// The host, on node 0, sees the requests made on the others, in order.
	reqs, err := host.Stage.GetAccessRequests(ctx)
	noErr(t, err)
	var order []string
	for _, r := range reqs {
		order = append(order, r.UserID)
	}
	if fmt.Sprint(order) != "[v1 v2 v4 v5]" {
		t.Fatalf("the host's requests %v", order)
	}
	noErr(t, host.Stage.GrantAccess(ctx, "v1")) // v1 on node 1
	waitEvent(t, vs["v1"], "stageRequestApproved")
	noErr(t, vs["v1"].Stage.Join(ctx))
	// v1 moderates nothing: a viewer calling a host method through node 1
	// is refused there as on the owner.
	if err := vs["v2"].Stage.GrantAccess(ctx, "v4"); stage.CodeOf(err) != stage.CodePermissionDenied {
		t.Fatalf("a viewer granting through node 2: %v", err)
	}
	noErr(t, host.Stage.DenyAccess(ctx, "v2"))
	waitEvent(t, vs["v2"], "stageRequestRejected")

	want := map[string]stage.Status{"host": stage.OnStage, "v0": stage.OffStage, "v1": stage.OnStage, "v2": stage.OffStage,
		"v3": stage.OffStage, "v4": stage.Requested, "v5": stage.Requested}
	agree := func(when string) string {
		t.Helper()
		return c.agree(m.ID, all, want, when, nil)
	}
	owner := agree("before the kill")
	dead := slices.Index([]string{"n0", "n1", "n2"}, owner)
	if dead < 0 {
		t.Fatalf("the meeting is owned by %q", owner)
	}

	// SIGKILL the owner in the middle of a grant (of v5, through another
	// node): its participants reconnect through their balancer to another
	// node, which takes the meeting over; the grant happened everywhere or
	// nowhere, and if it was answered it happened.
	granted := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", c.base((dead+1)%3)+"/v1/meetings/"+m.ID+"/stage/grant", strings.NewReader(`{"user_ids":["v5"]}`))
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			granted <- 0
			return
		}
		resp.Body.Close()
		granted <- resp.StatusCode
	}()
	time.Sleep(time.Millisecond)
	c.cmds[dead].Process.Signal(syscall.SIGKILL)
	c.cmds[dead].Wait()
	killed := time.Now()
	for uid, node := range placed {
		if node == dead {
			waitEventWithin(t, byUID[uid], "reconnected", 2*time.Minute)
		}
	}
	// What the grant did, as the new owner has it, is what everyone must
	// see.
	var after live
	// Under load (the whole suite at once, -race), JetStream's elections
	// take longer: the deadlines are for a recovery, not a timing.
	for deadline := time.Now().Add(2 * time.Minute); ; {
		after = live{}
		alive := (dead + 1) % 3
		req, _ := http.NewRequest("GET", c.base(alive)+"/v1/meetings/"+m.ID+"/live", nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			ok := resp.StatusCode == http.StatusOK
			if ok {
				json.NewDecoder(resp.Body).Decode(&after)
			}
			resp.Body.Close()
			if ok && after.Node != fmt.Sprint("n", dead) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no node answers /live after the kill")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the meeting answered again, from %s, %v after the kill", after.Node, time.Since(killed).Round(10*time.Millisecond))
	status := <-granted
	v5 := stage.Requested
	if !slices.ContainsFunc(after.Requests, func(r stage.Request) bool { return r.UserID == "v5" }) {
		v5 = stage.Accepted
	}
	if status == http.StatusOK && v5 != stage.Accepted {
		t.Fatalf("the grant was answered 200 and is not there after the kill")
	}
	t.Logf("the grant in flight at the kill: answered %d, v5 %v after it", status, v5)
	want["v5"] = v5
	owner = agree("after the owner's kill")
	t.Logf("after the kill: the meeting runs on %s, everyone agreeing %v after the kill (the grant in flight waited for its answer)", owner, time.Since(killed).Round(10*time.Millisecond))
	if owner == fmt.Sprint("n", dead) || owner == "" {
		t.Fatalf("owner after the kill: %q", owner)
	}
	// The webinar goes on.
	noErr(t, host.Stage.GrantAccess(ctx, "v4"))
	waitEvent(t, vs["v4"], "stageRequestApproved")
	noErr(t, vs["v4"].Stage.Join(ctx))
	noErr(t, host.Stage.Kick(ctx, "v1"))
	waitEvent(t, vs["v1"], "removedFromStage")
	want["v4"], want["v1"] = stage.OnStage, stage.OffStage
	owner = agree("after the story went on")

	// The killed node comes back (with embedded NATS, two of three
	// servers must run for JetStream to have a quorum).
	c.start(dead)
	c.waitReady(dead)

	// SIGSTOP the owner past its lease: another node takes the meeting
	// over and the webinar goes on there; resumed, the old owner must
	// commit nothing, learn it lost the meeting and drop its copy.
	frozen := slices.Index([]string{"n0", "n1", "n2"}, owner)
	other := (frozen + 1) % 3
	c.cmds[frozen].Process.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if l, err := c.live(other, m.ID); err == nil && l.Node != "" && l.Node != fmt.Sprint("n", frozen) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the meeting was not taken over from the frozen owner")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the frozen owner's meeting runs elsewhere %v after the SIGSTOP", time.Since(stopped).Round(10*time.Millisecond))
	for deadline := time.Now().Add(time.Minute); ; { // the cluster may still be recovering: 503s are tried again
		req, _ := http.NewRequest("POST", c.base(other)+"/v1/meetings/"+m.ID+"/stage/grant", strings.NewReader(`{"user_ids":["v5"]}`))
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("granting after the takeover: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	want["v5"] = stage.Accepted
	c.cmds[frozen].Process.Signal(syscall.SIGCONT)
	// Its stale copy cannot commit (the store fences its epoch: the grant
	// above went through the new owner, and everyone agrees with it). It
	// may own the meeting again later, under a new epoch: the resumed
	// server's raft groups can make the current leaders step down, and
	// the current owner lose its lease.
	if o := agree("after the frozen owner resumed"); o == fmt.Sprint("n", frozen) {
		t.Logf("the meeting moved back to the resumed node, under a new lease")
	}

	// A rolling restart: each node in turn is stopped (SIGTERM: its
	// meetings handed over) and started again. Nothing is lost.
	for i := range c.cmds {
		c.cmds[i].Process.Signal(syscall.SIGTERM)
		c.cmds[i].Wait()
		c.start(i)
		c.waitReady(i)
	}
	noErr(t, host.Stage.Kick(ctx, "v4"))
	want["v4"] = stage.OffStage
	agree("after a rolling restart")
}

// TestBinary_clusterMedia: a host publishing on one node reaches viewers
// on the two others; a kick through a third stops its track at the
// origin: the viewers' tracks end and nothing more arrives.
func TestBinary_clusterMedia(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var m struct{ ID string }
	rest(t, c.base(0), "POST", "/v1/meetings", map[string]any{"title": "Media over nodes", "type": "WEBINAR"}, &m)
	join := func(uid, preset string, node int) *client.Meeting {
		return joinAt(ctx, t, c.base(node), c.base(node), m.ID, uid, preset, nil)
	}
	mod := join("mod", "webinar_host", 2)
	host := join("host", "webinar_host", 0)
	viewers := []*client.Meeting{join("v1", "webinar_viewer", 1), join("v2", "webinar_viewer", 2)}
	publishCamera(ctx, t, host)
	type got struct {
		uid     string
		packets int
		ended   time.Time
	}
	results := make(chan got, 2*len(viewers))
	var kickAt time.Time
	for i, v := range viewers {
		if err := v.Media.Subscribe(ctx); err != nil {
			t.Fatal(err)
		}
		go func() {
			for e := range v.Events() {
				ta, ok := e.(client.TrackAdded)
				if !ok || ta.Track.UserID != "host" {
					continue
				}
				buf := make([]byte, 1500)
				n := 0
				for {
					if _, _, err := ta.Track.Read(buf); err != nil {
						results <- got{uid: fmt.Sprint("v", i+1), packets: n, ended: time.Now()}
						return
					}
					n++
					if n == 60 {
						results <- got{uid: fmt.Sprint("v", i+1), packets: n}
					}
				}
			}
		}()
	}
	for range viewers {
		select {
		case g := <-results:
			t.Logf("%s (node %s) receives the host's video from node 0", g.uid, g.uid[1:])
		case <-ctx.Done():
			t.Fatal("a viewer on another node got no video")
		}
	}
	kickAt = time.Now()
	if err := mod.Stage.Kick(ctx, "host"); err != nil { // through node 2; the meeting runs on node 0
		t.Fatal(err)
	}
	for range viewers {
		select {
		case g := <-results:
			if g.ended.IsZero() {
				t.Fatalf("%s: %+v", g.uid, g)
			}
			t.Logf("%s: the track ended %v after the kick", g.uid, g.ended.Sub(kickAt).Round(time.Millisecond))
		case <-time.After(30 * time.Second):
			t.Fatal("a viewer's track did not end after the kick")
		}
	}
}

// TestBinary_clusterCutOff: node 2 runs in a network namespace of its own
// and is cut off from the other nodes' NATS servers (its embedded server
// keeps running, alone, while its HTTP port stays reachable). It stops
// serving what it can no longer know: /readyz and the REST API say 503,
// its meeting moves to another node, and every one of its participants —
// of its own meeting and of another node's — is closed and reconnects
// through the balancer to a node that reaches the cluster; the webinars go
// on there. Healed, it serves again and agrees with the others.
func TestBinary_clusterCutOff(t *testing.T) {
	ns := newNetns(t)
	c := newCluster(t, 3)
	for i := range 2 {
		c.routes[i] = net.JoinHostPort(ns.hostIP.String(), fmt.Sprint(freePort(t, ns.hostIP)))
	}
	// Nothing listens in the new namespace: any port is free there.
	c.addrs[2], c.routes[2] = net.JoinHostPort(ns.nsIP.String(), "18080"), net.JoinHostPort(ns.nsIP.String(), "16222")
	c.wrap[2] = []string{"ip", "netns", "exec", ns.name}
	c.run()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	opts := reconnecting(4 * time.Second)
	// m1 runs on node 0, m2 on node 2 (where each is first needed); each
	// has participants on node 2.
	m1, m2 := c.webinar(0, "Owned elsewhere"), c.webinar(2, "Owned by the node cut off")
	join := func(mid, uid, preset string, rest, node int) *client.Meeting {
		return joinAt(ctx, t, c.base(rest), c.balancer(node), mid, uid, preset, opts)
	}
	host := join(m1, "host", "webinar_host", 0, 0)
	v0 := join(m1, "v0", "webinar_viewer", 0, 1)
	v1 := join(m1, "v1", "webinar_viewer", 0, 2)
	v2 := join(m1, "v2", "webinar_viewer", 0, 2)
	h2 := join(m2, "h2", "webinar_host", 2, 2)
	w0 := join(m2, "w0", "webinar_viewer", 2, 0)
	w1 := join(m2, "w1", "webinar_viewer", 2, 2)
	noErr(t, host.Stage.Join(ctx))
	noErr(t, v1.Stage.RequestAccess(ctx))
	noErr(t, h2.Stage.Join(ctx))
	noErr(t, w0.Stage.RequestAccess(ctx))
	want1 := map[string]stage.Status{"host": stage.OnStage, "v0": stage.OffStage, "v1": stage.Requested, "v2": stage.OffStage}
	want2 := map[string]stage.Status{"h2": stage.OnStage, "w0": stage.Requested, "w1": stage.OffStage}
	all1, all2 := []*client.Meeting{host, v0, v1, v2}, []*client.Meeting{h2, w0, w1}
	if o := c.agree(m1, all1, want1, "m1 before the cut", nil); o != "n0" {
		t.Fatalf("m1 runs on %s, want n0", o)
	}
	if o := c.agree(m2, all2, want2, "m2 before the cut", nil); o != "n2" {
		t.Fatalf("m2 runs on %s, want n2", o)
	}

	// The cut: from node 2's namespace, nothing reaches the other NATS
	// servers' cluster ports and nothing leaves its own (policy routing:
	// the packets are unroutable).
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	rules := [][]string{
		{"ipproto", "tcp", "dport", port(c.routes[0]), "prohibit", "prio", "100"},
		{"ipproto", "tcp", "dport", port(c.routes[1]), "prohibit", "prio", "101"},
		{"ipproto", "tcp", "sport", port(c.routes[2]), "prohibit", "prio", "102"},
	}
	for _, r := range rules {
		ns.exec(t, append([]string{"ip", "rule", "add"}, r...)...)
	}
	cut := time.Now()

	// Its participants, of both meetings, are closed and reconnect
	// elsewhere by themselves.
	for _, cl := range []*client.Meeting{v1, v2, h2, w1} {
		t.Logf("%s: disconnected: %v", cl.Self().UserID, disconnection(t, cl))
		waitEventWithin(t, cl, "reconnected", 2*time.Minute)
	}
	t.Logf("node 2's participants reconnected elsewhere %v after the cut", time.Since(cut).Round(10*time.Millisecond))
	// Node 2 says it is not ready and serves no state it cannot vouch for.
	resp, err := http.Get(c.base(2) + "/readyz")
	noErr(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("node 2's /readyz while cut off: %d", resp.StatusCode)
	}
	if _, err := c.live(2, m1); err == nil || !strings.HasPrefix(err.Error(), "503") {
		t.Fatalf("node 2's /live while cut off: %v, want a 503", err)
	}
	req, _ := http.NewRequest("POST", c.base(2)+"/v1/meetings/"+m1+"/stage/grant", strings.NewReader(`{"user_ids":["v1"]}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err = http.DefaultClient.Do(req)
	noErr(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a grant through node 2 while cut off: %d, want 503", resp.StatusCode)
	}

	// The webinars go on on nodes 0 and 1: m2 was taken over.
	if o := c.agree(m2, all2, want2, "m2 after the cut", []int{0, 1}); o == "n2" {
		t.Fatalf("m2 still runs on the node cut off")
	}
	noErr(t, host.Stage.GrantAccess(ctx, "v1"))
	waitEvent(t, v1, "stageRequestApproved")
	noErr(t, h2.Stage.GrantAccess(ctx, "w0"))
	waitEvent(t, w0, "stageRequestApproved")
	want1["v1"], want2["w0"] = stage.Accepted, stage.Accepted
	c.agree(m1, all1, want1, "m1 after the cut", []int{0, 1})
	c.agree(m2, all2, want2, "m2 after the cut", []int{0, 1})

	// Healed, node 2 catches up and serves again, agreeing with the others.
	for _, r := range rules {
		ns.exec(t, append([]string{"ip", "rule", "del"}, r...)...)
	}
	c.waitReady(2)
	c.agree(m1, all1, want1, "m1 healed", nil)
	c.agree(m2, all2, want2, "m2 healed", nil)
}

// disconnection waits for m's next disconnection and returns its error.
func disconnection(t *testing.T, m *client.Meeting) error {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case e, ok := <-m.Events():
			if !ok {
				t.Fatalf("waiting for a disconnection: client stopped: %v", m.Err())
			}
			if d, ok := e.(client.Disconnected); ok {
				return d.Err
			}
		case <-timeout:
			t.Fatalf("%s: not disconnected within 2 minutes", m.Self().UserID)
		}
	}
}

// TestBinary_clusterHandOff: the node that owns the meeting is stopped
// (SIGTERM) in the middle of the webinar. It hands the meeting over: the
// participants of the other nodes keep their connections — no disconnection,
// no missed event — and the video of a speaker on another node keeps
// flowing; the stopped node's own participant reconnects by itself, and
// the webinar goes on under the next owner.
func TestBinary_clusterHandOff(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id := c.webinar(0, "Hand-off")
	// A long read timeout: only a connection the servers close counts
	// (the nodes ping every second, but a loaded machine may starve one).
	opts := reconnecting(20 * time.Second)
	// The host through a balancer (it must reconnect elsewhere), the
	// others straight to their node: under load a node's /readyz may say
	// no for a moment, and a balancer would place them elsewhere.
	host := joinAt(ctx, t, c.base(0), c.balancer(0), id, "host", "webinar_host", opts)
	join := func(uid, preset string, node int) *client.Meeting {
		var p struct{ Token string }
		rest(t, c.base(0), "POST", "/v1/meetings/"+id+"/participants", map[string]any{"name": uid, "user_id": uid, "preset": preset}, &p)
		var cl *client.Meeting
		within(t, uid+" joining at node "+fmt.Sprint(node), func() (err error) {
			cl, err = client.Join(ctx, c.base(node), p.Token, opts)
			return err
		})
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	t.Logf("nodes at %v", c.addrs)
	spk := join("spk", "webinar_host", 1)
	v1 := join("v1", "webinar_viewer", 1)
	v2 := join("v2", "webinar_viewer", 2)
	all := []*client.Meeting{host, spk, v1, v2}
	noErr(t, host.Stage.Join(ctx))
	noErr(t, v1.Stage.RequestAccess(ctx))
	want := map[string]stage.Status{"host": stage.OnStage, "spk": stage.OnStage, "v1": stage.Requested, "v2": stage.OffStage}
	publishCamera(ctx, t, spk) // on node 1
	if o := c.agree(id, all, want, "before the hand-off", nil); o != "n0" {
		t.Fatalf("the meeting runs on %s, want n0", o)
	}
	// v2, on node 2, watches spk's video, from node 1.
	noErr(t, v2.Media.Subscribe(ctx))
	var packets atomic.Int64
	var dropMu sync.Mutex
	var drops []string
	ended := make(chan struct{})
	go func() {
		for e := range v2.Events() {
			switch e := e.(type) {
			case client.Disconnected:
				dropMu.Lock() // checked below: not reported from here, which outlives the test
				drops = append(drops, fmt.Sprint(e.Err))
				dropMu.Unlock()
			case client.TrackAdded:
				if e.Track.UserID != "spk" {
					continue
				}
				go func() {
					buf := make([]byte, 1500)
					for {
						if _, _, err := e.Track.Read(buf); err != nil {
							close(ended)
							return
						}
						packets.Add(1)
					}
				}()
			}
		}
	}()
	for deadline := time.Now().Add(time.Minute); packets.Load() < 30; {
		if time.Now().After(deadline) {
			t.Fatal("v2 gets no video from spk")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Stop the owner.
	c.cmds[0].Process.Signal(syscall.SIGTERM)
	stopped := time.Now()
	if err := c.cmds[0].Wait(); err != nil {
		t.Fatalf("node 0 stopping: %v", err)
	}
	exited := time.Now()
	// A call from a kept connection waits for the move, if it is not
	// over, and is answered by the next owner.
	noErr(t, v2.Stage.RequestAccess(ctx))
	t.Logf("node 0 exited %v after the SIGTERM; a call through a kept connection took %v then",
		exited.Sub(stopped).Round(time.Millisecond), time.Since(exited).Round(time.Millisecond))
	want["v2"] = stage.Requested
	// The host (on node 0) reconnects elsewhere and grants v1: the event
	// reaches v1 on the connection it kept.
	waitEventWithin(t, host, "reconnected", time.Minute)
	within(t, "the host granting after the hand-off", func() error { return host.Stage.GrantAccess(ctx, "v1") })
	for e := range v1.Events() {
		if d, ok := e.(client.Disconnected); ok {
			t.Fatalf("v1 was disconnected by the hand-off: %v", d.Err)
		}
		if e.Name() == "stageRequestApproved" {
			break
		}
	}
	want["v1"] = stage.Accepted
	if o := c.agree(id, all, want, "after the hand-off", nil); o == "n0" || o == "" {
		t.Fatalf("the meeting runs on %q after the hand-off", o)
	}
	dropMu.Lock()
	if len(drops) > 0 {
		t.Fatalf("v2 was disconnected by the hand-off: %v", drops)
	}
	dropMu.Unlock()
	// The video never stopped.
	before := packets.Load()
	for deadline := time.Now().Add(30 * time.Second); packets.Load() < before+30; {
		select {
		case <-ended:
			t.Fatal("spk's track ended at v2 with the hand-off")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("v2 gets no more video after the hand-off")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBinary_clusterRotate: the key commands work on a cluster's shared
// store (here a NATS server of the test's, the node's -nats): a new signing
// key reaches the running node by itself; a new API key is the one a
// restarted node must be given, and the old one is refused then.
func TestBinary_clusterRotate(t *testing.T) {
	nc := natstest.Start(t, 1)
	url := nc.URL(0)
	bin, addr, dir := binary(t), freeAddr(t), t.TempDir()
	args := []string{bin, "serve", "-listen", addr, "-data", dir, "-api-key", testKey, "-node", "n0", "-nats", url,
		"-turn=false", "-media-listen", "127.0.0.1:0", "-log-level", "warn"}
	cmd, err := startServe(args, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	base := "http://" + addr
	command := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out, err := exec.Command(bin, "rotate-api-key", "-nats", "nats://127.0.0.1:1").CombinedOutput(); err == nil {
		t.Fatalf("rotating with no NATS there: %s", out)
	}

	out := command("rotate-signing-key", "-nats", url, "-retire-after", "1h")
	id := regexp.MustCompile(`New signing key (\S+) of the cluster`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("rotate-signing-key said %q", out)
	}
	for deadline := time.Now().Add(time.Minute); ; { // the node reads the keys again every 10 s
		var keys struct{ Data []struct{ ID string } }
		rest(t, base, "GET", "/v1/signing-keys", nil, &keys)
		if slices.ContainsFunc(keys.Data, func(k struct{ ID string }) bool { return k.ID == id[1] }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the running node does not know key %s: %v", id[1], keys)
		}
		time.Sleep(500 * time.Millisecond)
	}

	out = command("rotate-api-key", "-nats", url)
	key := regexp.MustCompile(`\(shown once; keep it\): (\S+)`).FindStringSubmatch(out)
	if key == nil {
		t.Fatalf("rotate-api-key said %q", out)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	// Started again with the old key: refused.
	if c, err := startServe(args, time.Minute); err == nil {
		c.Process.Kill()
		c.Wait()
		t.Fatal("a node started with the old API key")
	}
	args[7] = key[1]
	if cmd, err = startServe(args, 2*time.Minute); err != nil {
		t.Fatalf("with the new API key: %v", err)
	}
	req, _ := http.NewRequest("GET", base+"/v1/meetings", nil)
	req.Header.Set("Authorization", "Bearer "+key[1])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the new API key: %d", resp.StatusCode)
	}
}

// TestBinary_clusterExternal: three nodes on an external NATS cluster
// (three servers of the test's, -nats): the owner SIGKILLed, another node
// answers for the meeting within the lease TTL and a moment — no stream
// leader died with it — and everyone agrees. The time is logged: it is
// the failover bound of docs/cluster.md.
func TestBinary_clusterExternal(t *testing.T) {
	nc := natstest.Start(t, 3)
	c := newCluster(t, 3)
	c.nats = nc.URLs()
	c.run()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id := c.webinar(0, "External NATS")
	opts := reconnecting(4 * time.Second)
	host := joinAt(ctx, t, c.base(1), c.balancer(0), id, "host", "webinar_host", opts)
	v1 := joinAt(ctx, t, c.base(1), c.balancer(1), id, "v1", "webinar_viewer", opts)
	v2 := joinAt(ctx, t, c.base(1), c.balancer(2), id, "v2", "webinar_viewer", opts)
	all := []*client.Meeting{host, v1, v2}
	if err := v1.Stage.RequestAccess(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]stage.Status{"host": stage.OffStage, "v1": stage.Requested, "v2": stage.OffStage}
	owner := c.agree(id, all, want, "before the kill", nil)
	dead := slices.Index([]string{"n0", "n1", "n2"}, owner)
	if dead < 0 {
		t.Fatalf("owner %q", owner)
	}
	c.cmds[dead].Process.Signal(syscall.SIGKILL)
	c.cmds[dead].Wait()
	killed := time.Now()
	other := (dead + 1) % 3
	for deadline := time.Now().Add(time.Minute); ; {
		if l, err := c.live(other, id); err == nil && l.Node != "" && l.Node != owner {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no other node took the meeting over")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("with an external NATS cluster, the meeting answered from another node %v after its owner's SIGKILL (lease TTL 2 s)",
		time.Since(killed).Round(10*time.Millisecond))
	within(t, "the host granting after the kill", func() error { return host.Stage.GrantAccess(ctx, "v1") }) // it may be reconnecting
	want["v1"] = stage.Accepted
	c.agree(id, all, want, "after the kill", nil)
}
