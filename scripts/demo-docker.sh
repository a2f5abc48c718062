#!/usr/bin/env bash
# make demo-docker: a workload in a container gets its SVID by its Docker
# label. A private dockerd (own data root, exec root and socket, no
# iptables, no bridge, vfs storage; nothing of the host's Docker is used or
# changed), a server and an agent on loopback whose docker workload attestor
# asks that dockerd about its callers, an entry for docker:label:app:demo,
# and spire-agent's own `api fetch x509` (built static, in an image made by
# docker import: no registry is needed) run in a container labelled
# app=demo. A container labelled app=other is refused. Needs root and the
# docker.io package (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
if [ "$(id -u)" != 0 ]; then echo "demo-docker needs root: it starts a private dockerd" >&2; exit 1; fi
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
	echo "dockerd or docker not found: run make deps (Debian's docker.io)" >&2; exit 1
fi
work=$(mktemp -d /tmp/spire-demo-docker.XXXXXX)
# The daemon's directory is kept short (containerd's sockets live under it)
# and apart from $work, which the agent and server cleanup removes first.
dk=$(mktemp -d /tmp/dkdemo.XXXXXX)
port=${DEMO_PORT:-18082}
server_sock="$work/server/api.sock"
# A directory of its own holds the agent socket: it is what the workload's
# container mounts.
agent_sock="$work/sockets/api.sock"
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

dk() { docker -H "unix://$dk/docker.sock" "$@"; }

dockerd_pid=""
# stop_dockerd removes the demo's containers, stops the daemon (SIGTERM,
# then SIGKILL after 20 s), detaches whatever it left mounted and removes
# its directory. Safe to run twice (the EXIT trap after INT).
stop_dockerd() {
	[ -d "$dk" ] || return 0
	if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
		ids=$(dk ps -aq 2>/dev/null || true)
		# shellcheck disable=SC2086
		[ -z "$ids" ] || dk rm -f $ids >/dev/null 2>&1 || true
		kill "$dockerd_pid" 2>/dev/null || true
		for _ in $(seq 1 200); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$dockerd_pid" 2>/dev/null || true
		wait "$dockerd_pid" 2>/dev/null || true
	fi
	awk -v d="$dk" '$5 == d || index($5, d "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2- | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf "$dk"
}
trap 'cleanup; stop_dockerd' EXIT INT TERM

step "Starting a private dockerd in $dk"
echo '{}' >"$dk/daemon.json"
dockerd --config-file "$dk/daemon.json" --data-root "$dk/data" --exec-root "$dk/exec" \
	--pidfile "$dk/dockerd.pid" -H "unix://$dk/docker.sock" \
	--iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
	--containerd-namespace "moby-${dk##*.}" --containerd-plugins-namespace "plugins-${dk##*.}" \
	>"$dk/dockerd.log" 2>&1 &
dockerd_pid=$!
WAIT_TRIES=300 wait_for "dockerd" dk version || { tail -20 "$dk/dockerd.log"; exit 1; }
dk version --format 'Docker Engine {{.Server.Version}} (API {{.Server.APIVersion}})'

step "Building an image with a static spire-agent (docker import, no registry)"
mkdir -p "$work/rootfs"
CGO_ENABLED=0 go build -trimpath -o "$work/rootfs/spire-agent" ./cmd/spire-agent
tar -C "$work/rootfs" -c . | dk import - spire-hw-demo:latest

mkdir -p "$work/server" "$work/agent" "$work/sockets"
write_server_conf '    NodeAttestor "join_token" {
        plugin_data {}
    }'
start_server "SQLite, disk key manager"

step "Generating a join token for the agent"
token=$("$BIN/spire-server" token generate -socketPath "$server_sock" -spiffeID spiffe://example.org/demo-node | sed -n 's/^Token: //p')
echo "Token: $token"

step "Registering spiffe://example.org/demo-container for docker:label:app:demo"
"$BIN/spire-server" entry create -socketPath "$server_sock" \
	-parentID spiffe://example.org/demo-node \
	-spiffeID spiffe://example.org/demo-container \
	-selector docker:label:app:demo

"$BIN/spire-server" bundle show -socketPath "$server_sock" >"$work/bootstrap.crt"

write_agent_conf '    NodeAttestor "join_token" {
        plugin_data {}
    }
    WorkloadAttestor "docker" {
        plugin_data {
            docker_socket_path = "unix://'"$dk"'/docker.sock"
        }
    }'

step "Starting spire-agent (join token attestation; docker and unix workload attestors)"
"$BIN/spire-agent" run -config "$work/agent.conf" -joinToken "$token" >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent" "$BIN/spire-agent" healthcheck -socketPath "$agent_sock" || { cat "$work/agent.log"; exit 1; }

# fetch_in_container LABEL runs spire-agent api fetch x509 in a container
# labelled app=LABEL, with the agent's socket directory mounted read-only.
fetch_in_container() {
	dk run --rm --network none -l "app=$1" \
		-v "$work/sockets:/run/spire/sockets:ro" -v "$work/svid:/svid" \
		spire-hw-demo:latest /spire-agent api fetch x509 -socketPath /run/spire/sockets/api.sock -write /svid
}

step "A workload in a container labelled app=demo fetches its X.509-SVID"
mkdir -p "$work/svid"
ok=""
for _ in $(seq 1 30); do
	if fetch_in_container demo >"$work/fetch.out" 2>&1; then ok=1; break; fi
	sleep 0.3
done
cat "$work/fetch.out"
if [ -z "$ok" ]; then echo "--- agent log"; cat "$work/agent.log"; exit 1; fi

step "The SVID and its chain"
go run ./scripts/showcert "$work/svid/svid.0.pem" "$work/svid/bundle.0.pem"

step "A container labelled app=other is refused"
if fetch_in_container other; then echo "unexpected: app=other got an SVID" >&2; exit 1; fi

step "Stopping the agent, the server and dockerd"
