package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"golang.org/x/sys/unix"
)

// SelectorType is the type of every selector this attestor emits.
const SelectorType = "docker"

// DefaultSocketPath is where SPIRE looks for the engine when
// docker_socket_path is not set.
const DefaultSocketPath = "unix:///var/run/docker.sock"

// Defaults of the bounds that SPIRE leaves open.
const (
	// DefaultInspectTimeout bounds one attestation's calls to the engine,
	// SPIRE's retries included: an engine that hangs fails the call rather
	// than the caller's whole Workload API request.
	DefaultInspectTimeout = 5 * time.Second
	// DefaultCacheSize bounds how many containers' inspect results are kept.
	DefaultCacheSize = 1024
)

// SPIRE retries a failed inspect three times, waiting 100 ms, 200 ms and
// 400 ms.
const (
	retries        = 3
	initialBackoff = 100 * time.Millisecond
)

// Config mirrors the plugin_data of SPIRE's docker attestor, plus the
// bounds SPIRE does not have.
type Config struct {
	// SocketPath is the engine's address (docker_socket_path), a
	// unix:// or tcp:// URL; empty means DefaultSocketPath.
	SocketPath string
	// Version pins the engine API version (docker_version); empty
	// negotiates it with the engine.
	Version string
	// ContainerIDCgroupMatchers are the legacy locator's patterns
	// (container_id_cgroup_matchers); they need UseNewContainerLocator set
	// to false.
	ContainerIDCgroupMatchers []string
	// UseNewContainerLocator (use_new_container_locator) defaults to true,
	// as in SPIRE v1.13.
	UseNewContainerLocator *bool
	// VerboseContainerLocatorLogs logs, at debug level, every cgroup mount
	// root and cgroup path the locator looked at
	// (verbose_container_locator_logs). Every call then reads them from
	// /proc, so that there is something to log.
	VerboseContainerLocatorLogs bool
	// Sigstore reports that experimental.sigstore was configured. It is
	// accepted, so SPIRE configurations load, and logged as not acted on.
	Sigstore bool
	// InspectTimeout overrides DefaultInspectTimeout.
	InspectTimeout time.Duration
	// CacheSize overrides DefaultCacheSize; negative turns the cache off
	// (every call inspects).
	CacheSize int
	// Log receives the attestor's log lines; nil discards them.
	Log *slog.Logger
}

// ConfigError is a configuration New refuses, with the plugin_data key at
// fault.
type ConfigError struct {
	Key string
	Err error
}

func (e *ConfigError) Error() string { return e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }

// Attestor is the docker workload attestor. Close it to stop its
// subscription to the engine's events.
type Attestor struct {
	log      *slog.Logger
	host     string
	engine   *engine
	matchers *Matchers // nil: the new locator
	verbose  bool
	timeout  time.Duration
	procDir  string
	cache    *cache

	// cgroups knows which cgroup v2 IDs are containers'; nil (every call
	// reads /proc) with the legacy locator, verbose logs, or where the
	// kernel cannot give a pidfd's cgroup ID.
	cgroups *containerinfo.CgroupIndex

	ctx    context.Context // ended by Close; bounds every engine call
	cancel context.CancelFunc
	done   chan struct{} // closed when the event watcher has returned
}

// New checks cfg as SPIRE does, creates the engine client (it connects on
// first use, so the engine may start after the agent) and starts watching
// the engine's container events.
func New(cfg Config) (*Attestor, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	useNew := cfg.UseNewContainerLocator == nil || *cfg.UseNewContainerLocator
	var matchers *Matchers
	if len(cfg.ContainerIDCgroupMatchers) > 0 {
		if useNew {
			return nil, &ConfigError{Key: "container_id_cgroup_matchers", Err: errors.New("the new container locator and custom cgroup matchers cannot both be used; please open an issue if the new container locator fails to locate workload containers in your environment; to continue using custom matchers set use_new_container_locator=false")}
		}
		m, err := NewMatchers(cfg.ContainerIDCgroupMatchers)
		if err != nil {
			return nil, &ConfigError{Key: "container_id_cgroup_matchers", Err: err}
		}
		matchers = m
		log.Warn("Using the legacy container locator with custom cgroup matchers. This feature will be removed in a future release.")
	}
	if cfg.Sigstore {
		// SPIRE would fail the attestation of a container whose image it
		// cannot verify; here its docker selectors are emitted anyway.
		log.Warn("experimental.sigstore is accepted but not acted on: image signatures are not verified, no sigstore selectors are emitted, and containers of unsigned images get their docker selectors (SPIRE would refuse them)")
	}
	host := cfg.SocketPath
	if host == "" {
		host = DefaultSocketPath
	}
	eng, err := newEngine(host, cfg.Version)
	if err != nil {
		return nil, &ConfigError{Key: "docker_socket_path", Err: err}
	}
	a := &Attestor{
		log:      log,
		host:     host,
		engine:   eng,
		matchers: matchers,
		verbose:  cfg.VerboseContainerLocatorLogs,
		timeout:  orDefault(cfg.InspectTimeout, DefaultInspectTimeout),
		procDir:  "/proc",
		cache:    newCache(cacheSize(cfg.CacheSize)),
		done:     make(chan struct{}),
	}
	if matchers == nil && !a.verbose {
		if a.cgroups, err = containerinfo.NewCgroupIndex(false); err != nil {
			log.Debug("docker: every call reads the caller's cgroups from /proc", "reason", err)
		}
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	go a.watch()
	return a, nil
}

func cacheSize(n int) int {
	if n == 0 {
		return DefaultCacheSize
	}
	return max(n, 0)
}

// orDefault returns v, or def where v is not positive.
func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Close stops the event watcher and the client. Calls still waiting on the
// engine fail.
func (a *Attestor) Close() error {
	a.cancel()
	<-a.done
	return a.engine.close()
}

// WaitSubscribed waits until the attestor is subscribed to the engine's
// container events, from which point inspect results are cached, or until
// ctx ends.
func (a *Attestor) WaitSubscribed(ctx context.Context) error {
	select {
	case <-a.cache.subscribed():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("docker: not subscribed to the events of %s: %w", a.host, ctx.Err())
	}
}

// Attest returns the docker selectors of the container pid runs in, none if
// it runs in none. pidfd must refer to the same process (-1 only where no
// pidfd exists; the PID-reuse check is then skipped).
func (a *Attestor) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	if pid <= 0 {
		return nil, fmt.Errorf("docker: invalid pid %d", pid)
	}
	known, cgid, err := a.cgroups.Lookup(pidfd)
	if err != nil {
		return nil, fmt.Errorf("docker: caller pid %d: %w", pid, err)
	}
	if known.ContainerID != "" {
		// The index learns only cgroups that passed the check below.
		ans, err := a.lookup(ctx, known.ContainerID)
		return ans.sel, err
	}
	proc, err := containerinfo.ReadProc(a.procDir, pid, pidfd)
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	id, err := a.containerID(pid, proc)
	if err != nil {
		return nil, fmt.Errorf("docker: caller pid %d: %w", pid, err)
	}
	if id == "" {
		// Not a container: nothing to add, as in SPIRE.
		return nil, nil
	}
	ans, err := a.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	// A cgroup named after container id is not necessarily its cgroup: a
	// workload with a delegated cgroup subtree can make one so named.
	if err := containerinfo.Within(proc.Cgroups, ans.cgroups, id); err != nil {
		a.log.Warn("Caller's cgroup is named after a container it is not in", "pid", pid, "container_id", id, "error", err)
		return nil, fmt.Errorf("docker: caller pid %d: %w", pid, err)
	}
	a.cgroups.Learn(cgid, proc, containerinfo.Info{ContainerID: id})
	// The selectors are shared with other calls, which the Attestor
	// interface allows: callers never modify them.
	return ans.sel, nil
}

// containerID locates the caller's container with the configured locator.
func (a *Attestor) containerID(pid int32, proc containerinfo.Proc) (string, error) {
	if a.verbose {
		for i, root := range proc.MountRoots {
			a.log.Debug("PID mount enumerated", "pid", pid, "index", i+1, "total", len(proc.MountRoots), "root", root)
		}
		for i, cg := range proc.Cgroups {
			a.log.Debug("PID cgroup enumerated", "pid", pid, "index", i+1, "total", len(proc.Cgroups), "path", cg.Path)
		}
	}
	if a.matchers != nil {
		paths := make([]string, len(proc.Cgroups))
		for i, cg := range proc.Cgroups {
			paths[i] = cg.Path
		}
		return a.matchers.containerID(paths)
	}
	info, err := proc.Locate(false)
	if err != nil {
		return "", err
	}
	return info.ContainerID, nil
}

// lookup returns what is known of container id: from the cache, else from
// one inspect shared by every caller that asks meanwhile. The caller's ctx
// ends its own wait, not the shared inspect, which has its own bound.
func (a *Attestor) lookup(ctx context.Context, id string) (answer, error) {
	ans, hit, f, start := a.cache.get(id)
	if hit {
		return ans, nil
	}
	if start {
		go a.fetch(id, f)
	}
	select {
	case <-f.done:
		return f.ans, f.err
	case <-ctx.Done():
		return answer{}, fmt.Errorf("docker: inspect container %s: %w", id, ctx.Err())
	}
}

// fetch inspects container id for flight f and caches the answer when it
// may be.
func (a *Attestor) fetch(id string, f *flight) {
	ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
	defer cancel()
	resp, err := a.inspect(ctx, id)
	var ans answer
	running := false
	if err == nil {
		var vals []string
		vals, err = selectorValues(resp)
		ans.sel = make([]*types.Selector, len(vals))
		for i, v := range vals {
			ans.sel[i] = &types.Selector{Type: SelectorType, Value: v}
		}
		running = resp.ContainerJSONBase != nil && resp.State != nil && resp.State.Running
	}
	if err == nil {
		ans.cgroups, err = a.initCgroups(id, resp)
	}
	if err != nil {
		switch {
		case a.ctx.Err() != nil:
			err = fmt.Errorf("docker: inspect container %s: attestor closed", id)
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("docker: inspect container %s: the engine at %s did not answer within %v: %w", id, a.host, a.timeout, err)
		default:
			err = fmt.Errorf("docker: inspect container %s at %s: %w", id, a.host, err)
		}
		a.log.Warn("Docker inspect failed", "container_id", id, "error", err)
	}
	a.cache.finish(id, f, ans, err, running)
}

// initCgroups reads the cgroups of the init process of the container the
// engine described, the reference containerinfo.Within checks callers
// against. The PID is the engine's, in the host's PID namespace, which the
// agent must share (as it must to see its callers' cgroups at all). An
// init that exited and whose PID went to another process before the
// pidfd was opened is not caught here; the container's die event, which
// comes with that exit, keeps such an answer out of the cache.
func (a *Attestor) initCgroups(id string, resp container.InspectResponse) ([]containerinfo.Cgroup, error) {
	if resp.ContainerJSONBase == nil || resp.State == nil || resp.State.Pid <= 0 {
		return nil, fmt.Errorf("container %.12s has no running init process to compare its callers' cgroups with", id)
	}
	pid := resp.State.Pid
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("container %.12s init pid %d: pidfd_open: %w", id, pid, err)
	}
	defer unix.Close(fd)
	cgs, err := containerinfo.ReadCgroups(a.procDir, int32(pid), fd)
	if err != nil {
		return nil, fmt.Errorf("container %.12s init: %w", id, err)
	}
	return cgs, nil
}

// inspect calls the engine with SPIRE's retries, within ctx.
func (a *Attestor) inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	backoff := initialBackoff
	for i := 0; ; i++ {
		resp, err := a.inspectOnce(ctx, id)
		// An answer past the cap would be as large again.
		if err == nil || i == retries || ctx.Err() != nil || errors.Is(err, errAnswerTooLarge) {
			return resp, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return resp, err
		case <-t.C:
		}
		backoff *= 2
	}
}

func (a *Attestor) inspectOnce(ctx context.Context, id string) (container.InspectResponse, error) {
	cl, err := a.engine.client(ctx)
	if err != nil {
		return container.InspectResponse{}, err
	}
	resp, err := cl.ContainerInspect(ctx, id)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syntax) || errors.As(err, &typ) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("the answer is not a container's inspect JSON: %w", err)
	}
	return resp, err
}

// selectorValues turns an inspect answer into SPIRE's selector values:
// every label, every environment entry, and the image the container was
// created from (Config.Image, which SPIRE calls image_id). Labels are
// sorted, since they come from a map.
func selectorValues(resp container.InspectResponse) ([]string, error) {
	cfg := resp.Config
	if cfg == nil {
		return nil, errors.New("the answer is not a container's inspect JSON: no Config")
	}
	keys := make([]string, 0, len(cfg.Labels))
	for k := range cfg.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	vals := make([]string, 0, len(keys)+len(cfg.Env)+1)
	for _, k := range keys {
		vals = append(vals, "label:"+k+":"+cfg.Labels[k])
	}
	for _, e := range cfg.Env {
		vals = append(vals, "env:"+e)
	}
	if cfg.Image != "" {
		vals = append(vals, "image_id:"+cfg.Image)
	}
	return vals, nil
}
