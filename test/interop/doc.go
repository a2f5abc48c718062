// Package interop checks that our spire-server and spire-agent interoperate
// with upstream SPIRE (the version pinned in this module's go.mod): an
// upstream agent against our server, our agent against an upstream server,
// the upstream spire-server CLI against our admin socket, and the same
// SPIRE plugin-SDK plugin binaries (the main module's test/plugins) loaded
// by both implementations from one configuration.
//
// It is a separate module so that the main module never depends on SPIRE;
// `make interop` builds both sides and runs it. The tests live in
// *_test.go files; this package has no code of its own.
package interop
