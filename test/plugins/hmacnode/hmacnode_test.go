package hmacnode

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
)

func TestPayloadRoundTrip(t *testing.T) {
	data, err := Payload{Node: "n1"}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"node":"n1"}`; string(data) != want {
		t.Fatalf("Marshal = %s, want %s", data, want)
	}
	p, err := ParsePayload(data)
	if err != nil || p.Node != "n1" {
		t.Fatalf("ParsePayload = %+v, %v", p, err)
	}
	for _, bad := range []string{``, `{`, `{}`, `{"node":""}`, `[]`} {
		if _, err := ParsePayload([]byte(bad)); err == nil {
			t.Errorf("ParsePayload(%q) accepted", bad)
		}
	}
}

func TestResponse(t *testing.T) {
	secret, challenge := []byte("s3cret"), bytes.Repeat([]byte{7}, ChallengeSize)
	payload := []byte(`{"node":"node-1"}`)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte{0, 0, 0, 0, 0, 0, 0, byte(len(payload))})
	mac.Write(payload)
	mac.Write(challenge)
	if got := Response(secret, payload, challenge); !bytes.Equal(got, mac.Sum(nil)) {
		t.Fatal("Response is not HMAC-SHA256(secret, len(payload) || payload || challenge)")
	}
	right := Response(secret, payload, challenge)
	if !Verify(secret, payload, challenge, right) {
		t.Fatal("Verify refused the right answer")
	}
	if Verify([]byte("other"), payload, challenge, right) {
		t.Fatal("Verify accepted an answer under another secret")
	}
	// The answer vouches for the node named: another payload fails.
	if Verify(secret, []byte(`{"node":"node-2"}`), challenge, right) {
		t.Fatal("Verify accepted an answer made for another node")
	}
}
