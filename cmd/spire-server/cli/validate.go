package cli

import (
	"errors"
	"flag"
	"io"

	"github.com/spiffe-hw/spire-hw/server/config"
)

// daemonCommand is "run": the tree knows its synopsis and help, and hands
// the arguments to the server, which main wires in.
type daemonCommand struct {
	name, synopsis string
	run            func(args []string) int
	stderr         io.Writer
}

func (d *daemonCommand) Synopsis() string { return d.synopsis }
func (d *daemonCommand) Help() string     { return configHelp(d.name, d.stderr) }

func (d *daemonCommand) Run(args []string) int {
	if d.run == nil {
		_, _ = io.WriteString(d.stderr, "Error: the run command is not available\n")
		return 1
	}
	return d.run(args)
}

// configHelp prints the flag usage that run and validate share and
// returns "flag: help requested", as SPIRE's run.Help does.
func configHelp(name string, stderr io.Writer) string {
	_, err := config.FromArgs(name, []string{"-h"}, stderr)
	return errHelpText(err)
}

// validateCommand is "validate": it loads the configuration through the
// same function as run (flags, file, -expandEnv, every check run makes
// before it starts anything) and reports the verdict in SPIRE's words.
type validateCommand struct {
	e *env
}

func (*validateCommand) Synopsis() string { return "Validates a SPIRE server configuration file" }
func (v *validateCommand) Help() string   { return configHelp("validate", v.e.stderr) }

func (v *validateCommand) Run(args []string) int {
	cfg, err := config.FromArgs("validate", args, v.e.stderr)
	if err != nil {
		v.e.errPrintf("SPIRE server configuration file is invalid: %v\n", err)
		return 1
	}
	// run logs these at start; a valid file may still hold keys that are
	// accepted but not acted on, and the operator deploying it should know.
	for _, w := range cfg.Warnings {
		v.e.errPrintf("Warning: %s\n", w)
	}
	v.e.printf("SPIRE server configuration file is valid.\n")
	return 0
}

// errHelpText is the text of the error that -h makes the flag package
// return, without the loader's prefix, as SPIRE prints it.
func errHelpText(err error) string {
	if errors.Is(err, flag.ErrHelp) {
		return flag.ErrHelp.Error()
	}
	if err == nil {
		return ""
	}
	return err.Error()
}
