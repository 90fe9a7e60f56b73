package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ACMEConfig says where certificates come from when the server gets its
// own over ACME.
type ACMEConfig struct {
	// Domains are the names to get a certificate for; the first is the
	// one a ClientHello without a server name is answered with.
	Domains []string
	// Dir keeps the certificates, their keys and the ACME account, in the
	// data directory (0700), unless Storage is set.
	Dir string
	// Storage, if set, keeps them instead: in a cluster, a storage every
	// node shares (natsjs.CertStorage), with locks, so that one node
	// obtains and renews each certificate for all, and any node answers
	// the CA's challenge for another.
	Storage certmagic.Storage
	// CA is the ACME directory URL; empty means Let's Encrypt's.
	CA string
	// Email, if set, is the account's contact, for expiry notices.
	Email string
	// Roots, if set, are the only roots trusted for the CA's own HTTPS
	// (a private CA, the tests' pebble); nil means the system's.
	Roots *x509.CertPool
	// RenewCheck is how often certificates are checked for renewal; a
	// certificate is renewed once a third of its life is left. Default 10m.
	RenewCheck time.Duration
	// Logger receives what the ACME client does.
	Logger *slog.Logger
}

// ACME gets and renews the server's certificates by itself (certmagic:
// HTTP-01 on the redirect listener, TLS-ALPN-01 on the HTTPS one). The
// certificates and the account live in a folder of the data directory or,
// in a cluster, in a storage every node shares, with locks, so that one
// node answering the CA's challenge for another works.
type ACME struct {
	cfg      *certmagic.Config
	issuer   *certmagic.ACMEIssuer
	cache    *certmagic.Cache
	names    []string
	failures chan acmeFailure // first obtainings that failed, for Manage
}

// acmeFailure is a failure to obtain a name's first certificate.
type acmeFailure struct {
	name string
	err  error
}

// NewACME prepares certificate management for c.Domains; Manage starts it.
func NewACME(c ACMEConfig) (*ACME, error) {
	if len(c.Domains) == 0 {
		return nil, errors.New("acme: no domain names")
	}
	log := zap.New(slogCore{l: c.Logger.With("component", "acme")})
	a := &ACME{names: slices.Clone(c.Domains), failures: make(chan acmeFailure, 16)}
	var storage certmagic.Storage = &certmagic.FileStorage{Path: c.Dir}
	if c.Storage != nil {
		storage = c.Storage
	}
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		RenewCheckInterval: c.RenewCheck,
		OCSPCheckInterval:  c.RenewCheck,
		Logger:             log,
	})
	cfg = certmagic.New(cache, certmagic.Config{
		Storage:            storage,
		Logger:             log,
		DefaultServerName:  c.Domains[0],
		RenewalWindowRatio: 1.0 / 3,
		OnEvent:            a.onEvent,
	})
	// Stapling needs the CA's OCSP responder; Let's Encrypt has ended
	// OCSP, and browsers no longer ask for it.
	cfg.OCSP.DisableStapling = true
	ca := c.CA
	if ca == "" {
		ca = certmagic.LetsEncryptProductionCA
	}
	issuer := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{CA: ca, Email: c.Email, Agreed: true,
		TrustedRoots: c.Roots, Logger: log})
	cfg.Issuers = []certmagic.Issuer{issuer}
	a.cfg, a.issuer, a.cache = cfg, issuer, cache
	return a, nil
}

// onEvent passes failures to obtain a first certificate on to Manage; it
// never blocks certmagic.
func (a *ACME) onEvent(_ context.Context, event string, data map[string]any) error {
	if renewal, _ := data["renewal"].(bool); event != "cert_failed" || renewal {
		return nil
	}
	name, _ := data["identifier"].(string)
	err, _ := data["error"].(error)
	if err == nil {
		err = errors.New("failed")
	}
	select {
	case a.failures <- acmeFailure{name: name, err: err}:
	default:
	}
	return nil
}

// Manage loads the certificates stored by an earlier start, gets those the
// server has not got yet — waiting for them, until ctx ends — and keeps
// them all renewed in the background. It never prompts. A stored
// certificate lets the server start while the CA is down (renewal is
// retried); with none for a name and the CA failing, Manage fails.
func (a *ACME) Manage(ctx context.Context) error {
	if err := a.cfg.ManageAsync(context.WithoutCancel(ctx), a.names); err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	// Ready means in the cache, which handshakes read: loaded from the
	// storage, or obtained and then cached.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var pending []string
		for _, n := range a.names {
			if len(a.cache.AllMatchingCertificates(n)) == 0 {
				pending = append(pending, n)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case f := <-a.failures:
			if slices.Contains(pending, f.name) {
				return fmt.Errorf("acme: no certificate for %s: %w", f.name, f.err)
			}
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("acme: no certificate for %s yet: %w", pending[0], ctx.Err())
		}
	}
}

// TLSConfig is the HTTPS listener's configuration: the managed
// certificates, answered by server name (an unknown name gets none), and
// the TLS-ALPN-01 challenge.
func (a *ACME) TLSConfig() *tls.Config {
	t := a.cfg.TLSConfig()
	t.MinVersion = tls.VersionTLS12
	t.NextProtos = append([]string{"h2", "http/1.1"}, t.NextProtos...)
	return t
}

// HTTPHandler answers the CA's HTTP-01 challenges and hands every other
// request to next (the redirect to HTTPS).
func (a *ACME) HTTPHandler(next http.Handler) http.Handler {
	return a.issuer.HTTPChallengeHandler(next)
}

// Stop ends the renewals.
func (a *ACME) Stop() { a.cache.Stop() }

// slogCore is a zapcore.Core that writes to a *slog.Logger: certmagic logs
// with zap, cocmd with slog.
type slogCore struct {
	l      *slog.Logger
	fields []zapcore.Field
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (c slogCore) Enabled(l zapcore.Level) bool {
	return c.l.Enabled(context.Background(), slogLevel(l))
}

func (c slogCore) With(fs []zapcore.Field) zapcore.Core {
	return slogCore{l: c.l, fields: append(slices.Clone(c.fields), fs...)}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	args := make([]any, 0, 2*len(enc.Fields))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		args = append(args, k, enc.Fields[k])
	}
	if e.LoggerName != "" {
		args = append(args, "logger", e.LoggerName)
	}
	c.l.Log(context.Background(), slogLevel(e.Level), e.Message, args...)
	return nil
}

func (c slogCore) Sync() error { return nil }
