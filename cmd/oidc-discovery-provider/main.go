// Command oidc-discovery-provider serves a trust domain's JWT authorities as
// an OIDC discovery document and JWKS, with the flags and configuration
// file of SPIRE's oidc-discovery-provider (see package oidcprovider).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spiffe-hw/spire-hw/internal/version"
	"github.com/spiffe-hw/spire-hw/logging"
	"github.com/spiffe-hw/spire-hw/oidcprovider"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its arguments and output explicit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("oidc-discovery-provider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	showVersion := fs.Bool("version", false, "print version")
	configPath := fs.String("config", "oidc-discovery-provider.conf", "configuration file")
	expandEnv := fs.Bool("expandEnv", false, "expand environment variables in config file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Version())
		return 0
	}
	if rest := fs.Args(); len(rest) > 0 {
		fmt.Fprintf(stderr, "Error: unexpected arguments: %v\n", rest)
		fmt.Fprintf(stderr, "Usage of oidc-discovery-provider:\n")
		fs.PrintDefaults()
		return 1
	}
	cfg, err := oidcprovider.LoadConfig(*configPath, *expandEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log, closer, err := logging.New(cfg.LogLevel, cfg.LogFormat, cfg.LogPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer closer.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := oidcprovider.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "oidc-discovery-provider failed to start: %v\n", err)
		return 1
	}
	if err := p.Run(ctx); err != nil {
		log.Error("Provider stopped with an error", "error", err)
		return 1
	}
	return 0
}
