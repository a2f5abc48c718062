package config

import (
	"strings"
	"testing"
)

// change_notices (ours) turns the server's change-notice service off;
// it is on by default and takes a boolean only.
func TestChangeNotices(t *testing.T) {
	const base = "    trust_domain = \"example.org\"\n    data_dir = \"d\"\n"
	for _, tc := range []struct {
		line string
		off  bool
	}{
		{"", false},
		{"change_notices = true", false},
		{"change_notices = false", true},
	} {
		c, err := Parse("server.conf", []byte(withServer(base+"    "+tc.line)), false)
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		if c.Server.NoChangeNotices != tc.off || len(c.Warnings) != 0 {
			t.Errorf("%q: NoChangeNotices = %v (want %v), warnings %q", tc.line, c.Server.NoChangeNotices, tc.off, c.Warnings)
		}
	}
	_, err := Parse("server.conf", []byte(withServer(base+`    change_notices = "off"`)), false)
	if err == nil || !strings.Contains(err.Error(), "change_notices") {
		t.Errorf("a string for change_notices: %v, want an error naming the key", err)
	}
}
