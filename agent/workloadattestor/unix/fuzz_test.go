package unix

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
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

// parseStatusScanner is parseStatus as it was before it split lines in
// place (a bufio.Scanner and strings.Fields on every line): the oracle the
// faster one must agree with.
func parseStatusScanner(b []byte) (status, error) {
	var st status
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		switch key {
		case "Uid":
			id, err := pickID(fields)
			if err != nil {
				return status{}, err
			}
			st.uid = id
		case "Gid":
			id, err := pickID(fields)
			if err != nil {
				return status{}, err
			}
			st.gid = id
		case "Groups":
			for _, f := range fields {
				if _, err := strconv.ParseUint(f, 10, 32); err != nil {
					return status{}, err
				}
				st.groups = append(st.groups, f)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return status{}, err
	}
	if st.uid == "" || st.gid == "" {
		return status{}, errors.New("missing Uid or Gid line")
	}
	return st, nil
}

// The in-place parser accepts what the scanner did and finds the same IDs
// (inputs under the scanner's 1 MiB line limit, which /proc never nears).
func FuzzParseStatusSameAsScanner(f *testing.F) {
	f.Add([]byte("Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t10 20 \n"))
	f.Add([]byte("Uid:\t7\r\nGid:\t8\r\nGroups:\t1\r\nGroups:\t2"))
	f.Add([]byte("Uid:\t7\nGid:\t8\nUid:\t9 10\n:\n\n\nGid:x\n"))
	f.Add([]byte("Uid:\nGid:\t\t\nGroups:\tx"))
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := parseStatus(b)
		want, werr := parseStatusScanner(b)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("parseStatus err %v, scanner err %v", gerr, werr)
		}
		if gerr == nil && (got.uid != want.uid || got.gid != want.gid || !slices.Equal(got.groups, want.groups)) {
			t.Fatalf("parseStatus %+v, scanner %+v", got, want)
		}
	})
}
