package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// SelectorType is the type of every selector this attestor emits.
const SelectorType = "k8s"

// SPIRE's defaults.
const (
	DefaultMaxPollAttempts   = 60
	DefaultPollRetryInterval = 500 * time.Millisecond
	DefaultSecureKubeletPort = 10250
	DefaultKubeletCAPath     = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	DefaultTokenPath         = "/var/run/secrets/kubernetes.io/serviceaccount/token" //nolint:gosec // a path, not a secret
	DefaultNodeNameEnv       = "MY_NODE_NAME"
	DefaultReloadInterval    = time.Minute
)

// Config mirrors the plugin_data of SPIRE's k8s attestor. Zero values take
// SPIRE's defaults.
type Config struct {
	// KubeletReadOnlyPort selects plain HTTP to 127.0.0.1 on this port
	// (kubelet_read_only_port); it excludes KubeletSecurePort.
	KubeletReadOnlyPort int
	// KubeletSecurePort is the kubelet's HTTPS port (kubelet_secure_port;
	// 10250 when neither port is set).
	KubeletSecurePort int
	// SkipKubeletVerification accepts any kubelet certificate
	// (skip_kubelet_verification).
	SkipKubeletVerification bool
	// KubeletCAPath holds the CA certificates the kubelet's certificate
	// must chain to (kubelet_ca_path; default the service account's ca.crt).
	KubeletCAPath string
	// TokenPath is the bearer token, re-read every ReloadInterval
	// (token_path; default the service account's token).
	TokenPath string
	// CertificatePath and PrivateKeyPath are a client certificate used
	// instead of the token (certificate_path, private_key_path).
	CertificatePath string
	PrivateKeyPath  string
	// UseAnonymousAuthentication sends no credentials
	// (use_anonymous_authentication).
	UseAnonymousAuthentication bool
	// NodeName is the host dialled, and the name the kubelet certificate is
	// verified for (node_name). Empty: the variable NodeNameEnv names
	// (node_name_env, default MY_NODE_NAME); still empty: 127.0.0.1, with
	// the certificate chain checked but not its name.
	NodeName    string
	NodeNameEnv string
	// MaxPollAttempts and PollRetryInterval bound the wait for a pod the
	// kubelet does not list yet (max_poll_attempts, default 60;
	// poll_retry_interval, default 500ms). The pod list is cached for half
	// the interval.
	MaxPollAttempts   int
	PollRetryInterval time.Duration
	// ReloadInterval is how often the CA, token and client certificate are
	// re-read (reload_interval; default 1m).
	ReloadInterval time.Duration
	// DisableContainerSelectors drops k8s:container-name and
	// k8s:container-image, and then a pod whose container is not listed yet
	// is enough (disable_container_selectors).
	DisableContainerSelectors bool
	// LegacyContainerLocator is use_new_container_locator = false: the
	// pod and container are read from each cgroup path by SPIRE's old
	// patterns instead of containerinfo's locator.
	LegacyContainerLocator bool
	// VerboseContainerLocatorLogs logs the cgroups and mount roots read
	// (verbose_container_locator_logs), at debug level.
	VerboseContainerLocatorLogs bool
	// Sigstore reports that experimental.sigstore was configured. It is
	// accepted, so a SPIRE configuration loads, but not acted on: no image
	// signature is verified and no sigstore selector emitted (a warning says
	// so; entries that need those selectors then match nothing).
	Sigstore bool
	// Log receives warnings and refusals; nil discards.
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

func (c *Config) secure() bool { return c.KubeletReadOnlyPort <= 0 }

// Attestor is the k8s workload attestor.
type Attestor struct {
	cfg     Config
	log     *slog.Logger
	procDir string
	now     func() time.Time
	// sleep waits between poll attempts; a hook so tests need not wait.
	sleep func(ctx context.Context, d time.Duration) error

	// cgroups knows which cgroup v2 IDs are pod containers'; nil (every
	// call reads /proc) where the kernel cannot give a pidfd's cgroup ID.
	cgroups *containerinfo.CgroupIndex

	// requestTimeout bounds a /pods fetch (requestTimeout but in tests).
	requestTimeout time.Duration

	// base ends on Close, stopping any fetch in flight.
	base   context.Context
	cancel context.CancelFunc

	// located remembers what the locator made of each set of cgroup
	// paths, which is the same for every process of a container.
	located locateMemo

	mu         sync.Mutex
	client     *kubeletClient
	lastReload time.Time
	idx        *podIndex
	flight     *fetch
}

// fetch is one /pods request shared by every caller that needs a list at
// least as new as its start.
type fetch struct {
	started time.Time
	done    chan struct{}
	idx     *podIndex
	err     error
}

// New checks cfg as SPIRE's Configure does and loads the kubelet
// credentials, so a missing CA or token fails at start-up.
func New(cfg Config) (*Attestor, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.KubeletReadOnlyPort > 0 && cfg.KubeletSecurePort > 0 {
		return nil, &ConfigError{Key: "kubelet_secure_port", Err: errors.New("cannot use both the read-only and secure port")}
	}
	if cfg.secure() && cfg.KubeletSecurePort <= 0 {
		cfg.KubeletSecurePort = DefaultSecureKubeletPort
	}
	if cfg.MaxPollAttempts <= 0 {
		cfg.MaxPollAttempts = DefaultMaxPollAttempts
	}
	if cfg.PollRetryInterval <= 0 {
		cfg.PollRetryInterval = DefaultPollRetryInterval
	}
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if cfg.NodeName == "" {
		env := cfg.NodeNameEnv
		if env == "" {
			env = DefaultNodeNameEnv
		}
		cfg.NodeName = os.Getenv(env)
	}
	warnUnused(&cfg, log)
	if cfg.Sigstore {
		log.Warn("experimental.sigstore is accepted but not acted on: image signatures are not verified and no sigstore selectors are emitted")
	}
	if cfg.LegacyContainerLocator {
		log.Warn("Using the legacy container locator. This option will removed in a future release.")
	}
	client, err := newKubeletClient(&cfg)
	if err != nil {
		return nil, fmt.Errorf("k8s: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	a := &Attestor{
		cfg: cfg, log: log, procDir: "/proc", now: time.Now, sleep: sleepCtx,
		base: base, cancel: cancel, requestTimeout: requestTimeout,
		client: client, lastReload: time.Now(),
	}
	if !cfg.LegacyContainerLocator {
		if a.cgroups, err = containerinfo.NewCgroupIndex(true); err != nil {
			log.Debug("k8s: every call reads the caller's cgroups from /proc", "reason", err)
		}
	}
	return a, nil
}

// warnUnused logs settings that the chosen mode ignores, so an operator
// does not believe a token or CA protects a read-only-port setup.
func warnUnused(cfg *Config, log *slog.Logger) {
	var ignored []string
	add := func(set bool, key string) {
		if set {
			ignored = append(ignored, key)
		}
	}
	switch {
	case !cfg.secure():
		add(cfg.SkipKubeletVerification, "skip_kubelet_verification")
		add(cfg.KubeletCAPath != "", "kubelet_ca_path")
		add(cfg.TokenPath != "", "token_path")
		add(cfg.CertificatePath != "", "certificate_path")
		add(cfg.PrivateKeyPath != "", "private_key_path")
		add(cfg.UseAnonymousAuthentication, "use_anonymous_authentication")
		add(cfg.ReloadInterval != DefaultReloadInterval, "reload_interval")
		if len(ignored) > 0 {
			log.Warn("k8s: the read-only kubelet port is plain HTTP without authentication; these settings are ignored", "keys", ignored)
		}
	case cfg.UseAnonymousAuthentication:
		add(cfg.TokenPath != "", "token_path")
		add(cfg.CertificatePath != "", "certificate_path")
		add(cfg.PrivateKeyPath != "", "private_key_path")
		if len(ignored) > 0 {
			log.Warn("k8s: use_anonymous_authentication sends no credentials; these settings are ignored", "keys", ignored)
		}
	case cfg.CertificatePath != "" && cfg.TokenPath != "":
		log.Warn("k8s: a client certificate is configured, so token_path is ignored", "keys", []string{"token_path"})
	}
	if cfg.SkipKubeletVerification && cfg.KubeletCAPath != "" && cfg.secure() {
		log.Warn("k8s: skip_kubelet_verification is set, so kubelet_ca_path is ignored")
	}
}

// Close stops fetches in flight and drops idle kubelet connections.
func (a *Attestor) Close() error {
	a.cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.client.close()
	return nil
}

// Attest returns the k8s selectors of the pod container pid runs in, none
// for a process outside a pod, and an error when the pod cannot be found
// within the poll budget. pidfd must refer to pid (pass -1 only where no
// pidfd exists; the PID-reuse check is then skipped).
func (a *Attestor) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("k8s: %w", err)
	}
	podUID, containerID, err := a.locate(pid, pidfd)
	if err != nil {
		return nil, err
	}
	if containerID == "" {
		// Not in a pod: nothing to say, as in SPIRE.
		return nil, nil
	}
	for attempt := 1; ; attempt++ {
		start := a.now()
		idx, err := a.podIndex(ctx, time.Time{})
		if err != nil {
			return nil, fmt.Errorf("k8s: %w", err)
		}
		values, found, err := idx.lookup(podUID, containerID, a.cfg.DisableContainerSelectors)
		if err == nil && !found && idx.fetched.Before(start) {
			// A cached list may predate the container: ask again now
			// rather than wait a whole retry interval.
			if idx, err = a.podIndex(ctx, start); err != nil {
				return nil, fmt.Errorf("k8s: %w", err)
			}
			values, found, err = idx.lookup(podUID, containerID, a.cfg.DisableContainerSelectors)
		}
		if err != nil {
			a.log.Warn("k8s: refusing caller", "pid", pid, "pod_uid", podUID, "container_id", containerID, "error", err)
			return nil, fmt.Errorf("k8s: %w", err)
		}
		if found {
			return toSelectors(values), nil
		}
		if attempt >= a.cfg.MaxPollAttempts {
			a.log.Warn("Container id not found; giving up", "pid", pid, "pod_uid", podUID, "container_id", containerID, "attempts", attempt)
			return nil, fmt.Errorf("k8s: no selectors found after max poll attempts (%d, %v apart): pod %q container %q is not in the kubelet's pod list", attempt, a.cfg.PollRetryInterval, podUID, containerID)
		}
		a.log.Debug("Container id not found", "pid", pid, "pod_uid", podUID, "container_id", containerID, "attempt", attempt, "retry_interval", a.cfg.PollRetryInterval)
		if err := a.sleep(ctx, a.cfg.PollRetryInterval); err != nil {
			return nil, fmt.Errorf("k8s: no selectors found: %w", err)
		}
	}
}

// locate reads the caller's cgroups, pinned to the caller by its pidfd,
// and finds its pod UID and container ID.
func (a *Attestor) locate(pid int32, pidfd int) (podUID, containerID string, err error) {
	known, cgid, err := a.cgroups.Lookup(pidfd)
	if err != nil {
		return "", "", fmt.Errorf("k8s: caller pid %d: %w", pid, err)
	}
	if known.ContainerID != "" {
		return known.PodUID, known.ContainerID, nil
	}
	proc, err := containerinfo.ReadProc(a.procDir, pid, pidfd)
	if err != nil {
		return "", "", fmt.Errorf("k8s: %w", err)
	}
	if a.cfg.VerboseContainerLocatorLogs {
		for i, cg := range proc.Cgroups {
			a.log.Debug("PID cgroup enumerated", "pid", pid, "index", i+1, "total", len(proc.Cgroups), "path", cg.Path)
		}
		for i, root := range proc.MountRoots {
			a.log.Debug("PID mount enumerated", "pid", pid, "index", i+1, "total", len(proc.MountRoots), "root", root)
		}
	}
	if a.cfg.LegacyContainerLocator {
		podUID, containerID, err = legacyLocate(proc.CgroupPaths())
		if err == nil {
			err = containerinfo.RootOwned(proc.Cgroups, containerID)
		}
		if err != nil {
			return "", "", fmt.Errorf("k8s: pid %d: %w", pid, err)
		}
		return podUID, containerID, nil
	}
	info, err := a.located.locate(proc)
	if err != nil {
		return "", "", fmt.Errorf("k8s: pid %d: %w", pid, err)
	}
	// Unlike the docker attestor, this one cannot compare the caller's
	// cgroup with the container's real one, so it refuses a cgroup named
	// after a container in a subtree an unprivileged user may shape.
	if err := containerinfo.RootOwned(proc.Cgroups, info.ContainerID); err != nil {
		a.log.Warn("k8s: refusing caller", "pid", pid, "pod_uid", info.PodUID, "container_id", info.ContainerID, "error", err)
		return "", "", fmt.Errorf("k8s: pid %d: %w", pid, err)
	}
	a.cgroups.Learn(cgid, proc, info)
	return info.PodUID, info.ContainerID, nil
}

func toSelectors(groups [][]string) []*types.Selector {
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	// One allocation for all selectors: each caller gets its own copies,
	// free to change, while the cached index stays shared.
	backing := make([]types.Selector, n)
	out := make([]*types.Selector, 0, n)
	for _, g := range groups {
		for _, v := range g {
			s := &backing[len(out)]
			s.Type, s.Value = SelectorType, v
			out = append(out, s)
		}
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
