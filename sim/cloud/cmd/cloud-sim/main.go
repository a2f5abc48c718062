// Command cloud-sim starts any subset of the simulated cloud metadata
// services (aws, azure, gcp) on loopback and prints the agent and server
// NodeAttestor configuration that points at them. It runs until
// interrupted.
//
//	cloud-sim -dir /tmp/cloud-sim aws gcp
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

	"github.com/spiffe-hw/spire-hw/sim/cloud"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cloud-sim:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("cloud-sim", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the certificate and service-account files the server config names (default: a new temporary directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	which := fs.Args()
	if len(which) == 0 {
		which = []string{"aws", "azure", "gcp"}
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "cloud-sim-")
		if err != nil {
			return err
		}
		*dir = d
	} else if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	for _, w := range which {
		var err error
		var c func() error
		switch w {
		case "aws":
			c, err = startAWS(*dir, out)
		case "azure":
			c, err = startAzure(out)
		case "gcp":
			c, err = startGCP(*dir, out)
		default:
			return fmt.Errorf("unknown service %q (use aws, azure, gcp)", w)
		}
		if err != nil {
			return err
		}
		closers = append(closers, c)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(out, "# running; interrupt to stop")
	<-ctx.Done()
	return nil
}

func startAWS(dir string, out io.Writer) (func() error, error) {
	s, err := cloud.StartAWS(cloud.AWSConfig{})
	if err != nil {
		return nil, err
	}
	region := s.Instance().Document.Region
	cert := filepath.Join(dir, "aws-"+region+".pem")
	if err := os.WriteFile(cert, s.Signer().CertPEM(), 0o644); err != nil {
		s.Close()
		return nil, err
	}
	fmt.Fprintf(out, `# aws_iid: agent
NodeAttestor "aws_iid" {
  plugin_data {
    ec2_metadata_endpoint = %q
  }
}
# aws_iid: server
NodeAttestor "aws_iid" {
  plugin_data {
    access_key_id = %q
    secret_access_key = "any"
    ec2_endpoint = %q
    iam_endpoint = %q
    region_certificates = { %q = %q }
  }
}

`, s.IMDSEndpoint(), s.AccessKeyID(), s.EC2Endpoint(), s.IAMEndpoint(), region, cert)
	return s.Close, nil
}

func startAzure(out io.Writer) (func() error, error) {
	s, err := cloud.StartAzure(cloud.AzureConfig{})
	if err != nil {
		return nil, err
	}
	vm := s.VM()
	id, secret := s.AppCredentials()
	const resource = "api://spire-node-attestor"
	fmt.Fprintf(out, `# azure_msi: agent
NodeAttestor "azure_msi" {
  plugin_data {
    resource_id = %q
    imds_endpoint = %q
  }
}
# azure_msi: server
NodeAttestor "azure_msi" {
  plugin_data {
    tenants = {
      %q = {
        resource_id = %q
        subscription_id = %q
        app_id = %q
        app_secret = %q
      }
    }
    oidc_discovery_url = %q
    login_endpoint = %q
    arm_endpoint = %q
  }
}

`, resource, s.IMDSEndpoint(), vm.TenantID, resource, vm.SubscriptionID, id, secret, s.DiscoveryURL(), s.LoginEndpoint(), s.ARMEndpoint())
	return s.Close, nil
}

func startGCP(dir string, out io.Writer) (func() error, error) {
	s, err := cloud.StartGCP(cloud.GCPConfig{})
	if err != nil {
		return nil, err
	}
	sa := filepath.Join(dir, "gcp-service-account.json")
	if err := os.WriteFile(sa, s.ServiceAccountJSON(), 0o600); err != nil {
		s.Close()
		return nil, err
	}
	fmt.Fprintf(out, `# gcp_iit: agent
NodeAttestor "gcp_iit" {
  plugin_data {
    identity_token_host = %q
  }
}
# gcp_iit: server
NodeAttestor "gcp_iit" {
  plugin_data {
    projectid_allow_list = [%q]
    use_instance_metadata = true
    service_account_file = %q
    allowed_label_keys = ["env"]
    certs_url = %q
    compute_endpoint = %q
  }
}

`, s.MetadataHost(), s.Instance().ProjectID, sa, s.CertsURL(), s.ComputeEndpoint())
	return s.Close, nil
}
