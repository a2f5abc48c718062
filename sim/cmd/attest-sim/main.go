// Command attest-sim starts, on loopback, the local services behind any
// subset of the node attestors (aws, azure, gcp, k8s, x509pop, sshpop) and
// prints, for each, the server and agent NodeAttestor blocks to use and the
// agent ID the server will assign. It runs until interrupted.
//
//	go run ./sim/cmd/attest-sim -dir /tmp/attest-sim aws k8s
//
// Each provider's files go to DIR/<provider>/: the certificates, keys,
// kubeconfig and token the blocks name, plus server.hcl, agent.hcl and
// agent_id for scripts. DIR/ready appears once every service listens.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spiffe-hw/spire-hw/sim/attestsim"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "attest-sim:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("attest-sim", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the files the configuration names (default: a new temporary directory)")
	td := fs.String("trustDomain", "example.org", "trust domain of the printed agent IDs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	which := fs.Args()
	if len(which) == 0 {
		which = attestsim.Providers
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "attest-sim-")
		if err != nil {
			return err
		}
		*dir = d
	}
	var nodes []*attestsim.Node
	defer func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	}()
	for _, p := range which {
		pdir := filepath.Join(*dir, p)
		if err := os.MkdirAll(pdir, 0o700); err != nil {
			return err
		}
		n, err := attestsim.Start(p, pdir)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		if err := writeFiles(pdir, n, *td); err != nil {
			return err
		}
		reattest := "re-attestable"
		if n.FirstUse {
			reattest = "first use only: evict the agent before it attests again"
		}
		fmt.Fprintf(out, `# ===== %s (%s; %s)
# %s
# server.conf, in plugins { }:
%s
# agent.conf, in plugins { }:
%s
# expected agent ID: %s

`, p, n.Plugin, reattest, n.Description, n.ServerBlock, n.AgentBlock, n.AgentID(*td))
	}
	if err := os.WriteFile(filepath.Join(*dir, "ready"), nil, 0o644); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(out, "# files in %s; running, interrupt to stop\n", *dir)
	<-ctx.Done()
	return nil
}

func writeFiles(dir string, n *attestsim.Node, td string) error {
	for name, body := range map[string]string{
		"server.hcl": n.ServerBlock + "\n",
		"agent.hcl":  n.AgentBlock + "\n",
		"agent_id":   n.AgentID(td) + "\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}
