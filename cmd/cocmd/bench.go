package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

const benchKey = "ck_bench_key_0123456789"

// verbose is set by bench -v.
var verbose bool

const benchUsage = `usage: cocmd bench stage [-n 1000,5000,10000] [-rounds 5] [-server-cpu 0] [-load-cpu 1]
       cocmd bench media [-n 50,100,200] [-window 10s] [-server-cpu 0] [-load-cpu 1] [-media ../shared/media]
       cocmd bench webhooks [-entries 4000] [-grants 400] [-server-cpu 0]
       cocmd bench cluster [-n 1000,3000] [-nodes 3] [-rounds 5]`

func bench(args []string) error {
	if len(args) > 0 && args[0] == "media" {
		return benchMedia(args[1:])
	}
	if len(args) > 0 && args[0] == "webhooks" {
		return benchWebhooks(args[1:])
	}
	if len(args) > 0 && args[0] == "cluster" {
		return benchCluster(args[1:])
	}
	if len(args) > 0 && args[0] == "media-subscribers" { // a load process of bench media -procs
		return benchMediaSubscribers()
	}
	if len(args) == 0 || args[0] != "stage" {
		return errors.New(benchUsage)
	}
	fs := flag.NewFlagSet("bench stage", flag.ContinueOnError)
	ns := fs.String("n", "1000,5000,10000", "comma-separated viewer counts")
	rounds := fs.Int("rounds", 5, "grants per N (each one measured at every viewer)")
	serverCPU := fs.Int("server-cpu", 0, "CPU the server is pinned to (-1: not pinned)")
	loadCPU := fs.Int("load-cpu", 1, "CPU this load process is pinned to (-1: not pinned)")
	dial := fs.Int("dialers", 64, "concurrent connection attempts")
	cpuprofile := fs.String("cpuprofile", "", "write the load process's CPU profile of the grant rounds here")
	fs.BoolVar(&verbose, "v", false, "print each round's figures to stderr")
	debug := fs.String("server-debug-addr", "", "passed to the server's -debug-addr, to profile it during the run")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	counts, err := parseCounts(*ns, 2)
	if err != nil {
		return err
	}
	if err := pinLoad(*loadCPU); err != nil {
		return err
	}
	fmt.Printf("cocmd bench stage: %d CPUs, server on CPU %d, load on CPU %d, %d grants per N\n\n",
		runtime.NumCPU(), *serverCPU, *loadCPU, *rounds)
	fmt.Println("| viewers | grant → update at every viewer: p50 | p99 | max | read by the load: p50 | p99 | connect all | joins/s | server RSS per viewer | server CPU per grant | load CPU per grant |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range counts {
		r, err := benchStage(n, stageOptions{rounds: *rounds, cpu: *serverCPU, dialers: *dial, debugAddr: *debug, cpuprofile: *cpuprofile})
		if err != nil {
			return fmt.Errorf("with %d viewers: %w", n, err)
		}
		fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %.0f | %.1f KB | %s | %s |\n", n, ms(r.p50), ms(r.p99), ms(r.max),
			ms(r.readP50), ms(r.readP99), r.connect.Round(time.Millisecond), float64(n)/r.connect.Seconds(), r.perViewer/1024, ms(r.serverCPU), ms(r.loadCPU))
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

type stageResult struct {
	p50, p99, max time.Duration // until the update reached each viewer's socket
	readP50       time.Duration // until the load process had read it
	readP99       time.Duration
	serverCPU     time.Duration // per grant
	loadCPU       time.Duration // per grant
	connect       time.Duration
	perViewer     float64 // bytes
}

// benchServer is a cocmd serve child process.
type benchServer struct {
	cmd  *exec.Cmd
	base string
	dir  string
}

func startBenchServer(cpu int, debugAddr string, extra ...string) (*benchServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cocmd-bench-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	// All the load comes from one address: lift the per-address limits.
	argv := append([]string{exe, "serve", "-listen", addr, "-data", dir, "-api-key", benchKey, "-log-level", "warn",
		"-conn-limit", "1000000", "-conn-limit-unauthenticated", "1000000"}, extra...)
	if debugAddr != "" {
		argv = append(argv, "-debug-addr", debugAddr)
	}
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	cmd, err := startServe(argv, 2*time.Minute) // a cluster's node waits for JetStream
	if err != nil {
		return nil, err
	}
	scheme := "http://"
	if slices.Contains(extra, "-tls-cert") {
		scheme = "https://"
	}
	return &benchServer{cmd: cmd, base: scheme + addr, dir: dir}, nil
}

// startServe runs argv (a cocmd serve command line) and returns once the
// server says it is listening.
func startServe(argv []string, timeout time.Duration) (*exec.Cmd, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ready, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "cocmd listening on") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
		return cmd, nil
	case <-ended: // its output ended before it listened: it exited
		cmd.Wait()
		return nil, fmt.Errorf("%s exited before listening (%v)", argv[0], cmd.ProcessState)
	case <-time.After(timeout):
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("%s did not start within %v", argv[0], timeout)
	}
}

func (s *benchServer) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(s.dir)
}

// cpu returns the CPU time (user + system) the server has used.
func (s *benchServer) cpu() (time.Duration, error) {
	return procCPU(s.cmd.Process.Pid)
}

// procCPU reads a process's user and system time from /proc.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// rss returns the server's resident memory in bytes. Under taskset the
// server is taskset's child: exec replaces taskset, so the pid is the same.
func (s *benchServer) rss() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func (s *benchServer) api(method, path string, in, out any) error {
	b, _ := json.Marshal(in)
	req, _ := http.NewRequest(method, s.base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+benchKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s", method, path, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// viewer is one benchmark connection. After the welcome it reads the raw
// socket with recvmsg and SO_TIMESTAMPNS, so that for each
// peerStageStatusUpdate it knows both when the kernel received it (arrival:
// the server's part, whatever this process is doing) and when this process
// read it (read: what an application on this core would see).
type viewer struct {
	uid     string
	token   string
	conn    *websocket.Conn
	arrival atomic.Int64 // unix ns, kernel receive time of the last update
	read    atomic.Int64 // unix ns, when it was read
	seen    atomic.Int64 // how many updates it has had
}

var peerUpdate = []byte(`"event":"peerStageStatusUpdate"`)

func (v *viewer) readLoop() {
	rc, err := v.conn.NetConn().(syscall.Conn).SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	})
	buf := make([]byte, 4096)
	oob := make([]byte, 128)
	for {
		var n, oobn int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil || rerr != nil || n == 0 {
			return
		}
		now := time.Now().UnixNano()
		if !bytes.Contains(buf[:n], peerUpdate) {
			continue
		}
		at := now
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= 16 {
					ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
					at = ts.Nano()
				}
			}
		}
		v.arrival.Store(at)
		v.read.Store(now)
		v.seen.Add(1)
	}
}

// stageOptions are the settings of one benchStage run.
type stageOptions struct {
	rounds, cpu, dialers  int
	debugAddr, cpuprofile string
}

func benchStage(n int, o stageOptions) (stageResult, error) {
	var r stageResult
	srv, err := startBenchServer(o.cpu, o.debugAddr)
	if err != nil {
		return r, err
	}
	defer srv.stop()
	hostToken, viewers, err := srv.webinar(n)
	if err != nil {
		return r, err
	}
	wsURL := strings.Replace(srv.base, "http", "ws", 1) + "/v1/realtime"
	host, err := connectViewer(wsURL, hostToken)
	if err != nil {
		return r, err
	}
	defer host.Close()
	go func() { // the host's events are not measured; keep them flowing
		for {
			if _, _, err := host.ReadMessage(); err != nil {
				return
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	before, err := srv.rss()
	if err != nil {
		return r, err
	}
	start := time.Now()
	closeAll, err := connectAll(viewers, o.dialers, func(int) string { return wsURL })
	if err != nil {
		return r, err
	}
	defer closeAll()
	r.connect = time.Since(start)
	time.Sleep(time.Second)
	after, err := srv.rss()
	if err != nil {
		return r, err
	}
	r.perViewer = (after - before) / float64(n)

	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return r, err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	srvCPU0, err := srv.cpu()
	if err != nil {
		return r, err
	}
	loadCPU0, _ := procCPU(os.Getpid())
	lat, readLat, err := grantRounds(host, viewers, o.rounds)
	if err != nil {
		return r, err
	}
	srvCPU1, _ := srv.cpu()
	loadCPU1, _ := procCPU(os.Getpid())
	r.serverCPU = (srvCPU1 - srvCPU0) / time.Duration(o.rounds)
	r.loadCPU = (loadCPU1 - loadCPU0) / time.Duration(o.rounds)
	slices.Sort(lat)
	slices.Sort(readLat)
	r.p50, r.p99, r.max = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	r.readP50, r.readP99 = readLat[len(readLat)/2], readLat[len(readLat)*99/100]
	return r, nil
}

// connectAll connects every viewer, viewer i to wsURL(i), dialers at a
// time, and starts reading; the function it returns closes them.
func connectAll(viewers []*viewer, dialers int, wsURL func(i int) string) (func(), error) {
	closeAll := func() {
		for _, v := range viewers {
			if v.conn != nil {
				v.conn.Close()
			}
		}
	}
	if err := parallel(dialers, len(viewers), func(i int) error {
		c, err := connectViewer(wsURL(i), viewers[i].token)
		viewers[i].conn = c
		return err
	}); err != nil {
		closeAll()
		return nil, err
	}
	for _, v := range viewers {
		go v.readLoop()
	}
	return closeAll, nil
}

// webinar creates a meeting with a host and n viewers, and returns their
// tokens.
func (s *benchServer) webinar(n int) (string, []*viewer, error) {
	var m struct{ ID string }
	if err := s.api("POST", "/v1/meetings", map[string]any{"title": "bench", "type": "WEBINAR"}, &m); err != nil {
		return "", nil, err
	}
	add := func(uid, preset string) (string, error) {
		var p struct{ Token string }
		err := s.api("POST", "/v1/meetings/"+m.ID+"/participants", map[string]any{"name": uid, "user_id": uid, "preset": preset}, &p)
		return p.Token, err
	}
	hostToken, err := add("host", "webinar_host")
	if err != nil {
		return "", nil, err
	}
	viewers := make([]*viewer, n)
	err = parallel(16, n, func(i int) error {
		uid := fmt.Sprintf("v%05d", i)
		tok, err := add(uid, "webinar_viewer")
		viewers[i] = &viewer{uid: uid, token: tok}
		return err
	})
	return hostToken, viewers, err
}

var benchDialer = &websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024, HandshakeTimeout: 30 * time.Second}

// connectViewer opens a realtime connection and reads its welcome.
func connectViewer(wsURL, token string) (*websocket.Conn, error) {
	c, resp, err := benchDialer.Dial(wsURL, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			err = fmt.Errorf("%w: %d %s", err, resp.StatusCode, b)
		}
		return nil, err
	}
	if _, _, err := c.ReadMessage(); err != nil { // the welcome
		c.Close()
		return nil, err
	}
	return c, nil
}

// grantRounds has the host grant one viewer per round and returns, for every
// other viewer and round, when the update reached its socket and when it was
// read, from the moment the grant was sent.
func grantRounds(host *websocket.Conn, viewers []*viewer, rounds int) (lat, readLat []time.Duration, err error) {
	n := len(viewers)
	for round := range rounds {
		target := viewers[round*(n/rounds)]
		want := make([]int64, n)
		for i, v := range viewers {
			want[i] = v.seen.Load() + 1
		}
		req := fmt.Sprintf(`{"id":%d,"method":"stage.grantAccess","params":{"user_ids":[%q]}}`, round+1, target.uid)
		t0 := time.Now()
		if err := host.WriteMessage(websocket.TextMessage, []byte(req)); err != nil {
			return nil, nil, err
		}
		deadline := time.Now().Add(60 * time.Second)
		for i, v := range viewers {
			if v == target {
				continue // told by stageStatusUpdate, not a peer update
			}
			for v.seen.Load() < want[i] {
				if time.Now().After(deadline) {
					return nil, nil, fmt.Errorf("viewer %s never got the update", v.uid)
				}
				time.Sleep(time.Millisecond)
			}
			lat = append(lat, time.Duration(v.arrival.Load()-t0.UnixNano()))
			readLat = append(readLat, time.Duration(v.read.Load()-t0.UnixNano()))
		}
		if verbose {
			last := slices.Clone(lat[len(lat)-(n-1):])
			slices.Sort(last)
			fmt.Fprintf(os.Stderr, "  N=%d round %d: arrival p50 %s max %s\n", n, round, ms(last[len(last)/2]), ms(last[len(last)-1]))
		}
		time.Sleep(300 * time.Millisecond)
	}
	return lat, readLat, nil
}

// parallel runs fn(0..n-1) on w workers and returns the first error.
func parallel(w, n int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range w {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// parseCounts reads -n: comma-separated counts of at least least.
func parseCounts(list string, least int) ([]int, error) {
	var counts []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < least {
			return nil, fmt.Errorf("bad -n %q", s)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

// pinLoad pins this process (and the processes it starts) to cpu, and to
// one thread of Go code; -1 leaves it be. Affinity belongs to a thread,
// so every thread of the process is pinned; threads made later, and
// children, inherit it.
func pinLoad(cpu int) error {
	if cpu < 0 {
		return nil
	}
	runtime.GOMAXPROCS(1)
	var set unix.CPUSet
	set.Set(cpu)
	// Twice: a thread may start while the first pass runs.
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("pinning the load to CPU %d: %w", cpu, err)
			}
		}
	}
	return nil
}
