#!/usr/bin/env bash
# The inside of vxsec's swarm lab (docs/swarm.md): runs INSIDE the kernel-lab VM
# (scripts/kernel-lab.sh), started by scripts/swarm-lab.sh. Not for the host: it
# creates namespaces and starts dockerd's, and writes only to the VM's tmpfs.
#
#   swarm-lab-guest.sh ARTIFACTS_DIR
#
# ARTIFACTS_DIR (read-only, prepared on the host by swarm-lab.sh) holds:
#   plugin-v1/       config.json + rootfs/ of the plugin (the static binary as /vxsec)
#   plugin-v2/       the same binary built with another version string (the upgrade)
#   version-v1, version-v2   their version strings
#   busybox.tar      a busybox rootfs (as scripts/image.sh builds it)
#
# Environment:
#   SWARM_LAB_MODE        test (default): the issue-5 checks; bench: the service
#                         convergence benchmark, vxsec against Docker's overlay
#   SWARM_LAB_BENCH_RUNS  runs per driver in bench mode (default 3)
#   SWARM_LAB_HOLD        seconds to sleep before collecting logs (default 0)
#   SWARM_LAB_DEADLINE    seconds after which the run gives up, fails the phase
#                         it is in and collects its logs (default 1200; the host
#                         sets it below the VM's timeout)
#
# Every check prints "ok   [ID] what" or "FAIL [ID] what: cause" as it happens;
# the summary repeats them with the timings ("time [ID]") and facts ("info
# [ID]") and ends with "SWARM-LAB RESULT: PASS|FAIL (...)". Logs go to
# /run/kernel-lab/out/logs, which swarm-lab.sh copies to build/swarm-lab/logs.
# shellcheck disable=SC2317 # functions are called through poll, check and eval
set -uo pipefail

ART=${1:?usage: swarm-lab-guest.sh ARTIFACTS_DIR}
MODE=${SWARM_LAB_MODE:-test}
RUNS=${SWARM_LAB_BENCH_RUNS:-3}
HOLD=${SWARM_LAB_HOLD:-0}
DEADLINE=${SWARM_LAB_DEADLINE:-1200}
N=3
OUT=/run/kernel-lab/out
LOGS=$OUT/logs
RUN=/run/sl
LIB=/var/lib/docker # a tmpfs in the lab
NET=10.77.0
BR=sl-br
# The registry listens on the bridge, in the VM's root namespace, so any
# engine can be killed without taking it down.
REG=$NET.254:5000
PLUGIN=$REG/vxsec:lab
PLUGIN2=$REG/vxsec:lab-upgrade
IMAGE=$REG/busybox:lab
VXSEC=$ART/plugin-v1/rootfs/vxsec
V1=$(cat "$ART/version-v1")
V2=$(cat "$ART/version-v2")
SUBNET_PREFIX=10.99.0
OUTNS=sl-out
OUTIP=$NET.9
DOCKER=/usr/bin/docker # the 20.10 CLI of docker.io (the PATH may hold a newer one)
API=v1.41
RESF=$RUN/results.txt
PHASEF=$RUN/phases.txt
export DOCKER_BUILDKIT=0

# Nothing here reads the console: a prompt (the CLI asks before some
# commands) must fail at once, not wait for an answer.
exec </dev/null
mkdir -p "$LOGS" "$RUN"
: >"$RESF"
: >"$PHASEF"

# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

now() {
	local up _
	read -r up _ </proc/uptime
	printf '%s\n' "$up"
}
T0=$(now)
# since T: seconds (one decimal) from uptime T to now.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
# older T S: more than S seconds have passed since uptime T.
older() { awk -v a="$1" -v b="$(now)" -v m="$2" 'BEGIN {exit !(b - a > m)}'; }
say() { printf 'SWARM-LAB [%7.1f s] %s\n' "$(now)" "$*"; }
# Results go to a file, so that checks running in background jobs count too.
record() {
	printf '%s\n' "$*" >>"$RESF"
	say "$*"
}
pass() {
	local id=$1
	shift
	record "ok   [$id] $*"
}
fail() {
	local id=$1
	shift
	record "FAIL [$id] $*"
}
info() {
	local id=$1
	shift
	record "info [$id] $*"
}
timing() {
	local id=$1
	shift
	record "time [$id] $*"
}
# check ID WHAT COMMAND...: passes when COMMAND succeeds; otherwise fails with
# its exit code and its last lines of output as the cause.
check() {
	local id=$1 what=$2 out rc
	shift 2
	out=$("$@" 2>&1)
	rc=$?
	if ((rc == 0)); then
		pass "$id" "$what"
	else
		fail "$id" "$what: exit $rc: $(printf '%s' "$out" | tail -n 4 | tr '\n' ' ')"
	fi
	return "$rc"
}
# poll MAX EVERY COMMAND...: runs COMMAND every EVERY seconds until it succeeds
# (0) or MAX seconds have passed (1). POLL_TOOK: the seconds it took.
POLL_TOOK=0
poll() {
	local max=$1 every=$2 t
	shift 2
	t=$(now)
	while :; do
		if "$@"; then
			POLL_TOOK=$(since "$t")
			return 0
		fi
		if older "$t" "$max"; then
			POLL_TOOK=$(since "$t")
			return 1
		fi
		sleep "$every"
	done
}
# waitall PID...: waits for every job; fails if any failed.
waitall() {
	local p rc=0
	for p in "$@"; do
		wait "$p" || rc=1
	done
	return "$rc"
}

# ---------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------

# d I ARGS...: the docker CLI of engine I (the user's commands).
d() {
	local i=$1
	shift
	timeout "${D_TIMEOUT:-240}" "$DOCKER" -H "unix://$RUN/e$i/docker.sock" "$@"
}
# api I PATH [CURL ARGS]: GET from engine I's API (cheaper than the CLI, which
# costs seconds per call under TCG).
api() {
	local i=$1 p=$2
	shift 2
	curl -sS -f --max-time 60 --unix-socket "$RUN/e$i/docker.sock" "$@" "http://docker/$API$p"
}
engine_up() { curl -sf --max-time 10 --unix-socket "$RUN/e$1/docker.sock" http://docker/_ping >/dev/null 2>&1; }

write_daemon_json() { # I LIVE_RESTORE
	cat >"$RUN/e$1/daemon.json" <<-EOF
		{
		  "live-restore": $2,
		  "insecure-registries": ["$REG"],
		  "log-level": "info"
		}
	EOF
}

dockerd_args() { # I
	local dir=$RUN/e$1
	DOCKERD_ARGS=(--containerd "$dir/containerd.sock" --data-root "$LIB/e$1/docker"
		--exec-root "$dir/docker" --pidfile "$dir/dockerd.pid" -H "unix://$dir/docker.sock"
		--config-file "$dir/daemon.json")
}

# start_engine I: containerd, then dockerd, in namespace sl-eI, in one mount
# namespace (ip netns exec makes one, with the namespace's /sys; dockerd's
# overlay2 mounts must be visible to its containerd) and their own UTS
# namespace (hostname sl-eI: the swarm node's name).
start_engine() {
	local i=$1
	local dir=$RUN/e$i
	mkdir -p "$dir" "$LIB/e$i/docker" "$LIB/e$i/containerd"
	cat >"$dir/containerd.toml" <<-EOF
		version = 2
		root = "$LIB/e$i/containerd"
		state = "$dir/containerd"
		disabled_plugins = ["io.containerd.grpc.v1.cri"]
		[grpc]
		  address = "$dir/containerd.sock"
		[ttrpc]
		  address = "$dir/containerd.sock.ttrpc"
		[debug]
		  address = ""
	EOF
	[[ -f $dir/daemon.json ]] || write_daemon_json "$i" false
	# After a kill: stale sockets would pass for a running containerd.
	rm -f "$dir/dockerd.pid" "$dir/containerd.pid" "$dir/containerd.sock" "$dir/containerd.sock.ttrpc" "$dir/docker.sock"
	dockerd_args "$i"
	# ip netns exec mounts the namespace's own sysfs on /sys, which hides
	# the cgroup2 mount under it: mount it again ("Devices cgroup isn't
	# mounted" otherwise).
	setsid ip netns exec "sl-e$i" unshare --uts sh -c "
		hostname sl-e$i
		mount -t cgroup2 -o nsdelegate none /sys/fs/cgroup 2>/dev/null || mount -t cgroup2 none /sys/fs/cgroup
		containerd --config '$dir/containerd.toml' >>'$dir/containerd.log' 2>&1 &
		echo \$! >'$dir/containerd.pid'
		n=0
		until [ -S '$dir/containerd.sock' ]; do
			sleep 0.2; n=\$((n + 1))
			[ \$n -lt 900 ] || { echo 'containerd did not start' >&2; exit 1; }
		done
		exec dockerd \"\$@\"
	" sh "${DOCKERD_ARGS[@]}" >>"$dir/dockerd.log" 2>&1 </dev/null &
	echo $! >"$dir/starter.pid"
}

# start_dockerd I: dockerd alone, in the namespaces of engine I's running
# containerd (a restart of the engine, containerd staying up).
start_dockerd() {
	local i=$1 dir=$RUN/e$1
	rm -f "$dir/dockerd.pid"
	dockerd_args "$i"
	setsid nsenter -t "$(cat "$dir/containerd.pid")" -m -u -n -- dockerd "${DOCKERD_ARGS[@]}" >>"$dir/dockerd.log" 2>&1 </dev/null &
	echo $! >"$dir/starter.pid"
}

# wait_engine I SECONDS: until engine I answers; fails (with its log's tail)
# if it exits or the time runs out.
wait_engine() {
	local i=$1 max=$2 t
	t=$(now)
	until engine_up "$i"; do
		if ! kill -0 "$(cat "$RUN/e$i/starter.pid")" 2>/dev/null || older "$t" "$max"; then
			say "engine sl-e$i: exited or no answer after $(since "$t") s; its log ends:"
			tail -n 12 "$RUN/e$i/dockerd.log" "$RUN/e$i/containerd.log"
			return 1
		fi
		sleep 0.5
	done
}

# stop_dockerd I: SIGTERM to engine I's dockerd, wait until it is gone.
stop_dockerd() {
	local pid
	pid=$(cat "$RUN/e$1/starter.pid")
	kill -TERM "$pid" 2>/dev/null
	poll 120 0.5 eval "! kill -0 $pid 2>/dev/null"
}

# kill_engine I: SIGKILL to everything of engine I (a crash of the node's
# engine): dockerd, containerd, the shims and what they run (the plugin, the
# tasks). The namespace and its kernel state stay, as on a host whose Docker
# died.
kill_engine() {
	local i=$1 dir=$RUN/e$1 s pids=()
	pids+=("$(cat "$dir/starter.pid")" "$(cat "$dir/containerd.pid")")
	for s in $(pgrep -f -- "-address $dir/containerd.sock"); do
		# shellcheck disable=SC2207 # pids are words
		pids+=("$s" $(pgrep -P "$s"))
	done
	say "killing engine sl-e$i: pids ${pids[*]}"
	kill -KILL "${pids[@]}" 2>/dev/null
	local p
	for p in "${pids[@]}"; do
		poll 30 0.2 eval "! kill -0 $p 2>/dev/null" || say "pid $p of sl-e$i still alive"
	done
}

# The swarm, as the managers see it.
leader_of() { # M: the leader's index, as manager M sees it
	local h
	h=$(api "$1" /nodes | jq -r '.[] | select(.ManagerStatus.Leader == true) | .Description.Hostname') || return 1
	[[ $h == sl-e* ]] || return 1
	printf '%s\n' "${h#sl-e}"
}
ready_nodes() { # M: how many nodes are ready, as manager M sees it
	api "$1" /nodes 2>/dev/null | jq '[.[] | select(.Status.State == "ready")] | length'
}
node_state() { # M I: state of node sl-eI (ready, down, ...) as manager M sees it
	api "$1" /nodes 2>/dev/null | jq -r --arg h "sl-e$2" '.[] | select(.Description.Hostname == $h) | .Status.State'
}
running_tasks() { # M SVC: how many tasks of SVC run, as manager M sees it
	api "$1" /tasks -G --data-urlencode "filters={\"service\":[\"$2\"],\"desired-state\":[\"running\"]}" 2>/dev/null |
		jq '[.[] | select(.Status.State == "running")] | length'
}
plugin_enabled() { # I
	[[ $(api "$1" /plugins 2>/dev/null | jq -r --arg n "$PLUGIN" '.[] | select(.Name == $n) | .Enabled') == true ]]
}

# Tasks: TASK_ID/PID/IP["svc:i"] of the running container of service svc on
# node i.
declare -A TASK_PID TASK_IP
load_tasks() { # SVC NET NODE...
	local svc=$1 net=$2 i line
	shift 2
	for i in "$@"; do
		unset "TASK_PID[$svc:$i]" "TASK_IP[$svc:$i]"
		line=$(api "$i" /containers/json -G --data-urlencode \
			"filters={\"label\":[\"com.docker.swarm.service.name=$svc\"],\"status\":[\"running\"]}" 2>/dev/null |
			jq -r --arg n "$net" '.[0] // empty | "\(.Id) \(.NetworkSettings.Networks[$n].IPAddress // "")"')
		[[ -n $line ]] || continue
		TASK_IP[$svc:$i]=${line#* }
		TASK_PID[$svc:$i]=$(api "$i" "/containers/${line%% *}/json" | jq -r .State.Pid)
	done
}
has_tasks() { # SVC NODE...: every node has a loaded task with an address
	local svc=$1 i
	shift
	for i in "$@"; do
		[[ -n ${TASK_IP[$svc:$i]:-} && -n ${TASK_PID[$svc:$i]:-} ]] || return 1
	done
}
# tx SVC I COMMAND...: COMMAND (the VM's) in the network namespace of svc's
# task on node I.
tx() {
	local k=$1:$2
	shift 2
	nsenter -t "${TASK_PID[$k]}" -n -- "$@"
}
# tsh SVC I SCRIPT: SCRIPT by the task's own /bin/sh (busybox), inside the
# task's namespaces (as docker exec, without the seconds the CLI costs).
tsh() {
	nsenter -t "${TASK_PID[$1:$2]}" -m -u -i -n -p -- /bin/sh -c "$3"
}
# mesh ID SVC NODE...: the tasks of svc on the nodes ping each other by address,
# every ordered pair, in parallel; one check per pair.
mesh() {
	local id=$1 svc=$2 i j
	shift 2
	local -a jobs=()
	for i in "$@"; do
		for j in "$@"; do
			((i == j)) && continue
			check "$id.e$i-e$j" "task on sl-e$i pings task on sl-e$j by address (${TASK_IP[$svc:$j]:-none})" \
				tx "$svc" "$i" ping -c 3 -i 0.3 -W 5 "${TASK_IP[$svc:$j]:-none}" &
			jobs+=($!)
		done
	done
	waitall "${jobs[@]}"
}

# vxsec's own view, through `vxsec status` on the plugin's socket. dockerd
# 20.10 keeps managed plugins' sockets under /run/docker/plugins/<id> whatever
# --exec-root says; the ids differ per engine.
psock() { # I
	local id
	id=$(api "$1" /plugins 2>/dev/null | jq -r --arg n "$PLUGIN" '.[] | select(.Name == $n) | .Id')
	[[ -n $id ]] || return 1
	printf '%s\n' "/run/docker/plugins/$id/vxsec.sock"
}
vstatus() { # I: vxsec status of engine I's plugin, also kept in $RUN/st<I>.json
	local s
	rm -f "$RUN/st$1.json"
	s=$(psock "$1") || return 1
	timeout 20 "$VXSEC" status --socket "$s" >"$RUN/st$1.json.tmp" 2>/dev/null || return 1
	mv "$RUN/st$1.json.tmp" "$RUN/st$1.json"
	cat "$RUN/st$1.json"
}
addrs() { # I...: the underlay addresses, sorted as jq sorts, comma-joined
	local i
	for i in "$@"; do printf '%s\n' "$NET.$i"; done | LC_ALL=C sort | paste -sd,
}
alive_members() { # I: the alive members engine I's plugin lists (from the last vstatus)
	jq -r '[.Members[]? | select(.Status == "alive") | .Addr] | sort | join(",")' "$RUN/st$1.json"
}
# cluster_ok NODE...: every node's plugin lists exactly those nodes as alive
# members and all report the same, non-empty Trust.secret_id (kept in SECRET_ID).
SECRET_ID=''
cluster_ok() {
	local i want id first=''
	want=$(addrs "$@")
	for i in "$@"; do
		vstatus "$i" >/dev/null || return 1
		[[ $(alive_members "$i") == "$want" ]] || return 1
		id=$(jq -r '.Trust.secret_id // ""' "$RUN/st$i.json")
		[[ -n $id ]] || return 1
		[[ -z $first || $id == "$first" ]] || return 1
		first=$id
	done
	SECRET_ID=$first
}
# cluster_report ID NODE...: a check of cluster_ok's result with each node's
# view as the cause.
cluster_report() {
	local id=$1 i views=''
	shift
	for i in "$@"; do
		[[ -f $RUN/st$i.json ]] || {
			views+="sl-e$i: no answer from vxsec status; "
			continue
		}
		views+="sl-e$i: members [$(alive_members "$i" 2>/dev/null)] secret_id $(jq -r '.Trust.secret_id // "none"' "$RUN/st$i.json" 2>/dev/null) trust error '$(jq -r '.Trust.error // ""' "$RUN/st$i.json" 2>/dev/null)'; "
	done
	fail "$id" "vxsec cluster: want members [$(addrs "$@")] and one secret_id on every node; saw $views"
}

# leftovers I: what of vxsec is in namespace sl-eI (nothing when clean):
# devices vxsec-<vni> and vxe-<endpoint> (vxlan/datapath.go), xfrm states and
# policies, nftables tables named vxsec (firewall/firewall.go).
leftovers() {
	local ns=sl-e$1
	ip -n "$ns" -o link show | awk -F': ' '{print $2}' | grep -E '^(vxsec-|vxe-)' | sed 's/^/device /'
	ip -n "$ns" xfrm state | grep '^src' | sed 's/^/xfrm state /'
	ip -n "$ns" xfrm policy | grep '^src' | sed 's/^/xfrm policy /'
	ip netns exec "$ns" nft list tables 2>/dev/null | grep -w vxsec
}
clean() { # I...
	local i
	for i in "$@"; do
		[[ -z $(leftovers "$i") ]] || return 1
	done
}

# ---------------------------------------------------------------------------
# 1: the swarm, the registry, the plugin
# ---------------------------------------------------------------------------

underlay() {
	ip link add "$BR" type bridge || return 1
	ip addr add "$NET.254"/24 dev "$BR"
	ip link set "$BR" up
	local i
	for i in $(seq 1 "$N"); do
		ip netns add "sl-e$i" || return 1
		ip link add "sl-v$i" type veth peer name eth0 netns "sl-e$i" || return 1
		ip link set "sl-v$i" master "$BR" up
		ip -n "sl-e$i" addr add "$NET.$i/24" dev eth0
		ip -n "sl-e$i" link set lo up
		ip -n "sl-e$i" link set eth0 up
		# A default route: dockerd (swarm) and vxsec take their advertise
		# address from the default-route interface.
		ip -n "sl-e$i" route add default via "$NET.254" || return 1
	done
}

start_registry() {
	mkdir -p "$LIB/registry"
	cat >"$RUN/registry.yml" <<-EOF
		version: 0.1
		log:
		  level: warn
		storage:
		  filesystem:
		    rootdirectory: $LIB/registry
		  delete:
		    enabled: true
		http:
		  addr: $REG
	EOF
	setsid docker-registry serve "$RUN/registry.yml" >"$RUN/registry.log" 2>&1 </dev/null &
	echo $! >"$RUN/registry.pid"
}
registry_up() { curl -sf --max-time 5 "http://$REG/v2/" >/dev/null; }

push_plugin() { # NAME DIR: create on sl-e1 from DIR (a rootfs built on the host), push, remove locally
	d 1 plugin create "$1" "$2" >/dev/null && d 1 plugin push "$1" >/dev/null && d 1 plugin rm -f "$1" >/dev/null
}
push_image() {
	local root=/tmp/sl-busybox
	rm -rf "$root"
	mkdir -p "$root"
	tar -C "$root" -xf "$ART/busybox.tar" &&
		tar -C "$root" -c . | d 1 import \
			--change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null &&
		d 1 push "$IMAGE" >/dev/null
}
# push_artifacts: what sl-e1 pushes to the registry, while the swarm forms:
# the plugin and the image (then $RUN/pushed exists), then the upgrade's
# plugin, which is not needed before phase 4c.
push_artifacts() {
	local t
	t=$(now)
	if ! poll 120 0.5 registry_up; then
		fail 1.registry "the registry does not answer at http://$REG/v2/ after 120 s: $(tail -n 3 "$RUN/registry.log" | tr '\n' ' ')"
		return 1
	fi
	pass 1.registry "registry answers at http://$REG/v2/ ($POLL_TOOK s)"
	check 1.push.plugin "docker plugin create $PLUGIN (rootfs built on the host) + docker plugin push" \
		push_plugin "$PLUGIN" "$ART/plugin-v1" || return 1
	check 1.push.image "docker import + docker push $IMAGE" push_image || return 1
	timing 1.push "registry up, plugin and image pushed from sl-e1: $(since "$t") s"
	touch "$RUN/pushed"
	if [[ $MODE == test ]]; then
		t=$(now)
		check 1.push.upgrade "docker plugin create + push $PLUGIN2 (version $V2, for the upgrade)" \
			push_plugin "$PLUGIN2" "$ART/plugin-v2" || return 1
		timing 1.push.upgrade "the upgrade's plugin pushed (in the background): $(since "$t") s"
	fi
}

phase_swarm() {
	underlay || {
		fail 1.underlay "could not build the underlay (bridge $BR, namespaces sl-e1..sl-e$N)"
		return 1
	}
	check 1.underlay "sl-e1 reaches sl-e$N ($NET.$N) over the lab bridge" ip netns exec sl-e1 ping -c 1 -W 5 "$NET.$N" || return 1
	start_registry
	local t i
	t=$(now)
	for i in $(seq 1 "$N"); do
		start_engine "$i"
	done
	for i in $(seq 1 "$N"); do
		if ! wait_engine "$i" 300; then
			fail 1.engines "engine sl-e$i exited or did not answer within 300 s (its log above)"
			return 1
		fi
	done
	timing 1.engines "$N engines (containerd + dockerd $(api 1 /version | jq -r .Version), started in parallel) answer after $(since "$t") s"

	# sl-e1 pushes the plugin and the image while the others join.
	push_artifacts >"$RUN/push.log" 2>&1 &
	PUSHER=$!

	t=$(now)
	check 1.swarm.init "docker swarm init --advertise-addr $NET.1 on sl-e1" d 1 swarm init --advertise-addr "$NET.1" || return 1
	local token
	token=$(d 1 swarm join-token -q manager) || {
		fail 1.swarm.token "docker swarm join-token -q manager failed"
		return 1
	}
	for i in $(seq 2 "$N"); do
		check "1.swarm.join.e$i" "sl-e$i joins as a manager (docker swarm join --token <manager> $NET.1:2377)" \
			d "$i" swarm join --token "$token" --advertise-addr "$NET.$i" "$NET.1:2377" || return 1
	done
	if poll 180 1 eval "[[ \$(ready_nodes 1) == $N ]]"; then
		pass 1.swarm "swarm of $N managers: $N nodes ready"
	else
		fail 1.swarm "only $(ready_nodes 1) of $N nodes ready 180 s after the joins"
		return 1
	fi
	timing 1.swarm "swarm init + $((N - 1)) joins until $N nodes ready: $(since "$t") s"
	# The plugin and the image must be in the registry; the upgrade's
	# plugin follows in the background.
	until [[ -e $RUN/pushed ]]; do
		if ! kill -0 "$PUSHER" 2>/dev/null; then
			cat "$RUN/push.log"
			fail 1.push "sl-e1 could not push the plugin and the image (above)"
			return 1
		fi
		sleep 1
	done
}

phase_plugin() {
	local t i
	local -a jobs=()
	t=$(now)
	for i in $(seq 1 "$N"); do
		# No VXSEC_SECRET, no VXSEC_JOIN: zero-config. swarm.source: this
		# engine's swarm directory (its data root is not /var/lib/docker).
		check "1.install.e$i" "sl-e$i: docker plugin install --grant-all-permissions $PLUGIN swarm.source=$LIB/e$i/docker/swarm (no secret, no join)" \
			d "$i" plugin install --grant-all-permissions "$PLUGIN" "swarm.source=$LIB/e$i/docker/swarm" VXSEC_LOG_LEVEL=debug &
		jobs+=($!)
	done
	waitall "${jobs[@]}" || return 1
	timing 1.install "$N plugin installs from the registry (in parallel): $(since "$t") s"
	jobs=()
	for i in $(seq 1 "$N"); do
		check "1.enabled.e$i" "sl-e$i: docker plugin ls shows $PLUGIN enabled" \
			eval "d $i plugin ls --format '{{.Name}} {{.Enabled}}' | grep -qx '$PLUGIN true'" &
		jobs+=($!)
	done
	waitall "${jobs[@]}"
	INSTALLED_AT=$(now)
	# The image on the other nodes now, while the cluster forms: the
	# services start sooner.
	for i in $(seq 2 "$N"); do
		d "$i" pull -q "$IMAGE" >/dev/null 2>&1 &
	done
}

# ---------------------------------------------------------------------------
# 2: zero-config trust
# ---------------------------------------------------------------------------

trust_node() { # I: zero-config settings and global scope on node I
	local i=$1 env
	env=$(api "$i" /plugins | jq -r --arg n "$PLUGIN" '.[] | select(.Name == $n) | .Settings.Env[]')
	if grep -qx 'VXSEC_SECRET=' <<<"$env" && grep -qx 'VXSEC_JOIN=' <<<"$env"; then
		pass "2.zeroconf.e$i" "sl-e$i: the plugin runs with VXSEC_SECRET and VXSEC_JOIN empty"
	else
		fail "2.zeroconf.e$i" "sl-e$i: plugin settings are not zero-config: $(grep -E 'SECRET|JOIN' <<<"$env" | sed 's/SECRET=.*/SECRET=<set>/' | tr '\n' ' ')"
	fi
	check "2.scope.e$i" "sl-e$i: the plugin reports the global data scope (its log: scope=global)" \
		grep -q 'vxsec daemon serving.*scope=global' "$RUN/e$i/dockerd.log"
}
identity_node() { # I CLUSTER_ID: Trust names node I's swarm identity
	local i=$1 cid=$2 nid role tcid
	nid=$(api "$i" /info | jq -r .Swarm.NodeID)
	read -r role tcid < <(jq -r '"\(.Trust.role) \(.Trust.cluster_id)"' "$RUN/st$i.json")
	if [[ $role == swarm-manager && $tcid == "$cid" && $(jq -r .Trust.node_id "$RUN/st$i.json") == "$nid" ]]; then
		pass "2.identity.e$i" "sl-e$i: Trust shows node $nid, role $role, swarm $cid (from the node certificate)"
	else
		fail "2.identity.e$i" "sl-e$i: Trust $(jq -c '.Trust | {node_id, role, cluster_id}' "$RUN/st$i.json"), want node $nid, swarm-manager, swarm $cid"
	fi
}
phase_trust() {
	local i all
	local -a jobs=()
	all=$(seq 1 "$N" | tr '\n' ' ')
	for i in $all; do
		trust_node "$i" &
		jobs+=($!)
	done
	# shellcheck disable=SC2086 # node list
	if poll 180 2 cluster_ok $all; then
		pass 2.cluster "vxsec cluster of $N: every node lists $(addrs $all) alive and one secret_id ($SECRET_ID), with no secret or join address given"
		timing 2.cluster "plugins enabled to cluster formed with an agreed secret: $(since "$INSTALLED_AT") s"
	else
		# shellcheck disable=SC2086
		cluster_report 2.cluster $all
		waitall "${jobs[@]}"
		return 1
	fi
	local cid
	cid=$(api 1 /swarm | jq -r .ID)
	for i in $all; do
		identity_node "$i" "$cid" &
		jobs+=($!)
	done
	waitall "${jobs[@]}"
	# A failed check above is reported as such; the phase itself completed.
	return 0
}

# The outsider: namespace sl-out on the lab bridge, no certificate of this
# swarm. Two vxsec daemons (the static binary) run there:
#   forged: a swarm directory with a self-signed "manager" certificate that
#           names this swarm, the swarm's real (public) root CA and its
#           state.json; it looks for a secret over TLS, makes its own, and
#           joins $NET.1 with it (VXSEC_JOIN too);
#   open:   no swarm directory and no secret, joining $NET.1.
OUTPIDS=()
start_outsiders() {
	ip netns add "$OUTNS" && ip link add sl-vout type veth peer name eth0 netns "$OUTNS" &&
		ip link set sl-vout master "$BR" up && ip -n "$OUTNS" addr add "$OUTIP/24" dev eth0 &&
		ip -n "$OUTNS" link set lo up && ip -n "$OUTNS" link set eth0 up &&
		ip -n "$OUTNS" route add default via "$NET.254" || return 1
	local dir=$RUN/out cid
	cid=$(api 1 /swarm | jq -r .ID)
	mkdir -p "$dir/forged/certificates" "$dir/none"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-subj "/O=$cid/OU=swarm-manager/CN=0forgedforgedforgedforged" \
		-addext 'extendedKeyUsage=serverAuth,clientAuth' \
		-keyout "$dir/forged/certificates/swarm-node.key" -out "$dir/forged/certificates/swarm-node.crt" >/dev/null 2>&1 || return 1
	cp "$LIB/e1/docker/swarm/certificates/swarm-root-ca.crt" "$dir/forged/certificates/"
	cp "$LIB/e1/docker/swarm/state.json" "$dir/forged/"
	local name
	for name in forged open; do
		local -a args=(daemon --socket "$dir/$name.sock" --state-dir "$dir/$name-state" --snapshot "$dir/$name.snapshot"
			--scope local --join "$NET.1" --log-level debug)
		if [[ $name == forged ]]; then
			args+=(--swarm-dir "$dir/forged")
		else
			args+=(--swarm-dir "$dir/none" --gossip-port 7957 --trust-port 7958)
		fi
		setsid ip netns exec "$OUTNS" "$VXSEC" "${args[@]}" >"$dir/$name.log" 2>&1 </dev/null &
		OUTPIDS+=($!)
	done
	OUTSIDERS_AT=$(now)
}
# outsider_member: does any node's plugin list the outsider's address?
outsider_member() {
	local i
	for i in $(seq 1 "$N"); do
		vstatus "$i" >/dev/null 2>&1 || continue
		jq -e --arg a "$OUTIP" '[.Members[]? | select(.Addr == $a)] | length > 0' "$RUN/st$i.json" >/dev/null && return 0
	done
	return 1
}
refused() { jq -r '.Trust.refused // 0' "$RUN/st$1.json"; }

phase_outsider_rotation() {
	local i
	vstatus 1 >/dev/null
	REFUSED0=$(refused 1)
	if ! start_outsiders; then
		fail 2.outsider "could not set up the outsider namespace $OUTNS with its daemons"
		return 1
	fi
	pass 2.outsider.start "outsider $OUTIP: a vxsec daemon with a forged swarm certificate and one with no certificate, both joining $NET.1"
	# A TLS client with no certificate at all.
	local out cid
	cid=$(api 1 /swarm | jq -r .ID)
	out=$(printf '{"v":1,"cluster":"%s","record":null}\n' "$cid" |
		timeout 20 ip netns exec "$OUTNS" openssl s_client -connect "$NET.1:7948" -quiet 2>&1)
	printf '%s\n' "$out" >"$LOGS/outsider-openssl.txt"
	if grep -q '"secret"' <<<"$out"; then
		fail 2.outsider.tls "openssl s_client without a certificate got a secret record from $NET.1:7948: $(head -c 200 <<<"$out")"
	else
		pass 2.outsider.tls "openssl s_client to $NET.1:7948 without a certificate gets no record: $(grep -m1 -o 'alert [a-z ]*' <<<"$out")"
	fi

	# The swarm's CA rotation, while the outsiders try their luck.
	local root0=() cert0=() t
	for i in $(seq 1 "$N"); do
		root0[i]=$(sha256sum <"$LIB/e$i/docker/swarm/certificates/swarm-root-ca.crt")
		cert0[i]=$(sha256sum <"$LIB/e$i/docker/swarm/certificates/swarm-node.crt")
	done
	t=$(now)
	check 2.rotate "docker swarm ca --rotate on sl-e1 (returns when every node has a certificate of the new root)" \
		d 1 swarm ca --rotate --quiet
	timing 2.rotate "docker swarm ca --rotate: $(since "$t") s"
	rotated() {
		local i
		for i in $(seq 1 "$N"); do
			[[ $(sha256sum <"$LIB/e$i/docker/swarm/certificates/swarm-root-ca.crt") != "${root0[i]}" ]] || return 1
			[[ $(sha256sum <"$LIB/e$i/docker/swarm/certificates/swarm-node.crt") != "${cert0[i]}" ]] || return 1
		done
	}
	if poll 90 1 rotated; then
		pass 2.rotate.files "every node's swarm-root-ca.crt and swarm-node.crt changed (the plugins see the new ones through the swarm mount)"
	else
		fail 2.rotate.files "not every node's root CA and node certificate changed 90 s after the rotation"
	fi
	ROTATED_AT=$(date +%s)
}

# The outsiders' results, once phase 3 has given them time.
phase_outsider_check() {
	[[ -n ${OUTSIDERS_AT:-} ]] || {
		fail 2.outsider "the outsiders never started (2.outsider.start)"
		return 1
	}
	# The outsiders have had their chance once the forged one made its own
	# secret and started a cluster with it (at once: its node ID is the
	# lowest of its state.json), which joins $NET.1, and a few seconds more.
	poll 40 2 eval "timeout 20 '$VXSEC' status --socket '$RUN/out/forged.sock' 2>/dev/null | jq -e '(.Trust.secret_id // \"\") != \"\" and (.Members | length) > 0' >/dev/null"
	if outsider_member; then
		fail 2.outsider.member "the outsider $OUTIP became a member of the vxsec cluster: $(jq -c '.Members' "$RUN/st1.json")"
	else
		pass 2.outsider.member "the outsider $OUTIP is no member on any node ($(since "$OUTSIDERS_AT") s after it started joining)"
	fi
	vstatus 1 >/dev/null
	if (($(refused 1) > REFUSED0)) && jq -e --arg a "$OUTIP" '.Trust.last_refusal // "" | contains($a)' "$RUN/st1.json" >/dev/null; then
		pass 2.outsider.refused "sl-e1's trust port refused $(($(refused 1) - REFUSED0)) connection(s); the last: $(jq -r .Trust.last_refusal "$RUN/st1.json" | cut -c1-160)"
	else
		fail 2.outsider.refused "sl-e1's Trust.refused went $REFUSED0 -> $(refused 1), last refusal '$(jq -r '.Trust.last_refusal // ""' "$RUN/st1.json")': want it to count the outsider $OUTIP"
	fi
	local f
	f=$(timeout 20 "$VXSEC" status --socket "$RUN/out/forged.sock" 2>&1)
	printf '%s\n' "$f" >"$LOGS/outsider-forged-status.json"
	if jq -e '[.Trust.exchanges[]? | select((.error // "") == "")] | length == 0' <<<"$f" >/dev/null &&
		jq -e --arg a "$NET.1" '[.Members[]? | select(.Addr == $a and .Status == "alive")] | length == 0' <<<"$f" >/dev/null; then
		pass 2.outsider.forged "the forged node's own view: no successful exchange ($(jq -r '[.Trust.exchanges[]?.error] | first // "none"' <<<"$f" | cut -c1-120)), not in a cluster with $NET.1"
	else
		fail 2.outsider.forged "the forged node's view shows a successful exchange or membership: $(jq -c '{Trust: .Trust.exchanges, Members}' <<<"$f" | cut -c1-400)"
	fi
	kill "${OUTPIDS[@]}" 2>/dev/null
	waitall "${OUTPIDS[@]}" 2>/dev/null
	cp "$RUN"/out/*.log "$LOGS/" 2>/dev/null
	ip netns del "$OUTNS"
	# A failed check above is reported as such; the phase itself completed.
	return 0
}

# After the rotation: every node's last round of exchanges came after it,
# without error, and the cluster is whole. Rounds are every 30 s.
rounds_after_rotation() {
	local i
	for i in $(seq 1 "$N"); do
		vstatus "$i" >/dev/null || return 1
		jq -e --argjson t "$ROTATED_AT" '
			(.Trust.error // "") == "" and (.Trust.exchanges | length) == '"$((N - 1))"' and
			all(.Trust.exchanges[]; (.error // "") == "" and
				((.at | sub("\\.[0-9]+"; "") | sub("\\+00:00$"; "Z") | fromdateiso8601) > $t))' \
			"$RUN/st$i.json" >/dev/null || return 1
	done
}
phase_trust_after_rotation() {
	local all
	all=$(seq 1 "$N" | tr '\n' ' ')
	if poll 100 3 rounds_after_rotation; then
		pass 2.rotate.exchanges "after the CA rotation every node's exchanges with the other managers succeed (rounds of $(date -u -d "@$ROTATED_AT" +%T) or later, no error)"
	else
		local i why=''
		for i in $(seq 1 "$N"); do
			why+="sl-e$i: $(jq -c '{error: .Trust.error, exchanges: [.Trust.exchanges[]? | {addr, at, error}]}' "$RUN/st$i.json" 2>/dev/null | cut -c1-300); "
		done
		fail 2.rotate.exchanges "exchanges after the rotation ($(date -u -d "@$ROTATED_AT" +%T)) did not all succeed within 100 s: $why"
	fi
	local before=$SECRET_ID
	# shellcheck disable=SC2086
	if cluster_ok $all && [[ $SECRET_ID == "$before" ]]; then
		pass 2.rotate.cluster "after the rotation: $N members and the same secret_id $SECRET_ID on every node"
	else
		# shellcheck disable=SC2086
		cluster_report 2.rotate.cluster $all
	fi
	# A failed check above is reported as such; the phase itself completed.
	return 0
}

# ---------------------------------------------------------------------------
# 3: an encrypted network, services, reachability, the wire
# ---------------------------------------------------------------------------

WEB_CMD='mkdir -p /tmp/www && hostname >/tmp/www/index.html && httpd -p 80 -h /tmp/www && exec sleep 86400'

phase_services() {
	local t i j all
	all=$(seq 1 "$N" | tr '\n' ' ')
	t=$(now)
	check 3.net.create "docker network create -d $PLUGIN --opt encrypted --attachable --subnet $SUBNET_PREFIX.0/24 sl-net (no --scope)" \
		d 1 network create -d "$PLUGIN" --opt encrypted --attachable --subnet "$SUBNET_PREFIX.0/24" sl-net || return 1
	timing 3.net.create "network create: $(since "$t") s"
	local insp
	insp=$(api 2 /networks/sl-net)
	printf '%s\n' "$insp" >"$LOGS/network-inspect.json"
	if [[ $(jq -r .Scope <<<"$insp") == swarm ]]; then
		pass 3.net.scope "docker network inspect sl-net on sl-e2: Scope swarm"
	else
		fail 3.net.scope "docker network inspect sl-net on sl-e2: Scope $(jq -r .Scope <<<"$insp"), want swarm"
	fi
	if jq -e '.Options | has("encrypted") and has("vni")' <<<"$insp" >/dev/null; then
		pass 3.net.options "sl-net's options as swarm stores them: $(jq -c .Options <<<"$insp") (encrypted, and the vni AllocateNetwork chose)"
	else
		fail 3.net.options "sl-net's options $(jq -c .Options <<<"$insp"): want encrypted and a vni"
	fi

	t=$(now)
	local -a jobs=()
	check 3.svc.web "docker service create --mode global --network sl-net --name sl-web (VIP mode, busybox httpd)" \
		d 1 service create --detach --mode global --name sl-web --hostname '{{.Node.Hostname}}' \
		--network sl-net "$IMAGE" sh -c "$WEB_CMD" &
	jobs+=($!)
	check 3.svc.rr "docker service create --mode global --endpoint-mode dnsrr --network sl-net --name sl-rr" \
		d 1 service create --detach --mode global --endpoint-mode dnsrr --name sl-rr --hostname '{{.Node.Hostname}}-rr' \
		--network sl-net "$IMAGE" sh -c "$WEB_CMD" &
	jobs+=($!)
	waitall "${jobs[@]}" || return 1
	if poll 300 2 eval "[[ \$(running_tasks 1 sl-web) == $N && \$(running_tasks 1 sl-rr) == $N ]]"; then
		pass 3.svc.running "a task of sl-web and of sl-rr runs on every node ($((2 * N)) tasks)"
	else
		fail 3.svc.running "after 300 s: sl-web $(running_tasks 1 sl-web)/$N, sl-rr $(running_tasks 1 sl-rr)/$N tasks running"
		return 1
	fi
	timing 3.svc.running "service create to $((2 * N)) tasks running: $(since "$t") s"
	# shellcheck disable=SC2086
	load_tasks sl-web sl-net $all
	# shellcheck disable=SC2086
	load_tasks sl-rr sl-net $all
	# shellcheck disable=SC2086
	if ! has_tasks sl-web $all || ! has_tasks sl-rr $all; then
		fail 3.tasks "could not find every task's container, pid and address on its node: ${TASK_IP[*]}"
		return 1
	fi
	local ips
	ips=$(for i in $all; do printf '%s\n' "${TASK_IP[sl-web:$i]}" "${TASK_IP[sl-rr:$i]}"; done)
	if [[ $(sort -u <<<"$ips" | grep -c "^$SUBNET_PREFIX\.") == $((2 * N)) ]]; then
		pass 3.ips "$((2 * N)) distinct task addresses from $SUBNET_PREFIX.0/24 (swarm's IPAM): $(tr '\n' ' ' <<<"$ips")"
	else
		fail 3.ips "task addresses $(tr '\n' ' ' <<<"$ips"): want $((2 * N)) distinct ones from $SUBNET_PREFIX.0/24"
	fi
	for i in $all; do
		local dev mtu
		dev=$(tx sl-web "$i" ip -o -4 addr show | awk -v a="${TASK_IP[sl-web:$i]}/" 'index($4, a) == 1 {print $2}')
		mtu=$(tx sl-web "$i" ip -o link show dev "${dev:-none}" | awk '{for (k = 1; k < NF; k++) if ($k == "mtu") print $(k + 1)}')
		if [[ $mtu == 1416 ]]; then
			pass "3.mtu.e$i" "sl-web task on sl-e$i: its sl-net interface $dev has MTU 1416 (1500 - VXLAN - ESP)"
		else
			fail "3.mtu.e$i" "sl-web task on sl-e$i: sl-net interface '$dev' MTU '$mtu', want 1416"
		fi
	done

	# shellcheck disable=SC2086
	mesh 3.ping sl-web $all

	# The wire, while 10 MB cross and DF pings go: ESP only.
	local pcap=$RUN/wire.pcap
	tcpdump -i "$BR" -n -s 96 -U -w "$pcap" 'esp or udp port 4800 or udp port 4801' >"$RUN/tcpdump.log" 2>&1 &
	local tcpd=$!
	sleep 2
	transfer 1 2
	local far=$N
	check 3.df "DF ping from sl-e1's task to sl-e$far's with 1388 bytes of payload (1416-byte packets) passes" \
		tx sl-web 1 ping -M "do" -s 1388 -c 3 -i 0.3 -W 5 "${TASK_IP[sl-web:$far]}"
	out=$(tx sl-web 1 ping -M "do" -s 1389 -c 1 -W 2 "${TASK_IP[sl-web:$far]}" 2>&1)
	if grep -qi 'message too long\|mtu=1416' <<<"$out"; then
		pass 3.df.over "DF ping with 1389 bytes is refused locally: $(grep -io 'message too long.*' <<<"$out" | head -n 1)"
	else
		fail 3.df.over "DF ping with 1389 bytes (1417-byte packets) was not refused for the 1416 MTU: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
	fi
	sleep 1
	kill -INT "$tcpd"
	wait "$tcpd"
	cp "$pcap" "$LOGS/wire.pcap"
	# One pass (each read of the capture costs seconds under TCG): the -v
	# header line of every packet, "IP (... offset O, flags [F], proto P (N),
	# length L)". The capture filter kept only ESP and UDP to 4800/4801, so
	# any UDP in it is cleartext VXLAN.
	local esp clear big frag
	tcpdump -r "$pcap" -nn -v >"$RUN/wire.txt" 2>/dev/null
	head -n 40 "$RUN/wire.txt" >"$LOGS/wire.txt"
	read -r esp clear big frag < <(awk '
		/^[0-9:.]+ IP \(/ {
			match($0, /length [0-9]+\)/); len = substr($0, RSTART + 7, RLENGTH - 8) + 0
			frag = ($0 ~ /offset [1-9]/ || $0 ~ /flags \[\+/)
			if ($0 ~ /proto ESP/) { e++; if (len > 1450) b++; if (frag) f++ }
			if ($0 ~ /proto UDP/) u++
		}
		END {print e + 0, u + 0, b + 0, f + 0}' "$RUN/wire.txt")
	if ((esp > 1000 && clear == 0)); then
		pass 3.wire "tcpdump on $BR during the transfer: $esp ESP packets, no UDP to 4800/4801 (cleartext VXLAN)"
	else
		fail 3.wire "tcpdump on $BR during the transfer: $esp ESP packets (want > 1000), $clear UDP to 4800/4801 (want 0)"
	fi
	if ((big > 1000 && frag == 0)); then
		pass 3.wire.fullmtu "$big ESP packets longer than 1450 bytes on the wire, none fragmented (full-MTU segments)"
	else
		fail 3.wire.fullmtu "$big ESP packets longer than 1450 bytes (want > 1000), $frag fragments (want 0)"
	fi
	for i in $all; do
		info "3.xfrm.e$i" "sl-e$i: $(ip -n "sl-e$i" xfrm state | grep -c '^src') SAs, $(ip -n "sl-e$i" xfrm policy | grep -c '^src') policies"
	done

	dns_checks
	t=$(now)
	local target=${TASK_IP[sl-web:1]}
	check 3.run "sl-e2: docker run --rm --network sl-net busybox pings sl-e1's task ($target) and the dnsrr service sl-rr" \
		d 2 run --rm --network sl-net "$IMAGE" sh -c "ping -c 2 -W 5 $target && ping -c 2 -W 5 sl-rr"
	timing 3.run "docker run on the attachable network: $(since "$t") s"
	vip_report
	# A failed check above is reported as such; the phase itself completed.
	return 0
}

# transfer FROM TO: 10 MB over TCP with busybox nc between the sl-web tasks.
transfer() {
	local a=$1 b=$2 t size sums
	tsh sl-web "$b" 'rm -f /tmp/recv.bin; sleep 200 | nc -l -p 5001 >/tmp/recv.bin' >/dev/null 2>&1 &
	local rx=$!
	sleep 1
	t=$(now)
	sums=$(tsh sl-web "$a" "dd if=/dev/urandom of=/tmp/send.bin bs=1M count=10 2>/dev/null && md5sum /tmp/send.bin && nc ${TASK_IP[sl-web:$b]} 5001 </tmp/send.bin" 2>&1)
	local sent_sum=${sums%% *}
	poll 120 1 eval "[[ \$(tsh sl-web $b 'wc -c </tmp/recv.bin' 2>/dev/null) == 10485760 ]]"
	local secs=$POLL_TOOK
	size=$(tsh sl-web "$b" 'wc -c </tmp/recv.bin' 2>/dev/null)
	local got_sum
	got_sum=$(tsh sl-web "$b" 'md5sum /tmp/recv.bin' 2>/dev/null)
	got_sum=${got_sum%% *}
	if [[ $size == 10485760 && -n $sent_sum && $got_sum == "$sent_sum" ]]; then
		pass 3.tcp "10 MB over TCP (busybox nc) from sl-e$a's task to sl-e$b's: 10485760 bytes, md5 $got_sum on both ends ($(since "$t") s)"
	else
		fail 3.tcp "10 MB over TCP from sl-e$a's task to sl-e$b's: received '$size' bytes, md5 sent '$sent_sum' received '$got_sum' (after $secs s): $(tail -n 2 <<<"$sums" | tr '\n' ' ')"
	fi
	kill "$rx" 2>/dev/null
}

# dns_checks: inside every sl-web task, through Docker's DNS (127.0.0.11):
# tasks.sl-web and the dnsrr service sl-rr resolve to their tasks' addresses and
# answer pings and HTTP.
dns_checks() {
	local i all web rr
	all=$(seq 1 "$N" | tr '\n' ' ')
	web=$(for i in $all; do echo "${TASK_IP[sl-web:$i]}"; done | sort | tr '\n' ' ')
	rr=$(for i in $all; do echo "${TASK_IP[sl-rr:$i]}"; done | sort | tr '\n' ' ')
	local re=${SUBNET_PREFIX//./\\.}
	local -a jobs=()
	for i in $all; do
		(
			out=$(tsh sl-web "$i" "
				echo TASKS \$(nslookup tasks.sl-web 2>/dev/null | grep -o '$re\.[0-9]*' | sort | tr '\n' ' ')
				echo RR \$(nslookup sl-rr 2>/dev/null | grep -o '$re\.[0-9]*' | sort | tr '\n' ' ')
				ping -c 2 -W 5 tasks.sl-web >/dev/null 2>&1 && echo PINGTASKS ok || echo PINGTASKS fail
				ping -c 2 -W 5 sl-rr >/dev/null 2>&1 && echo PINGRR ok || echo PINGRR fail
				echo HTTP \$(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 10 sl-rr 80 2>/dev/null | tail -n 1)
			" 2>&1)
			got() { sed -n "s/^$1 //p" <<<"$out" | tr -s ' ' | sed 's/ *$//'; }
			if [[ "$(got TASKS) " == "$web" ]]; then
				pass "3.dns.tasks.e$i" "task on sl-e$i: tasks.sl-web resolves to the $N sl-web tasks ($(got TASKS))"
			else
				fail "3.dns.tasks.e$i" "task on sl-e$i: tasks.sl-web resolves to '$(got TASKS)', want '$web'"
			fi
			if [[ "$(got RR) " == "$rr" ]]; then
				pass "3.dns.rr.e$i" "task on sl-e$i: the dnsrr service name sl-rr resolves to its $N tasks ($(got RR))"
			else
				fail "3.dns.rr.e$i" "task on sl-e$i: sl-rr resolves to '$(got RR)', want '$rr'"
			fi
			if [[ $(got PINGTASKS) == ok && $(got PINGRR) == ok ]]; then
				pass "3.dns.ping.e$i" "task on sl-e$i: ping tasks.sl-web and ping sl-rr answer"
			else
				fail "3.dns.ping.e$i" "task on sl-e$i: ping tasks.sl-web $(got PINGTASKS), ping sl-rr $(got PINGRR)"
			fi
			if [[ $(got HTTP) == sl-e*-rr* ]]; then
				pass "3.dns.http.e$i" "task on sl-e$i: HTTP to sl-rr:80 answered by $(got HTTP | tr -d '\r')"
			else
				fail "3.dns.http.e$i" "task on sl-e$i: HTTP to sl-rr:80 answered '$(got HTTP)'"
			fi
		) &
		jobs+=($!)
	done
	waitall "${jobs[@]}"
}

# vip_report: the VIP of sl-web (VIP mode) cannot work on a remote driver's
# network (docs/swarm-vip.md): shown, never failed.
vip_report() {
	local vip answers line
	vip=$(api 1 /services/sl-web | jq -r '[.Endpoint.VirtualIPs[]?.Addr] | join(" ")')
	answers=$(tsh sl-web 1 "for k in 1 2; do printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 sl-web 80 2>/dev/null | tail -n 1; done" 2>/dev/null | tr -d '\r' | tr '\n' ' ')
	line=$(grep -h -m1 'Unable to find load balancing endpoint' "$RUN"/e*/dockerd.log | head -n 1 | sed 's/^time="[^"]*" //' | cut -c1-200)
	if [[ -n ${answers// /} ]]; then
		info 3.vip "sl-web's VIP $vip answered HTTP: $answers (unexpected for a remote driver)"
	else
		info 3.vip "sl-web's VIP $vip does not answer (expected: swarm gives the load balancer only to the overlay driver, docs/swarm-vip.md); dockerd logs: ${line:-no addLBBackend line}"
	fi
}

# ---------------------------------------------------------------------------
# 4: lifecycle
# ---------------------------------------------------------------------------

# (c) a rolling `docker plugin upgrade` while pings cross between tasks.
phase_upgrade() {
	local all i t
	all=$(seq 1 "$N" | tr '\n' ' ')
	if ! waitall "$PUSHER"; then
		fail 4c.pushed "the upgrade's plugin $PLUGIN2 was not pushed (1.push.upgrade)"
		return 1
	fi
	# shellcheck disable=SC2086
	load_tasks sl-web sl-net $all
	# One ping stream per node to the next, 5 per second, through the upgrades.
	local -a pingers=()
	for i in $all; do
		local j=$((i % N + 1))
		# nsenter itself (not tx, a function: its subshell would take
		# the SIGINT, which background jobs ignore), exec'ing ping.
		nsenter -t "${TASK_PID[sl-web:$i]}" -n -- ping -i 0.2 -W 1 "${TASK_IP[sl-web:$j]}" >"$RUN/upgrade-ping-e$i.txt" 2>&1 &
		pingers+=($!)
	done
	sleep 2
	for i in $all; do
		t=$(now)
		check "4c.disable.e$i" "sl-e$i: docker plugin disable -f $PLUGIN" d "$i" plugin disable -f "$PLUGIN" &&
			check "4c.upgrade.e$i" "sl-e$i: docker plugin upgrade --grant-all-permissions --skip-remote-check $PLUGIN $PLUGIN2" \
				d "$i" plugin upgrade --grant-all-permissions --skip-remote-check "$PLUGIN" "$PLUGIN2" &&
			check "4c.set.e$i" "sl-e$i: docker plugin set $PLUGIN swarm.source=$LIB/e$i/docker/swarm (an upgrade resets mount settings)" \
				d "$i" plugin set "$PLUGIN" "swarm.source=$LIB/e$i/docker/swarm" &&
			check "4c.enable.e$i" "sl-e$i: docker plugin enable $PLUGIN" d "$i" plugin enable "$PLUGIN"
		timing "4c.upgrade.e$i" "sl-e$i: disable + upgrade + enable: $(since "$t") s"
		# Rolling: the next node only when the cluster is whole again.
		# shellcheck disable=SC2086
		if poll 120 2 cluster_ok $all; then
			timing "4c.rejoin.e$i" "sl-e$i back in the vxsec cluster with secret_id $SECRET_ID $(since "$t") s after its upgrade began"
		else
			# shellcheck disable=SC2086
			cluster_report "4c.rejoin.e$i" $all
		fi
	done
	sleep 2
	kill -INT "${pingers[@]}" 2>/dev/null
	waitall "${pingers[@]}"
	local sent got lost total=0 totlost=0 ok=1
	for i in $all; do
		read -r sent got < <(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1 \2/p' "$RUN/upgrade-ping-e$i.txt")
		lost=$((${sent:-0} - ${got:-0}))
		total=$((total + ${sent:-0}))
		totlost=$((totlost + lost))
		info "4c.loss.e$i" "ping from sl-e$i's task to sl-e$((i % N + 1))'s through the $N upgrades: ${sent:-?} sent, ${got:-?} received, $lost lost"
		# At most 1 s of pings lost per stream.
		((${sent:-0} > 0 && lost <= 5)) || ok=0
	done
	if ((ok)); then
		pass 4c.connected "running tasks stayed connected through the rolling upgrade: $totlost of $total pings lost (at most 5 per stream allowed)"
	else
		fail 4c.connected "pings lost through the rolling upgrade: $totlost of $total (more than 5 in a stream, see 4c.loss)"
	fi
	local refs
	refs=$(for i in $all; do api "$i" /plugins | jq -r --arg n "$PLUGIN" '.[] | select(.Name == $n) | .PluginReference'; done | sort -u | tr '\n' ' ')
	check 4c.version "every node runs $PLUGIN2 (PluginReference) and its daemon logs version $V2" \
		eval "[[ '$refs' == '$PLUGIN2 ' ]] && for i in $all; do grep -q 'vxsec daemon serving.*version=$V2' $RUN/e\$i/dockerd.log || exit 1; done"
	# shellcheck disable=SC2086
	mesh 4c.after sl-web $all
	# A failed check above is reported as such; the phase itself completed.
	return 0
}

# (a) the leader's engine dies; the others elect a leader and carry on; it comes
# back.
phase_failover() {
	local all L m t i s1 s2
	all=$(seq 1 "$N" | tr '\n' ' ')
	L=$(leader_of 1) || L=$(leader_of 2)
	local -a surv=()
	for i in $all; do [[ $i == "$L" ]] || surv+=("$i"); done
	s1=${surv[0]} s2=${surv[1]}
	info 4a.leader "the leader is sl-e$L; survivors sl-e$s1 and sl-e$s2"
	local before after
	before=$(api "$s1" /networks/sl-net | jq -c .Options)
	t=$(now)
	kill_engine "$L"
	if poll 120 1 eval "m=\$(leader_of $s1) && [[ \$m != $L ]]"; then
		pass 4a.election "sl-e$s1 and sl-e$s2 elected sl-e$(leader_of "$s1") leader"
		timing 4a.election "engine of sl-e$L killed to a new leader: $(since "$t") s"
	else
		fail 4a.election "no new leader among sl-e$s1/sl-e$s2 within 120 s of killing sl-e$L's engine"
		return 1
	fi
	after=$(api "$s1" /networks/sl-net | jq -c .Options)
	if [[ -n $before && $after == "$before" ]]; then
		pass 4a.vni "sl-net's options on sl-e$s1 unchanged by the failover: $after"
	else
		fail 4a.vni "sl-net's options on sl-e$s1 changed: before $before, after $after"
	fi
	load_tasks sl-web sl-net "$s1" "$s2"
	mesh 4a.survivors sl-web "$s1" "$s2"
	t=$(now)
	check 4a.net2 "sl-e$s1 (new majority): docker network create -d $PLUGIN --opt encrypted --attachable --subnet 10.98.0.0/24 sl-net2" \
		d "$s1" network create -d "$PLUGIN" --opt encrypted --attachable --subnet 10.98.0.0/24 sl-net2
	local o2
	o2=$(api "$s1" /networks/sl-net2 | jq -c .Options)
	if jq -e 'has("vni") and has("encrypted")' <<<"$o2" >/dev/null; then
		pass 4a.net2.options "sl-net2 allocated by the new leader's plugin: $o2"
	else
		fail 4a.net2.options "sl-net2's options $o2: want encrypted and a vni (AllocateNetwork on the new leader)"
	fi
	check 4a.svc2 "docker service create --mode global --endpoint-mode dnsrr --network sl-net2 --name sl-fo" \
		d "$s1" service create --detach --mode global --endpoint-mode dnsrr --name sl-fo --network sl-net2 "$IMAGE" sleep 86400
	if poll 240 2 eval "load_tasks sl-fo sl-net2 $s1 $s2; has_tasks sl-fo $s1 $s2"; then
		timing 4a.svc2 "network + service on the survivors to tasks running: $(since "$t") s"
		mesh 4a.net2.ping sl-fo "$s1" "$s2"
	else
		fail 4a.svc2.running "sl-fo's tasks on sl-e$s1 and sl-e$s2 not running after 240 s"
	fi

	# (d) The engine comes back: first with live-restore, which Docker
	# refuses on a swarm node, then plainly.
	t=$(now)
	write_daemon_json "$L" true
	local mark pid
	mark=$(($(wc -l <"$RUN/e$L/dockerd.log") + 1))
	start_engine "$L"
	pid=$(cat "$RUN/e$L/starter.pid")
	if poll 180 1 eval "! kill -0 $pid 2>/dev/null || engine_up $L"; then
		if ! kill -0 "$pid" 2>/dev/null; then
			local line
			line=$(tail -n +"$mark" "$RUN/e$L/dockerd.log" | grep -m1 'incompatible with swarm mode' | sed 's/^time="[^"]*" //')
			if [[ -n $line ]]; then
				pass 4d.live-restore "sl-e$L started with live-restore: dockerd refuses and exits: $line"
			else
				fail 4d.live-restore "sl-e$L started with live-restore: dockerd exited, not for live-restore: $(tail -n +"$mark" "$RUN/e$L/dockerd.log" | tail -n 3 | tr '\n' ' ')"
			fi
		else
			fail 4d.live-restore "sl-e$L started with live-restore: dockerd runs (swarm: $(api "$L" /info | jq -c '{LiveRestoreEnabled, state: .Swarm.LocalNodeState, error: .Swarm.Error}'))"
			stop_dockerd "$L"
		fi
	else
		fail 4d.live-restore "sl-e$L started with live-restore: dockerd neither answered nor exited within 180 s"
		stop_dockerd "$L"
	fi
	timing 4d.live-restore "the start with live-restore: $(since "$t") s"
	write_daemon_json "$L" false
	t=$(now)
	if kill -0 "$(cat "$RUN/e$L/containerd.pid" 2>/dev/null)" 2>/dev/null; then
		start_dockerd "$L"
	else
		start_engine "$L"
	fi
	if ! wait_engine "$L" 300; then
		fail 4a.rejoin "sl-e$L's engine did not come back after a plain start (log above)"
		return 1
	fi
	if poll 300 2 eval "[[ \$(ready_nodes $s1) == $N ]] && plugin_enabled $L && cluster_ok $all && load_tasks sl-web sl-net $all && load_tasks sl-fo sl-net2 $all && has_tasks sl-web $all && has_tasks sl-fo $all"; then
		pass 4a.rejoin "sl-e$L rejoined after a plain restart: $N nodes ready, plugin enabled, the vxsec cluster whole (secret_id $SECRET_ID), its sl-web and sl-fo tasks running again"
		timing 4a.rejoin "sl-e$L plain start to rejoined with its tasks running: $(since "$t") s"
	else
		fail 4a.rejoin "sl-e$L after its restart: $(ready_nodes "$s1") nodes ready, plugin enabled $(plugin_enabled "$L" && echo yes || echo no), members on sl-e$L [$(alive_members "$L" 2>/dev/null)], sl-web/sl-fo tasks on it: ${TASK_IP[sl-web:$L]:-none}/${TASK_IP[sl-fo:$L]:-none}"
		return 1
	fi
	# shellcheck disable=SC2086
	mesh 4d.restart sl-web $all
	timing 4d.restart "sl-e$L plain start to its new tasks reaching the others: $(since "$t") s"
	# shellcheck disable=SC2086
	mesh 4a.rejoin.fo sl-fo $all
	# A failed check above is reported as such; the phase itself completed.
	return 0
}

# (b) a node drained, demoted, leaving and removed: its peers forget it.
fdb_to() { # S R: node S's VXLAN forwarding entries towards node R's address
	bridge -n "sl-e$1" fdb show 2>/dev/null | grep -c "dst $NET.$2 "
}
forgotten_endpoints() { # R S...
	local r=$1 s
	shift
	for s in "$@"; do
		(($(fdb_to "$s" "$r") == 0)) || return 1
	done
}
forgotten_node() { # R S...: no SA or policy with R's address, R no alive member
	local r=$1 s
	shift
	for s in "$@"; do
		! ip -n "sl-e$s" xfrm state | grep -qw "$NET.$r" || return 1
		! ip -n "sl-e$s" xfrm policy | grep -qw "$NET.$r" || return 1
		vstatus "$s" >/dev/null || return 1
		jq -e --arg a "$NET.$r" '[.Members[]? | select(.Addr == $a and .Status == "alive")] | length == 0' "$RUN/st$s.json" >/dev/null || return 1
	done
}
phase_remove() {
	local all lead r m t i
	all=$(seq 1 "$N" | tr '\n' ' ')
	lead=$(leader_of 1) || lead=$(leader_of 2)
	r=$N
	[[ $r == "$lead" ]] && r=$((N - 1))
	m=$lead
	local -a surv=()
	for i in $all; do [[ $i == "$r" ]] || surv+=("$i"); done
	REMOVED=$r
	info 4b.node "removing sl-e$r (leader sl-e$m); before: sl-e${surv[0]} has $(fdb_to "${surv[0]}" "$r") forwarding entries and $(ip -n "sl-e${surv[0]}" xfrm state | grep -cw "$NET.$r") SAs towards $NET.$r"
	t=$(now)
	check 4b.drain "docker node update --availability drain sl-e$r" d "$m" node update --availability drain "sl-e$r"
	if poll 180 2 forgotten_endpoints "$r" "${surv[@]}"; then
		pass 4b.endpoints "sl-e$r drained: ${surv[*]/#/sl-e} hold no forwarding entry towards $NET.$r ($POLL_TOOK s)"
		timing 4b.endpoints "drain to its endpoints forgotten by the others: $(since "$t") s"
	else
		fail 4b.endpoints "180 s after the drain: forwarding entries towards $NET.$r remain: $(for s in "${surv[@]}"; do printf 'sl-e%s: %s; ' "$s" "$(fdb_to "$s" "$r")"; done)"
	fi
	check 4b.demote "docker node demote sl-e$r" d "$m" node demote "sl-e$r"
	poll 60 1 eval "[[ \$(api $r /info | jq -r .Swarm.ControlAvailable) == false ]]"
	t=$(now)
	check 4b.leave "sl-e$r: docker swarm leave" d "$r" swarm leave || return 1
	if poll 120 2 eval "[[ \$(node_state $m $r) == down ]]"; then
		check 4b.rm "docker node rm sl-e$r (down $POLL_TOOK s after it left)" d "$m" node rm "sl-e$r"
	else
		check 4b.rm "docker node rm --force sl-e$r (not down 120 s after it left: $(node_state "$m" "$r"))" d "$m" node rm --force "sl-e$r"
	fi
	if poll 180 2 forgotten_node "$r" "${surv[@]}"; then
		pass 4b.forgotten "after sl-e$r left the swarm its peers hold no SA or policy with $NET.$r and do not list it as an alive member"
		timing 4b.forgotten "docker swarm leave to sl-e$r's SAs and membership gone on the others: $(since "$t") s"
	else
		local s why=''
		for s in "${surv[@]}"; do
			why+="sl-e$s: $(ip -n "sl-e$s" xfrm state | grep -cw "$NET.$r") SAs, $(ip -n "sl-e$s" xfrm policy | grep -cw "$NET.$r") policies, member status $(jq -r --arg a "$NET.$r" '[.Members[]? | select(.Addr == $a) | .Status] | first // "absent"' "$RUN/st$s.json"); "
		done
		fail 4b.forgotten "180 s after sl-e$r left: $why"
	fi
	if [[ $(api "$m" /nodes | jq length) == $((N - 1)) ]]; then
		pass 4b.nodes "docker node ls on sl-e$m lists $((N - 1)) nodes"
	else
		fail 4b.nodes "docker node ls on sl-e$m lists $(api "$m" /nodes | jq length) nodes, want $((N - 1))"
	fi
	# shellcheck disable=SC2086
	load_tasks sl-web sl-net "${surv[@]}"
	mesh 4b.after sl-web "${surv[@]}"
	# A failed check above is reported as such; the phase itself completed.
	return 0
}

# (e) everything removed: nothing of vxsec left on any node.
phase_cleanup() {
	local all m i t
	all=$(seq 1 "$N" | tr '\n' ' ')
	m=$(leader_of 1) || m=$(leader_of 2)
	t=$(now)
	local svcs
	svcs=$(api "$m" /services | jq -r '.[].Spec.Name' | tr '\n' ' ')
	# shellcheck disable=SC2086
	check 4e.rm.services "docker service rm $svcs" d "$m" service rm $svcs
	gone() {
		local i
		for i in $all; do
			engine_up "$i" || continue
			[[ $(api "$i" /containers/json -G --data-urlencode 'filters={"label":["com.docker.swarm.service.name"]}' | jq length) == 0 ]] || return 1
		done
	}
	poll 180 2 gone || fail 4e.tasks "service tasks still running 180 s after docker service rm"
	local nets
	nets=$(api "$m" /networks | jq -r --arg d "$PLUGIN" '.[] | select(.Driver == $d) | .Name' | tr '\n' ' ')
	# shellcheck disable=SC2086
	check 4e.rm.networks "docker network rm $nets" d "$m" network rm $nets
	# shellcheck disable=SC2086
	if poll 120 2 clean $all; then
		pass 4e.clean "no vxsec-*/vxe-* device, xfrm state or policy, or nft table vxsec on any of the $N nodes (the removed sl-e${REMOVED:-?} included)"
		timing 4e.clean "service rm to nothing left anywhere: $(since "$t") s"
	else
		for i in $all; do
			local l
			l=$(leftovers "$i" | head -n 8 | tr '\n' ';')
			[[ -z $l ]] || fail "4e.clean.e$i" "sl-e$i keeps: $l"
		done
	fi
	# A failed check above is reported as such; the phase itself completed.
	return 0
}

# ---------------------------------------------------------------------------
# 7: the benchmark: service create to full reachability, vxsec against overlay
# ---------------------------------------------------------------------------

# Each task resolves tasks.<service> until it sees all N tasks, then pings
# every other task by address until it answers, then leaves a file named after
# its node in the service's bind-mounted directory. Its mtime is the moment.
# shellcheck disable=SC2016 # expanded in the task
BENCH_TASK='
me=$(ip -4 addr | grep -o "$PFX[0-9]*" | head -n 1)
while :; do
	peers=$(nslookup tasks.$SVC 2>/dev/null | grep -o "$PFX[0-9]*" | grep -vx "$me" | sort -u)
	[ "$(echo "$peers" | grep -c .)" -ge $((WANT - 1)) ] && break
	sleep 0.2
done
for ip in $peers; do
	until ping -c 1 -W 1 $ip >/dev/null 2>&1; do sleep 0.1; done
done
echo $peers >/out/$(hostname)
exec sleep 86400'

bench_one() { # ROUND DRIVER
	local r=$1 drv=$2 m=1 name dflag subnet pfx t0 t1 f i
	name=b$r-$drv
	if [[ $drv == vxsec ]]; then
		dflag=$PLUGIN subnet=10.120.$r.0/24 pfx="10\\.120\\.$r\\."
	else
		dflag=overlay subnet=10.121.$r.0/24 pfx="10\\.121\\.$r\\."
	fi
	mkdir -p "$RUN/bench/$name"
	d "$m" network create -d "$dflag" --opt encrypted --attachable --subnet "$subnet" "$name" >/dev/null || {
		fail "7.$name" "docker network create -d $dflag --opt encrypted $name failed"
		return 1
	}
	t0=$(date +%s.%N)
	d "$m" service create --detach --mode global --endpoint-mode dnsrr --name "$name" --hostname '{{.Node.Hostname}}' \
		--network "$name" --mount "type=bind,source=$RUN/bench/$name,target=/out" \
		--env "SVC=$name" --env "PFX=$pfx" --env "WANT=$N" "$IMAGE" sh -c "$BENCH_TASK" >/dev/null || {
		fail "7.$name" "docker service create on $name failed"
		return 1
	}
	if poll 300 0.2 eval "[[ \$(ls $RUN/bench/$name | grep -c .) -ge $N ]]"; then
		t1=0
		for f in "$RUN/bench/$name"/*; do
			t1=$(awk -v a="$t1" -v b="$(date -r "$f" +%s.%N)" 'BEGIN {print (b > a ? b : a)}')
		done
		local secs
		secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
		printf '%s\t%s\t%s\n' "$r" "$drv" "$secs" >>"$RUN/bench.tsv"
		pass "7.$name" "run $r, $drv (--opt encrypted): service create to all $((N * (N - 1))) ordered pairs reaching each other: $secs s"
	else
		fail "7.$name" "run $r, $drv: not every task reached every other within 300 s ($(ls "$RUN/bench/$name" | tr '\n' ' '))"
	fi
	d "$m" service rm "$name" >/dev/null
	gone() {
		for i in $(seq 1 "$N"); do
			[[ $(api "$i" /containers/json -G --data-urlencode "filters={\"label\":[\"com.docker.swarm.service.name=$name\"]}" | jq length) == 0 ]] || return 1
		done
	}
	poll 120 1 gone
	d "$m" network rm "$name" >/dev/null
	netgone() {
		for i in $(seq 1 "$N"); do
			! api "$i" "/networks/$name" >/dev/null 2>&1 || return 1
		done
	}
	poll 60 1 netgone
	sleep 3
}

median() { sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

phase_bench() {
	local all i r
	all=$(seq 1 "$N" | tr '\n' ' ')
	# shellcheck disable=SC2086
	if poll 180 2 cluster_ok $all; then
		pass 7.cluster "vxsec cluster of $N formed (secret_id $SECRET_ID) $(since "$INSTALLED_AT") s after the installs"
	else
		# shellcheck disable=SC2086
		cluster_report 7.cluster $all
		return 1
	fi
	local -a jobs=()
	for i in $all; do
		d "$i" pull "$IMAGE" >/dev/null &
		jobs+=($!)
	done
	waitall "${jobs[@]}" || {
		fail 7.pull "docker pull $IMAGE failed on a node"
		return 1
	}
	: >"$RUN/bench.tsv"
	for r in $(seq 1 "$RUNS"); do
		if ((r % 2)); then
			bench_one "$r" vxsec
			bench_one "$r" overlay
		else
			bench_one "$r" overlay
			bench_one "$r" vxsec
		fi
	done
	cp "$RUN/bench.tsv" "$LOGS/bench.tsv"
	local mv mo
	mv=$(awk -F'\t' '$2 == "vxsec" {print $3}' "$RUN/bench.tsv" | median)
	mo=$(awk -F'\t' '$2 == "overlay" {print $3}' "$RUN/bench.tsv" | median)
	{
		echo "swarm lab benchmark: docker service create --mode global (3 nodes, --opt encrypted, --endpoint-mode dnsrr)"
		echo "to every task reaching every other task by address (all 6 ordered pairs), $RUNS runs per driver, alternating"
		echo "vxsec   runs: $(awk -F'\t' '$2 == "vxsec" {printf "%s ", $3}' "$RUN/bench.tsv")s  median ${mv:-?} s"
		echo "overlay runs: $(awk -F'\t' '$2 == "overlay" {printf "%s ", $3}' "$RUN/bench.tsv")s  median ${mo:-?} s"
		echo "ratio of the medians vxsec/overlay: $(awk -v a="${mv:-0}" -v b="${mo:-0}" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "?"}')"
	} | tee "$LOGS/bench.txt"
	info 7.result "$(tail -n 3 "$LOGS/bench.txt" | tr '\n' ';')"
}

# ---------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------

# run_phase NAME FUNCTION: a phase, timed; a phase that cannot go on (a step
# later ones need failed) is reported as aborted.
run_phase() {
	local name=$1 t rc
	shift
	t=$(now)
	say "=================== phase $name ==================="
	PHASE=$name
	"$@"
	rc=$?
	printf '%-26s %7.1f s  %s\n' "$name" "$(since "$t")" "$( ((rc == 0)) && echo completed || echo ABORTED)" >>"$PHASEF"
	((rc == 0)) || fail "$name" "phase aborted: a step the rest of it needs failed (see above)"
	return "$rc"
}

finish() {
	local rc=$?
	trap - EXIT
	kill "$WATCHDOG" 2>/dev/null
	if ((HOLD > 0)); then
		say "holding $HOLD s (SWARM_LAB_HOLD)"
		sleep "$HOLD"
	fi
	say "collecting logs into $LOGS"
	local i
	for i in $(seq 1 "$N"); do
		mkdir -p "$LOGS/e$i"
		cp "$RUN/e$i"/*.log "$RUN/e$i/daemon.json" "$LOGS/e$i/" 2>/dev/null
		{
			echo "### ip -d link"
			ip -n "sl-e$i" -d link
			echo "### xfrm state"
			ip -n "sl-e$i" xfrm state
			echo "### xfrm policy"
			ip -n "sl-e$i" xfrm policy
			echo "### nft tables"
			ip netns exec "sl-e$i" nft list tables
			echo "### fdb"
			bridge -n "sl-e$i" fdb show
		} >"$LOGS/e$i/kernel-state.txt" 2>&1
		vstatus "$i" >"$LOGS/e$i/vxsec-status.json" 2>&1
	done
	cp "$RUN/registry.log" "$RUN/push.log" "$RUN"/upgrade-ping-*.txt "$LOGS/" 2>/dev/null
	((PUSHER > 0)) && kill "$PUSHER" 2>/dev/null
	cp "$RESF" "$LOGS/results.txt"
	cp "$PHASEF" "$LOGS/phases.txt"
	local nok nfail
	nok=$(grep -c '^ok ' "$RESF")
	nfail=$(grep -c '^FAIL ' "$RESF")
	echo "=============== swarm lab ($MODE) summary ==============="
	cat "$RESF"
	echo "---------------- phases ----------------"
	cat "$PHASEF"
	echo "========================================================"
	local took
	took=$(since "$T0")
	if ((rc == 0 && nfail == 0 && nok > 0)); then
		echo "SWARM-LAB RESULT: PASS ($MODE: $nok checks passed, $took s in the guest)"
		exit 0
	fi
	echo "SWARM-LAB RESULT: FAIL ($MODE: $nfail check(s) failed, $nok passed, exit $rc, $took s in the guest)"
	grep '^FAIL ' "$RESF" | sed 's/^/  /'
	exit 1
}
trap finish EXIT
# The deadline: a watchdog ends what runs in the foreground (bash runs a trap
# only between commands), then the trap fails the phase and exits, and finish
# collects the logs before the VM's own timeout would lose them.
PHASE=start
out_of_time() {
	trap - TERM
	fail deadline "the lab ran out of time (SWARM_LAB_DEADLINE=$DEADLINE s) in phase '$PHASE'"
	exit 1
}
trap out_of_time TERM
# Engines, the registry and the outsiders run in sessions of their own
# (setsid), so the TERM to the lab's process group spares them for finish.
PGID=$(ps -o pgid= $$ | tr -d ' ')
(
	sleep "$DEADLINE"
	kill -TERM -- "-$PGID"
) </dev/null >/dev/null 2>&1 &
WATCHDOG=$!
PUSHER=0

say "guest starts ($MODE): kernel $(uname -r), $(nproc) cpu(s), $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MB; plugin $V1 (upgrade $V2)"
run_phase "1 swarm" phase_swarm || exit 1
run_phase "1 plugin" phase_plugin || exit 1
if [[ $MODE == bench ]]; then
	run_phase "7 bench" phase_bench
	exit 0
fi
run_phase "2 trust" phase_trust
run_phase "2 outsider+rotation" phase_outsider_rotation
run_phase "3 services" phase_services || exit 1
run_phase "2 outsider result" phase_outsider_check
run_phase "2 after rotation" phase_trust_after_rotation
run_phase "4c upgrade" phase_upgrade
run_phase "4a+4d failover" phase_failover
run_phase "4b remove" phase_remove
run_phase "4e cleanup" phase_cleanup
exit 0
