// Package cocmd is a self-hosted meeting server for webinars and live
// events: a few participants on stage publish, everyone else watches, and
// the server enforces the stage.
//
// The binary is cmd/cocmd; the Go SDK is package client. This package only
// carries the documents the binary serves.
package cocmd

import _ "embed"

// OpenAPI is the REST API's description, docs/openapi.yaml.
//
//go:embed docs/openapi.yaml
var OpenAPI []byte
