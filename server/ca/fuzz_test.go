package ca

import "testing"

// The journal comes from the datastore, which the CA does not trust to be
// intact: decoding must reject, never panic.
func FuzzDecodeJournal(f *testing.F) {
	f.Add(sampleJournal(f))
	f.Add([]byte(`{"version":1,"x509_cas":[],"jwt_keys":[]}`))
	f.Add([]byte(`{"version":1,"x509_cas":[{"slot":"A","key_id":"x509-CA-A","status":"active","issued_at":1,"not_after":2}]}`))
	f.Add([]byte(`{"version":1,"jwt_keys":[{"slot":"B","key_id":"JWT-Signer-B","kid":"k","status":"prepared","public_key":"AAAA","issued_at":1,"not_after":2}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		xs, js, err := decodeJournal(data)
		if err != nil {
			return
		}
		if _, err := encodeJournal(xs, js); err != nil {
			t.Fatalf("decoded journal does not encode: %v", err)
		}
	})
}
