package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/private"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// configServiceName is the SDK's configuration service; a plugin that
// offers it is configured before it is used.
const configServiceName = "spire.service.common.config.v1.Config"

// Defaults for Config fields left zero.
const (
	DefaultCallTimeout  = 30 * time.Second
	DefaultStartTimeout = 30 * time.Second
	DefaultMinBackoff   = 500 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	deinitTimeout       = 5 * time.Second
	exitPollInterval    = 200 * time.Millisecond
	// killTimeout is how long go-plugin's graceful stop may take before
	// the process is killed outright: a frozen plugin never answers it.
	killTimeout = 3 * time.Second
)

// Config describes one external plugin, as its plugins block gives it.
type Config struct {
	// Type is the plugin type ("KeyManager"). SPIRE uses it as go-plugin's
	// magic cookie key and value, so a plugin built for another type
	// refuses to start.
	Type string
	// Name is the plugin's name in the configuration ("my_km").
	Name string
	// Cmd is plugin_cmd; a relative path is taken from the working
	// directory, never from PATH.
	Cmd  string
	Args []string
	// Checksum is plugin_checksum (hex SHA-256), or empty: the binary is
	// then run unchecked, with a warning.
	Checksum string
	// Data is plugin_data as HCL text (or plugin_data_file's contents),
	// handed to the plugin's Configure with the core configuration.
	Data        string
	TrustDomain spiffeid.TrustDomain
	// Service is the gRPC service the plugin must offer for its type
	// ("spire.plugin.server.keymanager.v1.KeyManager").
	Service string
	// HostServices are served back to the plugin over go-plugin's broker.
	HostServices []pluginsdk.ServiceServer
	Log          *slog.Logger

	// CallTimeout bounds each call that carries no earlier deadline of its
	// own; a call that runs into it counts as a hung plugin.
	CallTimeout  time.Duration
	StartTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay between restarts.
	MinBackoff, MaxBackoff time.Duration
}

// Label names the plugin the way the configuration file writes it.
func (c *Config) Label() string { return fmt.Sprintf("%s %q", c.Type, c.Name) }

// Plugin is a loaded external plugin. Conn stays valid for its whole life:
// calls go to whichever process currently serves it.
type Plugin struct {
	cfg  Config
	path string
	log  *slog.Logger

	mu       sync.Mutex
	cur      *instance // nil while the plugin is down
	lastErr  error     // why it went down
	closed   bool
	restart  chan struct{}
	stop     chan struct{}
	done     chan struct{}
	restarts int
	// starting is the process being started, so Close can end a start
	// that hangs in go-plugin's handshake.
	starting *goplugin.Client
	// refusedLogged: a refused call was logged since the plugin went down.
	refusedLogged bool
	// kills are the processes being stopped; Close waits for them.
	kills sync.WaitGroup
}

// Load starts the plugin, initialises it (host services in, plugin services
// out), checks it offers cfg.Service and configures it. Every error names
// the plugin. The returned Plugin restarts the process if it exits.
func Load(ctx context.Context, cfg Config) (*Plugin, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	setDefault(&cfg.CallTimeout, DefaultCallTimeout)
	setDefault(&cfg.StartTimeout, DefaultStartTimeout)
	setDefault(&cfg.MinBackoff, DefaultMinBackoff)
	setDefault(&cfg.MaxBackoff, DefaultMaxBackoff)
	log := cfg.Log.With("plugin_type", cfg.Type, "plugin_name", cfg.Name, "external", true)
	path, err := filepath.Abs(cfg.Cmd)
	if err != nil {
		return nil, fmt.Errorf("plugin: %s: resolve plugin_cmd %q: %w", cfg.Label(), cfg.Cmd, err)
	}
	if err := checkBinary(&cfg, path); err != nil {
		return nil, err
	}
	if cfg.Checksum == "" {
		log.Warn("Plugin checksum not configured", "plugin_cmd", path)
	}
	p := &Plugin{cfg: cfg, path: path, log: log, restart: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	inst, err := p.start(ctx)
	if err != nil {
		return nil, err
	}
	p.cur = inst
	go p.supervise()
	log.Info("Plugin loaded", "plugin_cmd", path)
	return p, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// checkBinary hashes the binary before anything executes it, so a wrong
// file stops start-up with both sums in the message. go-plugin checks
// again right before exec.
func checkBinary(cfg *Config, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("plugin: %s: plugin_cmd %s: %w", cfg.Label(), path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("plugin: %s: plugin_cmd %s: %w", cfg.Label(), path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("plugin: %s: plugin_cmd %s is not a regular file", cfg.Label(), path)
	}
	if st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("plugin: %s: plugin_cmd %s is not executable (chmod +x it)", cfg.Label(), path)
	}
	if cfg.Checksum == "" {
		return nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("plugin: %s: read plugin_cmd %s: %w", cfg.Label(), path, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if !strings.EqualFold(got, cfg.Checksum) {
		return fmt.Errorf("plugin: %s: plugin_checksum mismatch for %s: configured %s, binary has %s (the binary changed, or plugin_checksum is wrong)",
			cfg.Label(), path, strings.ToLower(cfg.Checksum), got)
	}
	return nil
}

// instance is one running plugin process.
type instance struct {
	client *goplugin.Client
	conn   grpc.ClientConnInterface
	pid    int
	log    *slog.Logger
	// stopHost stops the host-services server for this process.
	stopHost func()
}

// kill stops the process: go-plugin's graceful stop first, then SIGKILL if
// that does not end it within killTimeout (a frozen or hostile plugin
// never answers the shutdown request).
func (in *instance) kill() {
	done := make(chan struct{})
	go func() {
		in.client.Kill()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(killTimeout):
		if in.pid > 0 {
			in.log.Warn("Plugin did not stop; killing it", "pid", in.pid)
			_ = syscall.Kill(in.pid, syscall.SIGKILL)
		}
		select {
		case <-done:
		case <-time.After(killTimeout):
			in.log.Error("Plugin process did not end after SIGKILL", "pid", in.pid)
		}
	}
	in.stopHost()
}

// alive asks the plugin's own health service (go-plugin serves one in
// every plugin) whether the process still answers.
func (in *instance) alive() bool {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	_, err := healthpb.NewHealthClient(in.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "plugin"})
	return err == nil
}

// stopAsync stops inst in the background; Close waits for it.
func (p *Plugin) stopAsync(inst *instance) {
	p.kills.Add(1)
	go func() {
		defer p.kills.Done()
		inst.kill()
	}()
}

// start launches one process and brings it to a configured state.
func (p *Plugin) start(ctx context.Context) (_ *instance, err error) {
	cfg := &p.cfg
	secure, err := secureConfig(cfg.Checksum)
	if err != nil {
		return nil, fmt.Errorf("plugin: %s: %w", cfg.Label(), err)
	}
	hc := &hostPlugin{log: p.log, services: cfg.HostServices}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: goplugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   cfg.Type,
			MagicCookieValue: cfg.Type,
		},
		Cmd: pluginCmd(p.path, cfg.Args...),
		// SPIRE v1.13.3 runs plugins without AutoMTLS (go-plugin's broker
		// does not carry it, hashicorp/go-plugin#109); the channel is a Unix
		// socket only the daemon's user can reach.
		AutoMTLS:         false,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Plugins:          map[string]goplugin.Plugin{cfg.Name: hc},
		Logger:           newHCLogAdapter(p.log),
		SecureConfig:     secure,
		StartTimeout:     cfg.StartTimeout,
	})
	inst := &instance{client: client, log: p.log, stopHost: func() {}}
	p.mu.Lock()
	closed := p.closed
	p.starting = client
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.starting = nil
		p.mu.Unlock()
		if err != nil {
			inst.kill()
		}
	}()
	if closed {
		return nil, fmt.Errorf("plugin: %s: closed", cfg.Label())
	}
	proto, err := client.Client()
	if err != nil {
		return nil, fmt.Errorf("plugin: %s: launch %s: %w", cfg.Label(), p.path, err)
	}
	if rc := client.ReattachConfig(); rc != nil {
		inst.pid = rc.Pid
	}
	raw, err := proto.Dispense(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("plugin: %s: %w", cfg.Label(), err)
	}
	conn, ok := raw.(*hostedConn)
	if !ok {
		return nil, fmt.Errorf("plugin: %s: unexpected client %T", cfg.Label(), raw)
	}
	inst.conn, inst.stopHost = conn.conn, conn.stop

	ictx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	names := make([]string, 0, len(cfg.HostServices))
	for _, hs := range cfg.HostServices {
		names = append(names, hs.GRPCServiceName())
	}
	offered, err := private.Init(ictx, inst.conn, names)
	if err != nil {
		return nil, fmt.Errorf("plugin: %s: initialise: %w", cfg.Label(), err)
	}
	if cfg.Service != "" && !slices.Contains(offered, cfg.Service) {
		return nil, fmt.Errorf("plugin: %s: the plugin does not implement %s (it offers %q); is plugin_cmd built for this plugin type?",
			cfg.Label(), cfg.Service, offered)
	}
	switch {
	case slices.Contains(offered, configServiceName):
		_, err := configv1.NewConfigClient(inst.conn).Configure(ictx, &configv1.ConfigureRequest{
			CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: cfg.TrustDomain.Name()},
			HclConfiguration:  cfg.Data,
		})
		if err != nil {
			return nil, fmt.Errorf("plugin: %s: configure: %w", cfg.Label(), describe(err))
		}
	case strings.TrimSpace(cfg.Data) != "":
		// SPIRE refuses data a plugin cannot take rather than drop it.
		return nil, fmt.Errorf("plugin: %s: plugin_data is set but the plugin has no configuration interface", cfg.Label())
	}
	p.log.Info("Configured plugin", "reconfigurable", false)
	return inst, nil
}

// describe turns a status error from a plugin that went away into words.
func describe(err error) error {
	if status.Code(err) == codes.Unavailable {
		return fmt.Errorf("the plugin exited or stopped answering: %w", err)
	}
	return err
}

func secureConfig(checksum string) (*goplugin.SecureConfig, error) {
	if checksum == "" {
		return nil, nil
	}
	sum, err := hex.DecodeString(checksum)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("plugin_checksum %q is not a hex SHA-256", checksum)
	}
	return &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()}, nil
}

// Conn is the plugin's connection; it stays valid across restarts.
func (p *Plugin) Conn() grpc.ClientConnInterface { return (*supervisedConn)(p) }

// Name is the plugin's configured name.
func (p *Plugin) Name() string { return p.cfg.Name }

// Restarts counts the restarts so far.
func (p *Plugin) Restarts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restarts
}

// Close deinitialises the plugin and stops its process. It waits for the
// process to exit, so no plugin outlives the daemon.
func (p *Plugin) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	inst := p.cur
	p.cur = nil
	starting := p.starting
	p.mu.Unlock()
	close(p.stop)
	if starting != nil {
		// A restart hanging in the handshake would hold up the
		// supervisor until StartTimeout.
		go starting.Kill()
	}
	<-p.done
	if inst != nil {
		ctx, cancel := context.WithTimeout(context.Background(), deinitTimeout)
		if err := private.Deinit(ctx, inst.conn); err != nil {
			p.log.Warn("Failed to deinitialize plugin", "error", err)
		}
		cancel()
		inst.kill()
	}
	p.kills.Wait()
	return nil
}

// current returns the serving instance, or an Unavailable error naming the
// plugin and why it is down.
func (p *Plugin) current() (*instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil {
		return p.cur, nil
	}
	if p.closed {
		return nil, status.Errorf(codes.Unavailable, "plugin %s is closed", p.cfg.Label())
	}
	return nil, status.Errorf(codes.Unavailable, "plugin %s is restarting after: %v", p.cfg.Label(), p.lastErr)
}

// fail takes inst out of service (if it still is) and asks the supervisor
// to restart the plugin.
func (p *Plugin) fail(inst *instance, why error) {
	p.mu.Lock()
	if p.cur != inst || p.closed {
		p.mu.Unlock()
		return
	}
	p.cur = nil
	p.lastErr = why
	p.mu.Unlock()
	p.log.Error("Plugin failed; restarting it", "error", why)
	p.stopAsync(inst)
	select {
	case p.restart <- struct{}{}:
	default:
	}
}

// supervise watches the serving process and restarts it, with exponential
// backoff, whenever it exits or a call finds it dead or hung.
func (p *Plugin) supervise() {
	defer close(p.done)
	tick := time.NewTicker(exitPollInterval)
	defer tick.Stop()
	backoff := p.cfg.MinBackoff
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
			p.mu.Lock()
			inst := p.cur
			p.mu.Unlock()
			if inst != nil && inst.client.Exited() {
				p.fail(inst, errors.New("plugin process exited"))
			}
			continue
		case <-p.restart:
		}
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(backoff):
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-p.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			inst, err := p.start(ctx)
			cancel()
			if err == nil {
				p.mu.Lock()
				if p.closed {
					p.mu.Unlock()
					inst.kill()
					return
				}
				p.cur = inst
				p.refusedLogged = false
				p.restarts++
				n := p.restarts
				p.mu.Unlock()
				p.log.Info("Plugin restarted", "restarts", n)
				backoff = p.cfg.MinBackoff
				break
			}
			backoff = min(backoff*2, p.cfg.MaxBackoff)
			p.mu.Lock()
			p.lastErr = err
			p.mu.Unlock()
			p.log.Error("Plugin restart failed", "error", err, "retry_in", backoff)
		}
	}
}

// hostPlugin is the host side of go-plugin's plugin contract: it serves
// the host services on the broker and hands back the connection.
type hostPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	log      *slog.Logger
	services []pluginsdk.ServiceServer
}

// hostedConn is what hostPlugin.GRPCClient dispenses.
type hostedConn struct {
	conn grpc.ClientConnInterface
	stop func()
}

func (h *hostPlugin) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error {
	return errors.New("plugin: the host does not serve plugins")
}

func (h *hostPlugin) GRPCClient(_ context.Context, b *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	lis, err := b.Accept(private.HostServiceProviderID)
	if err != nil {
		return nil, fmt.Errorf("plugin: broker host services: %w", err)
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(recoverUnary(h.log)),
		grpc.ChainStreamInterceptor(recoverStream(h.log)),
	)
	for _, s := range h.services {
		s.RegisterServer(srv)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			h.log.Error("Host services server failed", "error", err)
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			t := time.AfterFunc(deinitTimeout, srv.Stop)
			srv.GracefulStop()
			t.Stop()
			lis.Close()
			<-served
		})
	}
	return &hostedConn{conn: c, stop: stop}, nil
}

// PID is the process ID of the serving plugin, or 0 while it is down.
func (p *Plugin) PID() int {
	p.mu.Lock()
	inst := p.cur
	p.mu.Unlock()
	if inst == nil {
		return 0
	}
	return inst.pid
}
