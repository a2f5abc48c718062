#!/usr/bin/env bash
# dist.sh [OUT]: builds the release tarball, laid out as SPIRE's (bin/,
# conf/server/server.conf, conf/agent/agent.conf) plus the systemd units,
# and a Debian package that installs the daemons, their configuration and
# the units. Both land in OUT (default dist/). VERSION overrides the
# version taken from git describe. oidc-discovery-provider goes into bin/
# beside the daemons (SPIRE ships it in a separate extras tarball).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
version=${version#v}
# Debian versions must start with a digit; an untagged tree becomes
# 0.0~git<hash>, which sorts before any release.
case $version in
[0-9]*) debversion=${version//-/+} ;;
*) debversion=0.0~git${version//-/+} ;;
esac
arch=$(dpkg --print-architecture 2>/dev/null || go env GOARCH)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

make -s build BIN="$stage/bin" VERSION="$version" >/dev/null

# render TEMPLATE OUT KEY=VALUE...: the config templates with paths filled in.
render() {
	local in=$1 dst=$2
	shift 2
	mkdir -p "$(dirname "$dst")"
	local sedargs=()
	for kv in "$@"; do sedargs+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
	sed "${sedargs[@]}" "$in" >"$dst"
	chmod 0644 "$dst"
}

# The tarball: run from its directory, as SPIRE's release is.
name=spire-hw-$version
tree=$stage/tar/$name
install -d "$tree/bin" "$tree/systemd"
install -m 0755 "$stage/bin/spire-server" "$stage/bin/spire-agent" "$stage/bin/oidc-discovery-provider" "$tree/bin/"
render packaging/conf/server.conf.in "$tree/conf/server/server.conf" \
	SERVER_SOCKET=/tmp/spire-server/private/api.sock SERVER_DATA=./data/server
render packaging/conf/agent.conf.in "$tree/conf/agent/agent.conf" \
	AGENT_SOCKET=/tmp/spire-agent/public/api.sock AGENT_DATA=./data/agent AGENT_BUNDLE=./conf/agent/bootstrap.crt
install -m 0644 packaging/systemd/*.service "$tree/systemd/"
install -m 0644 README.md "$tree/"
tar -C "$stage/tar" --owner=0 --group=0 --numeric-owner -czf "$out/$name-linux-$arch.tar.gz" "$name"

# The Debian package.
root=$stage/deb
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/doc/spire-hw"
install -m 0755 "$stage/bin/spire-server" "$stage/bin/spire-agent" "$stage/bin/oidc-discovery-provider" "$root/usr/bin/"
render packaging/conf/server.conf.in "$root/etc/spire/server/server.conf" \
	SERVER_SOCKET=/run/spire-server/private/api.sock SERVER_DATA=/var/lib/spire-server
render packaging/conf/agent.conf.in "$root/etc/spire/agent/agent.conf" \
	AGENT_SOCKET=/run/spire-agent/public/api.sock AGENT_DATA=/var/lib/spire-agent AGENT_BUNDLE=/etc/spire/agent/bootstrap.crt
install -m 0644 packaging/systemd/*.service "$root/lib/systemd/system/"
install -m 0644 README.md "$root/usr/share/doc/spire-hw/"
install -m 0644 packaging/deb/copyright "$root/usr/share/doc/spire-hw/"
install -m 0755 packaging/deb/postinst packaging/deb/prerm "$root/DEBIAN/"
printf '%s\n' /etc/spire/server/server.conf /etc/spire/agent/agent.conf >"$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$debversion|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" packaging/deb/control.in >"$root/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out/spire-hw_${debversion}_${arch}.deb" >/dev/null

echo "$out/$name-linux-$arch.tar.gz"
echo "$out/spire-hw_${debversion}_${arch}.deb"
