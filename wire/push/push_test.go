package push

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestDecodeNotice(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Change
		want Change
	}{
		{"open", Open, Open},
		{"entries", Entries, Entries},
		{"bundle", Bundle, Bundle},
		{"both", Entries | Bundle, Entries | Bundle},
		{"federated bundles", FederatedBundles, FederatedBundles},
		// A newer server's bit: the agent syncs everything.
		{"unknown bit", 1 << 7, Entries | Bundle | FederatedBundles},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(Notice(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeNotice(b)
			if err != nil || got != tc.want {
				t.Fatalf("DecodeNotice = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := DecodeNotice(make([]byte, MaxNoticeSize+1)); err == nil {
		t.Error("oversized notice accepted")
	}
	if _, err := DecodeNotice([]byte{0x08}); err == nil {
		t.Error("truncated notice accepted")
	}
	if _, err := ParseNotice(nil); err == nil {
		t.Error("nil notice accepted")
	}
	if !(Entries | Bundle).Has(Bundle) || Entries.Has(Bundle) {
		t.Error("Has is wrong")
	}
}

// The bits' values are the wire contract: agents already deployed know 1
// and 2 only, and turn 4 (FederatedBundles), unknown to them, into a full
// sync (the "unknown bit" case of TestDecodeNotice is their rule).
func TestChangeBits(t *testing.T) {
	if Entries != 1 || Bundle != 2 || FederatedBundles != 4 {
		t.Fatalf("bits moved: entries %d, bundle %d, federated bundles %d", Entries, Bundle, FederatedBundles)
	}
	for c, want := range map[Change]string{
		Open: "open", Entries: "entries", Entries | FederatedBundles: "entries|federated_bundles",
		Entries | Bundle | FederatedBundles: "entries|bundle|federated_bundles", 1 << 9: "Change(0x200)",
	} {
		if got := c.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint32(c), got, want)
		}
	}
}
