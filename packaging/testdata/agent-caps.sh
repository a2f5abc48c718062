#!/usr/bin/env bash
# agent-caps.sh BIN CAPS: runs a server and an agent with the lineage
# workload attestor, the agent under a capability bounding set of only
# CAPS (setpriv syntax: +bpf,+perfmon,...), as the packaged unit runs it,
# and prints the SPIFFE ID a root workload receives.
set -euo pipefail
BIN=$1
caps=$2
cd "$(dirname "$0")/../.."
work=$(mktemp -d /tmp/agent-caps.XXXXXX)
port=${PORT:-18391}
server_sock="$work/server/api.sock"
agent_sock="$work/agent/api.sock"
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
mkdir -p "$work/server" "$work/agent"
write_server_conf '    NodeAttestor "join_token" {
        plugin_data {}
    }'
start_server "for the capability check" >/dev/null
token=$("$BIN/spire-server" token generate -socketPath "$server_sock" -spiffeID spiffe://example.org/node | sed -n 's/^Token: //p')
"$BIN/spire-server" entry create -socketPath "$server_sock" -parentID spiffe://example.org/node \
	-spiffeID spiffe://example.org/root-workload -selector "unix:uid:0" >/dev/null
"$BIN/spire-server" bundle show -socketPath "$server_sock" >"$work/bootstrap.crt"
write_agent_conf '    NodeAttestor "join_token" {
        plugin_data {}
    }'
sed -i 's/WorkloadAttestor "unix"/WorkloadAttestor "lineage"/' "$work/agent.conf"
setpriv --bounding-set="-all,$caps" --inh-caps=-all -- \
	"$BIN/spire-agent" run -config "$work/agent.conf" -joinToken "$token" >"$work/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
	if "$BIN/spire-agent" api fetch x509 -socketPath "$agent_sock" >"$work/fetch" 2>&1; then
		grep -q "lineage: tracer started" "$work/agent.log" || { echo "lineage tracer did not start:"; cat "$work/agent.log"; exit 1; }
		sed -n 's/^SPIFFE ID:[[:space:]]*//p' "$work/fetch"
		exit 0
	fi
	sleep 0.2
done
echo "no SVID:"; cat "$work/fetch" "$work/agent.log"
exit 1
