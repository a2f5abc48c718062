package sqlstore

import (
	"bytes"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spiffe-hw/spire-hw/server/datastore"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
)

// FuzzBundleStore stores bundles built from fuzzed choices (a trust domain
// name, which authorities from a pool of live, expired and junk ones, in
// which order and how often) in a real SQLite store, and checks the
// store's side of bundle handling, which trusts no caller to have
// validated: a bundle without a trust domain is refused; a set bundle
// reads back as set, keyed by its name with or without "spiffe://";
// appending adds exactly the authorities the bundle lacks (X.509 by DER,
// JWT by key ID) and bumps the sequence number only then; pruning drops
// exactly the expired authorities (all X.509 ones kept when all expired),
// and fails, changing nothing, on an authority it cannot parse. The pool
// keeps inputs small: raw bundles of whole certificates made the fuzzer
// spend its time minimizing kilobytes of DER.
func FuzzBundleStore(f *testing.F) {
	s, err := Open(ctx, Config{DatabaseType: SQLite, ConnectionString: filepath.Join(f.TempDir(), "ds.sqlite3")})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })

	root, err := testpki.NewRoot("bundle root")
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	old, _, err := root.Issue(testpki.Leaf{CommonName: "expired", NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	pool := bundlePool{
		x509: []*types.X509Certificate{{Asn1: root.Cert.Raw}, {Asn1: old.Raw}},
		jwt: []*types.JWTKey{
			{KeyId: "live", PublicKey: []byte{1}, ExpiresAt: now.Add(time.Hour).Unix()},
			{KeyId: "old", PublicKey: []byte{2}, ExpiresAt: now.Add(-time.Hour).Unix()},
			{KeyId: "forever", PublicKey: []byte{3}},
		},
	}
	for _, seed := range []struct {
		td       string
		set, add uint32
		junk     []byte
		kid      string
		seq      uint64
		prune    int64
	}{
		{"td.org", 0x0123, 0x50, nil, "live", 3, 0},
		{"spiffe://td.org", 0x1, 0x6006, []byte{0x30, 0x00}, "", 0, int64(2 * time.Hour)},
		{"td.org", 0x5, 0x2, []byte("not DER"), "k", 1<<64 - 1, 0},
		{"td.org", 0x1111, 0x1111, nil, "old", 1 << 62, int64(-3 * time.Hour)},
		{"spiffe://", 0, 0, nil, "", 0, 0},
		{"", 0x6, 0, nil, "", 0, 0},
	} {
		f.Add(seed.td, seed.set, seed.add, seed.junk, seed.kid, seed.seq, seed.prune)
	}
	f.Fuzz(func(t *testing.T, td string, setPick, addPick uint32, junk []byte, kid string, seq uint64, pruneIn int64) {
		if !utf8.ValidString(td) || !utf8.ValidString(kid) {
			return // not a protobuf string: gRPC refuses the message
		}
		set := pool.bundle(td, setPick, junk, kid)
		set.SequenceNumber = seq
		add := pool.bundle("", addPick, junk, kid)
		checkBundleStore(t, s, now, set, add, pruneIn)
	})
}

// bundlePool is what FuzzBundleStore builds bundles from.
type bundlePool struct {
	x509 []*types.X509Certificate
	jwt  []*types.JWTKey
}

// bundle picks authorities by the nibbles of pick, lowest first: 0 and 1
// are the pool's X.509 authorities, 2 one whose DER is junk, 3 to 5 the
// pool's JWT keys, 6 a JWT key with ID kid and key junk; 7 and above
// pick nothing.
func (p bundlePool) bundle(td string, pick uint32, junk []byte, kid string) *types.Bundle {
	b := &types.Bundle{TrustDomain: td}
	for ; pick != 0; pick >>= 4 {
		switch n := int(pick & 0xf); {
		case n < len(p.x509):
			b.X509Authorities = append(b.X509Authorities, p.x509[n])
		case n == 2:
			b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: junk})
		case n < 6:
			b.JwtAuthorities = append(b.JwtAuthorities, p.jwt[n-3])
		case n == 6:
			b.JwtAuthorities = append(b.JwtAuthorities, &types.JWTKey{KeyId: kid, PublicKey: junk})
		}
	}
	return b
}

// checkBundleStore is FuzzBundleStore's check of one input.
func checkBundleStore(t testing.TB, s *Store, now time.Time, set, add *types.Bundle, pruneIn int64) {
	name := trustDomainName(set.TrustDomain)
	stored, err := s.SetBundle(ctx, set)
	if name == "" {
		if err == nil {
			t.Fatalf("bundle without a trust domain stored: %q", set.TrustDomain)
		}
		return
	}
	if err != nil {
		t.Fatalf("SetBundle(%q): %v", set.TrustDomain, err)
	}
	if strings.HasPrefix(name, "spiffe://") {
		// "spiffe://spiffe://x": the prefix is stripped once per
		// call, so the key changes with how often a caller strips
		// it. Callers pass validated trust domains (the API parses
		// them with go-spiffe), which never look like this.
		if err := s.DeleteBundle(ctx, set.TrustDomain); err != nil {
			t.Fatal(err)
		}
		return
	}
	defer func() {
		if err := s.DeleteBundle(ctx, "spiffe://"+name); err != nil {
			t.Fatalf("DeleteBundle: %v", err)
		}
		if _, err := s.FetchBundle(ctx, name); !errors.Is(err, datastore.ErrNotFound) {
			t.Fatalf("deleted bundle still fetched: %v", err)
		}
	}()
	want := proto.Clone(set).(*types.Bundle)
	want.TrustDomain = name
	got, err := s.FetchBundle(ctx, "spiffe://"+name)
	if err != nil || !proto.Equal(got, want) || !proto.Equal(stored, want) {
		t.Fatalf("set %v, stored %v, fetched %v (%v)", want, stored, got, err)
	}

	// Append: exactly the missing authorities, in order.
	add.TrustDomain = name
	expect := proto.Clone(want).(*types.Bundle)
	grew := false
	for _, a := range add.X509Authorities {
		if !hasX509(expect.X509Authorities, a.Asn1) {
			expect.X509Authorities = append(expect.X509Authorities, a)
			grew = true
		}
	}
	for _, k := range add.JwtAuthorities {
		if !hasKeyID(expect.JwtAuthorities, k.KeyId) {
			expect.JwtAuthorities = append(expect.JwtAuthorities, k)
			grew = true
		}
	}
	if grew {
		expect.SequenceNumber++
	}
	appended, err := s.AppendBundle(ctx, add)
	if err != nil {
		t.Fatalf("AppendBundle: %v", err)
	}
	if got, err := s.FetchBundle(ctx, name); err != nil || !proto.Equal(appended, expect) || !proto.Equal(got, expect) {
		t.Fatalf("append: returned %v, stored %v (%v); want %v", appended, got, err, expect)
	}

	// Prune at some time around now.
	at := now.Add(time.Duration(pruneIn % int64(1000*time.Hour)))
	pruned := proto.Clone(expect).(*types.Bundle)
	parses := true
	pruned.X509Authorities = nil
	for _, a := range expect.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			parses = false
			break
		}
		if !c.NotAfter.Before(at) {
			pruned.X509Authorities = append(pruned.X509Authorities, a)
		}
	}
	if len(pruned.X509Authorities) == 0 {
		pruned.X509Authorities = expect.X509Authorities
	}
	pruned.JwtAuthorities = nil
	for _, k := range expect.JwtAuthorities {
		if k.ExpiresAt == 0 || k.ExpiresAt >= at.Unix() {
			pruned.JwtAuthorities = append(pruned.JwtAuthorities, k)
		}
	}
	changed := len(pruned.X509Authorities) != len(expect.X509Authorities) || len(pruned.JwtAuthorities) != len(expect.JwtAuthorities)
	if changed {
		pruned.SequenceNumber++
	}
	did, err := s.PruneBundle(ctx, name, at)
	got, ferr := s.FetchBundle(ctx, name)
	if ferr != nil {
		t.Fatal(ferr)
	}
	switch {
	case !parses:
		if err == nil || did || !proto.Equal(got, expect) {
			t.Fatalf("prune with an unparsable authority: %v, changed %v, left %v", err, did, got)
		}
	case err != nil:
		t.Fatalf("PruneBundle: %v", err)
	case did != changed || !proto.Equal(got, pruned):
		t.Fatalf("prune at %v: changed %v, left %v; want changed %v, %v", at, did, got, changed, pruned)
	}
}

func hasX509(list []*types.X509Certificate, der []byte) bool {
	for _, c := range list {
		if bytes.Equal(c.Asn1, der) {
			return true
		}
	}
	return false
}

func hasKeyID(list []*types.JWTKey, kid string) bool {
	for _, k := range list {
		if k.KeyId == kid {
			return true
		}
	}
	return false
}
