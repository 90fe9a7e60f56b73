package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cocmd/cocmd/client"
	"github.com/cocmd/cocmd/stage"
)

// testCert writes a certificate for 127.0.0.1 and its key, signed by a CA
// of the test's own, and returns their paths and a pool trusting the CA.
func testCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cocmd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return certFile, keyFile, pool
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
