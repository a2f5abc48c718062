// Package kubelet is a kubelet for tests of the k8s workload attestor: it
// serves GET /pods, the real v1 PodList JSON shape (metadata with labels
// and owner references; spec with containers, init containers, service
// account and node name; status with container and init container
// statuses carrying "docker://<id>" container IDs, image and imageID),
// over TLS with its own CA and bearer-token (or client certificate)
// authentication, and optionally on a plain-HTTP read-only port, as a
// kubelet does on 10250 and 10255.
//
// Pods are added and removed by the test while it runs. RunContainer starts
// a pod's container on the test's private dockerd (sim/dockerd) under a
// kubepods-style cgroup parent, /kubepods/besteffort/pod<uid>, the cgroupfs
// driver's layout, so the attestor reads the cgroup paths a real kernel
// gives a pod's container.
package kubelet
