package hclconf

// SkipUnimplemented turns off the enabled plugin blocks that name one of
// SPIRE's built-ins this project does not compile in (unimplemented maps
// a plugin type to those names), each with a warning that names the block
// and the way out. Such a block is valid for SPIRE, so it must not stop
// start-up, yet dropping it without a word would leave the operator
// believing that, say, the bundle is published. A block with plugin_cmd is
// left alone: the plugin host runs it. Other unknown names are left for
// the catalog to refuse, since they are mistakes for SPIRE too.
func SkipUnimplemented(d *Diagnostics, plugins []Plugin, unimplemented map[string][]string) {
	for i, p := range plugins {
		if !p.Enabled || p.External() || !contains(unimplemented[p.Type], p.Name) {
			continue
		}
		d.Warnf(p.Pos.Line, p.Label(), "SPIRE's built-in %s plugin %q is not compiled into spire-hw; the block is skipped "+
			"(build the plugin as an external one and set plugin_cmd to run it)", p.Type, p.Name)
		plugins[i].Enabled = false
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
