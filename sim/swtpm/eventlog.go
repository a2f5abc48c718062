package swtpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"unicode/utf16"
)

// TCG event types used by the simulated boot.
const (
	EvPostCode              = 0x00000001
	EvNoAction              = 0x00000003
	EvSeparator             = 0x00000004
	EvSCRTMVersion          = 0x00000008
	EvEFIVariableDriverConf = 0x80000001
)

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
// PCR 0, the SecureBoot variable in PCR 7, and separators in PCRs 0-7.
func Boot(secureBoot bool) []Event {
	sb := byte(0)
	if secureBoot {
		sb = 1
	}
	ev := []Event{
		{PCR: 0, Type: EvSCRTMVersion, Data: utf16z("spire-hw sim 1.0")},
		{PCR: 0, Type: EvPostCode, Data: []byte("POST CODE")},
		{PCR: 7, Type: EvEFIVariableDriverConf, Data: efiVariable("SecureBoot", []byte{sb})},
	}
	for pcr := range 8 {
		ev = append(ev, Event{PCR: pcr, Type: EvSeparator, Data: []byte{0, 0, 0, 0}})
	}
	return ev
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
	var b bytes.Buffer
	// EFI_GLOBAL_VARIABLE 8BE4DF61-93CA-11D2-AA0D-00E098032B8C
	le(&b, uint32(0x8BE4DF61))
	le(&b, uint16(0x93CA))
	le(&b, uint16(0x11D2))
	b.Write([]byte{0xAA, 0x0D, 0x00, 0xE0, 0x98, 0x03, 0x2B, 0x8C})
	u := utf16.Encode([]rune(name))
	le(&b, uint64(len(u)))
	le(&b, uint64(len(data)))
	for _, c := range u {
		le(&b, c)
	}
	b.Write(data)
	return b.Bytes()
}
