package exepages

import (
	"testing"
)

func TestParse(t *testing.T) {
	smaps := `00400000-00fac000 r-xp 00000000 fe:00 9980305                            /srv/bin/spire-agent
Size:              11952 kB
Rss:               10352 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me sd
00fac000-01e31000 r--p 00bac000 fe:00 9980305                            /srv/bin/spire-agent
Rss:               10196 kB
Anonymous:             8 kB
Swap:                  0 kB
01e31000-01e32000 r--p 00c31000 fe:00 9980305                            /srv/bin/spire-agent
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  4 kB
01e32000-01edc000 rw-p 01a32000 fe:00 9980305                            /srv/bin/spire-agent
Rss:                 684 kB
Anonymous:           120 kB
01edc000-01f00000 rw-p 00000000 00:00 0 
Rss:                 100 kB
Anonymous:           100 kB
7f0000000000-7f0000010000 r-xp 00000000 fe:00 1234                       /usr/lib/libc.so.6
Rss:                  64 kB
Anonymous:             0 kB
7f1000000000-7f1000010000 r--p 00000000 00:2a 777                       /srv/bin/spire-agent
Rss:                  64 kB
Anonymous:             0 kB
Swap:                  0 kB
`
	got, err := parse([]byte(smaps), exe{major: 0xfe, minor: 0, ino: 9980305, path: "/srv/bin/spire-agent"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{Start: 0x400000, End: 0xfac000, Perms: "r-xp", RSS: 10352 << 10, Released: true},
		// Copied-on-write pages (a debugger's breakpoint, relocations) would be lost.
		{Start: 0xfac000, End: 0x1e31000, Perms: "r--p", RSS: 10196 << 10},
		// So would the same pages swapped out (a PIE binary's relocated data).
		{Start: 0x1e31000, End: 0x1e32000, Perms: "r--p"},
		// Written data.
		{Start: 0x1e32000, End: 0x1edc000, Perms: "rw-p", RSS: 684 << 10},
		// The same path on another device (overlayfs): found by its path.
		{Start: 0x7f1000000000, End: 0x7f1000010000, Perms: "r--p", RSS: 64 << 10, Released: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// written is initialised data (a file-backed, private, writable mapping):
// dropping its pages would bring back the file's bytes.
var written = [8192]byte{1}

func TestReleaseKeepsWrittenDataAndDropsCode(t *testing.T) {
	written[4096] = 42
	before, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	var code, released int64
	for _, m := range before {
		if m.Released {
			released++
			if m.Perms == "r-xp" {
				code += m.RSS
			}
		}
	}
	if released == 0 || code == 0 {
		t.Fatalf("no resident code mapping of the test binary released: %+v", before)
	}
	if written[0] != 1 || written[4096] != 42 {
		t.Fatalf("written data lost: %d %d", written[0], written[4096])
	}
	after, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	var codeAfter int64
	for _, m := range after {
		if m.Released && m.Perms == "r-xp" {
			codeAfter += m.RSS
		}
	}
	// What came back is what ran between the two calls (reading smaps,
	// the test's own code), a small part of what start-up left.
	t.Logf("resident code: %d KiB before, %d KiB after", code>>10, codeAfter>>10)
	if codeAfter >= code {
		t.Fatalf("resident code %d KiB after the release, %d KiB before", codeAfter>>10, code>>10)
	}
}
