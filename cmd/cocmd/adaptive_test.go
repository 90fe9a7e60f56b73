package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/client/mediasource"
)

// nsViewer is a subscriber in a network namespace of its own: cocmd's load
// process (bench media-subscribers), reporting what it receives.
type nsViewer struct {
	name string
	ns   *netns
	in   io.WriteCloser
	out  *bufio.Scanner
	cmd  *exec.Cmd
}

func startNSViewer(t *testing.T, bin string, ns *netns, name, base, token string) *nsViewer {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.name, bin, "bench", "media-subscribers")
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v := &nsViewer{name: name, ns: ns, in: in, out: bufio.NewScanner(out), cmd: cmd}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	cfg, _ := json.Marshal(loadConfig{Base: base, Tokens: []string{token}, Dialers: 1, Widths: true})
	fmt.Fprintf(in, "%s\n", cfg)
	return v
}

func (v *nsViewer) ask(t *testing.T, line string, out any) {
	t.Helper()
	if line != "" {
		fmt.Fprintln(v.in, line)
	}
	if !v.out.Scan() {
		t.Fatalf("%s: the viewer ended: %v", v.name, v.out.Err())
	}
	var reply struct {
		Error string          `json:"error"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(v.out.Bytes(), &reply); err != nil || reply.Error != "" {
		t.Fatalf("%s: %v %s", v.name, err, reply.Error)
	}
	json.Unmarshal(reply.Data, out)
}

func (v *nsViewer) snapshot(t *testing.T) totals {
	t.Helper()
	var tt totals
	v.ask(t, "snapshot", &tt)
	return tt
}

// shape limits what the host sends into the namespace (the viewer's
// downlink) with a token bucket; rate "" lifts the limit.
func (n *netns) shape(t *testing.T, rate string) {
	t.Helper()
	exec.Command("tc", "qdisc", "del", "dev", n.hostDev, "root").Run() // none yet is fine
	if rate != "" {
		run(t, "tc", "qdisc", "add", "dev", n.hostDev, "root", "tbf", "rate", rate, "burst", "3kb", "latency", "200ms")
	}
}

// Each viewer gets the simulcast layer its downlink carries, by itself:
// three viewers, each in a network namespace of its own behind a veth link
// whose host end limits it with a token bucket (300 kbit/s, 1.5 Mbit/s,
// none), settle on the small, middle and full layer, then lose under 1 %
// (once a trial of the next layer up has failed) with their audio never
// interrupted; lifting the 300 kbit/s limit brings
// that viewer to the full layer; at 100 kbit/s a viewer's video pauses and
// its audio goes on. The figures are logged.
func TestBinary_adaptiveLayers(t *testing.T) {
	bin := binary(t)
	small, middle, full := newNetns(t), newNetns(t), newNetns(t)
	small.shape(t, "300kbit")
	middle.shape(t, "1500kbit")
	addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(freePort(t, net.IPv4zero)))
	cmd, err := startServe([]string{bin, "serve", "-listen", addr, "-data", t.TempDir(), "-api-key", testKey, "-log-level", "warn", "-dev", "false"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	_, port, _ := net.SplitHostPort(addr)
	local := "http://127.0.0.1:" + port
	api := func(method, path string, in, out any) {
		t.Helper()
		b, _ := json.Marshal(in)
		req, _ := http.NewRequest(method, local+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil || resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, err)
		}
	}
	var m struct{ ID string }
	api("POST", "/v1/meetings", map[string]any{"title": "adaptive", "type": "WEBINAR"}, &m)
	token := func(uid, preset string) string {
		var p struct{ Token string }
		api("POST", "/v1/meetings/"+m.ID+"/participants", map[string]any{"name": uid, "user_id": uid, "preset": preset}, &p)
		return p.Token
	}
	dir := filepath.Join("..", "..", "..", "shared", "media")
	sim, err := openSimulcastClips(dir)
	if err != nil {
		t.Fatal(err)
	}
	audio, err := mediasource.OpenOgg(filepath.Join(dir, "sine-440hz-opus.ogg"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pub, err := client.Join(ctx, local, token("host", "webinar_host"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	go sim.Play(ctx, true)
	go audio.Play(ctx, true)
	if err := pub.Media.Publish(ctx, sim.LocalTrack(client.SourceCamera), audio.LocalTrack(client.SourceMicrophone)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	viewers := map[*netns]*nsViewer{}
	for _, v := range []struct {
		ns   *netns
		name string
	}{{small, "300 kbit/s"}, {middle, "1.5 Mbit/s"}, {full, "no limit"}} {
		viewers[v.ns] = startNSViewer(t, bin, v.ns, v.name, "http://"+net.JoinHostPort(v.ns.hostIP.String(), port), token("v"+strconv.Itoa(len(viewers)), "webinar_viewer"))
	}
	for _, v := range viewers {
		var firsts []time.Duration
		v.ask(t, "", &firsts)
	}
	// settle waits until each viewer's keyframes have the width wanted,
	// and returns when each first did.
	settle := func(want map[*netns]int32, within time.Duration) map[*netns]time.Duration {
		t.Helper()
		at := map[*netns]time.Duration{}
		t0 := time.Now()
		for len(at) < len(want) {
			if time.Since(t0) > within {
				got := map[string]int32{}
				for ns := range want {
					got[viewers[ns].name] = viewers[ns].snapshot(t).Width
				}
				t.Fatalf("not settled within %v: widths %v", within, got)
			}
			for ns, w := range want {
				if _, ok := at[ns]; !ok && viewers[ns].snapshot(t).Width == w {
					at[ns] = time.Since(t0)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		return at
	}
	settled := settle(map[*netns]int32{small: 320, middle: 640, full: 1280}, 30*time.Second)
	t.Logf("settled (from the start of publishing %v ago): 300 kbit/s on 320 after %v, 1.5 Mbit/s on 640 after %v, no limit on 1280 after %v",
		time.Since(start).Round(time.Millisecond), settled[small].Round(time.Millisecond), settled[middle].Round(time.Millisecond), settled[full].Round(time.Millisecond))

	// After settling: loss and audio in 3 s windows. A viewer whose link
	// cannot carry the next layer tries it once its estimate allows (it
	// is told by losing packets), and is then barred from it for 10 s,
	// 20 s, ...: each viewer must have a window under 1 % lost, and its
	// audio never stops.
	clean := map[*netns]bool{}
	var windows []string
	t0 := time.Now()
	for len(clean) < len(viewers) {
		if time.Since(t0) > 30*time.Second {
			t.Fatalf("no 3 s window under 1 %% lost for every viewer in 30 s: %v", windows)
		}
		before := map[*netns]totals{}
		for ns, v := range viewers {
			before[ns] = v.snapshot(t)
		}
		time.Sleep(3 * time.Second)
		for ns, v := range viewers {
			a, b := before[ns], v.snapshot(t)
			got, want := float64(b.Count-a.Count), float64(b.Highest-a.Highest)
			loss := 0.0
			if want > 0 {
				loss = max(0, 1-got/want)
			}
			windows = append(windows, fmt.Sprintf("%s %.2f%% on %d", v.name, loss*100, b.Width))
			if b.Audio-a.Audio < 120 {
				t.Errorf("%s: %d audio packets in 3 s: audio interrupted", v.name, b.Audio-a.Audio)
			}
			if loss < 0.01 && !clean[ns] {
				clean[ns] = true
				t.Logf("%s: %d packets in 3 s, %.2f %% lost, %d audio packets, on %d (%v after settling)", v.name, b.Count-a.Count, loss*100, b.Audio-a.Audio, b.Width, time.Since(t0).Round(time.Millisecond))
			}
		}
	}
	t.Logf("loss by 3 s window after settling: %v", windows)

	// The limit lifted: the full layer.
	small.shape(t, "")
	lifted := settle(map[*netns]int32{small: 1280}, 30*time.Second)
	t.Logf("300 kbit/s lifted: on 1280 after %v", lifted[small].Round(time.Millisecond))
	// The estimates came from transport-wide feedback, and probes raised
	// them before the moves up.
	req, _ := http.NewRequest("GET", local+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	series := func(name string) uint64 {
		return metricValue(t, string(body), name+"{meeting="+strconv.Quote(m.ID)+"}")
	}
	fb, probes, ok, copies := series("cocmd_media_twcc_feedback_total"), series("cocmd_media_probes_total"),
		series("cocmd_media_probes_succeeded_total"), series("cocmd_media_probe_packets_total")
	t.Logf("transport-wide feedback packets %d; probes %d, %d reached their target, %d packets sent as probes", fb, probes, ok, copies)
	if fb == 0 || ok == 0 {
		t.Errorf("no transport-wide feedback (%d) or no probe that succeeded (%d)", fb, ok)
	}

	// 100 kbit/s: video pauses, audio goes on.
	middle.shape(t, "100kbit")
	v := viewers[middle]
	t0 = time.Now()
	for {
		a := v.snapshot(t)
		time.Sleep(2 * time.Second)
		b := v.snapshot(t)
		if b.Video == a.Video && b.Audio-a.Audio >= 80 {
			t.Logf("100 kbit/s: video paused within %v, %d audio packets in 2 s", time.Since(t0).Round(time.Millisecond), b.Audio-a.Audio)
			break
		}
		if time.Since(t0) > 30*time.Second {
			t.Fatalf("at 100 kbit/s: %d video and %d audio packets in 2 s; want the video paused and the audio going on", b.Video-a.Video, b.Audio-a.Audio)
		}
	}
}
