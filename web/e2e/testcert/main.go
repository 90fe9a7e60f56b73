// Command testcert writes a throwaway certificate authority and a server
// certificate for 127.0.0.1 and localhost into a directory (ca.pem,
// cert.pem, key.pem; internal/testcert): the browser tests serve HTTPS and
// TURN over TLS with them, and trust ca.pem in Chromium's NSS store.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cocmd/cocmd/internal/testcert"
)

func main() {
	dir := flag.String("dir", ".", "where to write ca.pem, cert.pem and key.pem")
	flag.Parse()
	if _, err := testcert.Write(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "testcert:", err)
		os.Exit(1)
	}
}
