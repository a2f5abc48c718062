package datastore

import (
	"os"
	"path/filepath"
	"strings"
)

// resultsFile holds every report of this package, one section each, so
// that a report regenerated alone leaves the others as they were.
var resultsFile = filepath.Join("..", "RESULTS-datastore.md")

// writeSection replaces the named section of resultsFile with text, or
// appends it when the file has none.
func writeSection(name, text string) error {
	begin, end := "<!-- section: "+name+" -->\n", "<!-- end: "+name+" -->\n"
	old, err := os.ReadFile(resultsFile)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	block := begin + strings.TrimRight(text, "\n") + "\n" + end
	if i := strings.Index(s, begin); i >= 0 {
		if j := strings.Index(s[i:], end); j >= 0 {
			return os.WriteFile(resultsFile, []byte(s[:i]+block+s[i+j+len(end):]), 0o644)
		}
	}
	if s != "" && !strings.HasSuffix(s, "\n\n") {
		s = strings.TrimRight(s, "\n") + "\n\n"
	}
	return os.WriteFile(resultsFile, []byte(s+block), 0o644)
}
