package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cocmd/cocmd"
	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/media"
	"github.com/cocmd/cocmd/meeting"
	"github.com/cocmd/cocmd/relay"
	"github.com/cocmd/cocmd/server"
	"github.com/cocmd/cocmd/store/sqlite"
	"github.com/cocmd/cocmd/webhook"
)

// TestMain trusts the tests' CA (testCA) process-wide, through
// SSL_CERT_FILE, before anything loads the system roots: pion verifies a
// turns: server against them, with no way to pass roots of its own.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cocmd-ca-")
	if err != nil {
		panic(err)
	}
	testCA = newTestCA(dir)
	os.Setenv("SSL_CERT_FILE", filepath.Join(dir, "ca.pem"))
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

const apiKey = "ck_test_key_0123456789"

// testServer is a real cocmd server on a loopback port.
type testServer struct {
	t    *testing.T
	URL  string
	Dir  string
	srv  *server.Server
	reg  *meeting.Registry
	sfu  *media.SFU
	turn *relay.Server // with opts.turn
	db   *sqlite.DB
	hs   *http.Server
	opts testOptions

	webhooks    *webhook.Deliverer // with opts.webhooks
	stopDeliver func()
}

type testOptions struct {
	grace              time.Duration
	now                func() time.Time
	addr               string
	queue              int
	rate               float64
	burst              int
	tokenTTL           time.Duration
	sndbuf             int
	changes            float64 // ChangesPerSecond; 0: generous, for tests that race
	writeTimeout, ping time.Duration
	dev                bool
	limits             server.ConnLimits
	iceTCP             bool          // media over TCP too, on the HTTP port
	idle               time.Duration // the HTTP idle timeout; 0: the default
	turn               bool          // the embedded TURN server, on the media and HTTP ports
	tls                bool          // HTTPS with testCA's certificate (and TURN over TLS)
	// turnURLs, if set, are the TURN URLs clients are told, given the
	// media (UDP) and HTTP (TCP) ports: to test one transport at a time.
	turnURLs func(udp, tcp int) []string
	// webhooks, if set, runs webhook delivery with this configuration
	// (Store, Body and ID filled in), to loopback receivers.
	webhooks *webhook.Config
	// maxConns is Config.MaxConnections.
	maxConns int
}

// turnSecret is the test servers' TURN shared secret.
var turnSecret = []byte("test-turn-secret-0123456789")

func startServer(t *testing.T, o testOptions) *testServer {
	t.Helper()
	if o.grace == 0 {
		o.grace = 5 * time.Second
	}
	if o.addr == "" {
		o.addr = "127.0.0.1:0"
	}
	ts := &testServer{t: t, Dir: t.TempDir(), opts: o}
	ts.start()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) start() {
	t := ts.t
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(ts.Dir, "cocmd.db"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := server.Bootstrap(ctx, db, apiKey, true)
	if err != nil {
		t.Fatal(err)
	}
	if keys.Keyring, err = server.OpenKeyring(ctx, filepath.Join(ts.Dir, "keys.json"), db); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var ln net.Listener
	for range 50 { // a restart may find the port still closing
		if ln, err = net.Listen("tcp", ts.opts.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	web := net.Listener(ln)
	var iceLn net.Listener
	var routes server.TCPRoutes
	if ts.opts.iceTCP || ts.opts.turn {
		routes = server.SplitTCP(ln, 10*time.Second)
		web = routes.Web
		if ts.opts.iceTCP {
			iceLn = routes.ICE
		}
		if !ts.opts.turn {
			routes.TURN.Close()
		}
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	udpPort, tcpPort := udp.LocalAddr().(*net.UDPAddr).Port, ln.Addr().(*net.TCPAddr).Port
	// Loopback carries anything: start subscribers' estimates high, so
	// that tests of layer choice by size need not wait for them to climb.
	mcfg := media.Config{Conn: udp, TCP: iceLn, Loopback: true, Logger: log, InitialEstimate: 50_000_000}
	ice := server.ICEServers{}
	if ts.opts.turn {
		lo := netip.MustParseAddr("127.0.0.1")
		ts.turn, err = relay.New(relay.Config{Secret: turnSecret, UDP: udp, MediaPort: udpPort, MediaBind: lo,
			MediaIPs: []netip.Addr{lo}, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		go ts.turn.ServeTCP(routes.TURN)
		mcfg.Divert = ts.turn
		ice = server.ICEServers{Secret: turnSecret, UDPPort: udpPort} // as cocmd serve offers
		if ts.opts.tls {
			ice = server.ICEServers{Secret: turnSecret, TLSPort: tcpPort}
		}
		if ts.opts.turnURLs != nil {
			ice.URLs = ts.opts.turnURLs(udpPort, tcpPort)
		}
	}
	if !ts.opts.iceTCP && ts.opts.turn {
		go func() { // nobody's ICE-TCP: close what comes
			for {
				c, err := routes.ICE.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	if ts.sfu, err = media.New(mcfg); err != nil {
		t.Fatal(err)
	}
	ts.reg = meeting.NewRegistry(db, meeting.Config{Grace: ts.opts.grace, Now: ts.opts.now, Logger: log, QueueBytes: ts.opts.queue, CountEvery: 100 * time.Millisecond, Media: ts.sfu})
	changes, changesBurst := 1000.0, 1000
	if ts.opts.changes > 0 {
		changes, changesBurst = ts.opts.changes, 5
	}
	var whcfg server.Config
	if ts.opts.webhooks != nil {
		c := *ts.opts.webhooks
		c.Store, c.Body, c.ID, c.Logger = db, server.WebhookBody, server.WebhookID, log
		if c.Client == nil {
			c.Client = webhook.NewClient(2*time.Second, true)
		}
		ts.webhooks = webhook.NewDeliverer(c)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			ts.webhooks.Run(ctx)
		}()
		ts.stopDeliver = func() { cancel(); <-done }
		whcfg.Webhooks, whcfg.WebhooksAllowPrivate = ts.webhooks, true
	}
	ts.srv = server.New(server.Config{Webhooks: whcfg.Webhooks, WebhooksAllowPrivate: whcfg.WebhooksAllowPrivate, Logger: log, ChangesPerSecond: changes, ChangesBurst: changesBurst, Now: ts.opts.now, RequestsPerSecond: ts.opts.rate, Burst: ts.opts.burst,
		TokenTTL: ts.opts.tokenTTL, SendBuffer: ts.opts.sndbuf, WriteTimeout: ts.opts.writeTimeout, PingInterval: ts.opts.ping, OpenAPI: cocmd.OpenAPI, Media: ts.sfu,
		Web: webFS(t), Dev: ts.opts.dev, Limits: ts.opts.limits, ICE: ice, TURN: ts.turn, MaxConnections: ts.opts.maxConns}, db, ts.reg, keys)
	ts.opts.addr = ln.Addr().String()
	ts.URL = "http://" + ts.opts.addr
	ts.db = db
	ts.hs = server.HTTPServer(ts.srv.Handler(), server.HTTPTimeouts{Idle: ts.opts.idle}, nil)
	var tlsCfg *tls.Config
	if ts.opts.tls {
		tlsCfg = testCA.serverConfig()
		ts.URL = "https://" + ts.opts.addr
	}
	httpLn, turnTLS := ts.srv.WebListener(web, tlsCfg)
	ts.hs.TLSConfig = tlsCfg
	go ts.hs.Serve(httpLn)
	if turnTLS != nil {
		if ts.turn != nil {
			go ts.turn.ServeTCP(turnTLS)
		} else {
			turnTLS.Close()
		}
	}
}

// stop shuts the server down as SIGTERM would.
func (ts *testServer) stop() {
	if ts.hs == nil {
		return
	}
	ts.hs.Close()
	if ts.stopDeliver != nil {
		ts.stopDeliver()
		ts.stopDeliver = nil
	}
	ts.reg.Close()
	ts.srv.Wait()
	ts.sfu.Close()
	if ts.turn != nil {
		ts.turn.Close()
	}
	ts.db.Close()
	ts.hs = nil
}

// api calls the REST API; out may be nil. It returns the HTTP status.
func (ts *testServer) api(method, path string, in, out any) int {
	ts.t.Helper()
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case string:
		body = bytes.NewBufferString(v)
	default:
		b, _ := json.Marshal(v)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, ts.URL+path, body)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			ts.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func (ts *testServer) mustAPI(method, path string, in, out any) {
	ts.t.Helper()
	var raw json.RawMessage
	if code := ts.api(method, path, in, &raw); code >= 300 {
		ts.t.Fatalf("%s %s: %d %s", method, path, code, raw)
	}
	if out != nil {
		json.Unmarshal(raw, out)
	}
}

func (ts *testServer) meeting(body map[string]any) string {
	ts.t.Helper()
	var m server.Meeting
	ts.mustAPI("POST", "/v1/meetings", body, &m)
	return m.ID
}

// participant adds a participant and returns its token.
func (ts *testServer) participant(mid, uid, preset string) string {
	ts.t.Helper()
	var p server.AddedParticipant
	ts.mustAPI("POST", "/v1/meetings/"+mid+"/participants", map[string]any{"name": "Name " + uid, "user_id": uid, "preset": preset}, &p)
	return p.Token
}

func (ts *testServer) join(token string) *client.Meeting {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := client.Join(ctx, ts.URL, token, &client.Options{ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond})
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { m.Close() })
	return m
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor reads events until one satisfies ok.
func waitFor(t *testing.T, m *client.Meeting, what string, ok func(client.Event) bool) client.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, open := <-m.Events():
			if !open {
				t.Fatalf("waiting for %s: events closed (%v)", what, m.Err())
			}
			if ok(e) {
				return e
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func named(name string) func(client.Event) bool {
	return func(e client.Event) bool { return e.Name() == name }
}

func uid(i int) string { return fmt.Sprintf("viewer-%03d", i) }

func webFS(t *testing.T) fs.FS {
	w, err := fs.Sub(cocmd.Web, "web")
	if err != nil {
		t.Fatal(err)
	}
	return w
}
