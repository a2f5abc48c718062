#!/usr/bin/env bash
# Node attestation "on" a simulated cloud VM, Kubernetes pod or certified
# host, end to end on this machine: attest-sim starts the local metadata
# service for PROVIDER (or makes the node's certificate) and prints the
# server and agent configuration; a server (SQLite) verifies what the agent
# collects, names it as SPIRE would, and an entry for the current user under
# that agent ID gives a workload (the agent CLI) its X.509-SVID.
#
#   scripts/demo-attest.sh aws|azure|gcp|k8s|x509pop|sshpop
set -euo pipefail
cd "$(dirname "$0")/.."
provider=${1:-}
case "$provider" in
aws | azure | gcp | k8s | x509pop | sshpop) ;;
*)
	echo "usage: $0 aws|azure|gcp|k8s|x509pop|sshpop" >&2
	exit 2
	;;
esac
BIN=${BIN:-$PWD/bin}
work=$(mktemp -d /tmp/spire-demo-attest.XXXXXX)
port=${DEMO_PORT:-18083}
server_sock="$work/server/api.sock"
agent_sock="$work/agent/api.sock"
WAIT_TRIES=150
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

mkdir -p "$work/server" "$work/agent"

step "Starting the $provider simulator (attest-sim $provider)"
go build -o "$work/attest-sim" ./sim/cmd/attest-sim
"$work/attest-sim" -dir "$work/sim" "$provider" >"$work/sim.out" 2>&1 &
pids+=($!)
wait_for "the simulator" test -e "$work/sim/ready" || { cat "$work/sim.out"; exit 1; }
cat "$work/sim.out"
agent_id=$(cat "$work/sim/$provider/agent_id")

write_server_conf "$(cat "$work/sim/$provider/server.hcl")"

start_server "SQLite, the NodeAttestor above"
"$BIN/spire-server" bundle show -socketPath "$server_sock" >"$work/bootstrap.crt"

step "Registering spiffe://example.org/demo-$provider-workload for unix:uid:$(id -u) under $agent_id"
"$BIN/spire-server" entry create -socketPath "$server_sock" \
	-parentID "$agent_id" \
	-spiffeID "spiffe://example.org/demo-$provider-workload" \
	-selector "unix:uid:$(id -u)"

write_agent_conf "$(cat "$work/sim/$provider/agent.hcl")"

step "Starting spire-agent (attesting with the $provider collector)"
"$BIN/spire-agent" run -config "$work/agent.conf" >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent" "$BIN/spire-agent" healthcheck -socketPath "$agent_sock" || { cat "$work/agent.log"; exit 1; }

step "The server attested the agent as $agent_id"
"$BIN/spire-server" agent show -socketPath "$server_sock" -spiffeID "$agent_id" || {
	echo "--- agents"; "$BIN/spire-server" agent list -socketPath "$server_sock"
	echo "--- server log"; cat "$work/server.log"; exit 1
}

fetch_and_show

step "Stopping the agent, the server and the simulator"
