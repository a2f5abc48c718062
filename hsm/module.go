package hsm

import (
	"sync"
	"time"
)

// A process shares one initialised instance of each PKCS#11 module among
// all its crypto11 contexts, and SoftHSM (like some HSM libraries) only
// sees a token that came back after the module is finalised and
// initialised again, which happens only when the last context closes. So
// a recovering Token may have to close the contexts of the other Tokens on
// its module too; they recover at once, having lost nothing but their
// sessions.

// minResetInterval keeps one missing token from making its neighbours on
// the module re-login more than this often.
const minResetInterval = 2 * time.Second

type moduleGroup struct {
	tokens    map[*Token]struct{}
	lastReset time.Time
}

var modules = struct {
	sync.Mutex
	byPath map[string]*moduleGroup
	// reopen serialises the recoveries of the Tokens on one module (by
	// path; entries are never removed, one per module the process ever
	// loaded). SoftHSM rebuilds its slot list in C_GetSlotList, which a
	// reopening Token calls, and a concurrent C_OpenSession by another
	// Token's recovery then reads freed slot state and crashes the
	// process; after a module reset every Token on it recovers at once.
	reopen map[string]*sync.Mutex
}{byPath: make(map[string]*moduleGroup), reopen: make(map[string]*sync.Mutex)}

// lockReopen takes the module's reopen lock and returns its release.
func (t *Token) lockReopen() func() {
	modules.Lock()
	mu := modules.reopen[t.cfg.ModulePath]
	if mu == nil {
		mu = new(sync.Mutex)
		modules.reopen[t.cfg.ModulePath] = mu
	}
	modules.Unlock()
	mu.Lock()
	return mu.Unlock
}

func (t *Token) register() {
	modules.Lock()
	defer modules.Unlock()
	g := modules.byPath[t.cfg.ModulePath]
	if g == nil {
		g = &moduleGroup{tokens: make(map[*Token]struct{})}
		modules.byPath[t.cfg.ModulePath] = g
	}
	g.tokens[t] = struct{}{}
}

func (t *Token) unregister() {
	modules.Lock()
	defer modules.Unlock()
	if g := modules.byPath[t.cfg.ModulePath]; g != nil {
		delete(g.tokens, t)
		if len(g.tokens) == 0 {
			delete(modules.byPath, t.cfg.ModulePath)
		}
	}
}

// resetModule suspends every other Token on t's module, so that the
// module is finalised, and reports whether it did.
func (t *Token) resetModule() bool {
	modules.Lock()
	g := modules.byPath[t.cfg.ModulePath]
	if g == nil || time.Since(g.lastReset) < minResetInterval {
		modules.Unlock()
		return false
	}
	g.lastReset = time.Now()
	var others []*Token
	for o := range g.tokens {
		if o != t {
			others = append(others, o)
		}
	}
	modules.Unlock()
	if len(others) == 0 {
		return false
	}
	t.log.Warn("hsm: closing every context on the module so it re-initialises", "module_path", t.cfg.ModulePath, "other_tokens", len(others))
	for _, o := range others {
		o.suspend()
	}
	return true
}

// suspend closes t's context and lets its recovery open a new one.
func (t *Token) suspend() {
	t.mu.Lock()
	if t.closed || t.ctx == nil {
		t.mu.Unlock()
		return
	}
	old := t.ctx
	t.ctx, t.keys = nil, nil
	t.lastErr = errModuleReset
	t.gen++
	t.mu.Unlock()
	_ = old.Close()
	t.mu.Lock()
	if !t.closed {
		t.startRecoveryLocked(nil)
	}
	t.mu.Unlock()
}
