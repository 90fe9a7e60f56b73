package server_test

import (
	"crypto/tls"

	"github.com/cocmd/cocmd/internal/testcert"
)

// testCA is the tests' certificate authority, trusted process-wide
// (TestMain), with a certificate for localhost and 127.0.0.1.
var testCA *certAuthority

type certAuthority struct{ ca *testcert.CA }

// newTestCA makes a CA and a server certificate, and writes the CA's
// certificate to dir/ca.pem.
func newTestCA(dir string) *certAuthority {
	ca, err := testcert.Write(dir)
	if err != nil {
		panic(err)
	}
	return &certAuthority{ca: ca}
}

// serverConfig serves the CA's localhost certificate.
func (c *certAuthority) serverConfig() *tls.Config {
	cfg, err := c.ca.TLSConfig()
	if err != nil {
		panic(err)
	}
	return cfg
}
