// Package lineage is the "lineage" workload attestor: the unix selectors
// (unix:uid, unix:user, unix:gid, unix:group, unix:path, unix:sha256) and
// selectors on the caller's ancestry and cgroup, looked up in the live
// process table that package ebpf/lineage keeps with eBPF, instead of read
// from /proc and hashed on every call.
//
// The caller is found by its pidfd's pidfs inode, which no other process can
// have, and the pidfd is checked alive after the lookup, so a reused PID
// never yields another process's identity. The executable's SHA-256 is
// computed once per file version (device, inode, change time, size) and only
// from the file the process executed: if that file has changed since, no
// unix:sha256 selector is emitted.
//
// When eBPF cannot run here, New logs why and the attestor reads the same
// facts from /proc on every call.
package lineage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/unix"
	tracer "github.com/spiffe-hw/spire-hw/ebpf/lineage"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	sysunix "golang.org/x/sys/unix"
)

// SelectorType is the type of the lineage selectors; the unix ones keep
// unix.SelectorType.
const SelectorType = "lineage"

// Config is the attestor's plugin_data.
type Config struct {
	// DiscoverWorkloadPath adds unix:path, unix:sha256 and
	// lineage:parent:sha256 (discover_workload_path), as in the unix
	// attestor.
	DiscoverWorkloadPath bool
	// WorkloadSizeLimit caps the size of a hashed binary
	// (workload_size_limit): 0 means no limit, negative disables hashes.
	WorkloadSizeLimit int64
	// MaxAncestors caps the lineage:ancestor:path selectors (max_ancestors,
	// default 16).
	MaxAncestors int
	// GracePeriod keeps exited processes in the table (grace_period,
	// default 30s).
	GracePeriod time.Duration
	// MaxProcesses bounds the table (max_processes, default 65536).
	MaxProcesses int
	// DisableEBPF forces the /proc path (disable_ebpf).
	DisableEBPF bool
	Log         *slog.Logger
}

// Attestor is the lineage workload attestor.
type Attestor struct {
	cfg     Config
	tracer  *tracer.Tracer // nil: read /proc
	cgroups *tracer.CgroupPaths
	hashes  hashCache
	users   nameCache
	groups  nameCache
}

// New starts the tracer, or falls back to /proc and logs why.
func New(cfg Config) *Attestor {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxAncestors <= 0 {
		cfg.MaxAncestors = 16
	}
	a := &Attestor{
		cfg:    cfg,
		hashes: hashCache{m: make(map[tracer.FileID]string)},
		users:  nameCache{lookup: lookupUser},
		groups: nameCache{lookup: lookupGroup},
	}
	if cg, err := tracer.NewCgroupPaths(); err == nil {
		a.cgroups = cg
	} else {
		cfg.Log.Warn("lineage: no cgroup selectors", "err", err)
	}
	if cfg.DisableEBPF {
		cfg.Log.Info("lineage: eBPF disabled by configuration; reading /proc on every call")
		return a
	}
	t, err := tracer.Start(tracer.Options{
		Table: tracer.TableOptions{MaxProcesses: cfg.MaxProcesses, Grace: cfg.GracePeriod, MaxAncestors: cfg.MaxAncestors},
		Log:   cfg.Log,
	})
	if err != nil {
		cfg.Log.Warn("lineage: eBPF tracer unavailable; reading /proc on every call", "err", err)
		return a
	}
	a.tracer = t
	return a
}

// Mode says where process facts come from: "ebpf" or "procfs".
func (a *Attestor) Mode() string {
	if a.tracer != nil {
		return "ebpf"
	}
	return "procfs"
}

// Tracer returns the running tracer (for its metrics), or nil.
func (a *Attestor) Tracer() *tracer.Tracer { return a.tracer }

// Close stops the tracer.
func (a *Attestor) Close() error {
	if a.tracer == nil {
		return nil
	}
	return a.tracer.Close()
}

// Attest returns the selectors of the process behind pidfd, whose PID is
// pid. A pidfd is required.
func (a *Attestor) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	if pidfd < 0 {
		return nil, errors.New("lineage: a pidfd is required")
	}
	p, err := a.process(ctx, pid, pidfd)
	if err != nil {
		return nil, err
	}
	live, err := tracer.LiveOf(pid, pidfd)
	if err != nil {
		return nil, fmt.Errorf("lineage: caller pid %d: %w", pid, err)
	}

	sel := make([]*types.Selector, 0, 8+len(p.Ancestors))
	add := func(typ, value string) { sel = append(sel, &types.Selector{Type: typ, Value: value}) }
	uid := strconv.FormatUint(uint64(live.EUID), 10)
	gid := strconv.FormatUint(uint64(live.EGID), 10)
	add(unix.SelectorType, "uid:"+uid)
	if name, ok := a.users.get(uid); ok {
		add(unix.SelectorType, "user:"+name)
	}
	add(unix.SelectorType, "gid:"+gid)
	if name, ok := a.groups.get(gid); ok {
		add(unix.SelectorType, "group:"+name)
	}
	hashing := a.cfg.DiscoverWorkloadPath && a.cfg.WorkloadSizeLimit >= 0
	if a.cfg.DiscoverWorkloadPath && p.Exe.Known() {
		add(unix.SelectorType, "path:"+p.Exe.Path)
		if hashing {
			if sum, ok := a.exeHash(ctx, pid, pidfd, p.Exe); ok {
				add(unix.SelectorType, "sha256:"+sum)
			}
		}
	}
	if p.Exe.Unlinked {
		add(SelectorType, "exe:unlinked")
	}
	for i, anc := range p.Ancestors {
		if i >= a.cfg.MaxAncestors {
			break
		}
		if !anc.Exe.Known() {
			continue
		}
		if i == 0 {
			add(SelectorType, "parent:path:"+anc.Exe.Path)
			if hashing {
				if sum, ok := a.ancestorHash(ctx, anc); ok {
					add(SelectorType, "parent:sha256:"+sum)
				}
			}
		}
		add(SelectorType, "ancestor:path:"+anc.Exe.Path)
	}
	if a.cgroups != nil {
		if path, ok := a.cgroups.Path(live.CgroupID); ok {
			add(SelectorType, "cgroup:"+path)
			if unit, ok := tracer.SystemdUnit(path); ok {
				add(SelectorType, "systemd_unit:"+unit)
			}
		}
	}
	// Whatever was read above, it was about the caller only if the caller
	// is still alive now.
	if err := tracer.CheckAlive(pidfd); err != nil {
		return nil, fmt.Errorf("lineage: caller pid %d: %w", pid, err)
	}
	return sel, nil
}

// process finds the caller in the table, or reads it from /proc.
func (a *Attestor) process(ctx context.Context, pid int32, pidfd int) (tracer.Process, error) {
	if a.tracer != nil {
		key, err := tracer.KeyOf(pidfd)
		if err != nil {
			return tracer.Process{}, fmt.Errorf("lineage: caller pid %d: %w", pid, err)
		}
		table := a.tracer.Table()
		p, ok := table.Lookup(key)
		if !ok {
			// Its events may still wait in the ring buffer.
			if err := a.tracer.Sync(ctx); err != nil {
				return tracer.Process{}, err
			}
			p, ok = table.Lookup(key)
		}
		if ok && p.Exe.Known() {
			return p, nil
		}
		a.cfg.Log.Debug("lineage: caller not in the table; reading /proc", "pid", pid)
	}
	p, err := tracer.ReadLineage(pid, pidfd, a.cfg.MaxAncestors)
	if err != nil {
		return tracer.Process{}, fmt.Errorf("lineage: caller pid %d: %w", pid, err)
	}
	return p, nil
}

// exeHash returns the SHA-256 of the file the caller executed, if that file
// is unchanged since: the file is opened through /proc/<pid>/exe (bound to
// the caller by the pidfd) and its change time and size compared with those
// recorded at exec.
func (a *Attestor) exeHash(ctx context.Context, pid int32, pidfd int, exe tracer.Exe) (string, bool) {
	if sum, ok := a.hashes.get(exe.FileID); ok {
		return sum, true
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return "", false
	}
	defer f.Close()
	if tracer.CheckAlive(pidfd) != nil {
		return "", false
	}
	return a.hashVerified(ctx, f, exe.FileID, false)
}

// ancestorHash hashes an ancestor's executable: through /proc while the
// ancestor lives, else by path if the file there is still the same version.
func (a *Attestor) ancestorHash(ctx context.Context, anc tracer.Ancestor) (string, bool) {
	if sum, ok := a.hashes.get(anc.Exe.FileID); ok {
		return sum, true
	}
	if pfd, err := sysunix.PidfdOpen(int(anc.PID), 0); err == nil {
		defer sysunix.Close(pfd)
		if k, err := tracer.KeyOf(pfd); err == nil && k == anc.Key {
			if f, err := os.Open(fmt.Sprintf("/proc/%d/exe", anc.PID)); err == nil {
				defer f.Close()
				if tracer.CheckAlive(pfd) == nil {
					return a.hashVerified(ctx, f, anc.Exe.FileID, false)
				}
			}
		}
	}
	if anc.Exe.Unlinked {
		return "", false
	}
	f, err := os.Open(anc.Exe.Path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	return a.hashVerified(ctx, f, anc.Exe.FileID, true)
}

// hashVerified hashes f if it is still the version want, before and after
// reading it. Through /proc/<pid>/exe the file is the executed one and only
// its change time and size can tell a later write; by path the device and
// inode must match too.
func (a *Attestor) hashVerified(ctx context.Context, f *os.File, want tracer.FileID, byPath bool) (string, bool) {
	same := func() bool {
		var st sysunix.Stat_t
		if sysunix.Fstat(int(f.Fd()), &st) != nil {
			return false
		}
		got := tracer.FileIDOf(&st)
		if !byPath {
			got.Dev, got.Ino = want.Dev, want.Ino
		}
		return got == want
	}
	if !same() {
		return "", false
	}
	sum, err := unix.HashFile(ctx, f, a.cfg.WorkloadSizeLimit)
	if err != nil || !same() {
		return "", false
	}
	a.hashes.put(want, sum)
	return sum, true
}

// hashCache maps file versions to their SHA-256.
type hashCache struct {
	mu sync.RWMutex
	m  map[tracer.FileID]string
}

const maxHashes = 4096

func (c *hashCache) get(id tracer.FileID) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.m[id]
	return s, ok
}

func (c *hashCache) put(id tracer.FileID, sum string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxHashes {
		clear(c.m)
	}
	c.m[id] = sum
}

// nameCache remembers user and group names for a while: a passwd lookup can
// cost more than the rest of an attestation.
type nameCache struct {
	lookup func(id string) (string, error)
	mu     sync.Mutex
	m      map[string]nameEntry
}

type nameEntry struct {
	name string
	ok   bool
	at   time.Time
}

const nameTTL = 30 * time.Second

func (c *nameCache) get(id string) (string, bool) {
	c.mu.Lock()
	e, hit := c.m[id]
	c.mu.Unlock()
	if hit && time.Since(e.at) < nameTTL {
		return e.name, e.ok
	}
	name, err := c.lookup(id)
	e = nameEntry{name: name, ok: err == nil, at: time.Now()}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 4096 {
		c.m = make(map[string]nameEntry)
	}
	c.m[id] = e
	c.mu.Unlock()
	return e.name, e.ok
}

func lookupUser(uid string) (string, error) {
	u, err := user.LookupId(uid)
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

func lookupGroup(gid string) (string, error) {
	g, err := user.LookupGroupId(gid)
	if err != nil {
		return "", err
	}
	return g.Name, nil
}
