// Command softhsm-token creates a SoftHSM2 token in a directory of its own
// and prints how to use it: the SOFTHSM2_CONF export and the server's
// KeyManager and UpstreamAuthority "pkcs11" configuration. The PIN goes to a
// file (pin_file), not to the output.
//
//	eval "$(softhsm-token -dir /tmp/hsm -label spire-ca | grep ^export)"
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/spiffe-hw/spire-hw/sim/softhsm"
)

func main() {
	dir := flag.String("dir", "", "directory for the configuration and token (default: a new temporary directory)")
	label := flag.String("label", "spire-ca", "token label")
	pin := flag.String("pin", "", "user PIN (default: random, written to <dir>/<label>.pin)")
	maxSessions := flag.Int("max-sessions", 8, "max_sessions to print in the configuration")
	flag.Parse()
	if err := run(*dir, *label, *pin, *maxSessions); err != nil {
		fmt.Fprintln(os.Stderr, "softhsm-token:", err)
		os.Exit(1)
	}
}

func run(dir, label, pin string, maxSessions int) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "softhsm-token-")
		if err != nil {
			return err
		}
		dir = d
	}
	s, err := softhsm.New(dir)
	if err != nil {
		return err
	}
	tok, err := s.InitToken(label, pin)
	if err != nil {
		return err
	}
	fmt.Printf(`export SOFTHSM2_CONF=%s

# Every X.509-SVID and JWT-SVID signed inside the token:
KeyManager "pkcs11" {
    plugin_data {
        module_path          = %q
        token_label          = %q
        pin_file             = %q
        key_label_prefix     = "spire-"
        max_sessions         = %d
        session_wait_timeout = "5s"
    }
}

# Or: the token holds a long-lived root that signs an in-memory intermediate
# (pair it with KeyManager "memory"):
UpstreamAuthority "pkcs11" {
    plugin_data {
        uri          = "pkcs11:token=%s;object=upstream-root?module-path=%s&pin-source=file:%s"
        max_sessions = %d
        create_root  = true
    }
}
`, s.Conf, tok.ModulePath, tok.Label, tok.PINFile, maxSessions, tok.Label, tok.ModulePath, tok.PINFile, maxSessions)
	return nil
}
