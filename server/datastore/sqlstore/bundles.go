package sqlstore

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// Bundles are stored whole, as the protobuf encoding of types.Bundle keyed
// by trust domain name ("spiffe://" stripped): every reader wants the whole
// bundle, and the wire type is already the contract.

// CreateBundle implements datastore.DataStore.
func (s *Store) CreateBundle(ctx context.Context, b *types.Bundle) (*types.Bundle, error) {
	b, data, err := encodeBundle(b)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: create bundle: %w", err)
	}
	err = s.write(ctx, func(t txn) error {
		_, err := t.exec(ctx, `INSERT INTO bundles (trust_domain, data) VALUES (?, ?)`, b.TrustDomain, data)
		return err
	})
	if err != nil {
		return nil, mapErr("create bundle", err)
	}
	return b, nil
}

// FetchBundle implements datastore.DataStore.
func (s *Store) FetchBundle(ctx context.Context, trustDomain string) (*types.Bundle, error) {
	var b *types.Bundle
	err := s.read(ctx, func(t txn) (err error) {
		b, err = loadBundle(ctx, t, trustDomainName(trustDomain), false)
		return err
	})
	if err != nil {
		return nil, mapErr("fetch bundle", err)
	}
	return b, nil
}

// CountBundles implements datastore.DataStore.
func (s *Store) CountBundles(ctx context.Context) (int32, error) {
	var n int32
	err := s.read(ctx, func(t txn) error {
		return t.queryRow(ctx, `SELECT COUNT(*) FROM bundles`).Scan(&n)
	})
	if err != nil {
		return 0, mapErr("count bundles", err)
	}
	return n, nil
}

// ListBundles implements datastore.DataStore. Bundles come in trust domain
// order.
func (s *Store) ListBundles(ctx context.Context, p *datastore.Pagination) ([]*types.Bundle, string, error) {
	w := &where{}
	limit, err := page(p, "trust_domain", w)
	if err != nil {
		return nil, "", err
	}
	var bundles []*types.Bundle
	err = s.read(ctx, func(t txn) error {
		return eachRow(ctx, t, `SELECT data FROM bundles WHERE `+w.sql()+` ORDER BY trust_domain`+limitSQL(limit), w.args,
			func(scan func(...any) error) error {
				var data []byte
				if err := scan(&data); err != nil {
					return err
				}
				b := &types.Bundle{}
				if err := proto.Unmarshal(data, b); err != nil {
					return fmt.Errorf("decode bundle: %w", err)
				}
				bundles = append(bundles, b)
				return nil
			})
	})
	if err != nil {
		return nil, "", mapErr("list bundles", err)
	}
	next := ""
	if limit > 0 && len(bundles) == limit {
		bundles = bundles[:limit-1]
		next = encodePageToken(bundles[len(bundles)-1].TrustDomain)
	}
	return bundles, next, nil
}

// UpdateBundle implements datastore.DataStore; ErrNotFound when absent.
func (s *Store) UpdateBundle(ctx context.Context, b *types.Bundle, mask *types.BundleMask) (*types.Bundle, error) {
	in, _, err := encodeBundle(b)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: update bundle: %w", err)
	}
	if mask == nil {
		mask = &types.BundleMask{X509Authorities: true, JwtAuthorities: true, RefreshHint: true, SequenceNumber: true}
	}
	var out *types.Bundle
	err = s.write(ctx, func(t txn) error {
		cur, err := loadBundle(ctx, t, in.TrustDomain, true)
		if err != nil {
			return err
		}
		if mask.X509Authorities {
			cur.X509Authorities = in.X509Authorities
		}
		if mask.JwtAuthorities {
			cur.JwtAuthorities = in.JwtAuthorities
		}
		if mask.RefreshHint {
			cur.RefreshHint = in.RefreshHint
		}
		if mask.SequenceNumber {
			cur.SequenceNumber = in.SequenceNumber
		}
		out = cur
		return storeBundle(ctx, t, cur)
	})
	if err != nil {
		return nil, mapErr("update bundle", err)
	}
	return out, nil
}

// SetBundle implements datastore.DataStore.
func (s *Store) SetBundle(ctx context.Context, b *types.Bundle) (*types.Bundle, error) {
	b, data, err := encodeBundle(b)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: set bundle: %w", err)
	}
	err = s.write(ctx, func(t txn) error {
		return t.upsert(ctx, "bundles", "trust_domain", "data", b.TrustDomain, data)
	})
	if err != nil {
		return nil, mapErr("set bundle", err)
	}
	return b, nil
}

// AppendBundle implements datastore.DataStore.
func (s *Store) AppendBundle(ctx context.Context, b *types.Bundle) (*types.Bundle, error) {
	in, _, err := encodeBundle(b)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: append bundle: %w", err)
	}
	var out *types.Bundle
	err = s.write(ctx, func(t txn) error {
		cur, err := loadBundle(ctx, t, in.TrustDomain, true)
		if errors.Is(err, datastore.ErrNotFound) {
			// When a concurrent append created the bundle first, we merge
			// into its row instead of failing.
			fresh := &types.Bundle{TrustDomain: in.TrustDomain, RefreshHint: in.RefreshHint, SequenceNumber: in.SequenceNumber}
			mergeAuthorities(fresh, in)
			_, data, err := encodeBundle(fresh)
			if err != nil {
				return err
			}
			inserted, err := t.insertIfAbsent(ctx, "bundles", "trust_domain", "data", fresh.TrustDomain, data)
			if err != nil {
				return err
			}
			if inserted {
				out = fresh
				return nil
			}
			cur, err = loadBundle(ctx, t, in.TrustDomain, true)
			if err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if mergeAuthorities(cur, in) {
			cur.SequenceNumber++
			if err := storeBundle(ctx, t, cur); err != nil {
				return err
			}
		}
		out = cur
		return nil
	})
	if err != nil {
		return nil, mapErr("append bundle", err)
	}
	return out, nil
}

// PruneBundle implements datastore.DataStore. When every X.509 authority
// has expired it keeps them all, as SPIRE does: removing all but one would
// not make the bundle any more useful, and an operator must look anyway.
func (s *Store) PruneBundle(ctx context.Context, trustDomain string, expiresBefore time.Time) (bool, error) {
	changed := false
	err := s.write(ctx, func(t txn) error {
		changed = false // a retried transaction starts over
		cur, err := loadBundle(ctx, t, trustDomainName(trustDomain), true)
		if err != nil {
			return err
		}
		var keepX509 []*types.X509Certificate
		for _, a := range cur.X509Authorities {
			cert, err := x509.ParseCertificate(a.Asn1)
			if err != nil {
				return fmt.Errorf("parse X.509 authority of %q: %w", cur.TrustDomain, err)
			}
			if !cert.NotAfter.Before(expiresBefore) {
				keepX509 = append(keepX509, a)
			}
		}
		if len(keepX509) == 0 && len(cur.X509Authorities) > 0 {
			s.log.Warn("sqlstore: not pruning X.509 authorities: all have expired", "trust_domain", cur.TrustDomain)
			keepX509 = cur.X509Authorities
		}
		var keepJWT []*types.JWTKey
		for _, k := range cur.JwtAuthorities {
			if k.ExpiresAt == 0 || k.ExpiresAt >= expiresBefore.Unix() {
				keepJWT = append(keepJWT, k)
			}
		}
		if len(keepX509) == len(cur.X509Authorities) && len(keepJWT) == len(cur.JwtAuthorities) {
			return nil
		}
		cur.X509Authorities, cur.JwtAuthorities = keepX509, keepJWT
		cur.SequenceNumber++
		changed = true
		return storeBundle(ctx, t, cur)
	})
	if err != nil {
		return false, mapErr("prune bundle", err)
	}
	return changed, nil
}

// ModifyBundle implements datastore.DataStore.
func (s *Store) ModifyBundle(ctx context.Context, trustDomain string, fn func(b *types.Bundle) error) (*types.Bundle, error) {
	var out *types.Bundle
	err := s.write(ctx, func(t txn) error {
		cur, err := loadBundle(ctx, t, trustDomainName(trustDomain), true)
		if err != nil {
			return err
		}
		if err := fn(cur); err != nil {
			return err
		}
		// fn must not move the bundle to another trust domain's row.
		cur.TrustDomain = trustDomainName(trustDomain)
		cur.SequenceNumber++
		out = cur
		return storeBundle(ctx, t, cur)
	})
	if err != nil {
		return nil, mapErr("modify bundle", err)
	}
	return out, nil
}

// DeleteBundle implements datastore.DataStore.
func (s *Store) DeleteBundle(ctx context.Context, trustDomain string) error {
	err := s.write(ctx, func(t txn) error {
		res, err := t.exec(ctx, `DELETE FROM bundles WHERE trust_domain = ?`, trustDomainName(trustDomain))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("bundle %q: %w", trustDomain, datastore.ErrNotFound)
		}
		return nil
	})
	return mapErr("delete bundle", err)
}

// mergeAuthorities adds to dst the authorities of src it lacks (X.509 by
// DER, JWT by key ID) and reports whether it added any.
func mergeAuthorities(dst, src *types.Bundle) bool {
	changed := false
	for _, a := range src.X509Authorities {
		found := false
		for _, have := range dst.X509Authorities {
			if bytes.Equal(have.Asn1, a.Asn1) {
				found = true
				break
			}
		}
		if !found {
			dst.X509Authorities = append(dst.X509Authorities, a)
			changed = true
		}
	}
	for _, k := range src.JwtAuthorities {
		found := false
		for _, have := range dst.JwtAuthorities {
			if have.KeyId == k.KeyId {
				found = true
				break
			}
		}
		if !found {
			dst.JwtAuthorities = append(dst.JwtAuthorities, k)
			changed = true
		}
	}
	return changed
}

// encodeBundle returns a copy of b keyed by its normalized trust domain and
// its stored encoding.
func encodeBundle(b *types.Bundle) (*types.Bundle, []byte, error) {
	if b == nil || trustDomainName(b.TrustDomain) == "" {
		return nil, nil, errors.New("missing trust domain")
	}
	c := proto.Clone(b).(*types.Bundle)
	c.TrustDomain = trustDomainName(c.TrustDomain)
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, nil, fmt.Errorf("encode bundle: %w", err)
	}
	return c, data, nil
}

func storeBundle(ctx context.Context, t txn, b *types.Bundle) error {
	_, data, err := encodeBundle(b)
	if err != nil {
		return err
	}
	_, err = t.exec(ctx, `UPDATE bundles SET data = ? WHERE trust_domain = ?`, data, b.TrustDomain)
	return err
}

func loadBundle(ctx context.Context, t txn, trustDomain string, lock bool) (*types.Bundle, error) {
	q := `SELECT data FROM bundles WHERE trust_domain = ?`
	if lock {
		q += t.forUpdate()
	}
	var data []byte
	if err := t.queryRow(ctx, q, trustDomain).Scan(&data); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("bundle %q: %w", trustDomain, datastore.ErrNotFound)
		}
		return nil, err
	}
	b := &types.Bundle{}
	if err := proto.Unmarshal(data, b); err != nil {
		return nil, fmt.Errorf("decode bundle %q: %w", trustDomain, err)
	}
	return b, nil
}
