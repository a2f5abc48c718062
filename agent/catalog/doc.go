// Package catalog is the agent's plugin catalog: one table per plugin type
// that the agent can build (KeyManager, NodeAttestor, WorkloadAttestor),
// each row a built-in constructor that decodes its plugin_data, plus the
// type's loader for external (plugin_cmd) plugins.
//
// The agent wiring builds every plugin through these tables, so the list of
// supported names an operator sees in an error is the list of rows. How
// many plugins of a type a configuration may enable is checked by
// agent/config when it parses the file; this package does not repeat it.
//
// A table's External field is nil until a loader for that type exists; the
// loader sets it from an init function of its own file in this package, so
// that adding one touches no row.
package catalog
