package containerinfo

import (
	"errors"
	"fmt"
	"strings"
)

// mount is what the locator needs of one line of /proc/<pid>/mountinfo.
type mount struct {
	root string
	// point is where it is mounted, as this process sees it.
	point  string
	fsType string
}

// parseMountInfo parses /proc/<pid>/mountinfo (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Fields are split on single spaces, so an empty mount source (a tmpfs has
// none) stays an empty field rather than shifting the ones after it; the
// kernel escapes real whitespace in paths as octal (\040).
func parseMountInfo(b []byte) ([]mount, error) {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil, nil
	}
	lines := strings.Split(s, "\n")
	out := make([]mount, 0, len(lines))
	for i, line := range lines {
		m, err := parseMountInfoLine(line)
		if err != nil {
			return nil, fmt.Errorf("containerinfo: mountinfo line %d %.80q: %w", i+1, line, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func parseMountInfoLine(line string) (mount, error) {
	f := strings.Split(line, " ")
	// Six fixed fields, any number of optional ones, then "-" and three
	// more; the separator is searched for after the fixed fields, where
	// no path can be mistaken for it.
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 {
		return mount{}, errors.New("no \"-\" separator after the six fixed fields")
	}
	if len(f) < sep+4 {
		return mount{}, errors.New("want filesystem type, source and super options after \"-\"")
	}
	if !isDecimal(f[0]) || !isDecimal(f[1]) {
		return mount{}, errors.New("mount IDs are not decimal numbers")
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok || !isDecimal(maj) || !isDecimal(min) {
		return mount{}, fmt.Errorf("device %q is not major:minor", f[2])
	}
	root, err := unescapeOctal(f[3])
	if err != nil {
		return mount{}, fmt.Errorf("root: %w", err)
	}
	// Not necessarily a path: an nsfs mount's root is "net:[4026532182]".
	if root == "" {
		return mount{}, errors.New("empty root")
	}
	point, err := unescapeOctal(f[4])
	if err != nil {
		return mount{}, fmt.Errorf("mount point: %w", err)
	}
	fsType, err := unescapeOctal(f[sep+1])
	if err != nil {
		return mount{}, fmt.Errorf("filesystem type: %w", err)
	}
	if fsType == "" {
		return mount{}, errors.New("empty filesystem type")
	}
	return mount{root: root, point: point, fsType: fsType}, nil
}

// unescapeOctal undoes the kernel's mangling of space, tab, newline and
// backslash as \ooo.
func unescapeOctal(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		v := 0
		for _, c := range []byte(s[i+1 : i+4]) {
			if c < '0' || c > '7' {
				return "", fmt.Errorf("bad escape in %q", s)
			}
			v = v*8 + int(c-'0')
		}
		if v > 0xff {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}
