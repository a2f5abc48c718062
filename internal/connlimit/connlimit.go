// Package connlimit caps the connections a listener holds, in total and
// per key (a caller's uid, a source address), so that one peer opening
// connections it never uses cannot exhaust the daemon's descriptors and
// starve everyone else. Connections over a cap are closed at accept, and
// the refusal is logged (at most once per key per interval, so a flood
// does not become a log flood).
package connlimit

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Slots counts holders per key against a total cap and a per-key cap. A
// zero cap means no cap. It is safe for concurrent use.
type Slots struct {
	total, perKey int

	mu    sync.Mutex
	n     int
	byKey map[string]int
}

// NewSlots returns counters with the given caps (0: unlimited).
func NewSlots(total, perKey int) *Slots {
	return &Slots{total: total, perKey: perKey, byKey: make(map[string]int)}
}

// Reason says which cap refused an Acquire.
type Reason string

// The caps Acquire can report.
const (
	ReasonTotal  Reason = "total connection limit reached"
	ReasonPerKey Reason = "per-peer connection limit reached"
	// ReasonUnidentified is a Listener's refusal of a connection whose
	// key (Config.Key) could not be read.
	ReasonUnidentified Reason = "peer could not be identified"
)

// Acquire takes a slot for key. It returns a release function, to be
// called once when the holder is done (further calls do nothing), or the
// cap that refused it.
func (s *Slots) Acquire(key string) (release func(), refused Reason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total > 0 && s.n >= s.total {
		return nil, ReasonTotal
	}
	if s.perKey > 0 && s.byKey[key] >= s.perKey {
		return nil, ReasonPerKey
	}
	s.n++
	s.byKey[key]++
	var once sync.Once
	return func() { once.Do(func() { s.release(key) }) }, ""
}

func (s *Slots) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n--
	if s.byKey[key]--; s.byKey[key] <= 0 {
		delete(s.byKey, key)
	}
}

// Count returns the slots held in total and by key.
func (s *Slots) Count(key string) (total, byKey int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.byKey[key]
}

// Config describes a limited listener.
type Config struct {
	// Name names the listener in log lines ("Workload API").
	Name string
	// Total and PerKey are the caps (0: none).
	Total, PerKey int
	// Key returns the key a connection counts against (the peer's uid, its
	// source IP). An error closes the connection. Nil puts every
	// connection under one key.
	Key func(net.Conn) (string, error)
	// KeyName names the key in log lines ("uid", "source").
	KeyName string
	// LogInterval is the least time between two refusal lines for one key
	// (default 10 s); the next line says how many were refused meanwhile.
	LogInterval time.Duration
	Log         *slog.Logger
}

// unidentified is the RefusalLog key of connections whose key could not be
// read; it cannot collide with a real key, which Key returns without NUL.
const unidentified = "\x00unidentified"

// Listener is a net.Listener whose Accept only returns connections within
// the caps; closing a returned connection frees its slot.
type Listener struct {
	net.Listener
	cfg   Config
	slots *Slots
	log   *refusalLog

	accepted                                    atomic.Uint64
	refusedTotal, refusedPerKey, refusedUnident atomic.Uint64
}

// Stats are a Listener's counters since it was made.
type Stats struct {
	// Open is the connections accepted and not yet closed.
	Open int
	// Accepted counts the connections handed out by Accept.
	Accepted uint64
	// Refused counts the connections closed at accept, by reason.
	Refused map[Reason]uint64
}

// Stats returns the listener's counters (for metrics).
func (l *Listener) Stats() Stats {
	open, _ := l.slots.Count("")
	return Stats{
		Open:     open,
		Accepted: l.accepted.Load(),
		Refused: map[Reason]uint64{
			ReasonTotal:        l.refusedTotal.Load(),
			ReasonPerKey:       l.refusedPerKey.Load(),
			ReasonUnidentified: l.refusedUnident.Load(),
		},
	}
}

// Wrap limits l.
func Wrap(l net.Listener, cfg Config) *Listener {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.KeyName == "" {
		cfg.KeyName = "peer"
	}
	return &Listener{
		Listener: l,
		cfg:      cfg,
		slots:    NewSlots(cfg.Total, cfg.PerKey),
		log:      NewRefusalLog(cfg.Log, cfg.LogInterval),
	}
}

// Slots exposes the listener's counters (for metrics and tests).
func (l *Listener) Slots() *Slots { return l.slots }

// Accept returns the next connection within the caps; connections over a
// cap are closed and logged, and Accept goes on waiting.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := ""
		if l.cfg.Key != nil {
			if key, err = l.cfg.Key(c); err != nil {
				c.Close()
				l.refusedUnident.Add(1)
				// Rate-limited like any refusal: whatever makes a peer
				// unidentifiable may repeat on every connection.
				l.log.Refused(unidentified, "Refused connection: cannot identify the peer", "listener", l.cfg.Name, "error", err)
				continue
			}
		}
		release, refused := l.slots.Acquire(key)
		if refused != "" {
			c.Close()
			if refused == ReasonTotal {
				l.refusedTotal.Add(1)
			} else {
				l.refusedPerKey.Add(1)
			}
			l.log.Refused(key, "Refused connection", "listener", l.cfg.Name, "reason", string(refused), l.cfg.KeyName, key,
				"total_limit", l.cfg.Total, "per_peer_limit", l.cfg.PerKey)
			continue
		}
		l.accepted.Add(1)
		return &Conn{Conn: c, release: release}, nil
	}
}

// Conn is an accepted connection holding a slot until it is closed.
type Conn struct {
	net.Conn
	release func()
}

// Close closes the connection and frees its slot.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// Unwrap returns the underlying connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// SyscallConn passes through to the underlying connection, so that peer
// credentials (SO_PEERCRED, SO_PEERPIDFD) can still be read from it.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("connlimit: connection has no file descriptor")
	}
	return sc.SyscallConn()
}

// RefusalLog writes refusal lines at WARN, at most once per key per
// interval; the next line for a key carries how many were suppressed.
type RefusalLog struct {
	log      *slog.Logger
	interval time.Duration

	mu        sync.Mutex
	keys      map[string]*refusals
	lastSweep time.Time
}

// maxRefusalKeys bounds the records a RefusalLog keeps.
const maxRefusalKeys = 4096

type refusalLog = RefusalLog

type refusals struct {
	last       time.Time
	suppressed int
}

// NewRefusalLog returns a RefusalLog (interval 0: 10 s).
func NewRefusalLog(log *slog.Logger, interval time.Duration) *RefusalLog {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &RefusalLog{log: log, interval: interval, keys: make(map[string]*refusals)}
}

// Refused logs msg with args for key, unless a line for key was written
// less than the interval ago.
func (r *RefusalLog) Refused(key, msg string, args ...any) {
	now := time.Now()
	r.mu.Lock()
	st := r.keys[key]
	if st == nil {
		// The map holds one small record per key seen within an interval;
		// forget stale ones so that many keys cannot grow it forever. The
		// sweep runs at most once per interval: a flood of new keys must
		// not make every refusal walk the whole map under the lock.
		if len(r.keys) >= maxRefusalKeys && now.Sub(r.lastSweep) >= r.interval {
			r.lastSweep = now
			for k, v := range r.keys {
				if now.Sub(v.last) >= r.interval {
					delete(r.keys, k)
				}
			}
		}
		if len(r.keys) >= maxRefusalKeys {
			// Still full: every further key shares one record, and its
			// line says it stands for many.
			key = "*"
			args = append(args, "shared_with_other_sources", true)
			if st = r.keys[key]; st != nil && now.Sub(st.last) < r.interval {
				st.suppressed++
				r.mu.Unlock()
				return
			}
		}
		if st == nil {
			st = &refusals{}
			r.keys[key] = st
		}
	} else if now.Sub(st.last) < r.interval {
		st.suppressed++
		r.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.last, st.suppressed = now, 0
	r.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed_since_last_line", suppressed)
	}
	r.log.Warn(msg, args...)
}

// OpenFiles returns the process's soft RLIMIT_NOFILE, which the Go runtime
// raises to the hard limit at start: the budget both daemons derive their
// default connection caps from. An unreadable or unlimited limit counts as
// 2^20, the kernel's default nr_open ceiling.
func OpenFiles() int64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		return 1 << 20
	}
	return int64(r.Cur)
}
