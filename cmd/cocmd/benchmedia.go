package main

import (
	"bufio"
	"context"
	"flag"
	"log/slog"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/client/mediasource"
)

// mediaOptions are the settings of one bench media run.
type mediaOptions struct {
	cpu       int
	window    time.Duration
	mediaDir  string
	dialers   int
	debugAddr string
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
	fs.BoolVar(&verbose, "v", false, "log the server at debug level, and the run's steps, to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var counts []int
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -n %q", s)
		}
		counts = append(counts, n)
	}
	if *loadCPU >= 0 {
		var set unix.CPUSet
		set.Set(*loadCPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("pinning the load to CPU %d: %w", *loadCPU, err)
		}
		runtime.GOMAXPROCS(1)
	}
	fmt.Printf("cocmd bench media: %d CPUs, server on CPU %d, load (publisher and subscribers, pion) on CPU %d; "+
		"one publisher of VP8 (~1 Mbit/s, 30 fps) and Opus; %v measured per N\n\n", runtime.NumCPU(), *serverCPU, *loadCPU, *window)
	fmt.Println("| subscribers | server CPU per forwarded packet | server CPU | forwarded packets/s | server RSS | RSS per subscriber | loss | join → first packet p50 | p99 | kick → last packet | packets after the kick | load CPU |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range counts {
		r, err := benchMediaN(n, mediaOptions{cpu: *serverCPU, window: *window, mediaDir: *dir, dialers: *dial, debugAddr: *debug})
		if err != nil {
			return fmt.Errorf("with %d subscribers: %w", n, err)
		}
		fmt.Printf("| %d | %.2f µs | %.0f %% | %.0f | %.1f MB | %.0f KB | %.3f %% | %s | %s | %s | %d | %.0f %% |\n", n,
			r.cpuPerPacket.Seconds()*1e6, r.serverLoad*100, r.pps, r.rss/(1<<20), r.rssPerSub/1024, r.loss*100,
			ms(r.firstP50), ms(r.firstP99), ms(r.kickToLast), r.afterKick, r.loadLoad*100)
	}
	return nil
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
}

// seqCounter follows one received track: packets and the highest extended
// sequence number.
type seqCounter struct {
	count   atomic.Uint64
	highest atomic.Uint64
	last    atomic.Int64 // unix ns of the last packet
	ext     uint64       // reader only
	started bool
}

func (c *seqCounter) add(seq uint16, now int64) {
	if !c.started {
		c.ext, c.started = uint64(seq)+1<<16, true
	} else if diff := int16(seq - uint16(c.ext)); diff > 0 { // newer, across a wrap too
		c.ext += uint64(diff)
	}
	if c.ext > c.highest.Load() {
		c.highest.Store(c.ext)
	}
	c.count.Add(1)
	c.last.Store(now)
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
}

func (s *subscriber) run() {
	for e := range s.m.Events() {
		ta, ok := e.(client.TrackAdded)
		if !ok {
			continue
		}
		c := &seqCounter{}
		s.mu.Lock()
		s.tracks = append(s.tracks, c)
		s.mu.Unlock()
		s.readers.Add(1)
		go func(rt *client.RemoteTrack) {
			defer s.readers.Done()
			buf := make([]byte, 1500)
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
				c.add(uint16(buf[2])<<8|uint16(buf[3]), now)
			}
		}(ta.Track)
	}
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

func benchMediaN(n int, o mediaOptions) (mediaResult, error) {
	var r mediaResult
	video, err := mediasource.OpenIVF(filepath.Join(o.mediaDir, "testsrc-640x360-30fps-vp8.ivf"))
	if err != nil {
		return r, err
	}
	audio, err := mediasource.OpenOgg(filepath.Join(o.mediaDir, "sine-440hz-opus.ogg"))
	if err != nil {
		return r, err
	}
	extra := []string{"-media-listen", "127.0.0.1:0"}
	if verbose {
		extra = append(extra, "-log-level", "debug")
	}
	srv, err := startBenchServer(o.cpu, o.debugAddr, extra...)
	if err != nil {
		return r, err
	}
	defer srv.stop()
	var m struct{ ID string }
	if err := srv.api("POST", "/v1/meetings", map[string]any{"title": "bench media", "type": "WEBINAR"}, &m); err != nil {
		return r, err
	}
	join := func(uid, preset string) (*client.Meeting, error) {
		var p struct{ Token string }
		if err := srv.api("POST", "/v1/meetings/"+m.ID+"/participants", map[string]any{"name": uid, "user_id": uid, "preset": preset}, &p); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var opts *client.Options
		if verbose && uid == "host" {
			opts = &client.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		}
		return client.Join(ctx, srv.base, p.Token, opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	host, err := join("host", "webinar_host")
	if err != nil {
		return r, err
	}
	defer host.Close()
	pub, err := join("publisher", "webinar_panelist")
	if err != nil {
		return r, err
	}
	defer pub.Close()
	if err := pub.Stage.Join(ctx); err != nil {
		return r, fmt.Errorf("joining the stage: %w", err)
	}
	go video.Play(ctx, true)
	go audio.Play(ctx, true)
	if err := pub.Media.Publish(ctx, video.LocalTrack(client.SourceCamera), audio.LocalTrack(client.SourceMicrophone)); err != nil {
		return r, fmt.Errorf("publishing: %w", err)
	}
	time.Sleep(time.Second)
	rss0, _ := srv.rss()

	subs := make([]*subscriber, n)
	defer func() {
		var wg sync.WaitGroup
		for _, s := range subs {
			if s != nil {
				wg.Go(func() { s.m.Close(); s.readers.Wait() })
			}
		}
		wg.Wait()
	}()
	err = parallel(o.dialers, n, func(i int) error {
		s := &subscriber{joined: time.Now()}
		var err error
		if s.m, err = join(fmt.Sprintf("s%04d", i), "webinar_viewer"); err != nil {
			return err
		}
		subs[i] = s
		go s.run()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := s.m.Media.Subscribe(sctx); err != nil {
			return fmt.Errorf("subscribing: %w", err)
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, s := range subs {
		for s.first.Load() == 0 {
			if time.Now().After(deadline) {
				return r, fmt.Errorf("a subscriber received nothing within a minute")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	firsts := make([]time.Duration, n)
	for i, s := range subs {
		firsts[i] = time.Unix(0, s.first.Load()).Sub(s.joined)
	}
	slices.Sort(firsts)
	r.firstP50, r.firstP99 = firsts[n/2], firsts[min(n-1, n*99/100)]
	time.Sleep(2 * time.Second) // everyone past its first keyframe

	// The window.
	type snap struct{ count, highest uint64 }
	take := func() []snap {
		out := make([]snap, n)
		for i, s := range subs {
			c, h, _ := s.snapshot()
			out[i] = snap{c, h}
		}
		return out
	}
	cpu0, _ := srv.cpu()
	load0, _ := procCPU(os.Getpid())
	fwd0, err := srv.forwarded(m.ID)
	if err != nil {
		return r, err
	}
	before, t0 := take(), time.Now()
	time.Sleep(o.window)
	after, elapsed := take(), time.Since(t0)
	dbg("window ended")
	cpu1, _ := srv.cpu()
	load1, _ := procCPU(os.Getpid())
	fwd1, err := srv.forwarded(m.ID)
	if err != nil {
		return r, err
	}
	dbg("metrics read")
	r.rss, _ = srv.rss()
	r.rssPerSub = (r.rss - rss0) / float64(n)
	fwd := fwd1 - fwd0
	if fwd == 0 {
		return r, fmt.Errorf("nothing forwarded during the window")
	}
	r.cpuPerPacket = (cpu1 - cpu0) / time.Duration(fwd)
	r.serverLoad = (cpu1 - cpu0).Seconds() / elapsed.Seconds()
	r.loadLoad = (load1 - load0).Seconds() / elapsed.Seconds()
	r.pps = float64(fwd) / elapsed.Seconds()
	var got, want float64
	for i := range subs {
		got += float64(after[i].count - before[i].count)
		want += float64(after[i].highest - before[i].highest)
	}
	if want > 0 {
		r.loss = max(0, 1-got/want)
	}

	// The kick: how long until the last packet reaches anyone, and how
	// many arrive after it was sent.
	var atKick uint64
	for _, s := range subs {
		c, _, _ := s.snapshot()
		atKick += c
	}
	dbg("kicking")
	kicked := time.Now()
	if err := host.Stage.Kick(ctx, "publisher"); err != nil {
		return r, fmt.Errorf("kicking: %w", err)
	}
	time.Sleep(time.Second)
	var last int64
	var total uint64
	for _, s := range subs {
		c, _, l := s.snapshot()
		last = max(last, l)
		total += c
	}
	r.kickToLast = time.Unix(0, last).Sub(kicked)
	r.afterKick = total - atKick
	return r, nil
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
