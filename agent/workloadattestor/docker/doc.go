// Package docker is SPIRE's "docker" workload attestor: it finds the
// container a Workload API caller runs in from the caller's cgroups and
// turns the Docker Engine's view of that container into docker:label:<k>:<v>,
// docker:env:<k>=<v> and docker:image_id:<image> selectors.
//
// The cgroups are read through the caller's /proc directory and confirmed
// with its pidfd (containerinfo.ReadProc), so a caller that exited and whose
// PID was taken by a process of another container is refused, never attested
// as that container. Inspect results are cached per container ID until the
// engine reports that the container died or was destroyed; while the
// attestor is not subscribed to the engine's events nothing is cached, so a
// stopped container's entry cannot answer a later call. Every call to the
// engine is bounded in time.
//
// A caller that is not in a container gets no docker selectors and no error,
// as in SPIRE, so the attestor runs alongside unix and lineage on any host.
package docker
