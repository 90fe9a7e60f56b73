// Command cocmd is the cocmd meeting server.
//
//	cocmd serve [flags]   run the server (cocmd serve -h for flags)
//	cocmd bench ...       run a benchmark (cocmd bench -h)
//	cocmd rotate-api-key  replace a data directory's API key
//	cocmd rotate-signing-key  make a new token signing key, retiring the old
//	cocmd backup -out FILE    a consistent copy of the database, online
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "bench":
		err = bench(os.Args[2:])
	case "rotate-api-key":
		err = rotateAPIKey(os.Args[2:])
	case "rotate-signing-key":
		err = rotateSigningKey(os.Args[2:])
	case "backup":
		err = backup(os.Args[2:])
	case "-h", "-help", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "cocmd: unknown command %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cocmd:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: cocmd <command> [flags]

commands:
  serve            run the server
  bench            run a benchmark against a server it starts
  rotate-api-key   replace the API key of a data directory (the server stopped),
                   or of a cluster (-nats)
  rotate-signing-key  make a new token signing key (the server stopped; a
                   running one: POST /v1/signing-keys/rotate; a cluster: -nats)
  backup           write a consistent copy of the database, while the server runs
`)
	os.Exit(2)
}
