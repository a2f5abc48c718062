package workloadapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"log/slog"
	"runtime"
	"sync"
	"weak"
)

// keyCache holds the PKCS#8 form of the SVID keys the Workload API has
// served, each for as long as its key lives: marshalling a key was most of
// composing an X.509-SVID response, and every new connection of a workload
// asks for the same keys again until they rotate. An entry is found by the
// key object itself (a weak pointer, which a later key at the same address
// never matches) and dropped when the key is collected, so the cache keeps
// no key alive and holds no secret longer than the agent does.
type keyCache struct {
	mu sync.Mutex
	m  map[weak.Pointer[ecdsa.PrivateKey]][]byte
}

// pkcs8 is x509.MarshalPKCS8PrivateKey, cached for ECDSA keys (what the
// agent's key managers make). The bytes returned are shared: callers only
// read them.
func (c *keyCache) pkcs8(k crypto.Signer) ([]byte, error) {
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek == nil {
		return x509.MarshalPKCS8PrivateKey(k)
	}
	wp := weak.Make(ek)
	c.mu.Lock()
	der, ok := c.m[wp]
	c.mu.Unlock()
	if ok {
		return der, nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[wp]; !ok {
		if c.m == nil {
			c.m = make(map[weak.Pointer[ecdsa.PrivateKey]][]byte)
		}
		c.m[wp] = der
		runtime.AddCleanup(ek, c.forget, wp)
	}
	return der, nil
}

func (c *keyCache) forget(wp weak.Pointer[ecdsa.PrivateKey]) {
	c.mu.Lock()
	delete(c.m, wp)
	c.mu.Unlock()
}

// len is the number of keys cached.
func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// callLog is base.With(attrs), except that the attributes are handed to
// base's handler (which for text and JSON formats them at once) only when
// the logger first logs something enabled or is derived from: a Workload
// API call logs nothing unless it fails, and the With cost every call a few
// allocations and a formatting pass. What is written is the same.
func callLog(base *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	return slog.New(&deferredAttrs{base: base.Handler(), attrs: attrs})
}

type deferredAttrs struct {
	base  slog.Handler
	attrs []slog.Attr
	once  sync.Once
	h     slog.Handler
}

func (d *deferredAttrs) handler() slog.Handler {
	d.once.Do(func() { d.h = d.base.WithAttrs(d.attrs) })
	return d.h
}

func (d *deferredAttrs) Enabled(ctx context.Context, l slog.Level) bool {
	return d.base.Enabled(ctx, l)
}

func (d *deferredAttrs) Handle(ctx context.Context, r slog.Record) error {
	return d.handler().Handle(ctx, r)
}

func (d *deferredAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return d.handler().WithAttrs(attrs)
}

func (d *deferredAttrs) WithGroup(name string) slog.Handler {
	return d.handler().WithGroup(name)
}
