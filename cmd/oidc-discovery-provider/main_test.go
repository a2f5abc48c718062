package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-version"}, &out, &errb); code != 0 || strings.TrimSpace(out.String()) == "" {
		t.Errorf("-version: %d %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"-config", "x.conf", "extra"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "Error: unexpected arguments: [extra]") {
		t.Errorf("extra argument: %d %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"-config", filepath.Join(t.TempDir(), "none.conf")}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "unable to load configuration") {
		t.Errorf("missing file: %d %q", code, errb.String())
	}
}

// TestExpandEnv: -expandEnv substitutes the environment before parsing;
// without it the text is parsed as written.
func TestExpandEnv(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "odp.conf")
	if err := os.WriteFile(conf, []byte(`domains = ["$ODP_TEST_DOMAIN"]`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ODP_TEST_DOMAIN", "bad domain")
	var out, errb bytes.Buffer
	if code := run([]string{"-config", conf, "-expandEnv"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), `domain "bad domain" is not a valid domain name`) {
		t.Errorf("-expandEnv: %d %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"-config", conf}, &out, &errb); code != 1 || !strings.Contains(errb.String(), `domain "$ODP_TEST_DOMAIN"`) {
		t.Errorf("without -expandEnv: %d %q", code, errb.String())
	}
}
