// Package bundlelog appends one JSON line per bundle event to a file, the
// record that the notifier and bundlepublisher test plugins leave for a test
// to read: what the host told the plugin, and when, in order.
package bundlelog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/types"
)

// Line is one event as written to the file.
type Line struct {
	Event           string   `json:"event"`
	TrustDomain     string   `json:"trust_domain"`
	X509Authorities int      `json:"x509_authorities"`
	JWTAuthorities  int      `json:"jwt_authorities"`
	SequenceNumber  uint64   `json:"sequence_number"`
	X509SHA256      []string `json:"x509_sha256"`
}

// NewLine summarises bundle for event.
func NewLine(event string, bundle *types.Bundle) Line {
	l := Line{
		Event:           event,
		TrustDomain:     bundle.GetTrustDomain(),
		X509Authorities: len(bundle.GetX509Authorities()),
		JWTAuthorities:  len(bundle.GetJwtAuthorities()),
		SequenceNumber:  bundle.GetSequenceNumber(),
		X509SHA256:      []string{},
	}
	for _, a := range bundle.GetX509Authorities() {
		sum := sha256.Sum256(a.GetAsn1())
		l.X509SHA256 = append(l.X509SHA256, hex.EncodeToString(sum[:]))
	}
	return l
}

// Append writes the line for event and bundle at the end of the file at
// path, creating it. The line goes out in one write to an O_APPEND file, so
// concurrent events never interleave within a line.
func Append(path, event string, bundle *types.Bundle) error {
	data, err := json.Marshal(NewLine(event, bundle))
	if err != nil {
		return fmt.Errorf("bundlelog: marshal: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("bundlelog: open: %w", err)
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("bundlelog: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bundlelog: close %s: %w", path, err)
	}
	return nil
}

// Read returns the lines of the file at path, for tests.
func Read(path string) ([]Line, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bundlelog: read: %w", err)
	}
	var lines []Line
	dec := json.NewDecoder(bytes.NewReader(data))
	for dec.More() {
		var l Line
		if err := dec.Decode(&l); err != nil {
			return nil, fmt.Errorf("bundlelog: parse %s: %w", path, err)
		}
		lines = append(lines, l)
	}
	return lines, nil
}
