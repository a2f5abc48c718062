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
		// A newer server's bit: the agent syncs everything.
		{"unknown bit", 1 << 7, Entries | Bundle},
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
