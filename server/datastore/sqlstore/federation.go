package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// Profile names as SPIRE stores them in bundle_endpoint_profile.
const (
	profileHTTPSWeb    = "https_web"
	profileHTTPSSPIFFE = "https_spiffe"
)

var allFederationFields = &types.FederationRelationshipMask{BundleEndpointUrl: true, BundleEndpointProfile: true, TrustDomainBundle: true}

// fedRow is a relationship as stored.
type fedRow struct {
	trustDomain, url, profile, endpointID string
}

// CreateFederationRelationship implements datastore.DataStore.
func (s *Store) CreateFederationRelationship(ctx context.Context, fr *types.FederationRelationship) (*types.FederationRelationship, error) {
	row, err := validateFederation(fr, allFederationFields)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: create federation relationship: %w", err)
	}
	var out *types.FederationRelationship
	err = s.write(ctx, func(t txn) error {
		if _, err := t.exec(ctx, `INSERT INTO federated_trust_domains
			(trust_domain, bundle_endpoint_url, bundle_endpoint_profile, endpoint_spiffe_id) VALUES (?, ?, ?, ?)`,
			row.trustDomain, row.url, row.profile, row.endpointID); err != nil {
			return err
		}
		if err := setFederatedBundle(ctx, t, row.trustDomain, fr.TrustDomainBundle); err != nil {
			return err
		}
		out, err = rowToFederation(ctx, t, row)
		return err
	})
	if err != nil {
		return nil, mapErr("create federation relationship", err)
	}
	return out, nil
}

// FetchFederationRelationship implements datastore.DataStore.
func (s *Store) FetchFederationRelationship(ctx context.Context, trustDomain string) (*types.FederationRelationship, error) {
	var out *types.FederationRelationship
	err := s.read(ctx, func(t txn) error {
		row, err := loadFederation(ctx, t, trustDomainName(trustDomain), false)
		if err != nil {
			return err
		}
		out, err = rowToFederation(ctx, t, row)
		return err
	})
	if err != nil {
		return nil, mapErr("fetch federation relationship", err)
	}
	return out, nil
}

// ListFederationRelationships implements datastore.DataStore.
func (s *Store) ListFederationRelationships(ctx context.Context, p *datastore.Pagination) ([]*types.FederationRelationship, string, error) {
	w := &where{}
	limit, err := page(p, "trust_domain", w)
	if err != nil {
		return nil, "", err
	}
	var out []*types.FederationRelationship
	err = s.read(ctx, func(t txn) error {
		var rows []fedRow
		err := eachRow(ctx, t, `SELECT trust_domain, bundle_endpoint_url, bundle_endpoint_profile, endpoint_spiffe_id
			FROM federated_trust_domains WHERE `+w.sql()+` ORDER BY trust_domain`+limitSQL(limit), w.args,
			func(scan func(...any) error) error {
				var r fedRow
				if err := scan(&r.trustDomain, &r.url, &r.profile, &r.endpointID); err != nil {
					return err
				}
				rows = append(rows, r)
				return nil
			})
		if err != nil {
			return err
		}
		// The bundles are read once the listing's cursor is closed: a
		// transaction runs one query at a time on its connection.
		for _, r := range rows {
			fr, err := rowToFederation(ctx, t, r)
			if err != nil {
				return err
			}
			out = append(out, fr)
		}
		return nil
	})
	if err != nil {
		return nil, "", mapErr("list federation relationships", err)
	}
	next := ""
	if limit > 0 && len(out) == limit {
		out = out[:limit-1]
		next = encodePageToken(out[len(out)-1].TrustDomain)
	}
	return out, next, nil
}

// UpdateFederationRelationship implements datastore.DataStore.
func (s *Store) UpdateFederationRelationship(ctx context.Context, fr *types.FederationRelationship, mask *types.FederationRelationshipMask) (*types.FederationRelationship, error) {
	if mask == nil {
		mask = allFederationFields
	}
	in, err := validateFederation(fr, mask)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: update federation relationship: %w", err)
	}
	var out *types.FederationRelationship
	err = s.write(ctx, func(t txn) error {
		cur, err := loadFederation(ctx, t, in.trustDomain, true)
		if err != nil {
			return err
		}
		if mask.BundleEndpointUrl {
			cur.url = in.url
		}
		if mask.BundleEndpointProfile {
			cur.profile, cur.endpointID = in.profile, in.endpointID
		}
		if _, err := t.exec(ctx, `UPDATE federated_trust_domains
			SET bundle_endpoint_url = ?, bundle_endpoint_profile = ?, endpoint_spiffe_id = ? WHERE trust_domain = ?`,
			cur.url, cur.profile, cur.endpointID, cur.trustDomain); err != nil {
			return err
		}
		if mask.TrustDomainBundle {
			if err := setFederatedBundle(ctx, t, cur.trustDomain, fr.TrustDomainBundle); err != nil {
				return err
			}
		}
		out, err = rowToFederation(ctx, t, cur)
		return err
	})
	if err != nil {
		return nil, mapErr("update federation relationship", err)
	}
	return out, nil
}

// DeleteFederationRelationship implements datastore.DataStore.
func (s *Store) DeleteFederationRelationship(ctx context.Context, trustDomain string) error {
	err := s.write(ctx, func(t txn) error {
		res, err := t.exec(ctx, `DELETE FROM federated_trust_domains WHERE trust_domain = ?`, trustDomainName(trustDomain))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("federation relationship %q: %w", trustDomain, datastore.ErrNotFound)
		}
		return nil
	})
	return mapErr("delete federation relationship", err)
}

// validateFederation checks the fields mask selects, as SPIRE's store
// does, and returns them as a row.
func validateFederation(fr *types.FederationRelationship, mask *types.FederationRelationshipMask) (fedRow, error) {
	if fr == nil {
		return fedRow{}, errors.New("federation relationship is nil")
	}
	td, err := spiffeid.TrustDomainFromString(fr.TrustDomain)
	if err != nil {
		return fedRow{}, fmt.Errorf("trust domain %q: %w", fr.TrustDomain, err)
	}
	row := fedRow{trustDomain: td.Name(), url: fr.BundleEndpointUrl}
	if mask.BundleEndpointUrl && fr.BundleEndpointUrl == "" {
		return fedRow{}, errors.New("bundle endpoint URL is required")
	}
	if mask.BundleEndpointProfile {
		switch p := fr.BundleEndpointProfile.(type) {
		case *types.FederationRelationship_HttpsWeb:
			row.profile = profileHTTPSWeb
		case *types.FederationRelationship_HttpsSpiffe:
			if p.HttpsSpiffe == nil || p.HttpsSpiffe.EndpointSpiffeId == "" {
				return fedRow{}, errors.New("bundle endpoint SPIFFE ID is required")
			}
			if _, err := spiffeid.FromString(p.HttpsSpiffe.EndpointSpiffeId); err != nil {
				return fedRow{}, fmt.Errorf("bundle endpoint SPIFFE ID %q: %w", p.HttpsSpiffe.EndpointSpiffeId, err)
			}
			row.profile, row.endpointID = profileHTTPSSPIFFE, p.HttpsSpiffe.EndpointSpiffeId
		default:
			return fedRow{}, fmt.Errorf("unknown bundle endpoint profile type: %T", p)
		}
	}
	if b := fr.TrustDomainBundle; mask.TrustDomainBundle && b != nil && b.TrustDomain != "" && trustDomainName(b.TrustDomain) != row.trustDomain {
		return fedRow{}, fmt.Errorf("trust domain bundle is for %q, not %q", b.TrustDomain, row.trustDomain)
	}
	return row, nil
}

// setFederatedBundle replaces the trust domain's bundle with b when given.
func setFederatedBundle(ctx context.Context, t txn, trustDomain string, b *types.Bundle) error {
	if b == nil {
		return nil
	}
	b, data, err := encodeBundle(withTrustDomain(b, trustDomain))
	if err != nil {
		return err
	}
	return t.upsert(ctx, "bundles", "trust_domain", "data", b.TrustDomain, data)
}

// withTrustDomain returns b, or a copy of it naming trustDomain when it
// names none.
func withTrustDomain(b *types.Bundle, trustDomain string) *types.Bundle {
	if b.TrustDomain != "" {
		return b
	}
	c := proto.Clone(b).(*types.Bundle)
	c.TrustDomain = trustDomain
	return c
}

func loadFederation(ctx context.Context, t txn, trustDomain string, lock bool) (fedRow, error) {
	q := `SELECT trust_domain, bundle_endpoint_url, bundle_endpoint_profile, endpoint_spiffe_id
		FROM federated_trust_domains WHERE trust_domain = ?`
	if lock {
		q += t.forUpdate()
	}
	var r fedRow
	err := t.queryRow(ctx, q, trustDomain).Scan(&r.trustDomain, &r.url, &r.profile, &r.endpointID)
	if errors.Is(err, sql.ErrNoRows) {
		return fedRow{}, fmt.Errorf("federation relationship %q: %w", trustDomain, datastore.ErrNotFound)
	}
	return r, err
}

// rowToFederation builds the API type from a row and the trust domain's
// bundle, if there is one yet.
func rowToFederation(ctx context.Context, t txn, r fedRow) (*types.FederationRelationship, error) {
	fr := &types.FederationRelationship{TrustDomain: r.trustDomain, BundleEndpointUrl: r.url}
	switch r.profile {
	case profileHTTPSWeb:
		fr.BundleEndpointProfile = &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
	case profileHTTPSSPIFFE:
		fr.BundleEndpointProfile = &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: r.endpointID}}
	default:
		return nil, fmt.Errorf("federation relationship %q: unknown bundle endpoint profile type: %q", r.trustDomain, r.profile)
	}
	b, err := loadBundle(ctx, t, r.trustDomain, false)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		fr.TrustDomainBundle = b
	}
	return fr, nil
}
