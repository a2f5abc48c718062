# Shared plumbing of the demo scripts (sourced, not run): a work directory,
# processes stopped in reverse start order on exit, and polling helpers.
# The sourcing script sets work (a directory it owns) before sourcing.
pids=()

# cleanup stops what was started, newest first (the agent before the server
# before any simulator they talk to), and removes the work directory.
cleanup() {
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null || true
		wait "${pids[i]}" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# wait_for DESCRIPTION COMMAND... polls every 0.1 s, WAIT_TRIES times.
wait_for() {
	local what=$1; shift
	for _ in $(seq 1 "${WAIT_TRIES:-100}"); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "timed out waiting for $what" >&2
	return 1
}

# write_server_conf NODE_ATTESTOR writes $work/server.conf: the server on
# 127.0.0.1:$port and $server_sock, SQLite and the disk key manager in
# $work/server, and NODE_ATTESTOR (HCL: one or more NodeAttestor blocks).
write_server_conf() {
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
$1
}
CONF
}

# start_server DESCRIPTION runs spire-server with $work/server.conf and
# waits until it answers its health check.
start_server() {
	step "Starting spire-server on 127.0.0.1:$port ($1)"
	"$BIN/spire-server" run -config "$work/server.conf" >"$work/server.log" 2>&1 &
	pids+=($!)
	wait_for "the server" "$BIN/spire-server" healthcheck -socketPath "$server_sock" || { cat "$work/server.log"; exit 1; }
	"$BIN/spire-server" healthcheck -socketPath "$server_sock"
}

# write_agent_conf NODE_ATTESTOR writes $work/agent.conf: the agent of the
# server above, trusting $work/bootstrap.crt, with the disk key manager,
# the unix workload attestor and NODE_ATTESTOR (HCL).
write_agent_conf() {
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
$1
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
}

# fetch_and_show has a workload fetch its X.509-SVID from the agent at
# $agent_sock (retrying while the agent syncs its entries) and prints the
# SVID and its chain.
fetch_and_show() {
	step "A workload fetches its X.509-SVID over the Workload API"
	mkdir -p "$work/svid"
	local ok=""
	for _ in $(seq 1 50); do
		if "$BIN/spire-agent" api fetch x509 -socketPath "$agent_sock" -write "$work/svid" >"$work/fetch.out" 2>&1; then ok=1; break; fi
		sleep 0.2
	done
	cat "$work/fetch.out"
	if [ -z "$ok" ]; then echo "--- agent log"; cat "$work/agent.log"; exit 1; fi

	step "The SVID and its chain"
	go run ./scripts/showcert "$work/svid/svid.0.pem" "$work/svid/bundle.0.pem"
}
