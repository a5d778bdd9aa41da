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
#   scripts/swarm-lab.sh [--timeout S] [--cpus N] [--mem MB] [--hold S] [--run REGEX]
#   scripts/swarm-lab.sh --bench [--runs N]     # the benchmark, not a test
#
# This script builds on the host what the VM needs (the plugin's two versions,
# a busybox image, the Go test binary of ./test/swarm and test2json), boots the
# VM and runs the test binary there: TestSwarmLab (each phase a subtest, each
# check a subtest of its phase), or TestSwarmBench with --bench. --run gives
# -test.run instead, e.g. 'TestSwarmLab/services' for one phase (with the
# phases it needs run first as its steps).
#
# Exits 0 only when every test passed and none was skipped. The console goes to
# the terminal and to build/swarm-lab/console.log; the guest's logs (the test2json
# stream swarm.json, every dockerd and containerd, the registry, the outsiders,
# kernel state, vxsec status, the wire capture) to build/swarm-lab/logs/, where
# the summary also writes results.txt (one line per test).
#
# --bench: in one lab run, the time from `docker service create --mode global`
# to every task reaching every other task, for vxsec and for Docker's overlay,
# both --opt encrypted, alternating, N runs each (default 3); prints the medians
# and their ratio (also build/swarm-lab/logs/bench.txt and bench.tsv, both copied
# to $BENCH_RESULTS/swarm-bench.{txt,tsv}, build/bench/ by default, for the report).
#
#   SWARM_LAB_BIN         a vxsec binary to use instead of building one from this tree
#   SWARM_LAB_ENGINE      20.10 runs Debian bookworm's engines instead of sid's 28.5
#   SWARM_LAB_BENCH_MODE  vip: the benchmark's tasks reach each other through the
#                         service's name in VIP mode (default: by address, dnsrr)
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The lab's engines and CLI: Debian sid's docker.io 28.5.x, the engine users
# run (VXSEC_ENGINE in lib.sh); SWARM_LAB_ENGINE=20.10 runs bookworm's.
export VXSEC_ENGINE=${SWARM_LAB_ENGINE:-28}
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

mode=test runs=3 timeout=1320 cpus=2 mem=4096 hold=0 testrun=''
while (($#)); do
	case $1 in
	--bench) mode=bench; shift ;;
	--run) testrun=${2:?}; shift 2 ;;
	--runs) runs=${2:?}; shift 2 ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--cpus) cpus=${2:?}; shift 2 ;;
	--mem) mem=${2:?}; shift 2 ;;
	--hold) hold=${2:?}; shift 2 ;;
	-h | --help) sed -n '2,36p' "$0"; exit 0 ;;
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
# wire), openssl (the outsider's certificate and TLS client), iputils-ping (DF
# pings), nftables (the check that nothing is left). The test binary drives the
# engines through the Docker Go client. The VM shares the host's root:
# installing here installs there.
ensure_packages docker.io containerd runc iptables nftables busybox-static docker-registry tcpdump \
	iproute2 util-linux openssl iputils-ping

if [[ $VXSEC_ENGINE == 28 ]]; then
	ensure_sid_engine
fi
log "engines: $(dockerd --version) ($(command -v dockerd)), containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | sed -n 's/^runc version //p')"

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
# The guest: the test binary (never compiled under TCG) and test2json, which
# turns its -test.v=test2json output into `go test -json` events.
log "building the swarm lab's test binary into $art/swarm.test"
CGO_ENABLED=0 go test -c -tags 'nosystemd swarmlab' -o "$art/swarm.test" ./test/swarm
CGO_ENABLED=0 go build -o "$art/test2json" cmd/test2json
if [[ -z $testrun ]]; then
	testrun='^TestSwarmLab$'
	[[ $mode == test ]] || testrun='^TestSwarmBench$'
fi

# One VM at a time on this machine (2 cores): a second one would double every
# figure and could push the lab past its timeout.
if pgrep -f '^qemu-system-x86_64 ' >/dev/null; then
	warn "another qemu VM runs on this machine (pids $(pgrep -d, -f '^qemu-system' || true)): the lab will be slower"
fi

log "swarm lab ($mode, -test.run $testrun) in one kernel-lab VM ($cpus cpus, $mem MB, timeout ${timeout}s)"
# Inside: the test binary's events through test2json into logs/swarm.json,
# printed as they come. Its calls end at SWARM_LAB_DEADLINE (then it collects
# the logs); its -test.timeout is the last resort, before the VM's.
# shellcheck disable=SC2016 # expanded inside
guest='set -o pipefail
logs=/run/kernel-lab/out/logs
mkdir -p "$logs"
# IPVS (Docker overlay'"'"'s VIPs) loaded before any dockerd, as on a host
# that ran Docker before: the first dockerd would load it only at its first
# service binding, after the namespaces it tunes were made.
modprobe -a ip_vs ip_vs_rr xt_ipvs nf_conntrack xt_mark || echo "swarm lab: modprobe of the IPVS modules failed"
echo "swarm lab: a soft lockup stops the VM: softlockup_panic $(cat /proc/sys/kernel/softlockup_panic), watchdog_thresh $(cat /proc/sys/kernel/watchdog_thresh) s"
"$SWARM_LAB_ART/swarm.test" -test.run "$1" -test.v=test2json -test.count=1 -test.timeout "$2s" </dev/null 2>&1 |
	"$SWARM_LAB_ART/test2json" -t -p github.com/vxsec/vxsec/test/swarm |
	SWARM_LAB_RENDER="$logs/swarm.json" "$SWARM_LAB_ART/swarm.test"'
# A guest kernel that locks up under qemu TCG is the emulator's failure, not a
# check's: both vCPUs stuck in the kernel (in runc and in a process
# re-executed through /proc/self/exe) and the RCU kthread starved, seen once
# in about a dozen runs, on a loaded host. kernel-lab.sh's guest panics on a
# soft lockup (softlockup_panic), so such a VM stops two minutes in instead of
# at the timeout; the lab then runs once more from the start, says so here and
# in $art/attempts, and keeps the first attempt's console and logs. A second
# lockup, or any other failure, fails the lab.
attempt=1
while :; do
	set +e
	SWARM_LAB_ART=$art SWARM_LAB_MODE=$mode SWARM_LAB_BENCH_RUNS=$runs SWARM_LAB_HOLD=$hold \
		SWARM_LAB_DEADLINE=$((timeout - 150 - hold)) \
		"$SCRIPT_DIR/kernel-lab.sh" --keep --env PATH --env SWARM_LAB_DEADLINE --env SWARM_LAB_ART \
		--env SWARM_LAB_MODE --env SWARM_LAB_BENCH_RUNS --env SWARM_LAB_BENCH_MODE --env SWARM_LAB_HOLD \
		--timeout "$timeout" --cpus "$cpus" --mem "$mem" -- \
		/bin/bash -c "$guest" swarm-lab-guest "$testrun" "$((timeout - 40))" 2>&1 | tee "$art/console.log"
	rc=${PIPESTATUS[0]}
	set -e
	run=$(sed -n "s/.*run directory kept: \(.*\)$/\1/p" "$art/console.log" | tail -n 1)
	if [[ -n $run && -d $run/out/logs ]]; then
		cp -r "$run/out/logs/." "$art/logs/"
		rm -rf "$run"
	fi
	if ((rc != 0 && attempt == 1)) && grep -Eq '\] watchdog: BUG: soft lockup - CPU#|Kernel panic - not syncing: softlockup' "$art/console.log"; then
		mv "$art/console.log" "$art/console-attempt1.log"
		mv "$art/logs" "$art/logs-attempt1"
		mkdir -p "$art/logs"
		printf 'attempt 1: the guest kernel locked up (exit %s; %s)\n' "$rc" "$art/console-attempt1.log" >>"$art/attempts"
		warn "the swarm lab's guest kernel LOCKED UP in attempt 1 (soft lockup under qemu TCG, exit $rc; console: $art/console-attempt1.log): running the lab once more"
		attempt=2
		continue
	fi
	break
done
log "console: $art/console.log; logs: $art/logs/"
# The count, from the saved events (the same binary reads them here): every
# test passed, none skipped or left unfinished, or the lab fails.
src=0
if [[ -s $art/logs/swarm.json ]]; then
	SWARM_LAB_SUMMARY=$art/logs/swarm.json "$art/swarm.test" 2>&1 | tee -a "$art/console.log" || src=$?
else
	warn "no test events (build/swarm-lab/logs/swarm.json): the test binary never ran or said nothing"
	src=1
fi
if [[ $mode == bench && -f $art/logs/bench.txt ]]; then
	echo
	cat "$art/logs/bench.txt"
fi
# The benchmark's figures also go where the report reads them, out of $art,
# which the next run of the lab (the test tier's too) starts by emptying.
if [[ $mode == bench && -s $art/logs/bench.tsv ]]; then
	mkdir -p "${BENCH_RESULTS:-build/bench}"
	cp "$art/logs/bench.tsv" "${BENCH_RESULTS:-build/bench}/swarm-bench.tsv"
	cp "$art/logs/bench.txt" "${BENCH_RESULTS:-build/bench}/swarm-bench.txt"
	log "the benchmark's figures: ${BENCH_RESULTS:-build/bench}/swarm-bench.tsv (vxlab report renders them)"
fi
if ((rc == 0 && src != 0)); then
	rc=1
fi
if ((rc != 0)); then
	if ((rc == 124)); then
		warn "the swarm lab TIMED OUT after ${timeout} s (see $art/console.log)"
	else
		warn "the swarm lab FAILED (exit $rc): the tests that did not pass are listed above and in $art/logs/results.txt"
	fi
fi
exit "$rc"
