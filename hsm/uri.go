package hsm

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// URI is what an RFC 7512 pkcs11: URI names: a token (with the module to
// reach it and the source of its PIN) and optionally one object in it.
type URI struct {
	// Config has ModulePath, the token selector and PIN set, and nothing
	// else.
	Config Config
	// Object is the object (key) label, the path attribute "object".
	Object string
}

// ParseURI parses a pkcs11: URI such as
//
//	pkcs11:token=ca;object=x509-CA-A?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/spire/pin
//
// Path attributes: token, serial, slot-id, object (id, type, manufacturer,
// model, library-* are accepted and ignored). Query attributes:
// module-path, pin-value, pin-source (a file path or file: URI; "env:NAME"
// reads an environment variable). The PIN is read here, so a missing PIN
// file is an error at configuration time.
func ParseURI(s string) (URI, error) {
	var u URI
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return u, errors.New(`hsm: URI must start with "pkcs11:"`)
	}
	path, query, _ := strings.Cut(rest, "?")
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			k, v, err := splitAttr(attr)
			if err != nil {
				return u, err
			}
			if seen[k] {
				return u, fmt.Errorf("hsm: URI: attribute %q given twice", k)
			}
			seen[k] = true
			switch k {
			case "token":
				u.Config.TokenLabel = v
			case "serial":
				u.Config.TokenSerial = v
			case "slot-id":
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					return u, fmt.Errorf("hsm: URI: slot-id %q is not a slot number", v)
				}
				u.Config.SlotID = &n
			case "object":
				u.Object = v
			case "id", "type", "manufacturer", "model", "library-manufacturer",
				"library-description", "library-version", "slot-description", "slot-manufacturer":
			default:
				return u, fmt.Errorf("hsm: URI: unknown path attribute %q", k)
			}
		}
	}
	var pinValue, pinSource string
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			k, v, err := splitAttr(attr)
			if err != nil {
				return u, err
			}
			if seen["?"+k] {
				return u, fmt.Errorf("hsm: URI: attribute %q given twice", k)
			}
			seen["?"+k] = true
			switch k {
			case "module-path":
				u.Config.ModulePath = v
			case "pin-value":
				pinValue = v
			case "pin-source":
				pinSource = v
			case "module-name":
				return u, errors.New("hsm: URI: module-name is not supported; give module-path")
			default:
				return u, fmt.Errorf("hsm: URI: unknown query attribute %q", k)
			}
		}
	}
	if pinValue != "" && pinSource != "" {
		return u, errors.New("hsm: URI: give pin-value or pin-source, not both")
	}
	switch {
	case pinValue != "":
		u.Config.PIN = PIN(pinValue)
	case pinSource != "":
		var file, env string
		if name, ok := strings.CutPrefix(pinSource, "env:"); ok {
			env = name
		} else {
			file = strings.TrimPrefix(pinSource, "file:")
			file = strings.TrimPrefix(file, "//")
		}
		pin, err := ReadPIN("", file, env)
		if err != nil {
			return u, fmt.Errorf("hsm: URI: pin-source: %w", err)
		}
		u.Config.PIN = pin
	}
	return u, nil
}

func splitAttr(attr string) (string, string, error) {
	k, v, ok := strings.Cut(attr, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("hsm: URI: malformed attribute %q (want name=value)", redactAttr(attr))
	}
	dv, err := url.PathUnescape(v)
	if err != nil {
		return "", "", fmt.Errorf("hsm: URI: attribute %q: bad percent-encoding", k)
	}
	return k, dv, nil
}

// redactAttr keeps a PIN out of an error message about a malformed URI.
func redactAttr(attr string) string {
	if strings.HasPrefix(attr, "pin-value") {
		return "pin-value..."
	}
	return attr
}

// fileExists is used to give module_path errors a precise cause.
func fileExists(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}
