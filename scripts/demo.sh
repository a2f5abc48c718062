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
cat >"$work/server.conf" <<CONF
server {
    bind_address = "127.0.0.1"
    bind_port = "$port"
    socket_path = "$server_sock"
    trust_domain = "example.org"
    data_dir = "$work/server"
    log_level = "INFO"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "$work/server/datastore.sqlite3"
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "$work/server/keys.json"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
CONF

step "Starting spire-server on 127.0.0.1:$port (SQLite, disk key manager)"
"$BIN/spire-server" run -config "$work/server.conf" >"$work/server.log" 2>&1 &
pids+=($!)
wait_for "the server" "$BIN/spire-server" healthcheck -socketPath "$server_sock" || { cat "$work/server.log"; exit 1; }
"$BIN/spire-server" healthcheck -socketPath "$server_sock"

step "Generating a join token for the agent"
token=$("$BIN/spire-server" token generate -socketPath "$server_sock" -spiffeID spiffe://example.org/demo-node | sed -n 's/^Token: //p')
echo "Token: $token"

step "Registering spiffe://example.org/demo-workload for unix:uid:$(id -u)"
"$BIN/spire-server" entry create -socketPath "$server_sock" \
	-parentID spiffe://example.org/demo-node \
	-spiffeID spiffe://example.org/demo-workload \
	-selector "unix:uid:$(id -u)"

"$BIN/spire-server" bundle show -socketPath "$server_sock" >"$work/bootstrap.crt"

cat >"$work/agent.conf" <<CONF
agent {
    data_dir = "$work/agent"
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "$port"
    socket_path = "$agent_sock"
    trust_bundle_path = "$work/bootstrap.crt"
    trust_domain = "example.org"
}
plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = "$work/agent"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
CONF

step "Starting spire-agent (join token attestation)"
"$BIN/spire-agent" run -config "$work/agent.conf" -joinToken "$token" >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent" "$BIN/spire-agent" healthcheck -socketPath "$agent_sock" || { cat "$work/agent.log"; exit 1; }

step "A workload fetches its X.509-SVID over the Workload API"
mkdir -p "$work/svid"
ok=""
for _ in $(seq 1 50); do
	if "$BIN/spire-agent" api fetch x509 -socketPath "$agent_sock" -write "$work/svid" >"$work/fetch.out" 2>&1; then ok=1; break; fi
	sleep 0.2
done
cat "$work/fetch.out"
if [ -z "$ok" ]; then echo "--- agent log"; cat "$work/agent.log"; exit 1; fi

step "The SVID and its chain"
go run ./scripts/showcert "$work/svid/svid.0.pem" "$work/svid/bundle.0.pem"

step "Stopping the agent and the server"
