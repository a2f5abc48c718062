package config

import (
	"flag"
	"fmt"
	"io"

	"github.com/spiffe-hw/spire-hw/config/hclconf"
)

// FromRunArgs parses the flags of `spire-server run` (args excludes "run"),
// loads the file named by -config and lets the flags that were given
// override it, as SPIRE does. Flag usage goes to stderr; -h returns an error
// wrapping flag.ErrHelp.
func FromRunArgs(args []string, stderr io.Writer) (*Config, error) {
	return FromArgs("run", args, stderr)
}

// FromArgs is FromRunArgs for the command called name: `spire-server validate`
// loads and checks the configuration exactly as run does, and its flag
// usage is headed with its own name, as SPIRE's is.
func FromArgs(name string, args []string, stderr io.Writer) (*Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", DefaultConfigPath, "Path to a SPIRE config file")
	expandEnv := fs.Bool("expandEnv", false, "Expand environment $VARIABLES in the config file")
	bindAddress := fs.String("bindAddress", "", "IP address or DNS name of the SPIRE server")
	serverPort := fs.String("serverPort", "", "Port number of the SPIRE server")
	socketPath := fs.String("socketPath", "", "Path to bind the SPIRE Server API socket to")
	trustDomain := fs.String("trustDomain", "", "The trust domain that this server belongs to")
	dataDir := fs.String("dataDir", "", "Directory to store runtime data to")
	logLevel := fs.String("logLevel", "", "DEBUG, INFO, WARN or ERROR")
	logFormat := fs.String("logFormat", "", "Format of logs, <text|json>")
	logFile := fs.String("logFile", "", "File to write logs to")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("config: unexpected argument %q (%s takes only flags)", fs.Arg(0), name)
	}
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	data, err := readConfig(*configPath)
	if err != nil {
		return nil, err
	}
	d := hclconf.NewDiagnostics(*configPath)
	c, set, ok := parse(d, data, *expandEnv)
	if !ok {
		return nil, d.Err()
	}
	srv := &c.Server
	if given["bindAddress"] {
		srv.BindAddress = *bindAddress
	}
	if given["serverPort"] {
		p, err := hclconf.ParsePort(*serverPort)
		if err != nil {
			d.FlagErrorf("serverPort", "%v", err)
		}
		srv.BindPort = p
	}
	if given["socketPath"] {
		srv.SocketPath = *socketPath
	}
	if given["trustDomain"] {
		td, err := parseTrustDomain(*trustDomain)
		if err != nil {
			d.FlagErrorf("trustDomain", "%v", err)
		}
		srv.TrustDomain, set.trustDomain = td, true
	}
	if given["dataDir"] {
		srv.DataDir, set.dataDir = *dataDir, true
	}
	if given["logLevel"] {
		if srv.LogLevel, err = hclconf.ParseLogLevel(*logLevel); err != nil {
			d.FlagErrorf("logLevel", "%v", err)
		}
	}
	if given["logFormat"] {
		if srv.LogFormat, err = hclconf.ParseLogFormat(*logFormat); err != nil {
			d.FlagErrorf("logFormat", "%v", err)
		}
	}
	if given["logFile"] {
		srv.LogFile = *logFile
	}
	c.validate(d, set)
	if d.HasErrors() {
		return nil, d.Err()
	}
	c.Warnings = d.Warnings()
	return c, nil
}
