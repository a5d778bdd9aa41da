#!/usr/bin/env bash
# vxsec's swarm lab (docs/swarm.md): three Docker engines, each in its own
# network namespace, forming a swarm of three managers INSIDE ONE kernel-lab VM
# (scripts/kernel-lab.sh: Debian's kernel, which has ESP and GCM); a registry;
# the plugin pushed to it and installed from it on every engine with no setting
# but its swarm directory; then the checks of issue 5 ("vxsec in a real
# swarm"): zero-config trust, an outsider refused, a CA rotation, encrypted
# swarm networks and services, a rolling plugin upgrade, engine restart,
# leader failover, node removal, and nothing left behind.
#
#   scripts/swarm-lab.sh [--timeout S] [--cpus N] [--mem MB] [--hold S]
#   scripts/swarm-lab.sh --bench [--runs N]     # the benchmark, not a test
#
# Exits 0 only when every check passed. The console goes to the terminal and to
# build/swarm-lab/console.log; the guest's logs (every dockerd and containerd,
# the registry, the outsiders, kernel state, vxsec status, the wire capture,
# results.txt, phases.txt) to build/swarm-lab/logs/.
#
# --bench: in one lab run, the time from `docker service create --mode global`
# to every task reaching every other task, for vxsec and for Docker's overlay,
# both --opt encrypted, alternating, N runs each (default 3); prints the medians
# and their ratio (also build/swarm-lab/logs/bench.txt and bench.tsv).
#
#   SWARM_LAB_BIN  a vxsec binary to use instead of building one from this tree
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

mode=test runs=3 timeout=1320 cpus=2 mem=4096 hold=0
while (($#)); do
	case $1 in
	--bench) mode=bench; shift ;;
	--runs) runs=${2:?}; shift 2 ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--cpus) cpus=${2:?}; shift 2 ;;
	--mem) mem=${2:?}; shift 2 ;;
	--hold) hold=${2:?}; shift 2 ;;
	-h | --help) sed -n '2,24p' "$0"; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
if [[ $mode == bench && $timeout == 1320 ]]; then
	# Two service rounds of a few tens of seconds per run and driver.
	timeout=$((900 + runs * 240))
fi

require_root
cd "$VXSEC_REPO_ROOT"
# docker.io, containerd (the engines), docker-registry (Debian's distribution
# 2.8, for plugin push/install), busybox-static (the test image), tcpdump (the
# wire), jq and curl (the engines' API and vxsec status), openssl (the outsider's
# certificate and TLS client), iputils-ping (DF pings), nftables (the check that
# nothing is left). The VM shares the host's root: installing here installs there.
ensure_packages docker.io containerd runc iptables nftables busybox-static docker-registry tcpdump \
	iproute2 util-linux jq curl openssl iputils-ping

art=$VXSEC_REPO_ROOT/build/swarm-lab
rm -rf "$art"
mkdir -p "$art/logs"
# Artifacts under build/, not /tmp: the VM has a fresh /tmp.
v1=$(git describe --always --dirty 2>/dev/null || echo dev)-swarmlab
v2=$v1-upgrade
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
# The plugin's rootfs is built here, not by `docker build` inside (≈ 70 s
# of TCG saved): the static binary as /vxsec plus the empty files and
# directories a container's export would have.
plugin_dir() { # DIR VERSION
	local dir=$1 ver=$2
	mkdir -p "$dir/rootfs"/{dev,proc,sys,etc,var/lib/vxsec}
	: >"$dir/rootfs/etc/hosts"
	: >"$dir/rootfs/etc/hostname"
	: >"$dir/rootfs/etc/resolv.conf"
	if [[ -n ${SWARM_LAB_BIN:-} ]]; then
		[[ $ver == "$v1" ]] || die "SWARM_LAB_BIN gives one binary: the upgrade needs a build from this tree"
		cp "$SWARM_LAB_BIN" "$dir/rootfs/vxsec"
	else
		CGO_ENABLED=0 go build -trimpath -tags nosystemd -ldflags "-s -w -X main.version=$ver" \
			-o "$dir/rootfs/vxsec" ./cmd/vxsec
	fi
	cp config.json "$dir/config.json"
	printf '%s\n' "$ver" >"$art/version-${dir##*-}"
}
log "building the plugin ($v1) into $art/plugin-v1"
plugin_dir "$art/plugin-v1" "$v1"
if [[ $mode == test ]]; then
	log "building the upgrade ($v2) into $art/plugin-v2"
	plugin_dir "$art/plugin-v2" "$v2"
else
	printf '%s\n' "$v2" >"$art/version-v2"
fi
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

# One VM at a time on this machine (2 cores): a second one would double every
# figure and could push the lab past its timeout.
if pgrep -f '^qemu-system-x86_64 ' >/dev/null; then
	warn "another qemu VM runs on this machine (pids $(pgrep -d, -f '^qemu-system' || true)): the lab will be slower"
fi

log "swarm lab ($mode) in one kernel-lab VM ($cpus cpus, $mem MB, timeout ${timeout}s)"
set +e
SWARM_LAB_MODE=$mode SWARM_LAB_BENCH_RUNS=$runs SWARM_LAB_HOLD=$hold SWARM_LAB_DEADLINE=$((timeout - 150 - hold)) \
	"$SCRIPT_DIR/kernel-lab.sh" --keep --env SWARM_LAB_DEADLINE \
	--env SWARM_LAB_MODE --env SWARM_LAB_BENCH_RUNS --env SWARM_LAB_HOLD \
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
if [[ $mode == bench && -f $art/logs/bench.txt ]]; then
	echo
	cat "$art/logs/bench.txt"
fi
if ((rc != 0)); then
	if ((rc == 124)); then
		warn "the swarm lab TIMED OUT after ${timeout} s (see $art/console.log)"
	else
		warn "the swarm lab FAILED (exit $rc): the failed checks are listed at the end of $art/console.log"
	fi
fi
exit "$rc"
