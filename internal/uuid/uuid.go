// Package uuid makes random RFC 4122 version 4 UUIDs, the form SPIRE uses
// for entry IDs and audit request IDs.
package uuid

import (
	"crypto/rand"
	"encoding/hex"
)

// NewV4 returns a random version 4 UUID in its canonical text form.
func NewV4() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:], nil
}
