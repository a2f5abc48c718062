package jointoken

import (
	"context"
	"testing"
)

func TestAttestor(t *testing.T) {
	ctx := context.Background()
	a := New("abc-123")
	if a.Type() != "join_token" {
		t.Fatalf("Type() = %q", a.Type())
	}
	data, err := a.AttestationData(ctx, nil)
	if err != nil || string(data) != "abc-123" {
		t.Fatalf("AttestationData() = %q, %v", data, err)
	}
	if _, err := a.Respond(ctx, []byte("challenge")); err == nil {
		t.Fatal("Respond accepted a challenge")
	}
	if _, err := New("").AttestationData(ctx, nil); err == nil {
		t.Fatal("empty token accepted")
	}
}
