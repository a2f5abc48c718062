package lineage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// Options configure a Tracer.
type Options struct {
	Table TableOptions
	// WakeupBytes is how many bytes must wait in the ring buffer before the
	// kernel wakes the reader (default 256 KiB). Below that the reader
	// drains the ring every PollInterval, or at once when Sync asks.
	WakeupBytes uint64
	// PollInterval bounds how long an event waits unread (default 50ms).
	PollInterval time.Duration
	Log          *slog.Logger
}

// Tracer runs the BPF programs and keeps the table current.
type Tracer struct {
	table *Table
	log   *slog.Logger
	poll  time.Duration

	objs  bpfObjects
	links []link.Link
	rd    *ringbuf.Reader

	events  atomic.Uint64
	badRecs atomic.Uint64
	// consumed counts every record taken from the ring, once applied (or
	// found bad): compared with the kernel's emitted count, it tells
	// whether the table is current.
	consumed atomic.Uint64

	syncMu  sync.Mutex
	waiters []chan struct{}

	done chan struct{}
}

// Start loads and attaches the BPF programs, starts reading their events and
// then adds the processes that already run, read from /proc. It fails with an
// error saying why when the kernel or the privileges do not allow eBPF.
func Start(opts Options) (*Tracer, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.WakeupBytes == 0 {
		opts.WakeupBytes = 256 << 10
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 50 * time.Millisecond
	}
	if err := Supported(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("lineage: raise memlock limit: %w", err)
	}
	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("lineage: %w", err)
	}
	if err := spec.Variables["wakeup_bytes"].Set(opts.WakeupBytes); err != nil {
		return nil, fmt.Errorf("lineage: set wakeup_bytes: %w", err)
	}
	t := &Tracer{
		table: NewTable(opts.Table),
		log:   opts.Log,
		poll:  opts.PollInterval,
		done:  make(chan struct{}),
	}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			opts.Log.Debug("lineage: verifier log", "log", fmt.Sprintf("%+v", ve))
		}
		return nil, fmt.Errorf("lineage: load BPF programs: %w", err)
	}
	fail := func(err error) (*Tracer, error) {
		t.closeObjects()
		return nil, err
	}
	if t.rd, err = ringbuf.NewReader(t.objs.Events); err != nil {
		return fail(fmt.Errorf("lineage: open ring buffer: %w", err))
	}
	// Attach before reading /proc, so that no process falls between the two.
	for _, p := range []*ebpf.Program{t.objs.OnFork, t.objs.OnExec, t.objs.OnExit, t.objs.OnCgroup} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fail(fmt.Errorf("lineage: attach %s: %w", p, err))
		}
		t.links = append(t.links, l)
	}
	go t.readLoop()
	procs, err := snapshotProc()
	if err != nil {
		t.Close()
		return nil, err
	}
	t.table.seed(procs)
	t.log.Info("lineage: tracer started", "processes", t.table.Len())
	return t, nil
}

// Supported says why eBPF lineage cannot run here, or nil.
func Supported() error {
	if os.Geteuid() != 0 {
		return errors.New("lineage: eBPF needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("lineage: kernel has no BTF (CONFIG_DEBUG_INFO_BTF): %w", err)
	}
	return nil
}

// Table returns the live table.
func (t *Tracer) Table() *Table { return t.table }

// Drops returns how many events the kernel could not put in the ring buffer
// because it was full. Any drop means the table may miss processes.
func (t *Tracer) Drops() uint64 {
	var n uint64
	if err := t.objs.Dropped.Get(&n); err != nil {
		return 0
	}
	return n
}

// Events returns how many events have been applied to the table.
func (t *Tracer) Events() uint64 { return t.events.Load() }

// Lookup returns the process with key k as of now. The kernel does not wake
// the reader for each event, so while records it committed before the call
// wait unapplied (the caller's own exec among them, perhaps), Lookup drains
// the ring first: otherwise a process that executed a new program a moment
// ago would be described by the program it ran before. Both counters are
// read without a system call, so a current table costs nothing extra.
func (t *Tracer) Lookup(ctx context.Context, k Key) (Process, bool, error) {
	var emitted uint64
	if err := t.objs.Emitted.Get(&emitted); err != nil {
		return Process{}, false, fmt.Errorf("lineage: read emitted count: %w", err)
	}
	// A Sync can be answered by a drain that began before it was asked, so
	// repeat until the records counted above are applied.
	for t.consumed.Load() < emitted {
		if err := t.Sync(ctx); err != nil {
			return Process{}, false, err
		}
	}
	p, ok := t.table.Lookup(k)
	return p, ok, nil
}

// Sync returns once every event emitted before the call has been applied to
// the table. A lookup that misses calls it before concluding that a process
// is unknown, because the kernel does not wake the reader for each event.
func (t *Tracer) Sync(ctx context.Context) error {
	ch := make(chan struct{})
	t.syncMu.Lock()
	t.waiters = append(t.waiters, ch)
	err := t.rd.Flush()
	t.syncMu.Unlock()
	if err != nil {
		return fmt.Errorf("lineage: flush ring buffer: %w", err)
	}
	select {
	case <-ch:
		return nil
	case <-t.done:
		return errors.New("lineage: tracer closed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close detaches the programs and stops the reader.
func (t *Tracer) Close() error {
	for _, l := range t.links {
		l.Close()
	}
	t.links = nil
	err := t.rd.Close()
	<-t.done
	t.closeObjects()
	return err
}

func (t *Tracer) closeObjects() {
	if t.rd != nil {
		t.rd.Close()
	}
	t.objs.Close()
}

func (t *Tracer) readLoop() {
	defer close(t.done)
	defer t.releaseWaiters()
	var rec ringbuf.Record
	lastExpire := time.Now()
	for {
		t.rd.SetDeadline(time.Now().Add(t.poll))
		err := t.rd.ReadInto(&rec)
		switch {
		case err == nil:
			t.apply(rec.RawSample)
			t.consumed.Add(1)
		case errors.Is(err, ringbuf.ErrFlushed):
			t.releaseWaiters()
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, ringbuf.ErrClosed), errors.Is(err, os.ErrClosed):
			return
		default:
			t.log.Error("lineage: read ring buffer", "err", err)
			return
		}
		if now := time.Now(); now.Sub(lastExpire) >= time.Second {
			t.table.expire()
			lastExpire = now
		}
	}
}

func (t *Tracer) releaseWaiters() {
	t.syncMu.Lock()
	ws := t.waiters
	t.waiters = nil
	t.syncMu.Unlock()
	for _, w := range ws {
		close(w)
	}
}

// apply updates the table with one record.
func (t *Tracer) apply(b []byte) {
	ev, err := decodeEvent(b)
	if err != nil {
		if t.badRecs.Add(1) == 1 {
			t.log.Error("lineage: bad ring-buffer record", "err", err)
		}
		return
	}
	t.events.Add(1)
	p := ev.proc
	switch ev.typ {
	case eventFork:
		t.table.fork(p)
	case eventExec:
		t.table.exec(p)
	case eventExit:
		t.table.exit(p.Key)
	case eventCgroup:
		t.table.update(p.Key, func(q *Process) { q.CgroupID = p.CgroupID })
	}
}
