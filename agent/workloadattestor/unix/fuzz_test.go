package unix

import (
	"strconv"
	"testing"
)

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t10 20 \n"))
	f.Add([]byte("Uid:\t7\nGid:\t8\n"))
	f.Add([]byte("Uid:\nGid:\t\t\nGroups:\tx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStatus(b)
		if err != nil {
			return
		}
		for _, v := range append([]string{st.uid, st.gid}, st.groups...) {
			if _, err := strconv.ParseUint(v, 10, 32); err != nil {
				t.Fatalf("accepted non-numeric id %q", v)
			}
		}
	})
}
