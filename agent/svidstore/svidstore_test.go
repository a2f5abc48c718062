package svidstore_test

import (
	"slices"
	"testing"

	"github.com/spiffe-hw/spire-hw/agent/svidstore"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

func TestParseSelectors(t *testing.T) {
	sel := func(typ, value string) *types.Selector { return &types.Selector{Type: typ, Value: value} }
	tests := []struct {
		name     string
		in       []*types.Selector
		wantName string
		wantMeta []string
		wantErr  string
	}{
		{name: "one store", in: []*types.Selector{sel("aws", "secretname:a"), sel("aws", "region:x")}, wantName: "aws", wantMeta: []string{"secretname:a", "region:x"}},
		{name: "none", wantErr: "svidstore: no selectors found"},
		{name: "two types", in: []*types.Selector{sel("aws", "a"), sel("gcp", "b")}, wantErr: "svidstore: selector contains multiple types"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, meta, err := svidstore.ParseSelectors(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || name != tt.wantName || !slices.Equal(meta, tt.wantMeta) {
				t.Fatalf("got %q %q %v", name, meta, err)
			}
		})
	}
}
