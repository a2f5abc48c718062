package compare

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cpuSplit gives the server under test CPUs of its own and the harness
// (which runs the simulated fleet) the rest, so that the fleet scenario
// compares the implementations at equal CPU: neither server can borrow
// cycles from the simulator, nor the simulator from the server, whatever
// either one needs. Both servers are Go programs, so each sizes its
// scheduler to the CPUs it is started on.
type cpuSplit struct {
	server, harness, all unix.CPUSet
	procs                int // the harness's GOMAXPROCS before the split
}

// splitCPUs reserves the last serverCPUs CPUs this process may run on for
// the server. It returns nil, and the scenario runs unpinned, when fewer
// than serverCPUs+1 CPUs are available.
func splitCPUs(serverCPUs int) (*cpuSplit, error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return nil, fmt.Errorf("compare: CPU affinity: %w", err)
	}
	cpus := cpusOf(&all)
	if len(cpus) <= serverCPUs {
		return nil, nil
	}
	s := &cpuSplit{all: all}
	for i, c := range cpus {
		if i >= len(cpus)-serverCPUs {
			s.server.Set(c)
		} else {
			s.harness.Set(c)
		}
	}
	return s, nil
}

// pinHarness moves every thread of this process onto the harness's CPUs;
// threads started later inherit it from the thread that starts them.
func (s *cpuSplit) pinHarness() error {
	if err := setProcessAffinity(&s.harness); err != nil {
		return err
	}
	s.procs = runtime.GOMAXPROCS(s.harness.Count())
	return nil
}

// restore lets the harness run on every CPU again.
func (s *cpuSplit) restore() error {
	if s.procs > 0 {
		runtime.GOMAXPROCS(s.procs)
	}
	return setProcessAffinity(&s.all)
}

// startServer runs start with the calling thread pinned to the server's
// CPUs, so that the process start forks (a child inherits the affinity of
// the thread that forks it), and then returns the thread to the harness.
func (s *cpuSplit) startServer(start func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.SchedSetaffinity(0, &s.server); err != nil {
		return fmt.Errorf("compare: pin server: %w", err)
	}
	err := start()
	if rerr := unix.SchedSetaffinity(0, &s.harness); rerr != nil && err == nil {
		err = fmt.Errorf("compare: unpin: %w", rerr)
	}
	return err
}

// setProcessAffinity sets the affinity of every thread of this process.
// A thread the runtime starts while the threads are being walked may copy
// the old affinity, so the walk repeats until it finds every thread set.
func setProcessAffinity(set *unix.CPUSet) error {
	for range 10 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("compare: %w", err)
		}
		changed := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			var cur unix.CPUSet
			// A thread may have exited since the directory was read.
			if err := unix.SchedGetaffinity(tid, &cur); err == unix.ESRCH {
				continue
			} else if err != nil {
				return fmt.Errorf("compare: affinity of thread %d: %w", tid, err)
			}
			if cur == *set {
				continue
			}
			changed = true
			if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("compare: affinity of thread %d: %w", tid, err)
			}
		}
		if !changed {
			return nil
		}
	}
	return fmt.Errorf("compare: threads kept starting while being pinned")
}

// cpusOf lists the CPUs of set.
func cpusOf(set *unix.CPUSet) []int {
	var cpus []int
	for c := range len(set) * 64 {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// cpuList names the CPUs of set, for the report.
func cpuList(set *unix.CPUSet) string {
	var b strings.Builder
	for i, c := range cpusOf(set) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(c))
	}
	return b.String()
}
