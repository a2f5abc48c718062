// Command spire-server runs the SPIFFE server and administers it over its
// admin socket, with SPIRE's commands and flags.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spiffe-hw/spire-hw/cmd/spire-server/cli"
	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/server"
	"github.com/spiffe-hw/spire-hw/server/config"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], runServer, os.Stdout, os.Stderr))
}

// runServer implements `spire-server run`.
func runServer(args []string) int {
	cfg, err := config.FromRunArgs(args, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log, closer, err := logging.New(cfg.Server.LogLevel, cfg.Server.LogFormat, cfg.Server.LogFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer closer.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := server.New(ctx, cfg, log)
	if err != nil {
		// Start-up errors are mostly configuration mistakes: print them
		// plainly, not quoted inside a log record.
		fmt.Fprintf(os.Stderr, "spire-server failed to start: %v\n", err)
		return 1
	}
	log.Info("Server started", "trust_domain", cfg.Server.TrustDomain.Name(), "address", s.Addr().String())
	if err := s.Run(ctx); err != nil {
		log.Error("Server stopped with an error", "error", err)
		return 1
	}
	log.Info("Server stopped")
	return 0
}
