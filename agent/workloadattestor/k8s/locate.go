package k8s

import (
	"sync"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
)

// maxLocated bounds the memo: far more distinct cgroup sets than a node
// runs containers; when full it starts over rather than track use.
const maxLocated = 4096

// locateMemo remembers Proc.Locate's answers. Locate is a pure function of
// the cgroup paths and mount roots, so an answer keyed by all of them is
// exactly what Locate would say again; what changes between calls (the
// process, its liveness) is read and checked fresh every time. It saves the
// pattern matching, most of a cached attestation's CPU time.
type locateMemo struct {
	mu sync.Mutex
	m  map[string]containerinfo.Info
}

func (l *locateMemo) locate(p containerinfo.Proc) (containerinfo.Info, error) {
	n := 1
	for _, c := range p.Cgroups {
		n += len(c.Path) + 1
	}
	for _, r := range p.MountRoots {
		n += len(r) + 1
	}
	key := make([]byte, 0, n)
	for _, c := range p.Cgroups {
		key = append(append(key, c.Path...), '\n')
	}
	// Neither separator occurs in a path: the cgroup file is split at
	// newlines (the kernel refuses them in cgroup names) and mountinfo
	// escapes them.
	key = append(key, 0)
	for _, r := range p.MountRoots {
		key = append(append(key, r...), '\n')
	}
	l.mu.Lock()
	info, ok := l.m[string(key)] // no copy for a lookup
	l.mu.Unlock()
	if ok {
		return info, nil
	}
	info, err := p.Locate(true)
	if err != nil {
		// Errors are not kept: they are rare, and logged each time.
		return containerinfo.Info{}, err
	}
	l.mu.Lock()
	if l.m == nil || len(l.m) >= maxLocated {
		l.m = make(map[string]containerinfo.Info)
	}
	l.m[string(key)] = info
	l.mu.Unlock()
	return info, nil
}
