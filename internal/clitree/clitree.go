// Package clitree dispatches a command line to a tree of subcommands and
// writes help, usage and version the way github.com/mitchellh/cli v1.1.5
// does, which SPIRE's spire-server and spire-agent are built on.
//
// Operators compare our help with SPIRE's and scripts read exit codes, so
// the behaviour follows that library rather than taste: a parent command
// that is not registered ("entry" for "entry create") is made up and only
// lists its subcommands; -h, -help or --help anywhere asks for help (exit
// 0); -v, -version or --version before the subcommand prints the version;
// an unknown command prints the command list and exits 127; a parent run
// without a subcommand prints its help and exits 1. Everything goes to the
// error writer, as mitchellh/cli's defaults send it to stderr.
package clitree

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Command is one node of the tree.
type Command interface {
	// Help is the long help text; a command whose flags print their own
	// usage (flag.FlagSet.Parse of "-h") returns what Parse returned.
	Help() string
	// Synopsis is the one-line description in command lists.
	Synopsis() string
	// Run runs the command with the arguments after its name and returns
	// the exit code, or RunResultHelp to have its help printed (exit 1).
	Run(args []string) int
}

// Factory makes a fresh Command for one invocation, so that no flag state
// survives between runs.
type Factory func() Command

// RunResultHelp, returned by Run, prints the command's help and exits 1
// (mitchellh/cli's value, so the contract is the same).
const RunResultHelp = -18511

// parentHelp is the help of a parent command that only groups others.
const parentHelp = "This command is accessed by using one of the subcommands below."

// CLI is a program's command tree.
type CLI struct {
	// Name is the program name shown in the usage line.
	Name string
	// Version is printed for -v, -version and --version; empty turns
	// those flags off (they then count as unknown flags).
	Version string
	// Commands maps full command names ("entry create") to factories.
	Commands map[string]Factory
	// Stderr receives help, usage and version text.
	Stderr io.Writer
}

// parent is the made-up command for a missing parent name.
type parent struct{}

func (parent) Help() string     { return parentHelp }
func (parent) Synopsis() string { return "" }
func (parent) Run([]string) int { return RunResultHelp }
func newParent() Command        { return parent{} }

func (c *CLI) out(s string) { _, _ = io.WriteString(c.Stderr, s) }

// tree returns every command, with the missing parents filled in.
func (c *CLI) tree() map[string]Factory {
	t := make(map[string]Factory, len(c.Commands))
	for k, f := range c.Commands {
		t[strings.TrimSpace(k)] = f
	}
	for k := range c.Commands {
		k = strings.TrimSpace(k)
		for i := strings.LastIndex(k, " "); i > 0; i = strings.LastIndex(k, " ") {
			k = k[:i]
			if _, ok := t[k]; !ok {
				t[k] = newParent
			}
		}
	}
	return t
}

// invocation is what the arguments ask for.
type invocation struct {
	help, version bool
	subcommand    string
	args          []string
	topFlags      []string
}

// parse reads args as mitchellh/cli's processArgs does, including its
// rule that a subcommand name is only matched as whole words.
func (c *CLI) parse(t map[string]Factory, args []string) invocation {
	var inv invocation
	for i, arg := range args {
		if arg == "--" {
			break
		}
		if arg == "-h" || arg == "-help" || arg == "--help" {
			inv.help = true
			continue
		}
		if inv.subcommand == "" {
			if arg == "-v" || arg == "-version" || arg == "--version" {
				inv.version = true
				continue
			}
			if arg != "" && arg[0] == '-' {
				inv.topFlags = append(inv.topFlags, arg)
			}
		}
		if inv.subcommand != "" || arg == "" || arg[0] == '-' {
			continue
		}
		inv.subcommand = arg
		if strings.ContainsRune(arg, ' ') {
			// A word with a space is an argument, never a command name.
			inv.subcommand = ""
			return inv
		}
		j := i
		for _, v := range args[i:] {
			if strings.ContainsRune(v, ' ') || v == "" || v[0] == '-' {
				break
			}
			j++
		}
		search := strings.Join(args[i:j], " ")
		// The longest name that is a string prefix of the words wins, and
		// only if it ends at a word boundary; otherwise the first word
		// alone is the subcommand (radix LongestPrefix, then reVerify).
		longest := ""
		for k := range t {
			if strings.HasPrefix(search, k) && len(k) > len(longest) {
				longest = k
			}
		}
		if longest != "" && (len(search) == len(longest) || search[len(longest)] == ' ') {
			inv.subcommand = longest
			i += strings.Count(longest, " ")
		}
		inv.args = args[i+1:]
	}
	return inv
}

// Run runs the command line args (without the program name) and returns
// the exit code.
func (c *CLI) Run(args []string) int {
	t := c.tree()
	inv := c.parse(t, args)
	if inv.version && c.Version != "" {
		c.out(c.Version + "\n")
		return 0
	}
	if inv.help && inv.subcommand == "" {
		c.out(c.usage(t, "") + "\n")
		return 0
	}
	f, ok := t[inv.subcommand]
	if !ok {
		c.out(c.usage(t, parentOf(inv.subcommand)) + "\n")
		return 127
	}
	cmd := f()
	if inv.help {
		c.commandHelp(t, inv.subcommand, cmd)
		return 0
	}
	if len(inv.topFlags) > 0 {
		c.out("Invalid flags before the subcommand. If these flags are for\n" +
			"the subcommand, please put them after the subcommand.\n\n")
		c.commandHelp(t, inv.subcommand, cmd)
		return 1
	}
	code := cmd.Run(inv.args)
	if code == RunResultHelp {
		c.commandHelp(t, inv.subcommand, cmd)
		return 1
	}
	return code
}

func parentOf(sub string) string {
	sub = strings.TrimRight(sub, " ")
	if i := strings.LastIndex(sub, " "); i >= 0 {
		return sub[:i]
	}
	return ""
}

// children returns the sorted names of the immediate subcommands of
// prefix ("" for the top level).
func children(t map[string]Factory, prefix string) []string {
	if prefix != "" {
		prefix += " "
	}
	var keys []string
	for k := range t {
		if strings.HasPrefix(k, prefix) && !strings.Contains(k[len(prefix):], " ") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// usage is mitchellh/cli's BasicHelpFunc over the commands under prefix.
func (c *CLI) usage(t map[string]Factory, prefix string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s [--version] [--help] <command> [<args>]\n\n", c.Name)
	b.WriteString("Available commands are:\n")
	keys := children(t, prefix)
	width := 0
	for _, k := range keys {
		width = max(width, len(k))
	}
	for _, k := range keys {
		fmt.Fprintf(&b, "    %s%s    %s\n", k, strings.Repeat(" ", width-len(k)), t[k]().Synopsis())
	}
	return b.String()
}

// commandHelp writes cmd's help and, for a parent, its subcommands, as
// mitchellh/cli's default help template lays them out. Unlike
// mitchellh/cli it does not call every subcommand's Help while listing
// them: for SPIRE's flag-parsing commands that printed each one's flag
// usage ahead of the list.
func (c *CLI) commandHelp(t map[string]Factory, name string, cmd Command) {
	var b strings.Builder
	b.WriteString(cmd.Help())
	if keys := children(t, name); len(keys) > 0 {
		width := 0
		for _, k := range keys {
			width = max(width, len(k))
		}
		b.WriteString("\n\nSubcommands:")
		for _, k := range keys {
			short := k[strings.LastIndex(k, " ")+1:]
			fmt.Fprintf(&b, "\n    %s%s    %s", short, strings.Repeat(" ", width-len(k)), t[k]().Synopsis())
		}
	}
	b.WriteString("\n")
	c.out(b.String())
}
