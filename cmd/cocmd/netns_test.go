package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/client/mediasource"
	"github.com/cocmd/cocmd/internal/testcert"
)

// netns is a network namespace of the test's own, joined to this one by a
// veth pair: hostIP here, nsIP there.
type netns struct {
	name           string
	hostIP, nsIP   net.IP
	hostDev, nsDev string
}

// netnsCount numbers the namespaces a test process makes.
var netnsCount atomic.Int32

// run runs a command and fails the test with its output if it fails.
func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns makes the namespace and the link. It fails, never skips, where
// namespaces cannot be made (not root, no ip command): this test's point is
// a real network hop.
func newNetns(t *testing.T) *netns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the ip command (iproute2) is needed to make the test's network namespace")
	}
	id := 20 + (os.Getpid()+int(netnsCount.Add(1))*37)%200 // distinct within the process
	n := &netns{name: fmt.Sprintf("cocmd-test-%d-%d", os.Getpid(), id),
		hostIP: net.IPv4(10, 213, byte(id), 1), nsIP: net.IPv4(10, 213, byte(id), 2),
		hostDev: fmt.Sprintf("cct%dh%d", id, os.Getpid()%1000), nsDev: fmt.Sprintf("cct%dn%d", id, os.Getpid()%1000)}
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() }) // the veth pair goes with it
	run(t, "ip", "link", "add", n.hostDev, "type", "veth", "peer", "name", n.nsDev)
	t.Cleanup(func() { exec.Command("ip", "link", "del", n.hostDev).Run() })
	run(t, "ip", "link", "set", n.nsDev, "netns", n.name)
	run(t, "ip", "addr", "add", n.hostIP.String()+"/24", "dev", n.hostDev)
	run(t, "ip", "link", "set", n.hostDev, "up")
	n.exec(t, "ip", "addr", "add", n.nsIP.String()+"/24", "dev", n.nsDev)
	n.exec(t, "ip", "link", "set", n.nsDev, "up")
	n.exec(t, "ip", "link", "set", "lo", "up")
	return n
}

func (n *netns) exec(t *testing.T, args ...string) {
	t.Helper()
	run(t, append([]string{"ip", "netns", "exec", n.name}, args...)...)
}

// firewall lets out of the namespace nothing but TCP to port: policy
// routing rules (this kernel has neither netfilter tools nor tc's drop
// action) make every UDP datagram and TCP to any other port unroutable.
func (n *netns) firewall(t *testing.T, port int) {
	t.Helper()
	n.exec(t, "ip", "rule", "add", "ipproto", "udp", "prohibit", "prio", "100")
	n.exec(t, "ip", "rule", "add", "ipproto", "tcp", "dport", strconv.Itoa(port), "lookup", "main", "prio", "200")
	n.exec(t, "ip", "rule", "add", "ipproto", "tcp", "prohibit", "prio", "300")
}

// A viewer on a network that lets only TCP to the server's HTTPS port out
// (its own namespace, a veth hop away, UDP unroutable) watches the
// stage: the SDK, told nothing but what the server hands it, reaches media
// through TURN over TLS on the HTTPS port by itself. The server runs
// without ICE-TCP, so TLS is the only way in. Its metrics show the media
// went through TURN/TLS, and a probe shows the firewall drops UDP.
func TestBinary_firewalledViewer(t *testing.T) {
	bin := binary(t)
	ns := newNetns(t)
	certs := t.TempDir()
	if _, err := testcert.Write(certs, ns.hostIP); err != nil {
		t.Fatal(err)
	}
	port := freePort(t, ns.hostIP)
	addr := net.JoinHostPort(ns.hostIP.String(), strconv.Itoa(port))
	ns.firewall(t, port)
	cmd, err := startServe([]string{bin, "serve", "-listen", addr, "-data", t.TempDir(), "-api-key", testKey, "-log-level", "warn",
		"-tls-cert", filepath.Join(certs, "cert.pem"), "-tls-key", filepath.Join(certs, "key.pem"),
		"-media-tcp=false", "-media-loopback=false", "-dev", "false"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	base := "https://" + addr
	caFile := filepath.Join(certs, "ca.pem")
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(caPEM)
	tlsCfg := &tls.Config{RootCAs: roots}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 10 * time.Second}
	api := func(method, path string, in, out any) []byte {
		t.Helper()
		var body io.Reader
		if in != nil {
			b, _ := json.Marshal(in)
			body = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, body)
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
		return b
	}

	// The firewall drops UDP: a datagram from the namespace to the media
	// port does not arrive (the probe listens on the host side).
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ns.hostIP})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	exec.Command("ip", "netns", "exec", ns.name, "bash", "-c",
		fmt.Sprintf("echo probe > /dev/udp/%s/%d", ns.hostIP, probe.LocalAddr().(*net.UDPAddr).Port)).Run() // refused: fine
	probe.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, _, err := probe.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatal("a UDP datagram got out of the firewalled namespace")
	}

	var m struct{ ID string }
	api("POST", "/v1/meetings", map[string]any{"title": "firewall", "type": "WEBINAR"}, &m)
	token := func(uid, preset string) string {
		var p struct{ Token string }
		api("POST", "/v1/meetings/"+m.ID+"/participants", map[string]any{"name": uid, "user_id": uid, "preset": preset}, &p)
		return p.Token
	}
	// The publisher, on this side, plays the test clip.
	video, err := mediasource.OpenIVF(filepath.Join("..", "..", "..", "shared", "media", "testsrc-640x360-30fps-vp8.ivf"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := client.Join(ctx, base, token("host", "webinar_host"), &client.Options{Dialer: &websocket.Dialer{TLSClientConfig: tlsCfg, HandshakeTimeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Stage.Join(ctx); err != nil {
		t.Fatal(err)
	}
	go video.Play(ctx, true)
	if err := pub.Media.Publish(ctx, video.LocalTrack(client.SourceCamera)); err != nil {
		t.Fatal(err)
	}

	// The viewer, in the namespace: cocmd's own load process, with the
	// SDK's default options, trusting the tests' CA.
	viewer := exec.Command("ip", "netns", "exec", ns.name, bin, "bench", "media-subscribers")
	viewer.Env = append(os.Environ(), "SSL_CERT_FILE="+caFile)
	viewer.Stderr = os.Stderr
	in, _ := viewer.StdinPipe()
	outPipe, _ := viewer.StdoutPipe()
	if err := viewer.Start(); err != nil {
		t.Fatal(err)
	}
	defer viewer.Wait()
	defer in.Close()
	out := bufio.NewScanner(outPipe)
	ask := func(line string, v any) {
		t.Helper()
		if line != "" {
			fmt.Fprintln(in, line)
		}
		if !out.Scan() {
			t.Fatalf("the viewer ended: %v", out.Err())
		}
		var reply struct {
			Error string          `json:"error"`
			Data  json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(out.Bytes(), &reply); err != nil || reply.Error != "" {
			t.Fatalf("the viewer: %v %s", err, reply.Error)
		}
		json.Unmarshal(reply.Data, v)
	}
	cfg, _ := json.Marshal(loadConfig{Base: base, Tokens: []string{token("viewer", "webinar_viewer")}, Dialers: 1})
	fmt.Fprintf(in, "%s\n", cfg)
	var firsts []time.Duration
	ask("", &firsts) // once it receives
	time.Sleep(2 * time.Second)
	var got totals
	ask("snapshot", &got)
	if got.Count < 30 {
		t.Fatalf("the firewalled viewer received %d packets in 2 s", got.Count)
	}
	metrics := string(api("GET", "/metrics", nil, nil))
	fromTLS := metricValue(t, metrics, `cocmd_turn_relayed_datagrams_total{transport="tls",direction="from_media"}`)
	if fromTLS < got.Count {
		t.Errorf("%d datagrams relayed over TURN/TLS to clients, fewer than the %d media packets the viewer got: its media took another path", fromTLS, got.Count)
	}
	t.Logf("the firewalled viewer got its first packet %v after joining and %d packets; %d datagrams relayed to it over TURN/TLS", firsts[0], got.Count, fromTLS)
}

func freePort(t *testing.T, ip net.IP) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func metricValue(t *testing.T, metrics, series string) uint64 {
	t.Helper()
	m := regexp.MustCompile(regexp.QuoteMeta(series) + ` (\d+)`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatalf("no %s in the metrics:\n%s", series, metrics)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}
