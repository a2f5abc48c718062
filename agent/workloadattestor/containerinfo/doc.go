// Package containerinfo tells which container (and Kubernetes pod) a process
// runs in, from its cgroups: the parsing and locating that the docker and
// k8s workload attestors share.
//
// ParseCgroups reads /proc/<pid>/cgroup (cgroup v1, v2 and hybrid hosts);
// Extract applies SPIRE's "new container locator" rules to cgroup paths or
// cgroup mount roots; ReadProc reads a live caller's files through a
// /proc/<pid> directory handle confirmed with the caller's pidfd, so that a
// caller that exited, and whose PID another process took, is refused rather
// than described as its successor. Proc.Locate puts these together.
//
// CgroupIndex is the attestors' fast path past all of that: the kernel
// reports a caller's cgroup v2 ID through its pidfd (PIDFD_GET_INFO, Linux
// 6.13, for the pidfd's own process only), and once the directory with that
// ID has been seen to be a container's, later callers in it are located by
// the ID alone.
//
// Locate trusts the cgroup file first and mountinfo only when the cgroup
// paths name no container, as SPIRE does since it learned that a workload
// can bind-mount another container's cgroup into its own mount namespace
// (mountinfo is the workload's to shape; /proc/<pid>/cgroup is the
// kernel's).
package containerinfo
