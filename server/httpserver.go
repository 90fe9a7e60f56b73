package server

import (
	"log"
	"net"
	"net/http"
	"strings"
	"time"
)

// HTTPTimeouts bound how long a connection may take over a request and
// how long it may sit idle between requests; zero fields take the
// defaults. A connection upgraded to WebSocket leaves them behind: its
// liveness comes from pings.
type HTTPTimeouts struct {
	ReadHeader time.Duration // the request line and headers; default 10s
	Read       time.Duration // the whole request, body included; default 30s
	Write      time.Duration // the response; default 60s
	Idle       time.Duration // between two requests on a kept-alive connection; default 120s
}

func (t HTTPTimeouts) withDefaults() HTTPTimeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.ReadHeader, 10*time.Second)
	def(&t.Read, 30*time.Second)
	def(&t.Write, 60*time.Second)
	def(&t.Idle, 120*time.Second)
	return t
}

// HTTPServer returns the http.Server to serve h with: every timeout set,
// so that neither a slow client nor an idle one holds a connection (and its
// memory and descriptor) for ever.
func HTTPServer(h http.Handler, t HTTPTimeouts, errorLog *log.Logger) *http.Server {
	t = t.withDefaults()
	return &http.Server{Handler: h, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read,
		WriteTimeout: t.Write, IdleTimeout: t.Idle, ErrorLog: errorLog}
}

// RedirectToHTTPS answers every plain HTTP request with a permanent
// redirect to the same host and path over HTTPS, on tlsPort (left out when
// it is 443).
func RedirectToHTTPS(tlsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			http.Error(w, "a Host header is required", http.StatusBadRequest)
			return
		}
		if tlsPort != "443" {
			host = net.JoinHostPort(host, tlsPort)
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]" // an IPv6 literal
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}
