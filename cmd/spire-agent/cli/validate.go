package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/spiffe-hw/spire-hw/agent/config"
)

// daemonCommand is "run": the tree knows its synopsis and help, and hands
// the arguments to the agent, which main wires in.
type daemonCommand struct {
	name, synopsis string
	run            func(args []string) int
	stderr         io.Writer
}

func (d *daemonCommand) Synopsis() string { return d.synopsis }
func (d *daemonCommand) Help() string     { return configHelp(d.name, d.stderr) }

func (d *daemonCommand) Run(args []string) int {
	if d.run == nil {
		fmt.Fprintln(d.stderr, "run: not available in this build")
		return 1
	}
	return d.run(args)
}

// configHelp prints the flag usage that run and validate share and
// returns "flag: help requested", as SPIRE's run.Help does.
func configHelp(name string, stderr io.Writer) string {
	_, err := config.FromArgs(name, []string{"-h"}, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return flag.ErrHelp.Error()
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// validateCommand is "validate": it loads the configuration through the
// same function as run (flags, file, -expandEnv, every check run makes
// before it starts anything) and reports the verdict in SPIRE's words.
type validateCommand struct {
	e *env
}

func (*validateCommand) Synopsis() string { return "Validates a SPIRE agent configuration file" }
func (v *validateCommand) Help() string   { return configHelp("validate", v.e.stderr) }

func (v *validateCommand) Run(args []string) int {
	cfg, err := config.FromArgs("validate", args, v.e.stderr)
	if err != nil {
		fmt.Fprintf(v.e.stderr, "SPIRE agent configuration file is invalid: %v\n", err)
		return 1
	}
	// run logs these at start; a valid file may still hold keys that are
	// accepted but not acted on, and the operator deploying it should know.
	for _, w := range cfg.Warnings {
		fmt.Fprintf(v.e.stderr, "Warning: %s\n", w)
	}
	v.e.printf("SPIRE agent configuration file is valid.\n")
	return 0
}
