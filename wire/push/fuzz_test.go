package push

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

func FuzzDecodeNotice(f *testing.F) {
	for _, c := range []Change{Open, Entries, Bundle, FederatedBundles, Entries | Bundle | FederatedBundles, 1 << 31} {
		b, err := proto.Marshal(Notice(c))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x08})
	f.Add([]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeNotice(b)
		if err != nil {
			return
		}
		if c&^known != 0 {
			t.Fatalf("DecodeNotice(%x) = %v: bits outside those known", b, c)
		}
	})
}
