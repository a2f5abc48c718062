// Package catalog holds the table that maps the plugins of one type, as
// written in a configuration's plugins block, to the code that builds them.
//
// Each side (server/catalog, agent/catalog) declares one Table per plugin
// type. A row is either a built-in, compiled into the binary and chosen by
// name, or the type's External loader, chosen when the block sets
// plugin_cmd. Both produce the same interface, so the wiring that consumes a
// plugin never knows which kind it got. The arity of each type (exactly one
// KeyManager, ...) is checked when the configuration is parsed, not here.
package catalog
