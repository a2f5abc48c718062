// Package tpm is the TPM 2.0 ground floor shared by the agent and the
// server.
//
// The client half (TPM, AK, Quote, ActivateCredential) talks to a TPM at
// /dev/tpmrm0, a swtpm TCP endpoint (tcp://127.0.0.1:2321) or a swtpm Unix
// socket (unix:///path), and flushes every transient object it creates: a
// swtpm has only three object slots and no resource manager.
//
// The verifier half (VerifyEKCertificate, VerifyAK, MakeCredential,
// VerifyQuote, ReplayEventLog) checks that evidence on the server: an EK
// certificate per the TCG EK Credential Profile, an attestation key that is
// restricted and resident in the same TPM as the EK, and quotes over a
// server nonce whose PCR digest is recomputed from the reported values.
//
// Values that travel between the two (AKParams, Credential, Quote) are
// plain structs of TPM wire bytes, so any encoding can carry them.
package tpm
