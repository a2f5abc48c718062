package lineage

import (
	"sync"
	"time"
)

// TableOptions bound the table.
type TableOptions struct {
	// MaxProcesses caps the entries, live and exited (default 65536). When
	// the table is full of live processes new ones are not added; callers
	// then read the process from /proc.
	MaxProcesses int
	// Grace is how long an exited process stays in the table (default 30s),
	// so that a late lookup still finds it and descendants forked just
	// before it exited still find their parent.
	Grace time.Duration
	// MaxAncestors caps each process's ancestor chain (default 32).
	MaxAncestors int
}

func (o TableOptions) withDefaults() TableOptions {
	if o.MaxProcesses <= 0 {
		o.MaxProcesses = 1 << 16
	}
	if o.Grace <= 0 {
		o.Grace = 30 * time.Second
	}
	if o.MaxAncestors <= 0 {
		o.MaxAncestors = 32
	}
	return o
}

// Table is the process-lineage table. It is safe for concurrent use.
type Table struct {
	opts TableOptions
	now  func() time.Time

	mu    sync.RWMutex
	procs map[Key]*Process
	// exited lists exited keys oldest first; tombstones remembers exits of
	// processes the table did not know, so that a /proc snapshot taken
	// before they exited is not added after the fact.
	exited     []exitMark
	tombstones map[Key]time.Time
	overflows  uint64
}

type exitMark struct {
	key Key
	at  time.Time
}

// NewTable returns an empty table.
func NewTable(opts TableOptions) *Table {
	return &Table{
		opts:       opts.withDefaults(),
		now:        time.Now,
		procs:      make(map[Key]*Process),
		tombstones: make(map[Key]time.Time),
	}
}

// Lookup returns the process with key k.
func (t *Table) Lookup(k Key) (Process, bool) {
	t.mu.RLock()
	p, ok := t.procs[k]
	var out Process
	if ok {
		out = *p
	}
	t.mu.RUnlock()
	return out, ok
}

// Len returns the number of entries, live and exited.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.procs)
}

// Overflows counts processes that were not added because the table was full.
func (t *Table) Overflows() uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.overflows
}

// insertLocked adds p unless the table is full of live processes.
func (t *Table) insertLocked(p *Process) {
	if _, ok := t.procs[p.Key]; !ok && len(t.procs) >= t.opts.MaxProcesses {
		t.expireLocked(true)
		if len(t.procs) >= t.opts.MaxProcesses {
			t.overflows++
			return
		}
	}
	t.procs[p.Key] = p
}

// chainLocked returns the ancestor chain of a child of parent.
func (t *Table) chainLocked(parent *Process) []Ancestor {
	n := min(len(parent.Ancestors)+1, t.opts.MaxAncestors)
	chain := make([]Ancestor, 0, n)
	chain = append(chain, parent.asAncestor())
	return append(chain, parent.Ancestors[:n-1]...)
}

// fork records a new process; it runs its parent's program.
func (t *Table) fork(p Process) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if parent, ok := t.procs[p.Parent]; ok {
		p.Exe = parent.Exe
		p.Ancestors = t.chainLocked(parent)
	}
	t.insertLocked(&p)
}

// exec records that p now runs a new program, and freezes its ancestry.
func (t *Table) exec(p Process) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, known := t.procs[p.Key]
	if known && !old.FromProc {
		// The parent that forked the process, even if it has exited and the
		// process now belongs to a reaper.
		p.PPID, p.Parent = old.PPID, old.Parent
	}
	if parent, ok := t.procs[p.Parent]; ok {
		p.Ancestors = t.chainLocked(parent)
	} else if known {
		// The parent left the table: keep what the process learnt when it
		// was forked.
		p.Ancestors = old.Ancestors
	}
	t.insertLocked(&p)
}

// exit marks the process exited; it is dropped after the grace period.
func (t *Table) exit(k Key) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	p, ok := t.procs[k]
	if !ok {
		if len(t.tombstones) < t.opts.MaxProcesses {
			t.tombstones[k] = now
		}
		return
	}
	if p.Exited {
		return
	}
	q := *p
	q.Exited = true
	t.procs[k] = &q
	t.exited = append(t.exited, exitMark{key: k, at: now})
}

// update changes a known live process in place of a copy.
func (t *Table) update(k Key, f func(*Process)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.procs[k]
	if !ok {
		return
	}
	q := *p
	f(&q)
	t.procs[k] = &q
}

// seed adds processes read from /proc unless the tracer already reported
// them (its facts are newer) or saw them exit.
func (t *Table) seed(ps []Process) {
	t.mu.Lock()
	defer t.mu.Unlock()
	byPID := make(map[int32]*Process, len(ps))
	for i := range ps {
		byPID[ps[i].PID] = &ps[i]
	}
	// Parents first, so each chain can be copied from its parent's.
	var add func(p *Process, depth int)
	added := make(map[Key]bool, len(ps))
	add = func(p *Process, depth int) {
		if added[p.Key] {
			return
		}
		added[p.Key] = true
		if parent, ok := byPID[p.PPID]; ok && depth < t.opts.MaxAncestors {
			add(parent, depth+1)
			p.Parent = parent.Key
		}
		if _, ok := t.procs[p.Key]; ok {
			return
		}
		if _, dead := t.tombstones[p.Key]; dead {
			return
		}
		if parent, ok := t.procs[p.Parent]; ok {
			p.Ancestors = t.chainLocked(parent)
		}
		q := *p
		t.insertLocked(&q)
	}
	for i := range ps {
		add(&ps[i], 0)
	}
}

// expire drops exited processes whose grace period has passed.
func (t *Table) expire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(false)
}

// expireLocked drops expired entries, or with force the oldest exited ones
// until a tenth of the table is free.
func (t *Table) expireLocked(force bool) {
	now := t.now()
	i := 0
	for ; i < len(t.exited); i++ {
		m := t.exited[i]
		if now.Sub(m.at) < t.opts.Grace && !(force && len(t.procs) > t.opts.MaxProcesses*9/10) {
			break
		}
		if p, ok := t.procs[m.key]; ok && p.Exited {
			delete(t.procs, m.key)
		}
	}
	t.exited = append(t.exited[:0], t.exited[i:]...)
	for k, at := range t.tombstones {
		if now.Sub(at) >= t.opts.Grace || force {
			delete(t.tombstones, k)
		}
	}
}
