// Package swtpm starts software TPMs (swtpm) for tests, demos and
// benchmarks: each instance has its own state directory and socket, and an
// RSA and an ECC EK certificate issued by a local CA shared by the fleet,
// so verifiers are configured exactly as for real TPM manufacturers.
//
// It needs the Debian packages swtpm and swtpm-tools.
package swtpm

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Fleet is a set of running swtpm instances sharing one EK CA.
type Fleet struct {
	// Dir holds the CA and one state directory per instance.
	Dir string
	// RootCA is the PEM file of the local CA's self-signed root.
	RootCA string
	// IssuerCA is the PEM file of the intermediate that signs EK
	// certificates.
	IssuerCA string
	// CABundle holds RootCA and IssuerCA in one PEM file: the server's
	// ek_ca_path.
	CABundle string
	// TPMs are the instances, in start order.
	TPMs []*Instance
}

// Instance is one running swtpm.
type Instance struct {
	// Path is the tpm_path an agent opens: "unix:///..." or
	// "tcp://127.0.0.1:port".
	Path     string
	StateDir string

	args []string
	cmd  *exec.Cmd
	wait chan error
	dial func() (net.Conn, error)
}

// Options configure Start.
type Options struct {
	// TCP serves each instance on 127.0.0.1 ports BasePort+2i (data) and
	// BasePort+2i+1 (control) instead of Unix sockets.
	TCP      bool
	BasePort int
}

// Available reports why swtpm cannot be used, or nil.
func Available() error {
	for _, bin := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("swtpm: %s not installed (apt-get install swtpm swtpm-tools): %w", bin, err)
		}
	}
	return nil
}

// Start manufactures n TPMs under dir (EKs, EK certificates, a platform
// certificate) and starts them.
func Start(dir string, n int, opts Options) (*Fleet, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opts.TCP && opts.BasePort == 0 {
		opts.BasePort = 2321
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	caDir := filepath.Join(dir, "ca")
	if err := os.MkdirAll(caDir, 0o755); err != nil {
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	localca := filepath.Join(dir, "swtpm-localca.conf")
	setup := filepath.Join(dir, "swtpm_setup.conf")
	opt := filepath.Join(dir, "swtpm-localca.options")
	files := map[string]string{
		localca: fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", caDir),
		setup:   fmt.Sprintf("create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n", localca, opt),
		opt:     "--platform-manufacturer spire-hw\n--platform-version 2.1\n--platform-model swtpm-sim\n",
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			return nil, fmt.Errorf("swtpm: %w", err)
		}
	}
	f := &Fleet{
		Dir:      dir,
		RootCA:   filepath.Join(caDir, "swtpm-localca-rootca-cert.pem"),
		IssuerCA: filepath.Join(caDir, "issuercert.pem"),
		CABundle: filepath.Join(dir, "ek-ca.pem"),
	}
	for i := range n {
		state := filepath.Join(dir, fmt.Sprintf("tpm%d", i))
		if err := os.MkdirAll(state, 0o755); err != nil {
			f.Close()
			return nil, fmt.Errorf("swtpm: %w", err)
		}
		// The local CA serializes on a lock file, so manufacture in turn.
		out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state, "--create-ek-cert",
			"--create-platform-cert", "--config", setup, "--overwrite").CombinedOutput()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("swtpm: manufacture TPM %d: %w: %s", i, err, out)
		}
		inst := &Instance{StateDir: state}
		if opts.TCP {
			port := opts.BasePort + 2*i
			addr := "127.0.0.1:" + strconv.Itoa(port)
			inst.Path = "tcp://" + addr
			inst.args = []string{"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
				"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1)}
			inst.dial = func() (net.Conn, error) { return net.Dial("tcp", addr) }
		} else {
			sock := filepath.Join(state, "tpm.sock")
			inst.Path = "unix://" + sock
			// tpm2-tools' swtpm TCTI finds the control socket at <path>.ctrl.
			inst.args = []string{"--server", "type=unixio,path=" + sock, "--ctrl", "type=unixio,path=" + sock + ".ctrl"}
			inst.dial = func() (net.Conn, error) { return net.Dial("unix", sock) }
		}
		if err := inst.start(); err != nil {
			f.Close()
			return nil, fmt.Errorf("swtpm: start TPM %d: %w", i, err)
		}
		f.TPMs = append(f.TPMs, inst)
	}
	root, err1 := os.ReadFile(f.RootCA)
	issuer, err2 := os.ReadFile(f.IssuerCA)
	if err := errors.Join(err1, err2); err != nil {
		f.Close()
		return nil, fmt.Errorf("swtpm: read CA: %w", err)
	}
	if err := os.WriteFile(f.CABundle, append(append(root, '\n'), issuer...), 0o644); err != nil {
		f.Close()
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	return f, nil
}

func (i *Instance) start() error {
	args := append([]string{"socket", "--tpm2", "--tpmstate", "dir=" + i.StateDir,
		"--flags", "not-need-init,startup-clear", "--log", "file=" + filepath.Join(i.StateDir, "swtpm.log")}, i.args...)
	cmd := exec.Command("swtpm", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Own process group: a test's Ctrl-C reaches the test binary, which
	// stops the simulators in cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	i.cmd, i.wait = cmd, make(chan error, 1)
	go func() { i.wait <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := i.dial()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case werr := <-i.wait:
			i.cmd = nil
			return fmt.Errorf("swtpm exited: %v: %s", werr, strings.TrimSpace(stderr.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = i.stop()
			return fmt.Errorf("swtpm did not listen: %w", err)
		}
	}
}

func (i *Instance) stop() error {
	if i.cmd == nil {
		return nil
	}
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-i.wait:
	case <-time.After(5 * time.Second):
		_ = i.cmd.Process.Kill()
		<-i.wait
	}
	i.cmd = nil
	return nil
}

// Reboot stops and restarts the TPM with its state: the TPM sees a reset
// (TPM2_Startup(CLEAR)), so its reset counter grows and PCRs start over.
func (i *Instance) Reboot() error {
	if err := i.stop(); err != nil {
		return err
	}
	if err := i.start(); err != nil {
		return fmt.Errorf("swtpm: reboot: %w", err)
	}
	return nil
}

// Close stops every instance. The directory stays for inspection; tests
// put it in t.TempDir.
func (f *Fleet) Close() {
	for _, t := range f.TPMs {
		_ = t.stop()
	}
}
