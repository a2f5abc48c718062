// Package lineage is the "lineage" workload attestor: the unix selectors
// (unix:uid, unix:user, unix:gid, unix:group, unix:supplementary_gid,
// unix:supplementary_group, unix:path, unix:sha256) and
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
	// SkipSupplementaryGroups leaves out unix:supplementary_gid and
	// unix:supplementary_group. They change with setgroups(2), which no
	// traced event reports, so they are read from /proc/<pid>/status on
	// every call; skipping them saves that read.
	SkipSupplementaryGroups bool
	Log                     *slog.Logger
}

// Attestor is the lineage workload attestor.
type Attestor struct {
	cfg     Config
	tracer  *tracer.Tracer // nil: read /proc
	cgroups *tracer.CgroupPaths
	hashes  hashCache
	users   idCache
	groups  idCache
	// Selector strings, built once and reused while their inputs last.
	rendered struct {
		mu sync.RWMutex
		m  map[tracer.Key]renderedExe
	}
	cgSel struct {
		mu sync.RWMutex
		m  map[uint64]cgroupSel
	}
	dropsOnce sync.Once
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
		users:  idCache{kind: "uid", lookup: lookupUser},
		groups: idCache{kind: "gid", lookup: lookupGroup},
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
//
// A call costs three system calls on the caller's pidfd (its key, its live
// credentials and cgroup, and the final liveness check) plus one read of
// /proc/<pid>/status for the supplementary groups; every selector is built
// once per process, user, group or cgroup and reused. The selectors returned
// are shared between calls, so callers must not modify them.
func (a *Attestor) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lineage: %w", err)
	}
	if pidfd < 0 {
		return nil, errors.New("lineage: a pidfd is required")
	}
	p, fromTable, err := a.process(ctx, pid, pidfd)
	if err != nil {
		return nil, err
	}
	live, err := tracer.LiveOf(pid, pidfd)
	if err != nil {
		return nil, fmt.Errorf("lineage: caller pid %d: %w", pid, err)
	}
	var groups []uint32
	if !a.cfg.SkipSupplementaryGroups {
		buf := statusBufs.Get().(*[]byte)
		groups, err = tracer.ReadGroups(pid, *buf)
		statusBufs.Put(buf)
		if err != nil {
			return nil, fmt.Errorf("lineage: caller pid %d: %w", pid, err)
		}
	}

	exe := a.exeSelectors(ctx, pid, pidfd, p, fromTable)
	user := a.users.get(live.EUID)
	group := a.groups.get(live.EGID)
	cg, haveCg := a.cgroupSelectors(live.CgroupID)

	// The selectors themselves are built once per process, user, group and
	// cgroup and shared: a call allocates only the slice that points to them.
	n := 4 + 2*len(groups) + len(exe.unix) + len(exe.lineage) + 2
	sel := make([]*types.Selector, 0, n)
	add := func(s *types.Selector) {
		if s != nil {
			sel = append(sel, s)
		}
	}
	add(user.id)
	add(user.name)
	add(group.id)
	add(group.name)
	for _, g := range groups {
		e := a.groups.get(g)
		add(e.suppID)
		add(e.suppName)
	}
	sel = append(sel, exe.unix...)
	sel = append(sel, exe.lineage...)
	if haveCg {
		add(cg.path)
		add(cg.unit)
	}

	// Whatever was read above, it was about the caller only if the caller
	// is still alive now.
	if err := tracer.CheckAlive(pidfd); err != nil {
		return nil, fmt.Errorf("lineage: caller pid %d: %w", pid, err)
	}
	return sel, nil
}

// statusBufs hold /proc/<pid>/status while its Groups line is parsed.
var statusBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// exeSelectorSet is what a process's executable and ancestry contribute:
// unix:path, unix:sha256, and the lineage selectors but the cgroup ones.
type exeSelectorSet struct {
	unix, lineage []*types.Selector
}

// unixSel and lineageSel build a selector that is shared by every call
// that returns it (see Attest).
func unixSel(value string) *types.Selector {
	return &types.Selector{Type: unix.SelectorType, Value: value}
}

func lineageSel(value string) *types.Selector {
	return &types.Selector{Type: SelectorType, Value: value}
}

// renderedExe caches a process's exeSelectorSet for as long as the table
// describes it the same way: same executable, same ancestor chain (chains
// are never modified, only replaced, so comparing their first element's
// address is enough).
type renderedExe struct {
	exe  tracer.Exe
	anc  *tracer.Ancestor
	nanc int
	set  exeSelectorSet
}

func ancestorsID(p *tracer.Process) *tracer.Ancestor {
	if len(p.Ancestors) == 0 {
		return nil
	}
	return &p.Ancestors[0]
}

// exeSelectors returns the selectors of p's executable and ancestry, from
// the cache when p, a table entry, has not changed since they were built.
func (a *Attestor) exeSelectors(ctx context.Context, pid int32, pidfd int, p tracer.Process, cacheable bool) exeSelectorSet {
	if cacheable {
		a.rendered.mu.RLock()
		r, ok := a.rendered.m[p.Key]
		a.rendered.mu.RUnlock()
		if ok && r.exe == p.Exe && r.anc == ancestorsID(&p) && r.nanc == len(p.Ancestors) {
			return r.set
		}
	}
	var set exeSelectorSet
	// complete is false when a hash could not be computed now but might be
	// later (a file being replaced): such a set is not cached.
	complete := true
	hashing := a.cfg.DiscoverWorkloadPath && a.cfg.WorkloadSizeLimit >= 0
	if a.cfg.DiscoverWorkloadPath && p.Exe.Known() {
		set.unix = append(set.unix, unixSel("path:"+p.Exe.Path))
		if hashing {
			if sum, ok := a.exeHash(ctx, pid, pidfd, p.Exe); ok {
				set.unix = append(set.unix, unixSel("sha256:"+sum))
			} else {
				complete = false
			}
		}
	}
	if p.Exe.Unlinked {
		set.lineage = append(set.lineage, lineageSel("exe:unlinked"))
	}
	for i, anc := range p.Ancestors {
		if i >= a.cfg.MaxAncestors {
			break
		}
		if !anc.Exe.Known() {
			continue
		}
		if i == 0 {
			set.lineage = append(set.lineage, lineageSel("parent:path:"+anc.Exe.Path))
			if hashing {
				if sum, ok := a.ancestorHash(ctx, anc); ok {
					set.lineage = append(set.lineage, lineageSel("parent:sha256:"+sum))
				} else {
					complete = false
				}
			}
		}
		set.lineage = append(set.lineage, lineageSel("ancestor:path:"+anc.Exe.Path))
	}
	if cacheable && complete {
		a.rendered.mu.Lock()
		if a.rendered.m == nil || len(a.rendered.m) >= a.maxRendered() {
			a.rendered.m = make(map[tracer.Key]renderedExe)
		}
		a.rendered.m[p.Key] = renderedExe{exe: p.Exe, anc: ancestorsID(&p), nanc: len(p.Ancestors), set: set}
		a.rendered.mu.Unlock()
	}
	return set
}

// maxRendered bounds the rendered-selector cache like the table.
func (a *Attestor) maxRendered() int {
	if a.cfg.MaxProcesses > 0 {
		return a.cfg.MaxProcesses
	}
	return 1 << 16
}

// cgroupSel holds the lineage:cgroup and lineage:systemd_unit values of a
// cgroup. A cgroup ID is never reused while the machine is up, so they are
// kept for good (within a bound).
type cgroupSel struct{ path, unit *types.Selector }

func (a *Attestor) cgroupSelectors(id uint64) (cgroupSel, bool) {
	if a.cgroups == nil || id == 0 {
		return cgroupSel{}, false
	}
	a.cgSel.mu.RLock()
	c, ok := a.cgSel.m[id]
	a.cgSel.mu.RUnlock()
	if ok {
		return c, true
	}
	path, ok := a.cgroups.Path(id)
	if !ok {
		return cgroupSel{}, false
	}
	c = cgroupSel{path: lineageSel("cgroup:" + path)}
	if unit, ok := tracer.SystemdUnit(path); ok {
		c.unit = lineageSel("systemd_unit:" + unit)
	}
	a.cgSel.mu.Lock()
	if a.cgSel.m == nil || len(a.cgSel.m) >= 1<<14 {
		a.cgSel.m = make(map[uint64]cgroupSel)
	}
	a.cgSel.m[id] = c
	a.cgSel.mu.Unlock()
	return c, true
}

// process finds the caller in the table (and says so), or reads it from
// /proc.
func (a *Attestor) process(ctx context.Context, pid int32, pidfd int) (tracer.Process, bool, error) {
	if a.tracer != nil && a.tracer.Drops() != 0 {
		// A lost event leaves some entry wrong, and which one is unknown.
		a.dropsOnce.Do(func() {
			a.cfg.Log.Error("lineage: the kernel dropped lineage events (ring buffer full); reading /proc on every call from now on")
		})
	} else if a.tracer != nil {
		key, err := tracer.KeyOf(pidfd)
		if err != nil {
			return tracer.Process{}, false, fmt.Errorf("lineage: caller pid %d: %w", pid, err)
		}
		p, ok, err := a.tracer.Lookup(ctx, key)
		if err != nil {
			return tracer.Process{}, false, err
		}
		if !ok {
			// Its events may still wait in the ring buffer.
			if err := a.tracer.Sync(ctx); err != nil {
				return tracer.Process{}, false, err
			}
			p, ok = a.tracer.Table().Lookup(key)
		}
		if ok && p.Exe.Known() {
			return p, true, nil
		}
		a.cfg.Log.Debug("lineage: caller not in the table; reading /proc", "pid", pid)
	}
	p, err := tracer.ReadLineage(pid, pidfd, a.cfg.MaxAncestors)
	if err != nil {
		return tracer.Process{}, false, fmt.Errorf("lineage: caller pid %d: %w", pid, err)
	}
	return p, false, nil
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

// idCache remembers the selector values of user or group IDs for a while:
// a passwd lookup can cost more than the rest of an attestation, and the
// strings are then built once.
type idCache struct {
	kind   string // "uid" or "gid"
	lookup func(id string) (string, error)
	mu     sync.RWMutex
	m      map[uint32]idEntry
}

// idEntry holds "uid:N" and "user:name" (names nil when unknown), or for
// a group also "supplementary_gid:N" and "supplementary_group:name".
type idEntry struct {
	id, name         *types.Selector
	suppID, suppName *types.Selector
	at               time.Time
}

const nameTTL = 30 * time.Second

func (c *idCache) get(id uint32) idEntry {
	c.mu.RLock()
	e, hit := c.m[id]
	c.mu.RUnlock()
	if hit && time.Since(e.at) < nameTTL {
		return e
	}
	s := strconv.FormatUint(uint64(id), 10)
	e = idEntry{id: unixSel(c.kind + ":" + s), at: time.Now()}
	name, err := c.lookup(s)
	if c.kind == "uid" {
		if err == nil {
			e.name = unixSel("user:" + name)
		}
	} else {
		e.suppID = unixSel("supplementary_gid:" + s)
		if err == nil {
			e.name, e.suppName = unixSel("group:"+name), unixSel("supplementary_group:"+name)
		}
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 4096 {
		c.m = make(map[uint32]idEntry)
	}
	c.m[id] = e
	c.mu.Unlock()
	return e
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
