// Package cocmd is a self-hosted meeting server for webinars and live
// events: a few participants on stage publish, everyone else watches, and
// the server enforces the stage.
//
// The binary is cmd/cocmd; the Go SDK is package client. This package only
// carries the documents the binary serves.
package cocmd

import "embed"

// OpenAPI is the REST API's description, docs/openapi.yaml.
//
//go:embed docs/openapi.yaml
var OpenAPI []byte

// Web is the browser SDK (web/sdk) and the demo app (web/app) that the
// binary serves.
//
//go:embed web/sdk/cocmd.js web/sdk/cocmd.d.ts web/app
var Web embed.FS
