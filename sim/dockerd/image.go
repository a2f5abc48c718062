package dockerd

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
)

// Image returns an image whose rootfs holds the static binaries bins (path
// in the image -> Go package path, built with CGO_ENABLED=0), e.g.
//
//	d.Image(t, map[string]string{"/svid-client": "github.com/spiffe-hw/spire-hw/sim/dockerd/cmd/svid-client"})
//
// It is made with docker import (no registry is reachable) once per daemon
// and set of binaries; the binaries are built from the module the test runs
// in.
func (d *Daemon) Image(tb testing.TB, bins map[string]string) string {
	tb.Helper()
	key := binsKey(bins)
	d.imgMu.Lock()
	defer d.imgMu.Unlock()
	if ref, ok := d.images[key]; ok {
		return ref
	}
	layer, err := buildRootfs(tb.TempDir(), bins)
	if err != nil {
		tb.Fatalf("dockerd: image: %v", err)
	}
	sum := sha256.Sum256([]byte(key))
	ref := "spire-hw-sim/bins:" + hex.EncodeToString(sum[:6])
	if err := d.importImage(layer, ref); err != nil {
		tb.Fatalf("dockerd: image: %v", err)
	}
	d.images[key] = ref
	return ref
}

// binsKey is bins in a canonical form: the cache key of its image.
func binsKey(bins map[string]string) string {
	names := make([]string, 0, len(bins))
	for name := range bins {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "%s=%s\n", name, bins[name])
	}
	return b.String()
}

// buildRootfs builds each binary into dir and returns a tar of the rootfs
// holding them.
func buildRootfs(dir string, bins map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	names := make([]string, 0, len(bins))
	for name := range bins {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		clean := path.Clean("/" + name)
		if clean == "/" {
			return nil, fmt.Errorf("binary path %q names the root", name)
		}
		out := filepath.Join(dir, fmt.Sprintf("bin%d", i))
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, bins[name])
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v: %s", bins[name], err, msg)
		}
		// Parent directories first, as a tar of a real tree has them.
		var parents []string
		for p := path.Dir(clean); p != "/"; p = path.Dir(p) {
			parents = append([]string{p}, parents...)
		}
		for _, p := range parents {
			if dirs[p] {
				continue
			}
			dirs[p] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(p, "/") + "/", Mode: 0o755}); err != nil {
				return nil, err
			}
		}
		if err := addFile(tw, strings.TrimPrefix(clean, "/"), out); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addFile(tw *tar.Writer, name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: fi.Size()}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// importImage runs docker import of layer as ref and reads the daemon's
// progress stream to its end, where an error is reported.
func (d *Daemon) importImage(layer []byte, ref string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rc, err := d.Client.ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(layer), SourceName: "-"}, ref, image.ImportOptions{})
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var msg struct {
			Status      string `json:"status"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("import: read progress: %w", err)
		}
		if msg.ErrorDetail != nil {
			return fmt.Errorf("import: %s", msg.ErrorDetail.Message)
		}
	}
}
