#!/usr/bin/env bash
# make demo-federation: two trust domains, federated. Two servers (SQLite,
# join token) on loopback, a.example and b.example, each with a bundle
# endpoint (https_spiffe, on the server's own SVID); a.example federates
# with b.example from its configuration (federates_with), b.example with
# a.example from the CLI (spire-server federation create). After the
# out-of-band exchange of each side's bundle that https_spiffe needs to
# authenticate the first fetch, each server fetches the other's bundle from
# its endpoint. An agent in each trust domain serves a workload whose entry
# federates with the other, and the two workloads (sim/cmd/federation-demo,
# go-spiffe) complete a mutual-TLS handshake across the trust domains.
# Everything is stopped and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
work=$(mktemp -d /tmp/spire-demo-fed.XXXXXX)
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

# Ports: server API and bundle endpoint of each side.
a_port=${DEMO_PORT_A:-18083}
b_port=${DEMO_PORT_B:-18084}
a_fed=${DEMO_FED_PORT_A:-18443}
b_fed=${DEMO_FED_PORT_B:-18444}

# server_conf SIDE TD PORT FED_PORT FEDERATES_WITH writes $work/SIDE/server.conf.
server_conf() {
	local side=$1 td=$2 port=$3 fed=$4 federates=$5
	mkdir -p "$work/$side"
	cat >"$work/$side/server.conf" <<CONF
server {
    bind_address = "127.0.0.1"
    bind_port = "$port"
    socket_path = "$work/$side/api.sock"
    trust_domain = "$td"
    data_dir = "$work/$side/server"
    log_level = "INFO"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
    federation {
        bundle_endpoint {
            address = "127.0.0.1"
            port = $fed
            profile "https_spiffe" {}
        }
$federates
    }
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "$work/$side/server/datastore.sqlite3"
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "$work/$side/server/keys.json"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
CONF
}

# agent_conf SIDE TD PORT writes $work/SIDE/agent.conf.
agent_conf() {
	local side=$1 td=$2 port=$3
	cat >"$work/$side/agent.conf" <<CONF
agent {
    data_dir = "$work/$side/agent"
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "$port"
    socket_path = "$work/$side/agent.sock"
    trust_bundle_path = "$work/$side/bootstrap.crt"
    trust_domain = "$td"
}
plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = "$work/$side/agent"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
CONF
}

srv() { local side=$1; shift; "$BIN/spire-server" "$@" -socketPath "$work/$side/api.sock"; }

server_conf a a.example "$a_port" "$a_fed" "        federates_with \"b.example\" {
            bundle_endpoint_url = \"https://127.0.0.1:$b_fed\"
            bundle_endpoint_profile \"https_spiffe\" {
                endpoint_spiffe_id = \"spiffe://b.example/spire/server\"
            }
        }"
server_conf b b.example "$b_port" "$b_fed" ""

for side in a b; do
	port_var=${side}_port fed_var=${side}_fed
	step "Starting spire-server for $side.example on 127.0.0.1:${!port_var}, bundle endpoint on 127.0.0.1:${!fed_var}"
	"$BIN/spire-server" run -config "$work/$side/server.conf" >"$work/$side/server.log" 2>&1 &
	pids+=($!)
	wait_for "the $side.example server" srv "$side" healthcheck || { cat "$work/$side/server.log"; exit 1; }
done

step "Exchanging the bundles out of band (https_spiffe authenticates the first fetch with them)"
srv b bundle show -format spiffe >"$work/b.example.bundle"
srv a bundle show -format spiffe >"$work/a.example.bundle"
echo "a.example: bundle set (its federates_with block names b.example)"
srv a bundle set -format spiffe -id spiffe://b.example -path "$work/b.example.bundle"
echo "b.example: federation create"
srv b federation create -trustDomain a.example \
	-bundleEndpointURL "https://127.0.0.1:$a_fed" -bundleEndpointProfile https_spiffe \
	-endpointSpiffeID spiffe://a.example/spire/server \
	-trustDomainBundlePath "$work/a.example.bundle" -trustDomainBundleFormat spiffe
srv b federation list

step "Each server fetches the other's bundle from its bundle endpoint"
wait_for "a.example fetching b.example's bundle" srv a federation refresh -id b.example || { cat "$work/a/server.log"; exit 1; }
wait_for "b.example fetching a.example's bundle" srv b federation refresh -id a.example || { cat "$work/b/server.log"; exit 1; }
echo "a.example holds:"; srv a bundle list -id spiffe://b.example -format spiffe | head -c 400; echo " ..."
echo "b.example holds:"; srv b bundle list -id spiffe://a.example -format spiffe | head -c 400; echo " ..."

for side in a b; do
	other=$([ "$side" = a ] && echo b || echo a)
	port_var=${side}_port
	step "$side.example: a join token, a workload entry for unix:uid:$(id -u) federating with $other.example, and an agent"
	token=$(srv "$side" token generate -spiffeID "spiffe://$side.example/node" | sed -n 's/^Token: //p')
	srv "$side" entry create -parentID "spiffe://$side.example/node" \
		-spiffeID "spiffe://$side.example/workload" -selector "unix:uid:$(id -u)" \
		-federatesWith "spiffe://$other.example"
	srv "$side" bundle show >"$work/$side/bootstrap.crt"
	agent_conf "$side" "$side.example" "${!port_var}"
	"$BIN/spire-agent" run -config "$work/$side/agent.conf" -joinToken "$token" >"$work/$side/agent.log" 2>&1 &
	pids+=($!)
	wait_for "the $side.example agent" "$BIN/spire-agent" healthcheck -socketPath "$work/$side/agent.sock" || { cat "$work/$side/agent.log"; exit 1; }
done

step "The two workloads talk mTLS across the trust domains (go-spiffe)"
go run ./sim/cmd/federation-demo -a "unix://$work/a/agent.sock" -b "unix://$work/b/agent.sock"

step "Stopping the agents and the servers"
