#!/usr/bin/env bash
# Benchmark (not a test): how long `docker run --rm --network X vxsec-busybox true`
# takes on a vxsec network, on Docker's overlay and on the default bridge.
#
# Two phases; each runs one untimed warm-up container per network, then
# BENCH_ROUNDS rounds (default 15) of one container on each network, in an
# order that rotates every round, timing each with date +%s%N:
#  1. outside swarm (skipped, loudly, if the engine is already in one): a
#     vxsec network as `docker network create -d vxsec:latest` makes it there
#     (vxsec-local), the same with --internal (vxsec-internal: the engine adds
#     no docker_gwbridge endpoint for outbound traffic), and the default
#     bridge (bridge-local);
#  2. on a single-node swarm (initialised here if the engine is not in one,
#     and left again at the end): an attachable vxsec network (vxsec), an
#     attachable overlay network (overlay) and the default bridge (bridge).
# It prints each network's median and p90, the ratios of the medians, and
# vxsec's remote API calls per vxsec run in each phase (from the plugin's
# metrics). Raw figures: build/bench-docker-$VXSEC_ENGINE.tsv and
# build/bench-calls-$VXSEC_ENGINE.tsv.
#
# Docker 20.10 refuses swarm mode while live-restore is on: on the harness's
# own engine (scripts/engine.sh) live-restore is switched off for the run and
# back on at the end; on another engine with live-restore on, the script stops
# with an explanation. An engine this script started is stopped at the end.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${BENCH_ROUNDS:-15}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive whole number, got '$ROUNDS'"
PLUGIN_NAME=${PLUGIN_NAME:-vxsec}
DRIVER=$PLUGIN_NAME:latest
IMAGE=vxsec-busybox:latest
VX_NET=vxsec-bench-vxsec
OV_NET=vxsec-bench-overlay
LOCAL_NET=vxsec-bench-local
INT_NET=vxsec-bench-internal
BR_NET=bridge

require_root
cd "$VXSEC_REPO_ROOT"
ensure_host_packages
engine_was_running=0
if engine_answers; then
	engine_was_running=1
fi
ensure_engine
"$VXSEC_REPO_ROOT/scripts/image.sh"
if ! docker plugin inspect "$PLUGIN_NAME" >/dev/null 2>&1; then
	log "plugin $PLUGIN_NAME is not installed: installing it (scripts/plugin.sh)"
	PLUGIN_NAME=$PLUGIN_NAME "$VXSEC_REPO_ROOT/scripts/plugin.sh"
fi
if [[ $(docker plugin inspect -f '{{.Enabled}}' "$PLUGIN_NAME") != true ]]; then
	log "plugin $PLUGIN_NAME is installed but disabled: docker plugin enable $PLUGIN_NAME"
	docker plugin enable "$PLUGIN_NAME" >/dev/null ||
		die "plugin $PLUGIN_NAME is installed but disabled, and docker plugin enable $PLUGIN_NAME failed (its output is in the dockerd log); reinstall it: PLUGIN_NAME=$PLUGIN_NAME scripts/plugin.sh"
fi
log "benchmarking plugin $PLUGIN_NAME (id $(docker plugin inspect -f '{{.Id}}' "$PLUGIN_NAME" | cut -c1-12))"

swarm_initialised=0
live_restore_switched=0
cleanup() {
	local rc=$?
	trap - EXIT
	log "cleaning up"
	docker network rm "$VX_NET" "$OV_NET" "$LOCAL_NET" "$INT_NET" >/dev/null 2>&1 || true
	if ((swarm_initialised)); then
		log "leaving the swarm this script initialised"
		docker swarm leave -f >/dev/null || warn "docker swarm leave -f failed"
	fi
	if ((engine_was_running == 0)); then
		stop_engine
	elif ((live_restore_switched)); then
		set_live_restore true
	fi
	exit "$rc"
}
trap cleanup EXIT

run_once() {
	docker run --rm --network "$1" "$IMAGE" true >/dev/null
}

# api_totals: the plugin's remote API calls so far, "method count seconds"
# a line, from its metrics on the host (VXSEC_METRICS_ADDR's default; the
# plugin shares the host's network namespace). Empty if they cannot be read.
api_totals() {
	local metrics
	metrics=$( (exec 3<>/dev/tcp/127.0.0.1/7949 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3) 2>/dev/null) || return 0
	awk '/^vxsec_api_call_duration_seconds_(sum|count)\{method="/ {
		split($1, a, "\""); m = a[2]
		if ($1 ~ /_sum/) sum[m] = $2; else cnt[m] = $2
	}
	END { for (m in cnt) printf "%s %s %s\n", m, cnt[m], sum[m] }' <<<"$metrics" | sort
}

mkdir -p build
raw=build/bench-docker-${VXSEC_ENGINE}.tsv
api_raw=build/bench-calls-${VXSEC_ENGINE}.tsv
printf 'round\tnetwork\tms\n' >"$raw"
printf 'phase\tmethod\tcalls_per_run\tms_per_run\n' >"$api_raw"

# time_phase PHASE VXSEC_NETS NET LABEL [NET LABEL...]: a warm-up container
# per network, then ROUNDS rounds across them, appended to $raw; then
# vxsec's remote API calls during the phase per vxsec run (VXSEC_NETS of
# the networks are vxsec's; only they call the plugin), to $api_raw.
time_phase() {
	local phase=$1 vx_nets=$2
	shift 2
	local nets=() labels=()
	while (($#)); do
		nets+=("$1")
		labels+=("$2")
		shift 2
	done
	local n=${#nets[@]} net r k i t0 t1 ms line before after
	log "$phase: warm-up, one untimed container per network"
	for net in "${nets[@]}"; do
		run_once "$net" || die "docker run --rm --network $net $IMAGE true failed"
	done
	before=$(api_totals)
	log "$phase: timing $ROUNDS rounds of 'docker run --rm --network X $IMAGE true' across ${labels[*]} (order rotates each round)"
	for ((r = 0; r < ROUNDS; r++)); do
		line="round $((r + 1))/$ROUNDS:"
		for ((k = 0; k < n; k++)); do
			i=$(((r + k) % n))
			t0=$(date +%s%N)
			run_once "${nets[$i]}" || die "docker run on ${labels[$i]} failed in round $((r + 1))"
			t1=$(date +%s%N)
			ms=$(((t1 - t0) / 1000000))
			printf '%d\t%s\t%d\n' "$((r + 1))" "${labels[$i]}" "$ms" >>"$raw"
			line+=" ${labels[$i]}=${ms}ms"
		done
		log "$line"
	done
	after=$(api_totals)
	if [[ -z $after ]]; then
		warn "the plugin's metrics (127.0.0.1:7949/metrics) could not be read: no breakdown by remote API call for $phase"
		return 0
	fi
	join -a 2 -e 0 -o 0,1.2,1.3,2.2,2.3 <(printf '%s\n' "$before") <(printf '%s\n' "$after") |
		awk -v phase="$phase" -v runs="$((ROUNDS * vx_nets))" '{
			n = $4 - $2; s = ($5 - $3) * 1000
			if (n > 0) printf "%s\t%s\t%.2f\t%.3f\n", phase, $1, n / runs, s / runs
		}' >>"$api_raw"
}

state=$(docker info -f '{{.Swarm.LocalNodeState}}')
if [[ $state == active ]]; then
	warn "the engine is already in a swarm: it is left as it is, and phase 1 (outside swarm: vxsec-local, vxsec-internal, bridge-local) is NOT measured"
else
	docker network rm "$LOCAL_NET" "$INT_NET" >/dev/null 2>&1 || true
	log "creating $LOCAL_NET: docker network create -d $DRIVER --subnet 10.252.0.0/24 (outside swarm)"
	docker network create -d "$DRIVER" --subnet 10.252.0.0/24 "$LOCAL_NET" >/dev/null ||
		die "could not create the vxsec network outside swarm"
	log "creating $INT_NET: docker network create -d $DRIVER --internal --subnet 10.253.0.0/24 (outside swarm)"
	docker network create -d "$DRIVER" --internal --subnet 10.253.0.0/24 "$INT_NET" >/dev/null ||
		die "could not create the internal vxsec network outside swarm"
	time_phase "outside swarm" 2 "$LOCAL_NET" vxsec-local "$INT_NET" vxsec-internal "$BR_NET" bridge-local
	docker network rm "$LOCAL_NET" "$INT_NET" >/dev/null || die "could not remove the networks of phase 1"

	if [[ $(docker info -f '{{.LiveRestoreEnabled}}') == true ]]; then
		if engine_started_by_harness; then
			set_live_restore false
			live_restore_switched=1
		else
			die "this Docker engine runs with live-restore, which Docker 20.10 refuses in swarm mode, and the harness did not start it, so it will not change its configuration; run the benchmark where no engine runs (the harness starts its own) or on an engine without live-restore"
		fi
	fi
	dev=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
	[[ -n $dev ]] || die "no IPv4 default route: cannot choose the swarm's advertise address"
	addr=$(ip -4 -o addr show dev "$dev" scope global | awk '{split($4, a, "/"); print a[1]; exit}')
	[[ -n $addr ]] || die "the default-route interface $dev has no global IPv4 address"
	log "docker swarm init --advertise-addr $addr (interface $dev)"
	docker swarm init --advertise-addr "$addr" >/dev/null || die "docker swarm init failed"
	swarm_initialised=1
fi

docker network rm "$VX_NET" "$OV_NET" >/dev/null 2>&1 || true
log "creating $VX_NET: docker network create -d $DRIVER --scope swarm --attachable --subnet 10.250.0.0/24"
docker network create -d "$DRIVER" --scope swarm --attachable --subnet 10.250.0.0/24 "$VX_NET" >/dev/null ||
	die "could not create the vxsec network"
log "creating $OV_NET: docker network create -d overlay --attachable --subnet 10.251.0.0/24"
docker network create -d overlay --attachable --subnet 10.251.0.0/24 "$OV_NET" >/dev/null ||
	die "could not create the overlay network"
time_phase swarm 1 "$VX_NET" vxsec "$OV_NET" overlay "$BR_NET" bridge

# stats LABEL: "median p90" in ms (p90 by nearest rank).
stats() {
	awk -F'\t' -v n="$1" 'NR > 1 && $2 == n {print $3}' "$raw" | sort -n | awk '
		{v[NR] = $1}
		END {
			if (NR == 0) {print "NaN NaN"; exit}
			med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			r = int(0.9 * NR); if (r < 0.9 * NR) r++
			printf "%g %g\n", med, v[r]
		}'
}

echo
echo "docker run --rm latency, $ROUNDS rounds, $(nproc) CPUs, kernel $(uname -r), Docker $(docker version -f '{{.Server.Version}}')"
printf '%-15s %10s %10s\n' network median_ms p90_ms
declare -A med=()
for label in vxsec-local vxsec-internal bridge-local vxsec overlay bridge; do
	read -r m p < <(stats "$label")
	[[ $m == NaN ]] && continue
	med[$label]=$m
	printf '%-15s %10s %10s\n' "$label" "$m" "$p"
done
ratio() {
	[[ -n ${med[$1]:-} && -n ${med[$2]:-} ]] || return 0
	awk -v a="${med[$1]}" -v b="${med[$2]}" -v l="$1/$2" 'BEGIN { printf "ratio of medians %-28s %.2f\n", l, a / b }'
}
ratio vxsec-local bridge-local
ratio vxsec-internal bridge-local
ratio vxsec overlay
ratio vxsec bridge
echo "raw figures: $raw"

echo
echo "vxsec's remote API calls per vxsec run (from the plugin's metrics), by phase:"
awk -F'\t' 'NR > 1 {
	printf "%-14s %-30s %6.2f calls %8.2f ms\n", $1, $2, $3, $4
	total[$1] += $4
}
END { for (p in total) printf "%-14s in all %.1f ms per vxsec run\n", p, total[p] }' "$api_raw"
echo "raw figures: $api_raw"
