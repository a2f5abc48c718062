// Command k8s-sim runs a simulated Kubernetes API server on loopback for
// trying k8s_psat attestation without a cluster: it creates a node and
// the agent's pod, keeps a projected service-account token for that pod
// fresh in a file, writes a kubeconfig for the SPIRE server, and prints
// the server and agent NodeAttestor blocks that use them. It runs until
// interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/k8s"
)

func main() {
	dir := flag.String("dir", "", "directory for the kubeconfig and the agent token (default: a new temporary directory)")
	cluster := flag.String("cluster", "demo", "cluster name, as the agent sends it and the server config keys it")
	alg := flag.String("alg", "RS256", "service-account token signing algorithm: RS256 or ES256")
	ttl := flag.Duration("ttl", 10*time.Minute, "lifetime of the agent's token; it is rewritten at half of it")
	flag.Parse()
	if err := run(*dir, *cluster, *alg, *ttl); err != nil {
		log.Fatal(err)
	}
}

func run(dir, cluster, alg string, ttl time.Duration) error {
	if ttl < 2*time.Second {
		return fmt.Errorf("k8s-sim: -ttl must be at least 2s")
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "k8s-sim-")
		if err != nil {
			return fmt.Errorf("k8s-sim: %w", err)
		}
		dir = d
	}
	c, err := k8s.Start(k8s.Options{Algorithm: alg})
	if err != nil {
		return err
	}
	defer c.Close()
	node := k8s.Node{Name: "node-1", UID: k8s.NewUID(), InternalIP: "127.0.0.1", Labels: map[string]string{"topology.kubernetes.io/zone": "sim-a"}}
	pod := k8s.Pod{Namespace: "spire", Name: "spire-agent-0", UID: k8s.NewUID(), ServiceAccount: "spire-agent", NodeName: node.Name, HostIP: "127.0.0.1", Labels: map[string]string{"app": "spire-agent"}}
	c.PutNode(node)
	c.PutPod(pod)

	kubeconfig := filepath.Join(dir, "kubeconfig")
	tokenPath := filepath.Join(dir, "spire-agent-token")
	if err := os.WriteFile(kubeconfig, c.Kubeconfig(), 0o600); err != nil {
		return fmt.Errorf("k8s-sim: %w", err)
	}
	writeToken := func() error {
		tok, err := c.MintToken(pod.Namespace, pod.Name, []string{"spire-server"}, ttl)
		if err != nil {
			return err
		}
		tmp := tokenPath + ".tmp"
		if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
			return fmt.Errorf("k8s-sim: %w", err)
		}
		return os.Rename(tmp, tokenPath)
	}
	if err := writeToken(); err != nil {
		return err
	}

	fmt.Printf(`# Kubernetes API simulator at %s (files in %s)
# node %s uid %s; agent pod %s/%s uid %s

# server.conf
    NodeAttestor "k8s_psat" {
        plugin_data {
            clusters = {
                %q = {
                    service_account_allow_list = ["%s:%s"]
                    kube_config_file = %q
                    allowed_node_label_keys = ["topology.kubernetes.io/zone"]
                    allowed_pod_label_keys = ["app"]
                }
            }
        }
    }

# agent.conf
    NodeAttestor "k8s_psat" {
        plugin_data {
            cluster = %q
            token_path = %q
        }
    }

# expected agent ID: spiffe://<trust domain>/spire/agent/k8s_psat/%s/%s
`, c.URL(), dir, node.Name, node.UID, pod.Namespace, pod.Name, pod.UID,
		cluster, pod.Namespace, pod.ServiceAccount, kubeconfig, cluster, tokenPath, cluster, node.UID)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t := time.NewTicker(ttl / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := writeToken(); err != nil {
				log.Printf("k8s-sim: refresh token: %v", err)
			}
		}
	}
}
