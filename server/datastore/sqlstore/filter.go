package sqlstore

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// setMatch builds a condition on the rows of a child table (selectors,
// node selectors, federated trust domains) that belong to the outer row
// outerKey, comparing them as a set with members.
//
// table is "name alias"-free: the alias x is added here. cols are the
// columns that make up one member; each element of members has one value
// per column. The child tables have the member columns in their primary
// key, so a COUNT of matching rows counts distinct members.
//
// Subset and Exact require the row to have at least one member: an entry
// without selectors must never match every workload.
func setMatch(table, fkCol, outerKey string, cols []string, members [][]any, m datastore.MatchBehavior, w *where) error {
	if len(members) == 0 {
		return fmt.Errorf("sqlstore: set filter with no members")
	}
	var inSet strings.Builder
	var inArgs []any
	for i, mem := range members {
		if i > 0 {
			inSet.WriteString(" OR ")
		}
		inSet.WriteByte('(')
		for j, c := range cols {
			if j > 0 {
				inSet.WriteString(" AND ")
			}
			inSet.WriteString("x." + c + " = ?")
		}
		inSet.WriteByte(')')
		inArgs = append(inArgs, mem...)
	}
	from := "FROM " + table + " x WHERE x." + fkCol + " = " + outerKey
	anyMatch := "EXISTS (SELECT 1 " + from + " AND (" + inSet.String() + "))"
	noOther := "NOT EXISTS (SELECT 1 " + from + " AND NOT (" + inSet.String() + "))"
	allOf := fmt.Sprintf("(SELECT COUNT(*) %s AND (%s)) = %d", from, inSet.String(), len(members))
	switch m {
	case datastore.MatchAny:
		w.add(anyMatch, inArgs...)
	case datastore.MatchSuperset:
		w.add(allOf, inArgs...)
	case datastore.MatchSubset:
		w.add(anyMatch, inArgs...)
		w.add(noOther, inArgs...)
	case datastore.MatchExact:
		w.add(allOf, inArgs...)
		w.add(noOther, inArgs...)
	default:
		return fmt.Errorf("sqlstore: unknown match behavior %d", m)
	}
	return nil
}

// selectorMembers dedupes selectors into set members (type, value).
func selectorMembers(sels []*types.Selector) [][]any {
	seen := make(map[[2]string]bool, len(sels))
	var out [][]any
	for _, s := range sels {
		k := [2]string{s.GetType(), s.GetValue()}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, []any{k[0], k[1]})
	}
	return out
}

// uniqueSelectors returns the distinct selectors sorted by type then
// value: the order the store returns and hashes them in.
func uniqueSelectors(sels []*types.Selector) []*types.Selector {
	seen := make(map[[2]string]bool, len(sels))
	out := make([]*types.Selector, 0, len(sels))
	for _, s := range sels {
		k := [2]string{s.GetType(), s.GetValue()}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, &types.Selector{Type: k[0], Value: k[1]})
	}
	sortSelectors(out)
	return out
}

func sortSelectors(sels []*types.Selector) {
	sort.Slice(sels, func(i, j int) bool {
		if sels[i].Type != sels[j].Type {
			return sels[i].Type < sels[j].Type
		}
		return sels[i].Value < sels[j].Value
	})
}

// trustDomainName strips the scheme SPIRE sometimes puts on federated
// trust domains and bundle keys, so "spiffe://td" and "td" are one key.
func trustDomainName(s string) string {
	return strings.TrimPrefix(s, "spiffe://")
}
