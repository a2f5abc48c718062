// Package hclconf reads SPIRE-style HCL (version 1) configuration files: the
// pieces that spire-server and spire-agent files have in common.
//
// It exists so that both server/config and agent/config report problems the
// same way. Every error names the file, the line when known, the dotted key
// and the fix, for example
//
//	server.conf:7: server.ca_ttl: invalid duration "7d" (use Go duration syntax such as "168h")
//
// A Section wraps one HCL block; its typed getters record the keys they were
// asked about, so that Finish can reject every key nobody asked for (a typo
// in a security setting must not be silently ignored). Keys that SPIRE knows
// but this project does not implement are accepted with a warning instead.
//
// Plugin blocks (plugins { Type "name" { plugin_data { ... } } }) are parsed
// into Plugin values whose plugin_data stays as HCL until the plugin decodes
// it with Plugin.DecodeData, which also rejects unknown keys.
package hclconf
