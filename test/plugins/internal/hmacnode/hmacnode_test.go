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
	mac := hmac.New(sha256.New, secret)
	mac.Write(challenge)
	if got := Response(secret, challenge); !bytes.Equal(got, mac.Sum(nil)) {
		t.Fatal("Response is not HMAC-SHA256(secret, challenge)")
	}
	if !Verify(secret, challenge, Response(secret, challenge)) {
		t.Fatal("Verify refused the right answer")
	}
	if Verify([]byte("other"), challenge, Response(secret, challenge)) {
		t.Fatal("Verify accepted an answer under another secret")
	}
}
