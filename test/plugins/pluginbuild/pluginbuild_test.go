package pluginbuild

import (
	"os/exec"
	"path/filepath"
	"testing"
)

func TestBuildNotAPlugin(t *testing.T) {
	path := Build(t, "notaplugin")
	if !filepath.IsAbs(path) {
		t.Fatalf("Build returned a relative path %q", path)
	}
	if again := Build(t, "notaplugin"); again != path {
		t.Fatalf("second Build = %q, want the cached %q", again, path)
	}
	out, err := exec.Command(path).Output()
	if err != nil {
		t.Fatalf("run %s: %v", path, err)
	}
	if got, want := string(out), "this is not a plugin\n"; got != want {
		t.Fatalf("output = %q, want %q", got, want)
	}
	sum := SHA256(t, path)
	if len(sum) != 64 {
		t.Fatalf("SHA256 = %q, want 64 hex digits", sum)
	}
	if SHA256(t, path) != sum {
		t.Fatal("SHA256 differs between two reads of the same file")
	}
}
