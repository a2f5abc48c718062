package swtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"math/big"
	"time"
	"unicode/utf16"
)

// TCG event types used by the simulated boot.
const (
	EvPostCode              = 0x00000001
	EvNoAction              = 0x00000003
	EvSeparator             = 0x00000004
	EvSCRTMVersion          = 0x00000008
	EvEFIVariableDriverConf = 0x80000001
	EvEFIVariableAuthority  = 0x800000E0
)

// UEFI GUIDs, in their on-disk (mixed-endian) byte order.
var (
	// EFI_GLOBAL_VARIABLE 8BE4DF61-93CA-11D2-AA0D-00E098032B8C: SecureBoot,
	// PK, KEK.
	globalVariable = guid(0x8BE4DF61, 0x93CA, 0x11D2, [8]byte{0xAA, 0x0D, 0x00, 0xE0, 0x98, 0x03, 0x2B, 0x8C})
	// EFI_IMAGE_SECURITY_DATABASE_GUID D719B2CB-3D3A-4596-A3BC-DAD00E67656F:
	// db, dbx.
	imageSecurityDatabase = guid(0xD719B2CB, 0x3D3A, 0x4596, [8]byte{0xA3, 0xBC, 0xDA, 0xD0, 0x0E, 0x67, 0x65, 0x6F})
	// EFI_CERT_SHA256_GUID C1C41626-504C-4092-ACA9-41F936934328.
	certSHA256 = guid(0xC1C41626, 0x504C, 0x4092, [8]byte{0xAC, 0xA9, 0x41, 0xF9, 0x36, 0x93, 0x43, 0x28})
	// The owner of the simulated keys: any GUID will do.
	simOwner = guid(0x5350495F, 0x4857, 0x5349, [8]byte{'M', 'O', 'W', 'N', 'E', 'R', '0', '1'})
)

func guid(a uint32, b, c uint16, d [8]byte) []byte {
	var buf bytes.Buffer
	le(&buf, a)
	le(&buf, b)
	le(&buf, c)
	buf.Write(d[:])
	return buf.Bytes()
}

// Event is one measurement of a simulated boot.
type Event struct {
	PCR  int
	Type uint32
	Data []byte
}

// Extender extends a SHA-256 PCR; *tpm.TPM is one.
type Extender interface {
	Extend(pcr int, digest []byte) error
}

// Boot returns the events of a small UEFI-like boot: firmware code in
// PCR 0, the SecureBoot variable in PCR 7, and separators in PCRs 0-7. With
// secureBoot, PCR 7 also holds what firmware measures when Secure Boot is
// on: the PK, KEK, db and dbx databases before the separator, and after it
// the db certificate that verified the boot loader (signer, a DER
// certificate).
func Boot(secureBoot bool, signer ...[]byte) []Event {
	sb := byte(0)
	if secureBoot {
		sb = 1
	}
	ev := []Event{
		{PCR: 0, Type: EvSCRTMVersion, Data: utf16z("spire-hw sim 1.0")},
		{PCR: 0, Type: EvPostCode, Data: []byte("POST CODE")},
		{PCR: 7, Type: EvEFIVariableDriverConf, Data: efiVariable("SecureBoot", []byte{sb})},
	}
	if secureBoot {
		for _, db := range []struct {
			name  string
			guid  []byte
			entry string
		}{{"PK", globalVariable, "platform key"}, {"KEK", globalVariable, "key exchange key"},
			{"db", imageSecurityDatabase, "boot loader"}, {"dbx", imageSecurityDatabase, "revoked loader"}} {
			ev = append(ev, Event{PCR: 7, Type: EvEFIVariableDriverConf, Data: uefiVariable(db.guid, db.name, sha256List(db.entry))})
		}
	}
	for pcr := range 8 {
		ev = append(ev, Event{PCR: pcr, Type: EvSeparator, Data: []byte{0, 0, 0, 0}})
	}
	if secureBoot && len(signer) > 0 {
		sig := append(append([]byte(nil), simOwner...), signer[0]...)
		ev = append(ev, Event{PCR: 7, Type: EvEFIVariableAuthority, Data: uefiVariable(imageSecurityDatabase, "db", sig)})
	}
	return ev
}

// sha256List is an EFI_SIGNATURE_LIST holding the SHA-256 of each name.
func sha256List(names ...string) []byte {
	const header, entry = 28, 16 + 32
	var b bytes.Buffer
	b.Write(certSHA256)
	le(&b, uint32(header+entry*len(names)))
	le(&b, uint32(0)) // no vendor header
	le(&b, uint32(entry))
	for _, n := range names {
		b.Write(simOwner)
		h := sha256.Sum256([]byte(n))
		b.Write(h[:])
	}
	return b.Bytes()
}

// MeasureBoot extends each event's SHA-256 digest into its PCR and returns
// the crypto-agile TCG event log (SHA-256 bank only) that replays to the
// resulting PCR values.
func MeasureBoot(x Extender, events []Event) ([]byte, error) {
	log := SpecIDEvent()
	for _, e := range events {
		d := sha256.Sum256(e.Data)
		if err := x.Extend(e.PCR, d[:]); err != nil {
			return nil, fmt.Errorf("swtpm: measure boot: %w", err)
		}
		log = append(log, EventBytes(e, d[:])...)
	}
	return log, nil
}

// SpecIDEvent is the SHA-1-format header event that announces a
// crypto-agile log with one SHA-256 bank.
func SpecIDEvent() []byte {
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	le(&spec, uint32(0))           // platform class
	spec.Write([]byte{0, 2, 0, 2}) // spec version minor, major, errata, uintn size
	le(&spec, uint32(1))           // algorithms
	le(&spec, uint16(0x000b))      // SHA-256
	le(&spec, uint16(32))
	spec.WriteByte(0) // vendor info size
	var b bytes.Buffer
	le(&b, uint32(0))
	le(&b, uint32(EvNoAction))
	b.Write(make([]byte, 20))
	le(&b, uint32(spec.Len()))
	b.Write(spec.Bytes())
	return b.Bytes()
}

// EventBytes encodes one TCG_PCR_EVENT2 with a SHA-256 digest.
func EventBytes(e Event, digest []byte) []byte {
	var b bytes.Buffer
	le(&b, uint32(e.PCR))
	le(&b, e.Type)
	le(&b, uint32(1))
	le(&b, uint16(0x000b))
	b.Write(digest)
	le(&b, uint32(len(e.Data)))
	b.Write(e.Data)
	return b.Bytes()
}

func le(b *bytes.Buffer, v any) { _ = binary.Write(b, binary.LittleEndian, v) }

func utf16z(s string) []byte {
	var b bytes.Buffer
	for _, u := range utf16.Encode([]rune(s)) {
		le(&b, u)
	}
	le(&b, uint16(0))
	return b.Bytes()
}

// efiVariable encodes a UEFI_VARIABLE_DATA for a variable of the EFI
// global-variable GUID.
func efiVariable(name string, data []byte) []byte {
	return uefiVariable(globalVariable, name, data)
}

// uefiVariable encodes a UEFI_VARIABLE_DATA.
func uefiVariable(vendor []byte, name string, data []byte) []byte {
	var b bytes.Buffer
	b.Write(vendor)
	u := utf16.Encode([]rune(name))
	le(&b, uint64(len(u)))
	le(&b, uint64(len(data)))
	for _, c := range u {
		le(&b, c)
	}
	b.Write(data)
	return b.Bytes()
}

// BootSigner returns a self-signed certificate (DER) to stand for the db
// certificate that verified a simulated boot loader.
func BootSigner() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("swtpm: boot signer: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{Organization: []string{"spire-hw sim"}, CommonName: "Secure Boot db signer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("swtpm: boot signer: %w", err)
	}
	return der, nil
}
