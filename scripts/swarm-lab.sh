#!/usr/bin/env bash
# vxsec's swarm lab (a prototype, see docs/swarm.md): three Docker engines, each
# in its own network namespace, forming a swarm of three managers INSIDE ONE
# kernel-lab VM (scripts/kernel-lab.sh: Debian's kernel, which has ESP and GCM),
# a registry for the plugin, the plugin installed from it on every engine, an
# encrypted swarm-scope vxsec network and a global service on it.
#
#   scripts/swarm-lab.sh [--steps 1|2|3] [--timeout S] [--cpus N] [--mem MB] [--hold S] [--join]
#
# Prepares build/swarm-lab/ on the host (the plugin binary, its config and
# Dockerfile, a busybox rootfs), then runs scripts/swarm-lab-guest.sh inside the
# VM. The console goes to the terminal and to build/swarm-lab/console.log; the
# guest's logs (dockerd, containerd, registry, state dumps) to build/swarm-lab/logs/.
#
#   SWARM_LAB_BIN  a vxsec binary to use instead of building one from this tree
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

steps=3 timeout=1500 cpus=2 mem=4096 hold=0 join=0
while (($#)); do
	case $1 in
	--steps) steps=${2:?}; shift 2 ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--cpus) cpus=${2:?}; shift 2 ;;
	--mem) mem=${2:?}; shift 2 ;;
	--hold) hold=${2:?}; shift 2 ;;
	--join) join=1; shift ;;
	-h | --help) sed -n '2,19p' "$0"; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[[ $steps =~ ^[123]$ ]] || die "--steps wants 1, 2 or 3"

require_root
cd "$VXSEC_REPO_ROOT"
# docker.io, containerd (the engines), docker-registry (Debian's distribution
# 2.8, for plugin push/install), busybox-static (the test image), tcpdump (the
# wire check). The VM shares the host's root: installing here installs there.
ensure_packages docker.io containerd runc iptables busybox-static docker-registry tcpdump iproute2 util-linux

art=$VXSEC_REPO_ROOT/build/swarm-lab
rm -rf "$art"
mkdir -p "$art/logs"
# Artifacts under build/, not /tmp: the VM has a fresh /tmp.
if [[ -n ${SWARM_LAB_BIN:-} ]]; then
	cp "$SWARM_LAB_BIN" "$art/vxsec"
else
	command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
	log "building the plugin binary into $art/vxsec (as make build does)"
	CGO_ENABLED=0 go build -trimpath -tags nosystemd \
		-ldflags "-s -w -X main.version=$(git describe --always --dirty 2>/dev/null || echo dev)-swarmlab" \
		-o "$art/vxsec" ./cmd/vxsec
fi
cp config.json Dockerfile "$art/"
# The busybox rootfs, as scripts/image.sh builds it (imported inside).
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,root,usr/bin,usr/sbin}
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for a in $(/bin/busybox --list); do
	[[ $a == busybox ]] || ln -sf busybox "$rootfs/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
tar -C "$rootfs" -cf "$art/busybox.tar" .

log "swarm lab: steps 1..$steps in one kernel-lab VM ($cpus cpus, $mem MB, timeout ${timeout}s)"
set +e
SWARM_LAB_STEPS=$steps SWARM_LAB_HOLD=$hold SWARM_LAB_JOIN=$join "$SCRIPT_DIR/kernel-lab.sh" --keep \
	--env SWARM_LAB_STEPS --env SWARM_LAB_HOLD --env SWARM_LAB_JOIN \
	--timeout "$timeout" --cpus "$cpus" --mem "$mem" -- \
	/bin/bash "$SCRIPT_DIR/swarm-lab-guest.sh" "$art" 2>&1 | tee "$art/console.log"
rc=${PIPESTATUS[0]}
set -e
run=$(sed -n "s/.*run directory kept: \(.*\)$/\1/p" "$art/console.log" | tail -n 1)
if [[ -n $run && -d $run/out/logs ]]; then
	cp -r "$run/out/logs/." "$art/logs/"
	rm -rf "$run"
fi
log "console: $art/console.log; logs: $art/logs/"
exit "$rc"
