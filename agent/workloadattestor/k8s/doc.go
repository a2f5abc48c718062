// Package k8s is SPIRE's "k8s" workload attestor: it finds the pod UID and
// container ID of a calling process in its cgroups (read through a
// /proc/<pid> handle confirmed by the caller's pidfd, with containerinfo's
// locator or SPIRE's legacy patterns), looks the pod up in the kubelet's
// /pods list (HTTPS with the kubelet CA and a bearer token or client
// certificate, or the plain-HTTP read-only port), and emits SPIRE's
// selectors: k8s:sa, k8s:ns, k8s:node-name, k8s:pod-uid, k8s:pod-name,
// k8s:pod-image-count, k8s:pod-init-image-count, k8s:pod-image,
// k8s:pod-init-image, k8s:pod-label:<k>:<v>, k8s:pod-owner:<kind>:<name>,
// k8s:pod-owner-uid:<kind>:<uid>, and for the caller's own container
// k8s:container-name and k8s:container-image.
//
// A pod the kubelet does not list yet is polled for, max_poll_attempts
// times poll_retry_interval apart, as SPIRE does. The pod list is cached
// for half that interval and turned into selector values once per fetch,
// so a cached attestation is a cgroup read and a map lookup; a container
// missing from a cached list makes the attestor fetch again at once. Once a
// cgroup v2 directory is known to be a pod container's, a caller in it is
// located from the cgroup ID its pidfd reports (Linux 6.13), without
// reading /proc. A process in no pod gets no selectors.
package k8s
