package clitree

import (
	"strings"
	"testing"
)

// record is a command that remembers its arguments.
type record struct {
	synopsis string
	code     int
	got      *[]string
}

func (r *record) Help() string     { return "help of " + r.synopsis }
func (r *record) Synopsis() string { return r.synopsis }
func (r *record) Run(args []string) int {
	*r.got = append([]string{r.synopsis}, args...)
	return r.code
}

func newCLI(got *[]string) (*CLI, *strings.Builder) {
	var stderr strings.Builder
	cmd := func(syn string, code int) Factory {
		return func() Command { return &record{synopsis: syn, code: code, got: got} }
	}
	return &CLI{
		Name:    "prog",
		Version: "1.2.3",
		Commands: map[string]Factory{
			"run":            cmd("Runs it", 0),
			"entry create":   cmd("Creates", 3),
			"entry show":     cmd("Shows", 0),
			"la x509 show":   cmd("Shows x509", 0),
			"la x509 taint":  cmd("Taints", 0),
			"la jwt show":    cmd("Shows jwt", 0),
			"api fetch":      cmd("Fetches x509", 0),
			"api fetch x509": cmd("Fetches x509", 0),
			"api fetch jwt":  cmd("Fetches jwt", 0),
			"helper":         func() Command { return &record{synopsis: "Asks for help", code: RunResultHelp, got: got} },
		},
		Stderr: &stderr,
	}, &stderr
}

const top = "Usage: prog [--version] [--help] <command> [<args>]\n\n" +
	"Available commands are:\n" +
	"    api       \n" +
	"    entry     \n" +
	"    helper    Asks for help\n" +
	"    la        \n" +
	"    run       Runs it\n\n"

func TestRun(t *testing.T) {
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		got    string
		stderr string
	}{
		{name: "no args", code: 127, stderr: top},
		{name: "help", args: []string{"-h"}, code: 0, stderr: top},
		{name: "unknown", args: []string{"nope", "x"}, code: 127, stderr: top},
		{name: "version", args: []string{"--version", "run"}, code: 0, stderr: "1.2.3\n"},
		{name: "version after the subcommand is its argument", args: []string{"run", "-version"}, code: 0, got: "Runs it -version"},
		{name: "leaf", args: []string{"entry", "create", "-x", "y"}, code: 3, got: "Creates -x y"},
		{name: "deepest match", args: []string{"api", "fetch", "jwt", "-a"}, code: 0, got: "Fetches jwt -a"},
		{name: "shorter match takes the rest as args", args: []string{"api", "fetch", "other"}, code: 0, got: "Fetches x509 other"},
		{name: "a prefix only matches whole words", args: []string{"entry", "shows"}, code: 1,
			stderr: "This command is accessed by using one of the subcommands below.\n\nSubcommands:\n    create    Creates\n    show      Shows\n"},
		{name: "a failed deep match falls back to the first word", args: []string{"la", "x509", "shown"}, code: 1,
			stderr: "This command is accessed by using one of the subcommands below.\n\nSubcommands:\n    jwt     \n    x509    \n"},
		{name: "parent help", args: []string{"la", "x509", "-h"}, code: 0,
			stderr: "This command is accessed by using one of the subcommands below.\n\nSubcommands:\n    show     Shows x509\n    taint    Taints\n"},
		{name: "leaf help", args: []string{"entry", "show", "-socketPath", "-h"}, code: 0, stderr: "help of Shows\n"},
		{name: "command with children", args: []string{"api", "fetch", "--help"}, code: 0,
			stderr: "help of Fetches x509\n\nSubcommands:\n    jwt     Fetches jwt\n    x509    Fetches x509\n"},
		{name: "RunResultHelp", args: []string{"helper"}, code: 1, got: "Asks for help", stderr: "help of Asks for help\n"},
		{name: "flags before the subcommand", args: []string{"-x", "run"}, code: 1,
			stderr: "Invalid flags before the subcommand. If these flags are for\nthe subcommand, please put them after the subcommand.\n\nhelp of Runs it\n"},
		{name: "after -- nothing is a flag of ours", args: []string{"run", "--", "-h"}, code: 0, got: "Runs it -- -h"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			c, stderr := newCLI(&got)
			code := c.Run(tt.args)
			if code != tt.code || strings.Join(got, " ") != tt.got || stderr.String() != tt.stderr {
				t.Fatalf("exit %d (want %d), ran %q (want %q)\nstderr:\n%s\nwant:\n%s", code, tt.code, strings.Join(got, " "), tt.got, stderr, tt.stderr)
			}
		})
	}
}

func TestNoVersion(t *testing.T) {
	var got []string
	c, stderr := newCLI(&got)
	c.Version = ""
	if code := c.Run([]string{"-version"}); code != 127 || stderr.String() != top {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
}
