package hsm

import (
	"context"
	"crypto/x509"
	"fmt"
)

// Certificate returns the certificate object labelled label (prefix
// included as for keys), or nil when there is none. An upstream root keeps
// its certificate next to its key this way.
func (t *Token) Certificate(label string) (*x509.Certificate, error) {
	full := t.cfg.KeyLabelPrefix + label
	c, gen, err := t.current()
	if err != nil {
		return nil, fmt.Errorf("hsm: certificate %q: %w", full, err)
	}
	cert, err := c.FindCertificate(nil, []byte(full), nil)
	if err != nil {
		if _, ok := p11Code(err); ok {
			t.fail(gen, err)
			return nil, fmt.Errorf("hsm: certificate %q: %w: %v", full, ErrUnavailable, err)
		}
		return nil, fmt.Errorf("hsm: certificate %q: %w", full, err)
	}
	return cert, nil
}

// StoreCertificate stores cert under label, replacing any certificate
// that had the label.
func (t *Token) StoreCertificate(ctx context.Context, label string, cert *x509.Certificate) error {
	t.genMu.Lock()
	defer t.genMu.Unlock()
	full := t.cfg.KeyLabelPrefix + label
	c, gen, err := t.current()
	if err != nil {
		return fmt.Errorf("hsm: store certificate %q: %w", full, err)
	}
	if err := t.acquire(ctx); err != nil {
		return fmt.Errorf("hsm: store certificate %q: %w", full, err)
	}
	defer t.release()
	if err := c.DeleteCertificate(nil, []byte(full), nil); err != nil {
		t.fail(gen, err)
		return fmt.Errorf("hsm: store certificate %q: delete old: %w: %v", full, ErrUnavailable, err)
	}
	if err := c.ImportCertificateWithLabel([]byte(full), []byte(full), cert); err != nil {
		t.fail(gen, err)
		return fmt.Errorf("hsm: store certificate %q: %w: %v", full, ErrUnavailable, err)
	}
	return nil
}
