package workloadapi

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

// The cached PKCS#8 form is the key's own, for each key, and keys that are
// not ECDSA are marshalled as before.
func TestKeyCacheMarshalsEachKey(t *testing.T) {
	var c keyCache
	for range 3 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		want, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			got, err := c.pkcs8(k)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("cached PKCS#8 differs from the key's")
			}
			back, err := x509.ParsePKCS8PrivateKey(got)
			if err != nil || !k.Equal(back) {
				t.Fatalf("cached PKCS#8 does not parse back to the key: %v", err)
			}
		}
	}
	if n := c.len(); n != 3 {
		t.Fatalf("%d keys cached, want 3", n)
	}
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.pkcs8(ek)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := x509.ParsePKCS8PrivateKey(got); err != nil || !ek.Equal(back) {
		t.Fatalf("ed25519 key: %v", err)
	}
}

// A key the agent dropped leaves the cache: it keeps no key (and no
// secret) alive.
func TestKeyCacheForgetsCollectedKeys(t *testing.T) {
	var c keyCache
	func() {
		for range 5 {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.pkcs8(k); err != nil {
				t.Fatal(err)
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for c.len() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d collected keys still cached", c.len())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// countingHandler counts WithAttrs calls (where text and JSON handlers
// format attributes).
type countingHandler struct {
	slog.Handler
	withAttrs *int
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	*h.withAttrs++
	return countingHandler{h.Handler.WithAttrs(as), h.withAttrs}
}

// callLog writes what With writes, and formats nothing for a call that
// logs nothing enabled.
func TestCallLogSameOutputAsWith(t *testing.T) {
	var a, b bytes.Buffer
	n := 0
	base := slog.New(countingHandler{slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelInfo}), &n})
	attrs := []slog.Attr{slog.String("method", "FetchX509SVID"), slog.Int("pid", 42), slog.Uint64("uid", 1000)}
	l := callLog(base, attrs...)
	l.Debug("not enabled", "x", 1)
	if n != 0 {
		t.Fatalf("attributes formatted %d times for a call that logged nothing", n)
	}
	want := slog.New(slog.NewTextHandler(&a, nil)).With("method", "FetchX509SVID", "pid", int32(42), "uid", uint32(1000))
	for _, lg := range []*slog.Logger{want, l} {
		lg.Info("first", "err", "boom")
		lg.With("attestor", "unix").Warn("derived")
		lg.WithGroup("g").Error("grouped", "k", "v")
	}
	strip := func(s string) string {
		var out []byte
		for _, line := range bytes.Split([]byte(s), []byte("\n")) {
			if i := bytes.Index(line, []byte(" level=")); i >= 0 {
				line = line[i:]
			}
			out = append(out, line...)
			out = append(out, '\n')
		}
		return string(out)
	}
	if strip(a.String()) != strip(b.String()) {
		t.Fatalf("callLog wrote\n%s\nWith writes\n%s", b.String(), a.String())
	}
	// Once for the call's attributes, once for the derived logger's.
	if n != 2 {
		t.Fatalf("attributes formatted %d times, want 2", n)
	}
}
