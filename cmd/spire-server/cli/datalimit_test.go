package cli

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadLimited(t *testing.T) {
	if got, err := readLimited(strings.NewReader("0123456789"), "in", 10); err != nil || string(got) != "0123456789" {
		t.Fatalf("at the limit: %q, %v", got, err)
	}
	if _, err := readLimited(strings.NewReader("0123456789a"), "in", 10); err == nil || !strings.Contains(err.Error(), "in is larger than") {
		t.Fatalf("over the limit: %v", err)
	}
}

func TestEntryDataIsCappedFromFileAndStdin(t *testing.T) {
	// A sparse file one byte over the cap: it needs no disk and no time.
	overCap := filepath.Join(t.TempDir(), "over-cap.json")
	f, err := os.Create(overCap)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxEntryDataSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, tc := range []struct {
		name    string
		args    []string
		stdin   func() io.Reader
		wantErr string
	}{
		{"file over the cap", []string{"-data", overCap}, func() io.Reader { return strings.NewReader("") }, overCap + " is larger than the 16 MiB limit"},
		// An endless file ends in the same refusal instead of exhausting
		// memory.
		{"endless file", []string{"-data", "/dev/zero"}, func() io.Reader { return strings.NewReader("") }, "/dev/zero is larger than the 16 MiB limit"},
		{"stdin over the cap", []string{"-data", "-"}, func() io.Reader { return io.LimitReader(zeros{}, maxEntryDataSize+1) }, "stdin is larger than the 16 MiB limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCmd[*entryCreateCommand](t, "entry create", tc.args...).buildRequest(tc.stdin())
			requireErrContains(t, err, tc.wantErr)
			_, err = parseCmd[*entryUpdateCommand](t, "entry update", tc.args...).buildRequest(tc.stdin())
			requireErrContains(t, err, tc.wantErr)
		})
	}
}

func TestBundleSetPathIsCapped(t *testing.T) {
	_, err := parseCmd[*bundleSetCommand](t, "bundle set", "-id", "spiffe://other.org", "-path", "/dev/zero").buildRequest(strings.NewReader(""))
	requireErrContains(t, err, "/dev/zero is larger than the 16 MiB limit")
	_, err = parseCmd[*bundleSetCommand](t, "bundle set", "-id", "spiffe://other.org").buildRequest(io.LimitReader(zeros{}, maxBundleDataSize+1))
	requireErrContains(t, err, "stdin is larger than the 16 MiB limit")
}

// zeros is an endless reader, as /dev/zero is.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
