#!/usr/bin/env bash
# The main job, end to end on this machine: a server (SQLite, join token) and
# an agent on loopback, an entry for the current user, and a workload (the
# agent CLI, a go-spiffe client) fetching its X.509-SVID.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
work=$(mktemp -d /tmp/spire-demo.XXXXXX)
port=${DEMO_PORT:-18081}
server_sock="$work/server/api.sock"
agent_sock="$work/agent/api.sock"
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

mkdir -p "$work/server" "$work/agent"
write_server_conf '    NodeAttestor "join_token" {
        plugin_data {}
    }'

start_server "SQLite, disk key manager"

step "Generating a join token for the agent"
token=$("$BIN/spire-server" token generate -socketPath "$server_sock" -spiffeID spiffe://example.org/demo-node | sed -n 's/^Token: //p')
echo "Token: $token"

step "Registering spiffe://example.org/demo-workload for unix:uid:$(id -u)"
"$BIN/spire-server" entry create -socketPath "$server_sock" \
	-parentID spiffe://example.org/demo-node \
	-spiffeID spiffe://example.org/demo-workload \
	-selector "unix:uid:$(id -u)"

"$BIN/spire-server" bundle show -socketPath "$server_sock" >"$work/bootstrap.crt"

write_agent_conf '    NodeAttestor "join_token" {
        plugin_data {}
    }'

step "Starting spire-agent (join token attestation)"
"$BIN/spire-agent" run -config "$work/agent.conf" -joinToken "$token" >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent" "$BIN/spire-agent" healthcheck -socketPath "$agent_sock" || { cat "$work/agent.log"; exit 1; }

fetch_and_show

step "Stopping the agent and the server"
