#!/usr/bin/env bash
# Benchmark (not a test): how long `docker run --rm --network X vxsec-busybox true`
# takes on a vxsec network, on Docker's overlay and on the default bridge.
#
# On a single-node swarm (initialised here if the engine is not in one, and
# left again at the end), it creates an attachable vxsec network and an
# attachable overlay network, runs one untimed warm-up container on each
# network, then BENCH_ROUNDS rounds (default 15); each round runs one container
# on each network, in a rotating order, timing each with date +%s%N. It prints
# per-network median and p90 and the ratios of the medians vxsec/overlay and
# vxsec/bridge; the raw figures go to build/bench.tsv.
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
[[ $(docker plugin inspect -f '{{.Enabled}}' "$PLUGIN_NAME") == true ]] || die "plugin $PLUGIN_NAME is installed but disabled: docker plugin enable $PLUGIN_NAME"
log "benchmarking plugin $PLUGIN_NAME (id $(docker plugin inspect -f '{{.Id}}' "$PLUGIN_NAME" | cut -c1-12))"

swarm_initialised=0
live_restore_switched=0
cleanup() {
	local rc=$?
	trap - EXIT
	log "cleaning up"
	docker network rm "$VX_NET" "$OV_NET" >/dev/null 2>&1 || true
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

state=$(docker info -f '{{.Swarm.LocalNodeState}}')
if [[ $state == active ]]; then
	log "the engine is already in a swarm: using it (it is left as it is)"
else
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

nets=("$VX_NET" "$OV_NET" "$BR_NET")
labels=(vxsec overlay bridge)

run_once() {
	docker run --rm --network "$1" "$IMAGE" true >/dev/null
}

log "warm-up: one untimed container per network"
for net in "${nets[@]}"; do
	run_once "$net" || die "docker run --rm --network $net $IMAGE true failed"
done

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
api_before=$(api_totals)
raw=build/bench-docker-${VXSEC_ENGINE}.tsv
printf 'round\tnetwork\tms\n' >"$raw"
log "timing $ROUNDS rounds of 'docker run --rm --network X $IMAGE true' across ${labels[*]} (order rotates each round)"
for ((r = 0; r < ROUNDS; r++)); do
	line="round $((r + 1))/$ROUNDS:"
	for ((k = 0; k < 3; k++)); do
		i=$(((r + k) % 3))
		t0=$(date +%s%N)
		run_once "${nets[$i]}" || die "docker run on ${labels[$i]} failed in round $((r + 1))"
		t1=$(date +%s%N)
		ms=$(((t1 - t0) / 1000000))
		printf '%d\t%s\t%d\n' "$((r + 1))" "${labels[$i]}" "$ms" >>"$raw"
		line+=" ${labels[$i]}=${ms}ms"
	done
	log "$line"
done

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

read -r vx_med vx_p90 < <(stats vxsec)
read -r ov_med ov_p90 < <(stats overlay)
read -r br_med br_p90 < <(stats bridge)

echo
echo "docker run --rm latency, $ROUNDS rounds, $(nproc) CPUs, kernel $(uname -r), Docker $(docker version -f '{{.Server.Version}}')"
printf '%-10s %10s %10s\n' network median_ms p90_ms
printf '%-10s %10s %10s\n' vxsec "$vx_med" "$vx_p90"
printf '%-10s %10s %10s\n' overlay "$ov_med" "$ov_p90"
printf '%-10s %10s %10s\n' bridge "$br_med" "$br_p90"
awk -v a="$vx_med" -v b="$ov_med" -v c="$br_med" 'BEGIN {
	printf "ratio of medians vxsec/overlay = %.2f, vxsec/bridge = %.2f\n", a / b, a / c
}'
echo "raw figures: $raw"

# vxsec's share: the time the plugin spent answering Docker's calls, per
# vxsec run (only vxsec's networks call it), against the run's median.
api_after=$(api_totals)
if [[ -z $api_after ]]; then
	warn "the plugin's metrics (127.0.0.1:7949/metrics) could not be read: no breakdown by remote API call"
else
	api_raw=build/bench-calls-${VXSEC_ENGINE}.tsv
	echo
	echo "vxsec's remote API calls during the $ROUNDS timed vxsec runs (from the plugin's metrics):"
	join -a 2 -e 0 -o 0,1.2,1.3,2.2,2.3 <(printf '%s\n' "$api_before") <(printf '%s\n' "$api_after") | awk -v runs="$ROUNDS" -v med="$vx_med" -v raw="$api_raw" '
		BEGIN { printf "method\tcalls_per_run\tms_per_run\n" > raw; printf "%-26s %14s %12s %12s\n", "method", "calls per run", "ms per call", "ms per run" }
		{
			n = $4 - $2; s = ($5 - $3) * 1000
			if (n <= 0) next
			printf "%-26s %14.1f %12.2f %12.2f\n", $1, n / runs, s / n, s / runs
			printf "%s\t%.2f\t%.3f\n", $1, n / runs, s / runs >> raw
			total += s / runs
		}
		END { printf "in all %.1f ms per run: %.1f%% of the median vxsec run (%g ms)\n", total, 100 * total / med, med }'
	echo "raw figures: $api_raw"
fi
