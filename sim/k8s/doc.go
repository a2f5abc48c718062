// Package k8s is a small Kubernetes API server for tests and demos of
// k8s_psat node attestation. It serves, over HTTPS on loopback, the three
// calls the server attestor makes: TokenReview (really verifying
// service-account JWTs signed by the cluster's key, with audiences and
// bound pod objects as kube-apiserver does), and GET of pods and nodes,
// behind bearer-token authentication. It also mints projected
// service-account tokens, as the kubelet would, for the agent side.
//
// Use Start in tests; sim/cmd/attest-sim runs one from the command line
// (through sim/attestsim) and prints the agent and server configuration
// that points at it.
package k8s
