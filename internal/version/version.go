// Package version is the version that spire-server and spire-agent print
// for -version, as SPIRE's binaries do.
//
// `make build` stamps it with the linker:
//
//	go build -ldflags "-X github.com/spiffe-hw/spire-hw/internal/version.stamp=1.2.3"
//
// An unstamped binary (go build, go install, go test) falls back to what the
// Go toolchain recorded in its build information: the module version for
// `go install module@version`, else the VCS revision of the tree it was
// built from, so that a binary can always be traced to its source.
package version

import (
	"runtime/debug"
	"strings"
)

// stamp is set by `make build` (-ldflags -X); empty when unstamped.
var stamp string

// readBuildInfo is debug.ReadBuildInfo; tests replace it.
var readBuildInfo = debug.ReadBuildInfo

// Version returns the stamped version without a leading "v" (SPIRE prints
// "1.13.3", not "v1.13.3"), else one derived from the build information,
// else "unknown".
func Version() string {
	if stamp != "" {
		return strings.TrimPrefix(stamp, "v")
	}
	bi, ok := readBuildInfo()
	if !ok {
		return "unknown"
	}
	return fromBuildInfo(bi)
}

// fromBuildInfo prefers a real module version, and otherwise names the
// revision as SPIRE's unstamped builds do ("<base>-dev-<hash>"), with
// "-dirty" when the tree had uncommitted changes.
func fromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" && !strings.Contains(v, "+dirty") && !isPseudo(v) {
		return strings.TrimPrefix(v, "v")
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev-unk"
	}
	if len(rev) > 7 {
		// SPIRE's githash is `git rev-parse --short=7`.
		rev = rev[:7]
	}
	v := "dev-" + rev
	if dirty {
		v += "-dirty"
	}
	return v
}

// isPseudo reports a Go pseudo-version (v0.0.0-20060102150405-abcdef123456),
// which the toolchain derives from a commit: the revision says the same,
// shorter and in SPIRE's form.
func isPseudo(v string) bool {
	v = strings.TrimSuffix(v, "+incompatible")
	parts := strings.Split(v, "-")
	if len(parts) < 3 {
		return false
	}
	ts := parts[len(parts)-2]
	if i := strings.LastIndex(ts, "."); i >= 0 {
		ts = ts[i+1:]
	}
	return len(ts) == 14 && len(parts[len(parts)-1]) == 12
}
