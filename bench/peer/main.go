// Command peer builds upstream SPIRE's spire-server and spire-agent, at the
// version this module pins as Go tool dependencies, into .bin/<version>/
// once, and prints that directory. `make bench-peer` hands the directory to
// the side-by-side harness in bench/compare.
//
// It is a separate module so that the project's own module never depends
// on SPIRE. A SPIRE build takes many minutes on a small machine, so with
// -seed the binaries are copied from another cache (test/interop/.bin)
// when their build info proves they are the pinned release.
package main

import (
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
)

const spireModule = "github.com/spiffe/spire"

var binaries = []string{"spire-server", "spire-agent"}

func main() {
	seed := flag.String("seed", "", "a directory holding <version>/spire-server and spire-agent to reuse if they are the pinned release")
	flag.Parse()
	dir, err := ensure(*seed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		os.Exit(1)
	}
	fmt.Println(dir)
}

// ensure returns the cache directory, filling it from seed or by building.
func ensure(seed string) (string, error) {
	v, err := pinnedVersion("go.mod")
	if err != nil {
		return "", err
	}
	dir, err := filepath.Abs(filepath.Join(".bin", v))
	if err != nil {
		return "", err
	}
	if verify(dir, v) == nil {
		return dir, nil
	}
	// Fill a temporary directory and rename it last, so that an
	// interrupted build or copy is never mistaken for a cached one.
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	if seed != "" && verify(filepath.Join(seed, v), v) == nil {
		fmt.Fprintf(os.Stderr, "peer: reusing SPIRE %s from %s\n", v, filepath.Join(seed, v))
		for _, b := range binaries {
			if err := copyFile(filepath.Join(seed, v, b), filepath.Join(tmp, b)); err != nil {
				return "", err
			}
		}
	} else {
		fmt.Fprintf(os.Stderr, "peer: building SPIRE %s into %s (takes many minutes, cached afterwards)\n", v, dir)
		cmd := exec.Command("go", "build", "-o", tmp+"/", spireModule+"/cmd/spire-server", spireModule+"/cmd/spire-agent")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("build SPIRE %s: %w", v, err)
		}
	}
	if err := verify(tmp, v); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, nil
}

// pinnedVersion reads the SPIRE version go.mod requires, so that the cache
// directory follows the pin.
func pinnedVersion(gomod string) (string, error) {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("read go.mod: %w", err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/spiffe/spire (v\S+)`).FindSubmatch(b)
	if m == nil {
		return "", errors.New("go.mod does not require " + spireModule)
	}
	return string(m[1]), nil
}

// verify checks that dir holds both binaries and that they were built from
// SPIRE at version v (their embedded build info says so).
func verify(dir, v string) error {
	for _, b := range binaries {
		p := filepath.Join(dir, b)
		info, err := buildinfo.ReadFile(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if info.Main.Path != spireModule || info.Main.Version != v {
			return fmt.Errorf("%s is %s %s, want %s %s", p, info.Main.Path, info.Main.Version, spireModule, v)
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
