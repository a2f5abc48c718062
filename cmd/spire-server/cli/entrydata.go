package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// maxEntryDataSize bounds what -data reads, from a file or stdin.
const maxEntryDataSize = 16 << 20

// readLimited reads r to its end, refusing more than limit bytes rather
// than truncating them into a confusing parse error; name says what r is
// in the error.
func readLimited(r io.Reader, name string, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than the %d MiB limit", name, limit>>20)
	}
	return data, nil
}

// readFileLimited is readLimited on the file at path.
func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f, path, limit)
}

// entryDataFile is the -data format of SPIRE's "entry create/update": the
// JSON form of SPIRE's RegistrationEntries message, where IDs are strings,
// e.g. {"entries":[{"spiffe_id":"spiffe://td/w","parent_id":"spiffe://td/a",
// "selectors":[{"type":"unix","value":"uid:1000"}]}]}. As with SPIRE's
// decoder, keys match case-insensitively and unknown keys are ignored.
type entryDataFile struct {
	Entries []*entryData `json:"entries"`
}

type entryData struct {
	Selectors      []*selectorData `json:"selectors"`
	ParentID       string          `json:"parent_id"`
	SpiffeID       string          `json:"spiffe_id"`
	X509SVIDTTL    int32           `json:"x509_svid_ttl"`
	FederatesWith  []string        `json:"federates_with"`
	EntryID        string          `json:"entry_id"`
	Admin          bool            `json:"admin"`
	Downstream     bool            `json:"downstream"`
	EntryExpiry    int64           `json:"entryExpiry"`
	DNSNames       []string        `json:"dns_names"`
	RevisionNumber int64           `json:"revision_number"`
	StoreSVID      bool            `json:"store_svid"`
	JWTSVIDTTL     int32           `json:"jwt_svid_ttl"`
	Hint           string          `json:"hint"`
	// TTL is the name x509_svid_ttl had in older SPIRE releases; files
	// written for them still work.
	TTL int32 `json:"ttl"`
}

// ParseEntryJSON parses the registration entries of a -data file into API
// entries, checking the IDs the way the SPIRE CLI does before sending.
func ParseEntryJSON(data []byte) ([]*types.Entry, error) {
	var file entryDataFile
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("invalid entry data: %w", err)
	}
	if len(file.Entries) == 0 {
		return nil, errors.New("invalid entry data: no entries")
	}
	out := make([]*types.Entry, 0, len(file.Entries))
	for i, d := range file.Entries {
		e, err := d.toProto()
		if err != nil {
			return nil, fmt.Errorf("invalid entry data: entry %d: %w", i, err)
		}
		out = append(out, e)
	}
	return out, nil
}

type selectorData struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

func (d *entryData) toProto() (*types.Entry, error) {
	if d == nil {
		return nil, errors.New("missing registration entry")
	}
	spiffeID, err := idToProto(d.SpiffeID)
	if err != nil {
		return nil, fmt.Errorf("invalid SPIFFE ID: %w", err)
	}
	parentID, err := idToProto(d.ParentID)
	if err != nil {
		return nil, fmt.Errorf("invalid parent ID: %w", err)
	}
	var federatesWith []string
	for _, s := range d.FederatesWith {
		td, err := spiffeid.TrustDomainFromString(s)
		if err != nil {
			return nil, fmt.Errorf("invalid federated trust domain: %w", err)
		}
		federatesWith = append(federatesWith, td.Name())
	}
	selectors := make([]*types.Selector, 0, len(d.Selectors))
	for _, s := range d.Selectors {
		if s == nil {
			return nil, errors.New("null selector")
		}
		selectors = append(selectors, &types.Selector{Type: s.Type, Value: s.Value})
	}
	x509TTL := d.X509SVIDTTL
	if x509TTL == 0 {
		x509TTL = d.TTL
	}
	return &types.Entry{
		Id:             d.EntryID,
		SpiffeId:       spiffeID,
		ParentId:       parentID,
		Selectors:      selectors,
		X509SvidTtl:    x509TTL,
		FederatesWith:  federatesWith,
		Admin:          d.Admin,
		Downstream:     d.Downstream,
		ExpiresAt:      d.EntryExpiry,
		DnsNames:       d.DNSNames,
		RevisionNumber: d.RevisionNumber,
		StoreSvid:      d.StoreSVID,
		JwtSvidTtl:     d.JWTSVIDTTL,
		Hint:           d.Hint,
	}, nil
}
