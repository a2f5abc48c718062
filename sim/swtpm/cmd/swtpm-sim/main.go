// Command swtpm-sim starts N software TPMs with RSA and ECC EK
// certificates from one local CA, prints the server's ek_ca_path and each
// agent's tpm_path, and runs until interrupted.
//
//	swtpm-sim -n 3 -dir ./.data/swtpm            # Unix sockets
//	swtpm-sim -n 3 -tcp -port 2321               # tcp://127.0.0.1:2321, 2323, ...
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spiffe-hw/spire-hw/sim/swtpm"
)

func main() {
	n := flag.Int("n", 1, "number of TPMs")
	dir := flag.String("dir", "./.data/swtpm", "state directory (CA and one directory per TPM)")
	tcp := flag.Bool("tcp", false, "serve TPMs on 127.0.0.1 TCP ports instead of Unix sockets")
	port := flag.Int("port", 2321, "first TCP port; TPM i uses port+2i (data) and port+2i+1 (control)")
	p256 := flag.Bool("p256", false, "also give each TPM a P-256 EK with its certificate at 0x01c0000a, as hardware TPMs ship (the agent's ECC EK then is that one)")
	flag.Parse()
	f, err := swtpm.Start(*dir, *n, swtpm.Options{TCP: *tcp, BasePort: *port})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *p256 {
		for _, t := range f.TPMs {
			if err := f.ProvisionP256EK(t); err != nil {
				f.Close()
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	}
	fmt.Printf("ek_ca_path = %q\n", f.CABundle)
	fmt.Printf("# root CA %s, intermediate %s\n", f.RootCA, f.IssuerCA)
	for i, t := range f.TPMs {
		fmt.Printf("tpm_path = %q  # TPM %d, state %s\n", t.Path, i, t.StateDir)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	f.Close()
}
