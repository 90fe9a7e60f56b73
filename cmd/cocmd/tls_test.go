package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/internal/testcert"
	"github.com/cocmd/cocmd/stage"
)

// testCert writes a certificate for 127.0.0.1 and its key, signed by a CA
// of the test's own, and returns their paths and a pool trusting the CA.
func testCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	ca, err := testcert.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), ca.Pool()
}

// With a certificate and key the server speaks HTTPS (with HSTS), the Go
// SDK joins over wss and runs the stage, and plain HTTP on the redirect
// address is sent to HTTPS. A key that does not match its certificate
// stops the server at start, naming both files.
func TestBinary_tls(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	certFile, keyFile, pool := testCert(t, t.TempDir())
	addr, redirectAddr := freeAddr(t), freeAddr(t)
	cmd, err := startServe([]string{bin, "serve", "-listen", addr, "-data", dir, "-api-key", testKey, "-log-level", "warn",
		"-tls-cert", certFile, "-tls-key", keyFile, "-redirect-http", redirectAddr}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	base := "https://" + addr
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, url, body string, out any) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp
	}
	resp := do("GET", base+"/healthz", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Strict-Transport-Security"), "max-age=") {
		t.Fatalf("HTTPS: %d, HSTS %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
	}
	_, tlsPort, _ := net.SplitHostPort(addr)
	resp = do("GET", "http://"+redirectAddr+"/join?x=1", "", nil)
	if want := "https://127.0.0.1:" + tlsPort + "/join?x=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("redirect: %d to %q, want %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	var m struct{ ID string }
	do("POST", base+"/v1/meetings", `{"title":"T","type":"WEBINAR"}`, &m)
	var host, viewer struct{ Token string }
	do("POST", base+"/v1/meetings/"+m.ID+"/participants", `{"name":"H","user_id":"h","preset":"webinar_host"}`, &host)
	do("POST", base+"/v1/meetings/"+m.ID+"/participants", `{"name":"V","user_id":"v","preset":"webinar_viewer"}`, &viewer)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := &client.Options{Dialer: &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second}}
	h, err := client.Join(ctx, base, host.Token, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	v, err := client.Join(ctx, base, viewer.Token, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.Stage.RequestAccess(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, h, "newStageRequest")
	if err := h.Stage.GrantAccess(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, v, "stageRequestApproved")
	if v.Stage.Status() != stage.Accepted {
		t.Fatalf("over TLS the viewer is %v", v.Stage.Status())
	}

	// A key of another certificate.
	otherCert, _, _ := testCert(t, t.TempDir())
	out, err := exec.CommandContext(ctx, bin, "serve", "-listen", freeAddr(t), "-data", t.TempDir(), "-api-key", testKey,
		"-tls-cert", otherCert, "-tls-key", keyFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), otherCert) || !strings.Contains(string(out), keyFile) {
		t.Fatalf("a certificate with another's key: %v\n%s", err, out)
	}
}
