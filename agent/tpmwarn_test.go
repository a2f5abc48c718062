package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/keymanager/memory"
	"github.com/spiffe-hw/spire-hw/agent/nodeattestor"
)

// tpmKM stands for KeyManager "tpm": warnUnprovenTPMKey reads only its
// TPM path.
type tpmKM struct {
	*memory.KeyManager
	path string
}

func (k tpmKM) TPMPath() string { return k.path }

type fakeAttestor struct {
	nodeattestor.Attestor
	typ, path string
}

func (a fakeAttestor) Type() string    { return a.typ }
func (a fakeAttestor) TPMPath() string { return a.path }

type plainAttestor struct{ nodeattestor.Attestor }

func (plainAttestor) Type() string { return "join_token" }

func TestWarnUnprovenTPMKey(t *testing.T) {
	km := tpmKM{memory.New(), "unix:///tpm0"}
	for _, tc := range []struct {
		name string
		na   nodeattestor.Attestor
		warn bool
	}{
		{"same TPM", fakeAttestor{typ: "tpm", path: "unix:///tpm0"}, false},
		{"other TPM", fakeAttestor{typ: "tpm", path: "unix:///tpm1"}, true},
		{"no TPM attestor", plainAttestor{}, true},
	} {
		var buf bytes.Buffer
		warnUnprovenTPMKey(km, tc.na, slog.New(slog.NewTextHandler(&buf, nil)))
		if got := strings.Contains(buf.String(), "no proof that the key is resident"); got != tc.warn {
			t.Errorf("%s: warned %v, want %v: %s", tc.name, got, tc.warn, buf.String())
		}
	}
	var buf bytes.Buffer
	warnUnprovenTPMKey(memory.New(), plainAttestor{}, slog.New(slog.NewTextHandler(&buf, nil)))
	if buf.Len() != 0 {
		t.Errorf("warned for a key manager without a TPM: %s", buf.String())
	}
}
