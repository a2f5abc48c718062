// Package hmacnode is the wire format that the agentnodeattestor and
// servernodeattestor test plugins share: the attestation payload and the
// answer to a challenge, kept in one place so the two sides cannot drift.
package hmacnode

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// ChallengeSize is the number of random bytes in a server challenge.
const ChallengeSize = 32

// Payload is the attestation data the agent sends first, as JSON.
type Payload struct {
	Node string `json:"node"`
}

// Marshal encodes the payload for the wire.
func (p Payload) Marshal() ([]byte, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("hmacnode: marshal payload: %w", err)
	}
	return data, nil
}

// ParsePayload decodes a payload from the wire and checks that it names a
// node.
func ParsePayload(data []byte) (Payload, error) {
	var p Payload
	if err := json.Unmarshal(data, &p); err != nil {
		return Payload{}, fmt.Errorf("hmacnode: parse payload: %w", err)
	}
	if p.Node == "" {
		return Payload{}, errors.New("hmacnode: payload has no node")
	}
	return p, nil
}

// Response is the agent's answer to a challenge: HMAC-SHA256 under the
// shared secret of the payload it sent (length-prefixed) and the
// challenge, so the answer vouches for the node it names and not only for
// knowing the secret.
func Response(secret, payload, challenge []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(payload)))
	mac.Write(n[:])
	mac.Write(payload)
	mac.Write(challenge)
	return mac.Sum(nil)
}

// Verify reports whether response answers challenge for payload under
// secret, in constant time.
func Verify(secret, payload, challenge, response []byte) bool {
	return hmac.Equal(Response(secret, payload, challenge), response)
}
