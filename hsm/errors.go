package hsm

import (
	"errors"

	"github.com/miekg/pkcs11"
)

var (
	// ErrUnavailable marks a failure of the token rather than of the
	// request: the token is gone, or recovering. Callers map it to gRPC
	// Unavailable; the request may succeed later.
	ErrUnavailable = errors.New("hsm: token unavailable")
	// ErrKeyNotFound is returned (wrapped) when no key has the given label.
	ErrKeyNotFound = errors.New("hsm: key not found")
	// ErrWrongPIN reports a login refused for its PIN. It is never retried:
	// tokens lock the user PIN after a few failed attempts.
	ErrWrongPIN = errors.New("hsm: wrong PIN")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("hsm: token closed")
	// ErrKeyChanged reports that a key found under a label is not the key
	// this process knew under it: the token was swapped or edited.
	ErrKeyChanged = errors.New("hsm: key changed in the token")
)

// errModuleReset is the reason a Token is briefly unavailable while
// another Token on its module recovers.
var errModuleReset = errors.New("reconnecting: another token on the module is recovering")

// p11Code returns the PKCS#11 return value wrapped in err, if any.
func p11Code(err error) (pkcs11.Error, bool) {
	var pe pkcs11.Error
	if errors.As(err, &pe) {
		return pe, true
	}
	return 0, false
}

// pinError reports whether err is a login failure that retrying can only
// make worse (more failed attempts towards the lock-out).
func pinError(err error) bool {
	code, ok := p11Code(err)
	if !ok {
		return false
	}
	switch code {
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_INVALID,
		pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_PIN_EXPIRED:
		return true
	}
	return false
}

// requestError reports whether a PKCS#11 failure is the request's fault
// (bad digest length, wrong mechanism for the key) rather than the token's.
// Every other PKCS#11 failure during signing is taken as the token going
// away: SoftHSM reports a removed token as CKR_OBJECT_HANDLE_INVALID, real
// HSMs as CKR_DEVICE_REMOVED, CKR_SESSION_HANDLE_INVALID and the like, and
// a spurious recovery costs only a re-login.
func requestError(err error) bool {
	code, ok := p11Code(err)
	if !ok {
		return false
	}
	switch code {
	case pkcs11.CKR_DATA_LEN_RANGE, pkcs11.CKR_DATA_INVALID, pkcs11.CKR_ARGUMENTS_BAD,
		pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID,
		pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED,
		pkcs11.CKR_FUNCTION_NOT_SUPPORTED:
		return true
	}
	return false
}
