// Command federation-demo is the workload half of `make demo-federation`:
// two workloads, one in each of two federated trust domains, each fetching
// its X.509-SVID and bundles from its own agent's Workload API, then
// talking over mutual TLS with go-spiffe, each side authorizing only the
// other trust domain. It prints what each workload got and the handshake,
// and shows that the peer's SVID does not verify without the federated
// bundle.
//
//	go run ./sim/cmd/federation-demo -a unix:///tmp/a/agent.sock -b unix:///tmp/b/agent.sock
//
// It exits non-zero when any step fails.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "federation-demo:", err)
		os.Exit(1)
	}
}

// workload is what one side's Workload API handed out.
type workload struct {
	addr string
	svid *x509svid.SVID
	set  *x509bundle.Set
}

func (w *workload) td() spiffeid.TrustDomain { return w.svid.ID.TrustDomain() }

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("federation-demo", flag.ContinueOnError)
	addrA := fs.String("a", "", "Workload API address of the first trust domain's agent (unix:///path)")
	addrB := fs.String("b", "", "Workload API address of the second trust domain's agent (unix:///path)")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for each workload's SVID and federated bundle")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addrA == "" || *addrB == "" {
		return errors.New("both -a and -b are required")
	}
	ctx := context.Background()
	a, err := fetch(ctx, *addrA, *timeout)
	if err != nil {
		return err
	}
	b, err := fetch(ctx, *addrB, *timeout)
	if err != nil {
		return err
	}
	// Each must hold the other's bundle, which only federation puts there.
	for _, p := range [][2]*workload{{a, b}, {b, a}} {
		if err := waitForBundle(ctx, p[0], p[1].td(), *timeout); err != nil {
			return err
		}
	}
	for _, w := range []*workload{a, b} {
		fmt.Fprintf(out, "workload at %s\n  SVID:    %s (expires %s)\n  bundles: %s\n",
			w.addr, w.svid.ID, w.svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339), bundleNames(w.set))
	}

	fmt.Fprintf(out, "\nmTLS: %s listens, %s dials; each authorizes only members of the other trust domain\n", a.svid.ID, b.svid.ID)
	if err := handshake(out, a, b); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nmTLS the other way: %s listens, %s dials\n", b.svid.ID, a.svid.ID)
	if err := handshake(out, b, a); err != nil {
		return err
	}

	// Without federation, a's view of the world is its own bundle: b's SVID
	// does not verify against it.
	own, _ := a.set.Get(a.td())
	_, _, err = x509svid.Verify(b.svid.Certificates, x509bundle.NewSet(own))
	if err == nil {
		return fmt.Errorf("%s's SVID verified against %s's own bundle alone", b.svid.ID, a.td())
	}
	fmt.Fprintf(out, "\nwithout the federated bundle, %s cannot verify %s:\n  %v\n", a.td(), b.svid.ID, err)
	return nil
}

// fetch returns the workload's X.509 context from addr, retrying while the
// agent is still syncing its entries.
func fetch(ctx context.Context, addr string, timeout time.Duration) (*workload, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := fetchOnce(ctx, addr)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no X.509-SVID from %s after %s: %w", addr, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func fetchOnce(ctx context.Context, addr string) (*workload, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return nil, err
	}
	return &workload{addr: addr, svid: x.DefaultSVID(), set: x.Bundles}, nil
}

// waitForBundle refetches w until its bundles include td's: the federated
// bundle can reach the agent a sync after the SVID did.
func waitForBundle(ctx context.Context, w *workload, td spiffeid.TrustDomain, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !w.set.Has(td) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s has no bundle for %s after %s (bundles: %s)", w.svid.ID, td, timeout, bundleNames(w.set))
		}
		time.Sleep(250 * time.Millisecond)
		n, err := fetchOnce(ctx, w.addr)
		if err != nil {
			continue
		}
		*w = *n
	}
	return nil
}

func bundleNames(s *x509bundle.Set) string {
	var names []string
	for _, b := range s.Bundles() {
		names = append(names, fmt.Sprintf("%s (%d CA)", b.TrustDomain(), len(b.X509Authorities())))
	}
	return strings.Join(names, ", ")
}

// handshake runs one mTLS connection from dialer to listener over
// loopback and exchanges a line each way.
func handshake(out io.Writer, listener, dialer *workload) error {
	ln, err := tls.Listen("tcp", "127.0.0.1:0",
		tlsconfig.MTLSServerConfig(listener.svid, listener.set, tlsconfig.AuthorizeMemberOf(dialer.td())))
	if err != nil {
		return err
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() { served <- serveOne(ln, listener) }()

	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(),
		tlsconfig.MTLSClientConfig(dialer.svid, dialer.set, tlsconfig.AuthorizeMemberOf(listener.td())))
	if err != nil {
		return fmt.Errorf("%s dialling %s: %w", dialer.svid.ID, listener.svid.ID, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	peer, err := x509svid.IDFromCert(conn.ConnectionState().PeerCertificates[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  %s verified the server as %s with the %s bundle\n", dialer.svid.ID, peer, listener.td())
	if _, err := fmt.Fprintf(conn, "hello from %s\n", dialer.svid.ID); err != nil {
		return err
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading the reply: %w", err)
	}
	fmt.Fprintf(out, "  reply: %s", reply)
	return <-served
}

func serveOne(ln net.Listener, self *workload) error {
	conn, err := ln.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := conn.(*tls.Conn)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("%s accepting: %w", self.svid.ID, err)
	}
	peer, err := x509svid.IDFromCert(tc.ConnectionState().PeerCertificates[0])
	if err != nil {
		return err
	}
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(tc, "%s verified client %s and heard %q\n", self.svid.ID, peer, strings.TrimSpace(line))
	return err
}
