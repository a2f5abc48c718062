// Command spire-server runs the SPIFFE server and administers it over its
// admin socket, with SPIRE's commands and flags.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spiffe-hw/spire-hw/cmd/spire-server/cli"
	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/server"
	"github.com/spiffe-hw/spire-hw/server/config"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], runServer, os.Stdout, os.Stderr))
}

// DefaultGCPercent is the server's GOGC unless the environment sets one.
//
// Most of a busy server's heap is what it holds for as long as each agent
// stays connected (its TLS and HTTP/2 state, its entries), and Go's default
// of 100 lets the heap grow to twice that before a collection, so half the
// resident memory was garbage waiting (bench/RESULTS-fleet-memory.md: about
// 76 KiB of RSS per connected agent, 26 KiB of it live heap). The entry snapshot is
// flat (server/api/flatsnap.go), so a collection marks few pointers and
// running them more often costs little CPU against what the memory saves.
const DefaultGCPercent = 40

// setGCPercent applies DefaultGCPercent unless GOGC (env) is set, which the
// runtime has applied itself, and says which it was.
func setGCPercent(env string) (int, string) {
	if env != "" {
		// The runtime parsed it already ("off" is -1); reading it back
		// leaves it unchanged.
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p, "GOGC"
	}
	debug.SetGCPercent(DefaultGCPercent)
	return DefaultGCPercent, "default"
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
	gcPercent, source := setGCPercent(os.Getenv("GOGC"))
	log.Info("Garbage collector", "gc_percent", gcPercent, "source", source)
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
