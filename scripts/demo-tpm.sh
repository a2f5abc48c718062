#!/usr/bin/env bash
# TPM node attestation, end to end on this machine: a software TPM (swtpm)
# with an EK certificate from a local manufacturer CA, a server (SQLite) that
# trusts that CA, and an agent on loopback that proves its node with the TPM
# (EK certificate, credential activation, a quote over the server's nonce).
# The agent is named by its EK; an entry for the current user under that ID
# gives a workload (the agent CLI, a go-spiffe client) its X.509-SVID.
# Needs the Debian packages swtpm and swtpm-tools (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
work=$(mktemp -d /tmp/spire-demo-tpm.XXXXXX)
port=${DEMO_PORT:-18082}
server_sock="$work/server/api.sock"
agent_sock="$work/agent/api.sock"
WAIT_TRIES=150
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

for b in swtpm swtpm_setup swtpm_localca; do
	command -v "$b" >/dev/null || { echo "$b not installed: apt-get install swtpm swtpm-tools (or make deps)" >&2; exit 1; }
done
mkdir -p "$work/server" "$work/agent"

step "Manufacturing a software TPM (swtpm) with RSA and ECC EK certificates"
go build -o "$work/swtpm-sim" ./sim/swtpm/cmd/swtpm-sim
"$work/swtpm-sim" -n 1 -dir "$work/swtpm" >"$work/swtpm.out" 2>&1 &
pids+=($!)
wait_for "the software TPM" grep -q '^tpm_path' "$work/swtpm.out" || { cat "$work/swtpm.out"; exit 1; }
cat "$work/swtpm.out"
ek_ca=$(sed -n 's/^ek_ca_path = "\(.*\)"$/\1/p' "$work/swtpm.out")
tpm_path=$(sed -n 's/^tpm_path = "\([^"]*\)".*/\1/p' "$work/swtpm.out" | head -n 1)

write_server_conf "    NodeAttestor \"tpm\" {
        plugin_data {
            ek_ca_path = \"$ek_ca\"
            pcrs = [0, 1, 2, 3, 4, 5, 6, 7]
        }
    }"

start_server "SQLite, TPM attestation trusting the swtpm CA"
"$BIN/spire-server" bundle show -socketPath "$server_sock" >"$work/bootstrap.crt"

write_agent_conf "    NodeAttestor \"tpm\" {
        plugin_data {
            tpm_path = \"$tpm_path\"
        }
    }"

step "Starting spire-agent (TPM attestation on $tpm_path)"
"$BIN/spire-agent" run -config "$work/agent.conf" >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent" "$BIN/spire-agent" healthcheck -socketPath "$agent_sock" || { cat "$work/agent.log"; exit 1; }

step "The server attested the agent by its TPM"
"$BIN/spire-server" agent list -socketPath "$server_sock"
agent_id=$("$BIN/spire-server" agent list -socketPath "$server_sock" | sed -n 's/^SPIFFE ID *: \(spiffe:\/\/example.org\/spire\/agent\/tpm\/.*\)$/\1/p' | head -n 1)
[ -n "$agent_id" ] || { echo "no TPM agent attested"; cat "$work/server.log"; exit 1; }
echo "Selectors of $agent_id:"
"$BIN/spire-server" agent show -socketPath "$server_sock" -spiffeID "$agent_id" -output json |
	grep -o '"type":"tpm","value":"[^"]*"' |
	sed 's/.*"value":"\(.*\)"/  tpm:\1/' || true

step "Registering spiffe://example.org/demo-tpm-workload for unix:uid:$(id -u) under the TPM agent"
"$BIN/spire-server" entry create -socketPath "$server_sock" \
	-parentID "$agent_id" \
	-spiffeID spiffe://example.org/demo-tpm-workload \
	-selector "unix:uid:$(id -u)"

fetch_and_show

step "Stopping the agent, the server and the software TPM"
