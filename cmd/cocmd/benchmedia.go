package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/client/mediasource"
	"github.com/cocmd/cocmd/internal/testcert"
	"github.com/cocmd/cocmd/media"
)

// mediaOptions are the settings of one bench media run.
type mediaOptions struct {
	cpu       int
	window    time.Duration
	mediaDir  string
	dialers   int
	debugAddr string
	procs     int
	path      string // how subscribers reach media: "" (any), udp, ice-tcp, turn-udp, turn-tcp, turn-tls
	certs     string // with turn-tls: the directory of the test CA's files
	simulcast bool   // the publisher sends three layers; subscribers show it at three sizes, a third each
	nodes     int    // 1: one server; more: a cluster, the publisher on node 0, the subscribers on the others
}

// simulcastSizes are the sizes simulcast subscribers show the track at, by
// subscriber index modulo 3: one per layer.
var simulcastSizes = [3][2]int{{320, 180}, {640, 360}, {1280, 720}}

// benchPaths are the paths bench media -paths knows: how the subscribers
// reach media.
var benchPaths = map[string]string{
	"udp":      "ICE over UDP (host candidates)",
	"ice-tcp":  "ICE-TCP on the HTTP port",
	"turn-udp": "relay only, TURN/UDP on the media port",
	"turn-tcp": "relay only, TURN/TCP on the HTTP port",
	"turn-tls": "relay only, TURN/TLS on the HTTPS port",
}

// subscriberOptions are the SDK options of a subscriber taking path.
func subscriberOptions(path string) (*client.Options, error) {
	switch path {
	case "":
		return nil, nil
	case "udp", "ice-tcp":
		nt := webrtc.NetworkTypeUDP4
		if path == "ice-tcp" {
			nt = webrtc.NetworkTypeTCP4
		}
		api, err := client.NewWebRTCAPIOn(nil, nt)
		return &client.Options{WebRTC: api}, err
	case "turn-udp", "turn-tcp", "turn-tls":
		return &client.Options{ICETransportPolicy: webrtc.ICETransportPolicyRelay}, nil
	}
	return nil, fmt.Errorf("unknown path %q", path)
}

// serverArgs are the serve flags a path needs: the TURN transport offered
// (one, so that relay-only clients take that one), HTTPS for TLS.
func (o mediaOptions) serverArgs() []string {
	switch o.path {
	case "turn-udp":
		return []string{"-turn-offer", "udp"}
	case "turn-tcp":
		return []string{"-turn-offer", "tcp"}
	case "turn-tls":
		return []string{"-turn-offer", "tls", "-tls-cert", filepath.Join(o.certs, "cert.pem"), "-tls-key", filepath.Join(o.certs, "key.pem")}
	}
	return nil
}

func benchMedia(args []string) error {
	fs := flag.NewFlagSet("bench media", flag.ContinueOnError)
	ns := fs.String("n", "50,100,200", "comma-separated subscriber counts")
	window := fs.Duration("window", 10*time.Second, "how long to measure at each N, once everyone receives")
	serverCPU := fs.Int("server-cpu", 0, "CPU the server is pinned to (-1: not pinned)")
	loadCPU := fs.Int("load-cpu", 1, "CPU this load process is pinned to (-1: not pinned)")
	dir := fs.String("media", filepath.Join("..", "shared", "media"), "directory of the test clips (VP8 IVF and Opus Ogg)")
	dial := fs.Int("dialers", 8, "subscribers joining at once")
	debug := fs.String("server-debug-addr", "", "passed to the server's -debug-addr, to profile it during the run")
	procs := fs.Int("procs", 1, "load processes the subscribers are spread over (all on the load CPU)")
	pubList := fs.String("publishers", "single", "comma-separated publisher kinds, each measured: single (one VP8 layer, 640x360 ~1 Mbit/s) or simulcast (three layers of the simulcast clips, subscribers showing it at 320, 640 and 1280 wide, a third each)")
	repeat := fs.Int("repeat", 1, "rounds over the paths (interleaved); from 2, a table of medians follows")
	pathList := fs.String("paths", "", "comma-separated paths the subscribers reach media by, each measured at every N: udp, ice-tcp, turn-udp, turn-tcp, turn-tls; default: whatever ICE picks")
	nodes := fs.Int("nodes", 1, "from 2: also measure a cluster of this many nodes (embedded NATS, nothing pinned), the publisher on node 0 and the subscribers on the others, beside one node unpinned, in the same run")
	fs.BoolVar(&verbose, "v", false, "log the server at debug level, and the run's steps, to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes > 1 && *procs > 1 {
		return errors.New("-nodes and -procs: one or the other")
	}
	counts, err := parseCounts(*ns, 1)
	if err != nil {
		return err
	}
	if *repeat < 1 {
		return fmt.Errorf("-repeat %d: at least 1", *repeat)
	}
	paths := []string{""}
	if *pathList != "" {
		paths = strings.Split(*pathList, ",")
		for _, p := range paths {
			if _, ok := benchPaths[p]; !ok {
				return fmt.Errorf("-paths: unknown path %q", p)
			}
		}
	}
	pubs := strings.Split(*pubList, ",")
	for _, p := range pubs {
		if p != "single" && p != "simulcast" {
			return fmt.Errorf("-publishers: unknown publisher kind %q", p)
		}
	}
	o := mediaOptions{cpu: *serverCPU, window: *window, mediaDir: *dir, dialers: *dial, debugAddr: *debug, procs: *procs}
	if slices.Contains(paths, "turn-tls") {
		// A CA of the run's own, trusted by this process and its load
		// processes (pion verifies a turns: server against the system
		// roots): set before anything loads them.
		certs, err := os.MkdirTemp("", "cocmd-bench-ca-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(certs)
		if _, err := testcert.Write(certs); err != nil {
			return err
		}
		os.Setenv("SSL_CERT_FILE", filepath.Join(certs, "ca.pem"))
		o.certs = certs
	}
	if err := pinLoad(*loadCPU); err != nil {
		return err
	}
	fmt.Printf("cocmd bench media: %d CPUs, server on CPU %d, load (publisher and subscribers, pion) on CPU %d; "+
		"one publisher of VP8 (~1 Mbit/s, 30 fps) and Opus; %v measured per N; "+
		"server CPU is its CPU over the window less what it spends idle before the meeting\n\n", runtime.NumCPU(), *serverCPU, *loadCPU, *window)
	if *nodes > 1 {
		return benchMediaNodes(counts, *nodes, o, *repeat)
	}
	fmt.Println("| subscribers' path | subscribers | server CPU per forwarded packet | server CPU | forwarded packets/s | server RSS | RSS per subscriber | loss | join → first packet p50 | p99 | kick → last packet | packets after the kick | load CPU |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	type key struct {
		pub, path string
		n         int
	}
	runs := map[key][]mediaResult{}
	var switches, ends []string
	// Rounds interleave the paths, so that the machine's drift during the
	// run does not favour one of them.
	for range *repeat {
		for _, pub := range pubs {
			for _, path := range paths {
				for _, n := range counts {
					o.path, o.simulcast = path, pub == "simulcast"
					r, err := benchMediaN(n, o)
					if err != nil {
						return fmt.Errorf("%s with %d subscribers: %w", cmp.Or(path, "any path"), n, err)
					}
					runs[key{pub, path, n}] = append(runs[key{pub, path, n}], r)
					fmt.Printf("| %s | %d | %.2f µs | %.0f %% | %.0f | %.1f MB | %.0f KB | %.3f %% | %s | %s | %s | %d | %.0f %% |\n", rowName(pub, path), n,
						r.cpuPerPacket.Seconds()*1e6, r.serverLoad*100, r.pps, r.rss/(1<<20), r.rssPerSub/1024, r.loss*100,
						ms(r.firstP50), ms(r.firstP99), ms(r.kickToLast), r.afterKick, r.loadLoad*100)
					if r.endedP50 > 0 {
						ends = append(ends, fmt.Sprintf("- %s, %d subscribers: p50 %s, p99 %s", rowName(pub, path), n, ms(r.endedP50), ms(r.endedP99)))
					}
					if r.switched > 0 {
						switches = append(switches, fmt.Sprintf("- %d subscribers, %d of them moved from the 320 to the 1280 layer: setTrackSize → first packet of the new layer p50 %s, p99 %s",
							n, r.switched, ms(r.switchP50), ms(r.switchP99)))
					}
				}
			}
		}
	}
	if len(ends) > 0 {
		fmt.Printf("\nKick → the subscribers told the track ended (TrackRemoved, from media.trackEnded):\n%s\n", strings.Join(ends, "\n"))
	}
	if len(switches) > 0 {
		fmt.Printf("\nLayer switches (simulcast publisher):\n%s\n", strings.Join(switches, "\n"))
	}
	if *repeat < 2 {
		return nil
	}
	fmt.Printf("\nMedians of %d runs; the ratio is to the first path's median at the same N.\n\n", *repeat)
	fmt.Println("| subscribers' path | subscribers | server CPU per forwarded packet | ratio | RSS per subscriber | join → first packet p50 | p99 |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	med := func(rs []mediaResult, f func(mediaResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	for _, n := range counts {
		base := med(runs[key{pubs[0], paths[0], n}], func(r mediaResult) float64 { return r.cpuPerPacket.Seconds() })
		for _, rk := range rowKeys(pubs, paths) {
			rs := runs[key{rk[0], rk[1], n}]
			cpu := med(rs, func(r mediaResult) float64 { return r.cpuPerPacket.Seconds() })
			fmt.Printf("| %s | %d | %.2f µs | %.2f× | %.0f KB | %.1f ms | %.1f ms |\n", rowName(rk[0], rk[1]), n, cpu*1e6, cpu/base,
				med(rs, func(r mediaResult) float64 { return r.rssPerSub / 1024 }),
				med(rs, func(r mediaResult) float64 { return float64(r.firstP50) / 1e6 }),
				med(rs, func(r mediaResult) float64 { return float64(r.firstP99) / 1e6 }))
		}
	}
	return nil
}

// pathName is how a table names a path.
func pathName(path string) string { return cmp.Or(benchPaths[path], "any (ICE's choice)") }

// rowName names a table's row: the path, and a simulcast publisher.
func rowName(pub, path string) string {
	if pub == "simulcast" {
		return pathName(path) + "; simulcast publisher, subscribers at 320/640/1280"
	}
	return pathName(path)
}

// rowKeys are the (publisher, path) pairs of a run, in table order.
func rowKeys(pubs, paths []string) [][2]string {
	var out [][2]string
	for _, pub := range pubs {
		for _, path := range paths {
			out = append(out, [2]string{pub, path})
		}
	}
	return out
}

type mediaResult struct {
	cpuPerPacket         time.Duration
	serverLoad, loadLoad float64 // share of one core
	pps                  float64
	rss, rssPerSub       float64
	loss                 float64
	firstP50, firstP99   time.Duration
	kickToLast           time.Duration // negative: the last packet arrived before the kick was sent
	afterKick            uint64        // packets that arrived at any subscriber after the kick was sent
	endedP50, endedP99   time.Duration // kick → the subscribers' TrackRemoved (local audience)
	switched             int           // subscribers measured moving layer (simulcast)
	switchP50, switchP99 time.Duration // setTrackSize → first packet of the new layer
}

// seqCounter follows one received track: packets and the highest extended
// sequence number.
type seqCounter struct {
	count   atomic.Uint64 // packets received once: copies (retransmissions, probes) are not counted
	highest atomic.Uint64
	last    atomic.Int64 // unix ns of the last packet
	ext     uint64       // reader only
	started bool
	seen    [seenWindow / 64]uint64 // reader only: which of the last seenWindow sequence numbers arrived
}

// seenWindow is how many sequence numbers back a copy is recognised.
const seenWindow = 4096

// add counts packet seq, received at now, and reports whether it was the
// first of its sequence number.
func (c *seqCounter) add(seq uint16, now int64) bool {
	c.last.Store(now)
	var ext uint64
	switch diff := int16(seq - uint16(c.ext)); {
	case !c.started:
		c.ext, c.started = uint64(seq)+1<<16, true
		ext = c.ext
	case diff > 0: // newer, across a wrap too
		for e := c.ext + 1; e < c.ext+uint64(diff) && e < c.ext+seenWindow; e++ {
			c.seen[e%seenWindow/64] &^= 1 << (e % 64) // not arrived yet
		}
		c.ext += uint64(diff)
		ext = c.ext
		c.seen[ext%seenWindow/64] &^= 1 << (ext % 64)
	default:
		ext = c.ext - uint64(-int(diff))
		if c.ext-ext >= seenWindow {
			return false // too old to tell
		}
	}
	if c.ext > c.highest.Load() {
		c.highest.Store(c.ext)
	}
	if c.seen[ext%seenWindow/64]&(1<<(ext%64)) != 0 {
		return false
	}
	c.seen[ext%seenWindow/64] |= 1 << (ext % 64)
	c.count.Add(1)
	return true
}

// subscriber is one benchmark viewer: a real WebRTC peer (pion) in this
// process.
type subscriber struct {
	m       *client.Meeting
	joined  time.Time
	first   atomic.Int64 // unix ns of the first media packet
	mu      sync.Mutex
	tracks  []*seqCounter
	readers sync.WaitGroup

	size     [2]int // shows the video at this size; zero: says nothing
	widths   bool   // follow the width of the keyframes received (lastWidth)
	video    atomic.Pointer[client.RemoteTrack]
	lastW    atomic.Int32  // the width of the last keyframe received
	audio    atomic.Uint64 // audio packets received
	videoN   atomic.Uint64 // video packets received
	removed  atomic.Int64  // unix ns of the first TrackRemoved
	watch    atomic.Int32  // a keyframe width to wait for
	switched atomic.Int64  // unix ns of the first keyframe of that width
}

func (s *subscriber) run() {
	for e := range s.m.Events() {
		if _, ok := e.(client.TrackRemoved); ok {
			s.removed.CompareAndSwap(0, time.Now().UnixNano())
			continue
		}
		ta, ok := e.(client.TrackAdded)
		if !ok {
			continue
		}
		c := &seqCounter{}
		s.mu.Lock()
		s.tracks = append(s.tracks, c)
		s.mu.Unlock()
		s.readers.Add(1)
		video := ta.Track.Kind() == webrtc.RTPCodecTypeVideo
		if video && s.size != [2]int{} {
			s.video.Store(ta.Track)
			go ta.Track.SetSize(context.Background(), s.size[0], s.size[1])
		}
		go func(rt *client.RemoteTrack) {
			defer s.readers.Done()
			buf := make([]byte, 1500)
			var h rtp.Header
			for {
				n, _, err := rt.Read(buf)
				if err != nil {
					return
				}
				if n < 12 {
					continue
				}
				now := time.Now().UnixNano()
				s.first.CompareAndSwap(0, now)
				if !c.add(uint16(buf[2])<<8|uint16(buf[3]), now) {
					continue // a copy
				}
				if buf[0]&0x20 != 0 && paddingOnly(buf[:n]) {
					continue // a probe's padding: no media
				}
				if !video {
					s.audio.Add(1)
				} else {
					s.videoN.Add(1)
				}
				if video && s.widths {
					if hl, err := h.Unmarshal(buf[:n]); err == nil {
						if kw, _, ok := media.VP8KeyframeSize(buf[hl:n]); ok {
							s.lastW.Store(int32(kw))
						}
					}
				}
				if w := s.watch.Load(); video && w > 0 {
					if hl, err := h.Unmarshal(buf[:n]); err == nil {
						if kw, _, ok := media.VP8KeyframeSize(buf[hl:n]); ok && int32(kw) == w {
							s.switched.CompareAndSwap(0, now)
						}
					}
				}
			}
		}(ta.Track)
	}
}

// paddingOnly reports whether RTP packet p, with its padding bit set,
// carries nothing but padding.
func paddingOnly(p []byte) bool {
	var h rtp.Header
	hl, err := h.Unmarshal(p)
	return err == nil && len(p)-hl <= int(p[len(p)-1])
}

func (s *subscriber) snapshot() (count, highest uint64, last int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.tracks {
		count += c.count.Load()
		highest += c.highest.Load()
		last = max(last, c.last.Load())
	}
	return
}

// mediaRun is one N of bench media: a server, a meeting, a host and a
// publisher on stage, and the audience.
type mediaRun struct {
	o         mediaOptions
	srv       *benchServer   // the one the publisher is on
	srvs      []*benchServer // all of them (a cluster), srv first
	idle      float64        // what they spend doing nothing, in CPU seconds per second
	meetingID string
	host, pub *client.Meeting
	aud       audience
	ctx       context.Context
	cancel    context.CancelFunc
}

func benchMediaN(n int, o mediaOptions) (mediaResult, error) {
	var r mediaResult
	run := &mediaRun{o: o}
	run.ctx, run.cancel = context.WithCancel(context.Background())
	defer run.close()
	if err := run.start(); err != nil {
		return r, err
	}
	var rss0 float64
	for _, s := range run.srvs {
		rss, _ := s.rss()
		rss0 += rss
	}
	if err := run.joinAudience(n); err != nil {
		return r, err
	}
	firsts, err := run.aud.firsts()
	if err != nil {
		return r, err
	}
	slices.Sort(firsts)
	r.firstP50, r.firstP99 = firsts[n/2], firsts[min(n-1, n*99/100)]
	time.Sleep(2 * time.Second) // everyone past its first keyframe
	if err := run.measure(&r); err != nil {
		return r, err
	}
	r.rssPerSub = (r.rss - rss0) / float64(n)
	if local, ok := run.aud.(localAudience); ok && run.o.simulcast {
		if err := local.switchUp(&r); err != nil {
			return r, err
		}
	}
	return r, run.kick(&r)
}

// switchUp moves the subscribers that show the video at 320 wide to 1280
// and measures from the call to the first packet of the 1280 layer.
func (a localAudience) switchUp(r *mediaResult) error {
	var movers []*subscriber
	for _, s := range a {
		if s.size == simulcastSizes[0] && s.video.Load() != nil {
			movers = append(movers, s)
		}
	}
	starts := make([]int64, len(movers))
	for i, s := range movers {
		s.switched.Store(0)
		s.watch.Store(int32(simulcastSizes[2][0]))
		starts[i] = time.Now().UnixNano()
		if err := s.video.Load().SetSize(context.Background(), simulcastSizes[2][0], simulcastSizes[2][1]); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	var took []time.Duration
	for i, s := range movers {
		for s.switched.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if at := s.switched.Load(); at != 0 {
			took = append(took, time.Duration(at-starts[i]))
		}
	}
	if len(took) == 0 {
		return errors.New("no subscriber moved to the 1280 layer")
	}
	slices.Sort(took)
	r.switched, r.switchP50, r.switchP99 = len(took), took[len(took)/2], took[min(len(took)-1, len(took)*99/100)]
	return nil
}

// join adds a participant to the meeting and joins it with the Go SDK.
func (run *mediaRun) join(uid, preset string) (*client.Meeting, error) {
	var p struct{ Token string }
	if err := run.srv.api("POST", "/v1/meetings/"+run.meetingID+"/participants", map[string]any{"name": uid, "user_id": uid, "preset": preset}, &p); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(run.ctx, 30*time.Second)
	defer cancel()
	var opts *client.Options
	if verbose && uid == "host" {
		opts = &client.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	}
	return client.Join(ctx, run.srv.base, p.Token, opts)
}

// openSimulcastClips opens the three aligned simulcast clips of the test
// media in dir (320x180, 640x360, 1280x720, VP8), smallest first.
func openSimulcastClips(dir string) (*mediasource.Simulcast, error) {
	return mediasource.OpenSimulcastIVF(filepath.Join(dir, "simulcast-q-320x180-30fps-vp8.ivf"),
		filepath.Join(dir, "simulcast-h-640x360-30fps-vp8.ivf"), filepath.Join(dir, "simulcast-f-1280x720-30fps-vp8.ivf"))
}

// start starts the server and puts a publisher of the test clips on stage.
func (run *mediaRun) start() error {
	var camera client.LocalTrack
	var play func(context.Context, bool) error
	if run.o.simulcast {
		sim, err := openSimulcastClips(run.o.mediaDir)
		if err != nil {
			return err
		}
		camera, play = sim.LocalTrack(client.SourceCamera), sim.Play
	} else {
		video, err := mediasource.OpenIVF(filepath.Join(run.o.mediaDir, "testsrc-640x360-30fps-vp8.ivf"))
		if err != nil {
			return err
		}
		camera, play = video.LocalTrack(client.SourceCamera), video.Play
	}
	audio, err := mediasource.OpenOgg(filepath.Join(run.o.mediaDir, "sine-440hz-opus.ogg"))
	if err != nil {
		return err
	}
	extra := append([]string{"-media-listen", "127.0.0.1:0"}, run.o.serverArgs()...)
	if verbose {
		extra = append(extra, "-log-level", "debug")
	}
	if run.o.nodes > 1 {
		if run.srvs, err = startBenchCluster(run.o.nodes, extra...); err != nil {
			return err
		}
		run.srv = run.srvs[0]
	} else {
		if run.srv, err = startBenchServer(run.o.cpu, run.o.debugAddr, extra...); err != nil {
			return err
		}
		run.srvs = []*benchServer{run.srv}
	}
	// What the servers spend with no meeting (a cluster's leases,
	// liveness, JetStream's heartbeats): taken off the window's CPU.
	idleCPU := func() time.Duration {
		var sum time.Duration
		for _, s := range run.srvs {
			c, _ := s.cpu()
			sum += c
		}
		return sum
	}
	time.Sleep(time.Second)
	c0, t0 := idleCPU(), time.Now()
	time.Sleep(3 * time.Second)
	run.idle = (idleCPU() - c0).Seconds() / time.Since(t0).Seconds()
	var m struct{ ID string }
	if err := run.srv.api("POST", "/v1/meetings", map[string]any{"title": "bench media", "type": "WEBINAR"}, &m); err != nil {
		return err
	}
	run.meetingID = m.ID
	if run.host, err = run.join("host", "webinar_host"); err != nil {
		return err
	}
	if run.pub, err = run.join("publisher", "webinar_panelist"); err != nil {
		return err
	}
	if err := run.pub.Stage.Join(run.ctx); err != nil {
		return fmt.Errorf("joining the stage: %w", err)
	}
	go play(run.ctx, true)
	go audio.Play(run.ctx, true)
	if err := run.pub.Media.Publish(run.ctx, camera, audio.LocalTrack(client.SourceMicrophone)); err != nil {
		return fmt.Errorf("publishing: %w", err)
	}
	time.Sleep(time.Second)
	return nil
}

// joinAudience adds n viewers and has them subscribe, here or in load
// processes.
func (run *mediaRun) joinAudience(n int) error {
	tokens := make([]string, n)
	err := parallel(8, n, func(i int) error {
		uid := fmt.Sprintf("s%04d", i)
		var p struct{ Token string }
		err := run.srv.api("POST", "/v1/meetings/"+run.meetingID+"/participants", map[string]any{"name": uid, "user_id": uid, "preset": "webinar_viewer"}, &p)
		tokens[i] = p.Token
		return err
	})
	if err != nil {
		return err
	}
	if run.o.procs > 1 {
		run.aud, err = startLoadProcs(run.srv.base, tokens, run.o.procs, run.o.dialers, run.o.path, run.o.simulcast)
	} else {
		bases := []string{run.srv.base}
		if len(run.srvs) > 1 {
			bases = nil // the subscribers on the nodes but the publisher's
			for _, s := range run.srvs[1:] {
				bases = append(bases, s.base)
			}
		}
		run.aud, err = joinLocal(bases, tokens, run.o.dialers, run.o.path, run.o.simulcast, 0, false)
	}
	return err
}

func (run *mediaRun) take() totals {
	t, err := run.aud.snapshot()
	if err != nil {
		dbg("snapshot: " + err.Error())
	}
	return t
}

// measure fills in r's figures of the window.
func (run *mediaRun) measure(r *mediaResult) error {
	// All the nodes': CPU, packets forwarded to subscribers.
	sums := func() (cpu time.Duration, fwd uint64, err error) {
		for _, s := range run.srvs {
			c, _ := s.cpu()
			f, ferr := s.forwarded(run.meetingID)
			if ferr != nil && len(run.srvs) == 1 {
				return 0, 0, ferr
			}
			cpu, fwd = cpu+c, fwd+f // a node without subscribers forwards nothing
		}
		return cpu, fwd, nil
	}
	cpu0, fwd0, err := sums()
	if err != nil {
		return err
	}
	load0 := loadCPU(run.aud)
	before, t0 := run.take(), time.Now()
	time.Sleep(run.o.window)
	after, elapsed := run.take(), time.Since(t0)
	dbg("window ended")
	cpu1, fwd1, err := sums()
	if err != nil {
		return err
	}
	load1 := loadCPU(run.aud)
	for _, s := range run.srvs {
		rss, _ := s.rss()
		r.rss += rss
	}
	fwd := fwd1 - fwd0
	if fwd == 0 {
		return fmt.Errorf("nothing forwarded during the window")
	}
	busy := cpu1 - cpu0 - time.Duration(run.idle*float64(elapsed))
	r.cpuPerPacket = busy / time.Duration(fwd)
	r.serverLoad = busy.Seconds() / elapsed.Seconds()
	r.loadLoad = (load1 - load0).Seconds() / elapsed.Seconds()
	r.pps = float64(fwd) / elapsed.Seconds()
	got, want := float64(after.Count-before.Count), float64(after.Highest-before.Highest)
	if want > 0 {
		r.loss = max(0, 1-got/want)
	}
	return nil
}

// kick has the host kick the publisher and measures how long packets keep
// arriving, and how many arrive after the kick was sent.
func (run *mediaRun) kick(r *mediaResult) error {
	atKick := run.take().Count
	dbg("kicking")
	kicked := time.Now()
	if err := run.host.Stage.Kick(run.ctx, "publisher"); err != nil {
		return fmt.Errorf("kicking: %w", err)
	}
	time.Sleep(time.Second)
	end := run.take()
	r.kickToLast = time.Unix(0, end.Last).Sub(kicked)
	r.afterKick = end.Count - atKick
	if local, ok := run.aud.(localAudience); ok {
		var ended []time.Duration
		for _, s := range local {
			if at := s.removed.Load(); at != 0 {
				ended = append(ended, time.Unix(0, at).Sub(kicked))
			}
		}
		if len(ended) > 0 {
			slices.Sort(ended)
			r.endedP50, r.endedP99 = ended[len(ended)/2], ended[min(len(ended)-1, len(ended)*99/100)]
		}
	}
	return nil
}

func (run *mediaRun) close() {
	if run.aud != nil {
		run.aud.close()
	}
	for _, m := range []*client.Meeting{run.pub, run.host} {
		if m != nil {
			m.Close()
		}
	}
	run.cancel()
	for _, s := range run.srvs {
		s.stop()
	}
}

// forwarded reads the server's count of forwarded packets for a meeting
// from its metrics.
func (s *benchServer) forwarded(meetingID string) (uint64, error) {
	req, _ := http.NewRequest("GET", s.base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+benchKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	want := `cocmd_media_packets_forwarded_total{meeting="` + meetingID + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			return strconv.ParseUint(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no forwarded packets in the metrics")
}

// dbg prints a step of the run with -v.
func dbg(msg string) {
	if verbose {
		fmt.Fprintln(os.Stderr, time.Now().Format("15:04:05.000000"), msg)
	}
}

// totals sum what a group of subscribers received: packets, the highest
// sequence numbers (extended, summed over tracks), and the last arrival.
type totals struct {
	Count, Highest uint64
	Last           int64 // unix ns
	// With loadConfig.Widths: audio and video packets apart, and the width
	// of the last keyframe the first subscriber received.
	Audio, Video uint64
	Width        int32
}

func (t *totals) add(o totals) {
	t.Count += o.Count
	t.Highest += o.Highest
	t.Last = max(t.Last, o.Last)
	t.Audio += o.Audio
	t.Video += o.Video
	if t.Width == 0 {
		t.Width = o.Width
	}
}

// audience is the N subscribers, in this process or in load processes.
type audience interface {
	// firsts waits until every subscriber has received a packet and
	// returns each one's time from its join to its first packet.
	firsts() ([]time.Duration, error)
	snapshot() (totals, error)
	// pids are the load processes other than this one.
	pids() []int
	close()
}

// loadCPU is the CPU time of this process and of the audience's.
func loadCPU(a audience) time.Duration {
	total, _ := procCPU(os.Getpid())
	for _, pid := range a.pids() {
		c, _ := procCPU(pid)
		total += c
	}
	return total
}

// localAudience runs the subscribers in this process.
type localAudience []*subscriber

// joinLocal joins and subscribes one subscriber per token.
func joinLocal(bases []string, tokens []string, dialers int, path string, sized bool, first int, widths bool) (localAudience, error) {
	opts, err := subscriberOptions(path)
	if err != nil {
		return nil, err
	}
	subs := make(localAudience, len(tokens))
	err = parallel(dialers, len(tokens), func(i int) error {
		s := &subscriber{joined: time.Now(), widths: widths}
		if sized {
			s.size = simulcastSizes[(first+i)%3]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m, err := client.Join(ctx, bases[i%len(bases)], tokens[i], opts)
		if err != nil {
			return err
		}
		s.m = m
		subs[i] = s
		go s.run()
		if err := m.Media.Subscribe(ctx); err != nil {
			return fmt.Errorf("subscribing: %w", err)
		}
		return nil
	})
	return subs, err
}

func (a localAudience) firsts() ([]time.Duration, error) {
	deadline := time.Now().Add(60 * time.Second)
	out := make([]time.Duration, len(a))
	for i, s := range a {
		for s.first.Load() == 0 {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("a subscriber received nothing within a minute")
			}
			time.Sleep(10 * time.Millisecond)
		}
		out[i] = time.Unix(0, s.first.Load()).Sub(s.joined)
	}
	return out, nil
}

func (a localAudience) snapshot() (totals, error) {
	var t totals
	for _, s := range a {
		c, h, l := s.snapshot()
		t.add(totals{Count: c, Highest: h, Last: l, Audio: s.audio.Load(), Video: s.videoN.Load(), Width: s.lastW.Load()})
	}
	return t, nil
}

func (a localAudience) pids() []int { return nil }

func (a localAudience) close() {
	var wg sync.WaitGroup
	for _, s := range a {
		if s != nil {
			wg.Go(func() { s.m.Close(); s.readers.Wait() })
		}
	}
	wg.Wait()
}

// loadProc is a child process running some of the subscribers (cocmd
// bench media-subscribers), driven over its stdin and stdout.
type loadProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// loadConfig is the first line a load process reads.
type loadConfig struct {
	Base    string   `json:"base"`
	Tokens  []string `json:"tokens"`
	Dialers int      `json:"dialers"`
	Path    string   `json:"path"`
	Sized   bool     `json:"sized"`  // simulcast: show the track at simulcastSizes
	Widths  bool     `json:"widths"` // report the keyframe width, and audio and video packets apart
	First   int      `json:"first"`  // the index of the first token among all subscribers
}

// procAudience spreads the subscribers over load processes.
type procAudience []*loadProc

// startLoadProcs starts procs load processes (they inherit this process's
// CPU affinity) and shares the tokens out among them.
func startLoadProcs(base string, tokens []string, procs, dialers int, path string, sized bool) (procAudience, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var a procAudience
	for i := range procs {
		share := tokens[i*len(tokens)/procs : (i+1)*len(tokens)/procs]
		cmd := exec.Command(exe, "bench", "media-subscribers")
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return a, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return a, err
		}
		if err := cmd.Start(); err != nil {
			return a, err
		}
		p := &loadProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
		p.out.Buffer(make([]byte, 1<<20), 1<<20)
		a = append(a, p)
		if err := json.NewEncoder(in).Encode(loadConfig{Base: base, Tokens: share, Dialers: max(1, dialers/procs), Path: path, Sized: sized, First: i * len(tokens) / procs}); err != nil {
			return a, err
		}
	}
	return a, nil
}

// ask sends a command and decodes the one-line answer into v.
func (p *loadProc) ask(cmd string, v any) error {
	if cmd != "" {
		if _, err := fmt.Fprintln(p.in, cmd); err != nil {
			return err
		}
	}
	if !p.out.Scan() {
		return fmt.Errorf("load process ended: %v", p.out.Err())
	}
	var reply struct {
		Error string          `json:"error"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(p.out.Bytes(), &reply); err != nil {
		return err
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	return json.Unmarshal(reply.Data, v)
}

func (a procAudience) firsts() ([]time.Duration, error) {
	var all []time.Duration
	for _, p := range a {
		var fs []time.Duration
		if err := p.ask("", &fs); err != nil { // a load process says when all its subscribers receive
			return nil, err
		}
		all = append(all, fs...)
	}
	return all, nil
}

func (a procAudience) snapshot() (totals, error) {
	var t totals
	for _, p := range a {
		var pt totals
		if err := p.ask("snapshot", &pt); err != nil {
			return t, err
		}
		t.add(pt)
	}
	return t, nil
}

func (a procAudience) pids() []int {
	out := make([]int, len(a))
	for i, p := range a {
		out[i] = p.cmd.Process.Pid
	}
	return out
}

func (a procAudience) close() {
	for _, p := range a {
		p.in.Close() // the load process closes its clients and exits
	}
	for _, p := range a {
		p.cmd.Wait()
	}
}

// benchMediaSubscribers is a load process: it reads a loadConfig, joins
// its subscribers, answers with their join → first packet times once all
// receive, then one totals line per "snapshot" line, until stdin closes.
func benchMediaSubscribers() error {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 16<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	reply := func(v any, err error) error {
		if err != nil {
			return out.Encode(map[string]any{"error": err.Error()})
		}
		return out.Encode(map[string]any{"data": v})
	}
	if !in.Scan() {
		return errors.New("bench media-subscribers: no configuration on stdin")
	}
	var cfg loadConfig
	if err := json.Unmarshal(in.Bytes(), &cfg); err != nil {
		return err
	}
	subs, err := joinLocal([]string{cfg.Base}, cfg.Tokens, cfg.Dialers, cfg.Path, cfg.Sized, cfg.First, cfg.Widths)
	defer subs.close()
	if err != nil {
		return reply(nil, err)
	}
	if err := reply(subs.firsts()); err != nil {
		return err
	}
	for in.Scan() {
		if in.Text() == "snapshot" {
			if err := reply(subs.snapshot()); err != nil {
				return err
			}
		}
	}
	return nil
}

// benchMediaNodes measures, at each N, one node (unpinned) and a cluster
// of nodes, the publisher on node 0 and the subscribers spread over the
// others: all the nodes' CPU (each runs its NATS server) per packet
// forwarded to a subscriber, so the cluster's figure includes the hop.
// Rounds interleave the two; from 2, medians and the ratio follow.
func benchMediaNodes(counts []int, nodes int, o mediaOptions, repeat int) error {
	fmt.Printf("Nothing pinned: the nodes, their NATS servers and the load share the CPUs. One node, then %d nodes "+
		"(the publisher on node 0, the subscribers spread over the %d others), at each N.\n\n", nodes, nodes-1)
	fmt.Println("| nodes | subscribers | CPU per forwarded packet, all nodes | CPU, all nodes | forwarded packets/s | RSS, all nodes | loss | join → first packet p50 | p99 | kick → last packet | packets after the kick |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	type key struct{ k, n int }
	runs := map[key][]mediaResult{}
	o.cpu = -1
	for range repeat {
		for _, n := range counts {
			for _, k := range []int{1, nodes} {
				o.nodes = k
				r, err := benchMediaN(n, o)
				if err != nil {
					return fmt.Errorf("%d subscribers on %d nodes: %w", n, k, err)
				}
				runs[key{k, n}] = append(runs[key{k, n}], r)
				fmt.Printf("| %d | %d | %.2f µs | %.0f %% | %.0f | %.1f MB | %.3f %% | %s | %s | %s | %d |\n", k, n,
					r.cpuPerPacket.Seconds()*1e6, r.serverLoad*100, r.pps, r.rss/(1<<20), r.loss*100,
					ms(r.firstP50), ms(r.firstP99), ms(r.kickToLast), r.afterKick)
			}
		}
	}
	if repeat < 2 {
		return nil
	}
	fmt.Printf("\nMedians of %d runs.\n\n| subscribers | one node | %d nodes | ratio |\n|---:|---:|---:|---:|\n", repeat, nodes)
	med := func(rs []mediaResult) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = r.cpuPerPacket.Seconds() * 1e6
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	for _, n := range counts {
		one, many := med(runs[key{1, n}]), med(runs[key{nodes, n}])
		fmt.Printf("| %d | %.2f µs | %.2f µs | %.2f× |\n", n, one, many, many/one)
	}
	return nil
}
