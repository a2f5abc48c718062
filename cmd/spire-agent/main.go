// Command spire-agent runs the SPIFFE agent and queries the Workload API,
// with SPIRE's commands and flags.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spiffe-hw/spire-hw/agent"
	"github.com/spiffe-hw/spire-hw/agent/config"
	"github.com/spiffe-hw/spire-hw/cmd/spire-agent/cli"
	"github.com/spiffe-hw/spire-hw/logging"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], runAgent, os.Stdout, os.Stderr))
}

// runAgent implements `spire-agent run`.
func runAgent(args []string) int {
	cfg, err := config.FromRunArgs(args, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log, closer, err := logging.New(cfg.Agent.LogLevel, cfg.Agent.LogFormat, cfg.Agent.LogFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer closer.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(cfg, log)
	if err != nil {
		// Start-up errors are mostly configuration mistakes: print them
		// plainly, not quoted inside a log record.
		fmt.Fprintf(os.Stderr, "spire-agent failed to start: %v\n", err)
		return 1
	}
	if err := a.Run(ctx); err != nil {
		log.Error("Agent stopped with an error", "error", err)
		return 1
	}
	log.Info("Agent stopped")
	return 0
}
