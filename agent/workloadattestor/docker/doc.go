// Package docker is SPIRE's "docker" workload attestor: it finds the
// container a Workload API caller runs in from the caller's cgroups and
// turns the Docker Engine's view of that container into docker:label:<k>:<v>,
// docker:env:<k>=<v> and docker:image_id:<image> selectors.
//
// The cgroups are read through the caller's /proc directory and confirmed
// with its pidfd (containerinfo.ReadProc), so a caller that exited and
// whose PID was taken by a process of another container is refused, never
// attested as that container. Where the kernel reports a process's cgroup
// v2 ID through its pidfd (PIDFD_GET_INFO, Linux 6.13), a caller in a
// cgroup already seen to be a container's is located from that ID alone,
// without reading /proc; on hosts with cgroup v1 hierarchies beside v2 that
// skips the check that they agree, which only root could make them not do.
//
// Inspect results are cached per container ID until the engine reports
// that the container died or was destroyed; while the attestor is not
// subscribed to the engine's events nothing is cached, so a stopped
// container's entry cannot answer a later call. Every inspect (SPIRE's
// retries included) is bounded in time, so an engine that hangs fails the
// call with a clear error rather than holding it.
//
// A caller that is not in a container gets no docker selectors and no error,
// as in SPIRE, so the attestor runs alongside unix and lineage on any host.
package docker
