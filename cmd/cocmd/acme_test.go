package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// pebble runs Let's Encrypt's test ACME server in the test's process, on
// loopback: its validation authority resolves every name to 127.0.0.1
// (through the challenge test server's DNS) and checks HTTP-01 on httpPort
// and TLS-ALPN-01 on tlsPort. Certificates live validity seconds. It
// returns the directory URL, a PEM file of the root of its own HTTPS, and
// a function that takes it down.
func pebble(t *testing.T, httpPort, tlsPort int, validity uint64) (dirURL, rootFile string, stop func()) {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	quiet := log.New(io.Discard, "", 0)
	dnsAddr := freeUDP(t)
	dns, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{dnsAddr}, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	dns.SetDefaultDNSIPv6("") // A records only: the listeners are on 127.0.0.1
	go dns.Run()
	t.Cleanup(dns.Shutdown)
	store := db.NewMemoryStore()
	authority := ca.New(quiet, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {ValidityPeriod: validity}})
	validator := va.New(quiet, httpPort, tlsPort, false, dnsAddr, store)
	front := wfe.New(quiet, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(srv.Close)
	rootFile = filepath.Join(t.TempDir(), "pebble-https.pem")
	os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	return srv.URL + wfe.DirectoryPath, rootFile, srv.Close
}

func freeUDP(t *testing.T) string {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// served returns the leaf certificate the server at addr answers name with.
func served(addr, name string) (*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// With -domain, the server gets its certificate from the ACME server by
// itself (the CA validates over HTTP-01 or TLS-ALPN-01 against the real
// listeners), serves it, and renews it before it expires. A ClientHello
// for a name it has no certificate for is refused. Restarted while the CA
// is down, it serves the certificate it stored; with none stored, it says
// it cannot.
func TestBinary_acme(t *testing.T) {
	bin := binary(t)
	const domain = "meet.cocmd.test"
	addr, redirectAddr := freeAddr(t), freeAddr(t)
	dirURL, root, stopCA := pebble(t, port(redirectAddr), port(addr), 20)
	dir := t.TempDir()
	args := func(ca string) []string {
		return []string{bin, "serve", "-listen", addr, "-redirect-http", redirectAddr, "-data", dir, "-api-key", testKey,
			"-log-level", "warn", "-domain", domain, "-acme-ca", ca, "-acme-ca-root", root, "-acme-renew-check", "1s"}
	}
	cmd, err := startServe(args(dirURL), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	cert, err := served(addr, domain)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cert.Issuer.CommonName, "Pebble") || len(cert.DNSNames) != 1 || cert.DNSNames[0] != domain {
		t.Fatalf("served %v for %v, issued by %q", cert.Subject, cert.DNSNames, cert.Issuer.CommonName)
	}
	if _, err := served(addr, "other.cocmd.test"); err == nil {
		t.Error("a ClientHello for an unknown name got a certificate")
	}
	// Plain HTTP is redirected to the name's HTTPS.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+redirectAddr+"/join", nil)
	req.Host = domain
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://" + net.JoinHostPort(domain, strconv.Itoa(port(addr))) + "/join"; resp.Header.Get("Location") != want {
		t.Errorf("redirect to %q, want %q", resp.Header.Get("Location"), want)
	}

	// The certificate lives 20 s: it is renewed once a third is left.
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := served(addr, domain)
		if err == nil && c.NotAfter.After(cert.NotAfter) {
			if time.Now().After(cert.NotAfter) {
				t.Fatalf("renewed only after the first certificate expired (%v)", cert.NotAfter)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the certificate was not renewed")
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Restarted with the CA down: the stored certificate is served.
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	stopCA()
	cmd, err = startServe(args(dirURL), 2*time.Minute)
	if err != nil {
		t.Fatalf("with the CA down and a stored certificate: %v", err)
	}
	if c, err := served(addr, domain); err != nil || c.DNSNames[0] != domain {
		t.Fatalf("after a restart with the CA down: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	// A new data directory and the CA down: no certificate, a clear error.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fresh := args(dirURL)
	for i, a := range fresh {
		if a == dir {
			fresh[i] = t.TempDir()
		}
	}
	out, err := exec.CommandContext(ctx, fresh[0], fresh[1:]...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no certificate for "+domain) {
		t.Fatalf("no certificate and the CA down: %v\n%s", err, out)
	}
}

// Two nodes of a cluster get one certificate between them: the ACME
// account, certificates and challenge tokens live in the cluster's shared
// store, one node obtains the certificate (under the store's lock) and the
// other serves the same one. The CA validates against node 0's listeners
// only, as if a balancer sent it there: when node 1 wins the lock, node 0
// answers its challenge from the store. Without the shared store, node 1
// could not get a certificate at all.
func TestBinary_clusterACME(t *testing.T) {
	const domain = "meet.cocmd.test"
	c := newCluster(t, 2)
	redirects := []string{freeAddr(t), freeAddr(t)}
	// The CA reaches node 0's listeners through forwarders that wait for
	// node 0 to listen: a node starts listening once it joined the
	// cluster, and node 1 may ask the CA before node 0 does.
	httpFwd, tlsFwd := forwardTo(t, redirects[0]), forwardTo(t, c.addrs[0])
	dirURL, root, _ := pebble(t, port(httpFwd), port(tlsFwd), 3600)
	for i := range c.extra {
		c.extra[i] = []string{"-redirect-http", redirects[i], "-domain", domain, "-acme-ca", dirURL, "-acme-ca-root", root}
	}
	c.startAll() // they race for the certificate (no /readyz: HTTPS only)
	if t.Failed() {
		t.FailNow()
	}
	var serials []string
	for i, addr := range c.addrs {
		cert, err := served(addr, domain)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if !strings.Contains(cert.Issuer.CommonName, "Pebble") || cert.DNSNames[0] != domain {
			t.Fatalf("node %d serves %v, issued by %q", i, cert.DNSNames, cert.Issuer.CommonName)
		}
		serials = append(serials, cert.SerialNumber.String())
	}
	if serials[0] != serials[1] {
		t.Fatalf("the nodes serve different certificates: serials %v", serials)
	}
	t.Logf("both nodes serve certificate %s", serials[0])
}

// forwardTo listens on a loopback port and forwards each connection to
// addr, trying to reach it for up to 30 s; it returns its address.
func forwardTo(t *testing.T, addr string) string {
	t.Helper()
	return proxyTCP(t, func() (net.Conn, error) {
		for deadline := time.Now().Add(30 * time.Second); ; {
			out, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil || time.Now().After(deadline) {
				return out, err
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
