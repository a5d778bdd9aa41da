#!/usr/bin/env bash
# The inside of vxsec's swarm lab (see docs/swarm.md): runs INSIDE the kernel
# lab VM (scripts/kernel-lab.sh), started by scripts/swarm-lab.sh. Not for the
# host: it creates namespaces, starts dockerd's and rewrites nothing outside
# the VM's tmpfs.
#
#   swarm-lab-guest.sh ARTIFACTS_DIR
#
# ARTIFACTS_DIR (read-only, prepared on the host by swarm-lab.sh) holds:
#   vxsec            the static binary for the plugin's rootfs
#   config.json      the plugin's config
#   Dockerfile       the plugin's Dockerfile (FROM scratch)
#   busybox.tar      a busybox rootfs (as scripts/image.sh builds it)
#
# Environment:
#   SWARM_LAB_STEPS     how far to go: 1 (swarm), 2 (+ registry, plugin), 3
#                       (+ encrypted network and a global service). Default 3.
#   SWARM_LAB_ENGINES   number of engines (default 3)
#   SWARM_LAB_HOLD      seconds to sleep at the end before tearing down (default 0)
#   SWARM_LAB_JOIN      1: install the plugin with VXSEC_JOIN=10.77.0.1 on engines
#                       2..N (swarm's node discovery gives a plugin only its own
#                       address, so without it the vxsec cluster does not form)
#
# Logs go to /run/kernel-lab/out/logs (kept by swarm-lab.sh) and a summary of
# every check and timing to the console, ending with
# "SWARM-LAB RESULT: PASS|FAIL (...)".
set -uo pipefail

ART=${1:?usage: swarm-lab-guest.sh ARTIFACTS_DIR}
STEPS=${SWARM_LAB_STEPS:-3}
N=${SWARM_LAB_ENGINES:-3}
HOLD=${SWARM_LAB_HOLD:-0}
OUT=/run/kernel-lab/out
LOGS=$OUT/logs
RUN=/run/sl
LIB=/var/lib/docker # a tmpfs in the lab
NET=10.77.0
BR=sl-br
REG=$NET.1:5000
TAG=lab
PLUGIN=$REG/vxsec:$TAG
IMAGE=$REG/busybox:$TAG
DOCKER=/usr/bin/docker # the 20.10 CLI of docker.io (the PATH may hold a newer one)
export DOCKER_BUILDKIT=0

fails=0
declare -a SUMMARY=()

now() { awk '{print $1}' /proc/uptime; }
T0=$(now)
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
say() { printf 'SWARM-LAB [%6.1f s]: %s\n' "$(now)" "$*"; }
note() {
	SUMMARY+=("$*")
	say "$*"
}
ok() { note "ok   - $*"; }
bad() {
	note "FAIL - $*"
	fails=$((fails + 1))
}
check() { # check DESCRIPTION COMMAND...
	local what=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if ((rc == 0)); then
		ok "$what"
	else
		bad "$what (exit $rc): $(printf '%s' "$out" | tail -n 5 | tr '\n' ' ')"
	fi
	return $rc
}
timing() { note "time - $*"; }

# d I ARGS...: the docker CLI of engine I.
d() {
	local i=$1
	shift
	timeout 300 "$DOCKER" -H "unix://$RUN/e$i/docker.sock" "$@"
}

mkdir -p "$LOGS" "$RUN"

finish() {
	local rc=$?
	trap - EXIT
	if ((HOLD > 0)); then
		say "holding $HOLD s (SWARM_LAB_HOLD)"
		sleep "$HOLD"
	fi
	say "collecting logs into $LOGS"
	local i
	for i in $(seq 1 "$N"); do
		[[ -S $RUN/e$i/docker.sock ]] || continue
		{
			d "$i" network ls 2>&1
			d "$i" ps -a 2>&1
			ip -n "sl-e$i" -d link
			ip -n "sl-e$i" xfrm state
			ip -n "sl-e$i" xfrm policy
		} >"$LOGS/e$i-state.txt" 2>&1
	done
	cp -r "$RUN"/e*/*.log "$LOGS/" 2>/dev/null
	for i in $(seq 1 "$N"); do
		mkdir -p "$LOGS/e$i" && cp "$RUN"/e"$i"/*.log "$LOGS/e$i/" 2>/dev/null
	done
	printf '%s\n' "${SUMMARY[@]}" >"$LOGS/summary.txt"
	echo "=============== swarm lab summary ==============="
	printf '%s\n' "${SUMMARY[@]}"
	echo "================================================="
	if ((rc == 0 && fails == 0)); then
		echo "SWARM-LAB RESULT: PASS (steps 1..$STEPS, $(since "$T0") s in the guest)"
		exit 0
	fi
	echo "SWARM-LAB RESULT: FAIL ($fails check(s) failed, exit $rc)"
	exit 1
}
trap finish EXIT

# ---------------------------------------------------------------------------
# Step 1: N engines in namespaces, swarm of N managers.
# ---------------------------------------------------------------------------

underlay() {
	ip link add $BR type bridge
	ip addr add $NET.254/24 dev $BR
	ip link set $BR up
	local i
	for i in $(seq 1 "$N"); do
		ip netns add "sl-e$i"
		ip link add "sl-v$i" type veth peer name eth0 netns "sl-e$i"
		ip link set "sl-v$i" master $BR up
		ip -n "sl-e$i" addr add "$NET.$i/24" dev eth0
		ip -n "sl-e$i" link set lo up
		ip -n "sl-e$i" link set eth0 up
		# A default route: dockerd (swarm) and vxsec take their advertise
		# address from the default-route interface.
		ip -n "sl-e$i" route add default via $NET.254
	done
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
	# live-restore must be off: 20.10 refuses swarm mode with it.
	cat >"$dir/daemon.json" <<-EOF
		{
		  "live-restore": false,
		  "insecure-registries": ["$REG"],
		  "log-level": "info"
		}
	EOF
	# ip netns exec mounts the namespace's own sysfs on /sys, which hides
	# the cgroup2 mount under it: mount it again ("Devices cgroup isn't
	# mounted" otherwise).
	ip netns exec "sl-e$i" unshare --uts sh -c "
		hostname sl-e$i
		mount -t cgroup2 -o nsdelegate none /sys/fs/cgroup 2>/dev/null || mount -t cgroup2 none /sys/fs/cgroup
		containerd --config '$dir/containerd.toml' >'$dir/containerd.log' 2>&1 &
		n=0
		until [ -S '$dir/containerd.sock' ]; do
			sleep 0.2; n=\$((n + 1))
			[ \$n -lt 600 ] || { echo 'containerd did not start' >&2; exit 1; }
		done
		exec dockerd --containerd '$dir/containerd.sock' \
			--data-root '$LIB/e$i/docker' --exec-root '$dir/docker' \
			--pidfile '$dir/dockerd.pid' -H 'unix://$dir/docker.sock' \
			--config-file '$dir/daemon.json'
	" >"$dir/dockerd.log" 2>&1 </dev/null &
	echo $! >"$dir/starter.pid"
}

wait_engine() { # wait_engine I SECONDS
	local i=$1 t0
	t0=$(now)
	until d "$i" info >/dev/null 2>&1; do
		if ! kill -0 "$(cat "$RUN/e$i/starter.pid")" 2>/dev/null ||
			awk -v a="$t0" -v b="$(now)" -v m="$2" 'BEGIN {exit !(b - a > m)}'; then
			tail -n 15 "$RUN/e$i/dockerd.log" "$RUN/e$i/containerd.log"
			return 1
		fi
		sleep 1
	done
}

step1() {
	say "step 1: underlay $NET.0/24 on bridge $BR, $N engines in namespaces sl-e1..sl-e$N"
	underlay || {
		bad "underlay"
		return 1
	}
	check "underlay: sl-e1 pings sl-e$N ($NET.$N)" ip netns exec sl-e1 ping -c 1 -W 5 "$NET.$N"
	local t i
	t=$(now)
	for i in $(seq 1 "$N"); do
		start_engine "$i"
	done
	for i in $(seq 1 "$N"); do
		if wait_engine "$i" 240; then
			timing "engine sl-e$i answers $(since "$t") s after the $N were started (in parallel)"
		else
			bad "engine sl-e$i exited or did not answer within 240 s (log above)"
			return 1
		fi
	done
	timing "all $N engines ready: $(since "$t") s; server $(d 1 version -f '{{.Server.Version}}')"

	t=$(now)
	check "docker swarm init on sl-e1" d 1 swarm init --advertise-addr "$NET.1" || return 1
	timing "swarm init: $(since "$t") s"
	local token
	token=$(d 1 swarm join-token -q manager) || {
		bad "join-token"
		return 1
	}
	for i in $(seq 2 "$N"); do
		t=$(now)
		check "sl-e$i joins as a manager" d "$i" swarm join --token "$token" --advertise-addr "$NET.$i" "$NET.1:2377" || return 1
		timing "join sl-e$i: $(since "$t") s"
	done
	t=$(now)
	local ready=0
	for _ in $(seq 1 120); do
		ready=$(d 1 node ls --format '{{.Status}} {{.ManagerStatus}}' 2>/dev/null | grep -c '^Ready ')
		((ready == N)) && break
		sleep 1
	done
	d 1 node ls
	if ((ready == N)); then
		ok "docker node ls: $N nodes Ready (after $(since "$t") s more)"
	else
		bad "docker node ls: only $ready of $N nodes Ready"
		return 1
	fi
	timing "swarm of $N managers formed $(since "$T0") s after the guest started (uptime $(now) s)"
}

# ---------------------------------------------------------------------------
# Step 2: registry on sl-e1, plugin pushed from sl-e1, installed everywhere.
# ---------------------------------------------------------------------------

step2() {
	say "step 2: registry at $REG, plugin $PLUGIN"
	local t i
	t=$(now)
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
	ip netns exec sl-e1 docker-registry serve "$RUN/registry.yml" >"$RUN/e1/registry.log" 2>&1 </dev/null &
	for _ in $(seq 1 60); do
		ip netns exec sl-e2 wget -qO- "http://$REG/v2/" >/dev/null 2>&1 && break
		sleep 1
	done
	check "registry answers at http://$REG/v2/ (from sl-e2)" ip netns exec sl-e2 wget -qO- "http://$REG/v2/" || return 1
	timing "registry up: $(since "$t") s"

	# The plugin's rootfs as scripts/plugin.sh builds it: FROM scratch,
	# classic builder, exported.
	t=$(now)
	local ctx=/tmp/sl-plugin-context pdir=/tmp/sl-plugin
	rm -rf "$ctx" "$pdir"
	mkdir -p "$ctx/bin" "$pdir/rootfs"
	cp "$ART/Dockerfile" "$ctx/Dockerfile"
	cp "$ART/vxsec" "$ctx/bin/vxsec"
	check "docker build of the plugin rootfs (FROM scratch) on sl-e1" d 1 build -q -t vxsec-rootfs:build "$ctx" || return 1
	local cid
	cid=$(d 1 create vxsec-rootfs:build) || {
		bad "docker create vxsec-rootfs:build"
		return 1
	}
	d 1 export "$cid" | tar -x -C "$pdir/rootfs"
	d 1 rm -f "$cid" >/dev/null
	cp "$ART/config.json" "$pdir/config.json"
	check "rootfs has /vxsec" test -x "$pdir/rootfs/vxsec" || return 1
	check "docker plugin create $PLUGIN (sl-e1)" d 1 plugin create "$PLUGIN" "$pdir" || return 1
	check "docker plugin push $PLUGIN (sl-e1)" d 1 plugin push "$PLUGIN" || return 1
	timing "plugin built, created and pushed: $(since "$t") s"
	# sl-e1 installs it from the registry too, like every other engine.
	d 1 plugin rm -f "$PLUGIN" >/dev/null

	local secret
	secret=$("$ART/vxsec" secret) || {
		bad "vxsec secret"
		return 1
	}
	local -a join
	for i in $(seq 1 "$N"); do
		t=$(now)
		join=()
		if [[ ${SWARM_LAB_JOIN:-0} == 1 ]] && ((i > 1)); then
			join=("VXSEC_JOIN=$NET.1")
		fi
		check "docker plugin install --grant-all-permissions $PLUGIN on sl-e$i ${join[*]}" \
			d "$i" plugin install --grant-all-permissions "$PLUGIN" \
			VXSEC_SECRET="$secret" VXSEC_LOG_LEVEL=debug "${join[@]}" || return 1
		timing "plugin install + enable on sl-e$i: $(since "$t") s"
	done
	for i in $(seq 1 "$N"); do
		check "plugin enabled on sl-e$i" test "$(d "$i" plugin inspect -f '{{.Enabled}}' "$PLUGIN")" = true
	done
	# The vxsec cluster: meant to be seeded by swarm's node discovery (no
	# VXSEC_JOIN); in fact swarm tells a plugin only its own address.
	t=$(now)
	local members=0
	for _ in $(seq 1 20); do
		members=$("$ART/vxsec" status --socket "$(plugin_sock 1)" 2>/dev/null | grep -o "$NET\.[0-9]*" | sort -u | grep -c .)
		((members >= N)) && break
		sleep 1
	done
	"$ART/vxsec" status --socket "$(plugin_sock 1)" >"$LOGS/vxsec-status-e1.json" 2>&1
	if ((members >= N)); then
		ok "vxsec cluster: sl-e1's status lists $members underlay addresses"
	else
		bad "vxsec cluster: sl-e1's status lists $members underlay addresses, want $N"
	fi
	timing "vxsec cluster formed $(since "$t") s after the installs"

	t=$(now)
	local root=/tmp/sl-busybox
	rm -rf "$root"
	mkdir -p "$root"
	tar -C "$root" -xf "$ART/busybox.tar"
	tar -C "$root" -c . | d 1 import \
		--change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
	check "docker push $IMAGE (sl-e1)" d 1 push "$IMAGE" || return 1
	timing "busybox image imported and pushed: $(since "$t") s"
}

# plugin_sock I: the vxsec socket of engine I's plugin.
plugin_sock() {
	local id
	id=$(d "$1" plugin inspect -f '{{.Id}}' "$PLUGIN" 2>/dev/null) || return 1
	# dockerd 20.10 keeps managed plugins' sockets under /run/docker/plugins/<id>
	# whatever --exec-root says (getPluginExecRoot); the ids differ per engine.
	printf '%s\n' "/run/docker/plugins/$id/vxsec.sock"
}

# ---------------------------------------------------------------------------
# Step 3: an encrypted swarm network and a global service on it.
# ---------------------------------------------------------------------------

# task I: the container id of the service's task on engine I.
task() {
	d "$1" ps -q --filter label=com.docker.swarm.service.name=sl-web | head -n 1
}

step3() {
	say "step 3: docker network create -d $PLUGIN --scope swarm --attachable --opt encrypted sl-net"
	local t i j
	t=$(now)
	check "network create (encrypted, swarm scope) on sl-e1" \
		d 1 network create -d "$PLUGIN" --scope swarm --attachable --opt encrypted \
		--subnet 10.99.0.0/24 sl-net || return 1
	timing "network create: $(since "$t") s"
	d 1 network inspect sl-net >"$LOGS/network-inspect.json" 2>&1
	say "network options as swarm stores them: $(d 1 network inspect -f '{{json .Options}}' sl-net)"
	if grep -q '"vni"' <(d 1 network inspect -f '{{json .Options}}' sl-net); then
		ok "AllocateNetwork was called: the network's options carry the plugin's vni"
	else
		bad "the network's options carry no vni: AllocateNetwork was not called (or returned nothing)"
	fi

	t=$(now)
	check "service create --mode global --network sl-net" \
		d 1 service create --detach --mode global --name sl-web --network sl-net "$IMAGE" \
		sh -c 'mkdir -p /tmp/www && hostname >/tmp/www/index.html && httpd -p 80 -h /tmp/www && exec sleep 86400' || return 1
	local running=0
	for _ in $(seq 1 300); do
		running=$(d 1 service ps sl-web --filter desired-state=running --format '{{.CurrentState}}' 2>/dev/null | grep -c '^Running')
		((running == N)) && break
		sleep 1
	done
	d 1 service ps --no-trunc sl-web
	if ((running == N)); then
		ok "$N tasks running"
	else
		bad "only $running of $N tasks running after 300 s"
		return 1
	fi
	timing "service create to $N tasks running: $(since "$t") s"

	local -a ids ips names
	for i in $(seq 1 "$N"); do
		ids[i]=$(task "$i")
		ips[i]=$(d "$i" inspect -f '{{(index .NetworkSettings.Networks "sl-net").IPAddress}}' "${ids[i]}")
		names[i]=$(d "$i" inspect -f '{{.Config.Hostname}}' "${ids[i]}")
		say "task on sl-e$i: container ${ids[i]:0:12}, hostname ${names[i]}, sl-net address ${ips[i]}"
	done
	local distinct_ips
	distinct_ips=$(printf '%s\n' "${ips[@]}" | sort -u | grep -c .)
	if ((distinct_ips == N)) && [[ ${ips[1]} == 10.99.0.* ]]; then
		ok "tasks have $N distinct addresses in the network's subnet 10.99.0.0/24 (swarm's IPAM)"
	else
		bad "task addresses ${ips[*]}: not $N distinct addresses from 10.99.0.0/24: swarm did not allocate the network (node-local network, each node's own IPAM)"
	fi
	# http I HOST: GET / from the task on engine I with busybox nc.
	http() {
		d "$1" exec "${ids[$1]}" sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 10 $2 80"
	}
	# fetch I HOST: http I HOST answers something.
	fetch() {
		local body
		body=$(http "$1" "$2") && [[ -n $body ]] && printf '%s\n' "$body" | tail -n 1
	}
	# docker exec I CMD...
	x() {
		local e=$1
		shift
		d "$e" exec "${ids[e]}" "$@"
	}
	t=$(now)
	for i in $(seq 1 "$N"); do
		for j in $(seq 1 "$N"); do
			((i == j)) && continue
			check "by IP: task on sl-e$i pings task on sl-e$j (${ips[j]})" x "$i" ping -c 2 -W 10 "${ips[j]}"
		done
	done
	timing "IP pings: $(since "$t") s"
	for i in $(seq 1 "$N"); do
		say "sl-e$i xfrm: $(ip -n "sl-e$i" xfrm state | grep -c '^src') SAs, $(ip -n "sl-e$i" xfrm policy | grep -c '^src') policies"
	done
	local sas
	sas=$(ip -n sl-e1 -s xfrm state 2>/dev/null | grep -c '^src')
	if ((sas > 0)); then
		ok "ESP: sl-e1 has $sas SAs"
	else
		bad "ESP: sl-e1 has no SAs"
	fi
	# On the wire (the underlay bridge): ESP, and no cleartext VXLAN.
	if command -v tcpdump >/dev/null; then
		local cap=/tmp/sl-wire.txt
		tcpdump -l -n -i $BR -c 20 'esp or udp port 4801 or udp port 4800' >"$cap" 2>/dev/null &
		local tp=$!
		sleep 2
		x 1 ping -c 3 -W 5 "${ips[2]}" >/dev/null 2>&1
		sleep 1
		kill "$tp" 2>/dev/null
		wait "$tp" 2>/dev/null
		cp "$cap" "$LOGS/wire.txt"
		check "wire: ESP seen on $BR" grep -q ESP "$cap"
		check "wire: no cleartext VXLAN on $BR" sh -c "! grep -q 'UDP\\|VXLAN' '$cap'"
	fi

	t=$(now)
	for i in $(seq 1 "$N"); do
		check "DNS: task on sl-e$i resolves sl-web (the VIP)" x "$i" nslookup sl-web 127.0.0.11
		check "DNS: task on sl-e$i resolves tasks.sl-web" x "$i" nslookup tasks.sl-web 127.0.0.11
	done
	local j2=2
	check "by name (task DNS): task on sl-e1 pings ${names[j2]} (container hostname)" x 1 ping -c 1 -W 10 "${names[j2]}"
	check "by service name: task on sl-e1 pings sl-web" x 1 ping -c 2 -W 10 sl-web
	check "by tasks.sl-web: task on sl-e1 pings tasks.sl-web" x 1 ping -c 2 -W 10 tasks.sl-web
	timing "DNS checks: $(since "$t") s"

	# The VIP: TCP through IPVS; each task's httpd answers its hostname.
	local vip seen=''
	vip=$(d 1 service inspect -f '{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}' sl-web)
	say "service VIP(s): $vip"
	for _ in $(seq 1 9); do
		seen+="$(http 1 sl-web | tail -n 1 | tr -d '\r\n') "
	done
	say "VIP answers (9 requests from sl-e1's task): $seen"
	local distinct
	distinct=$(printf '%s\n' $seen | sort -u | grep -c .)
	if ((distinct >= 2)); then
		ok "VIP: http://sl-web/ load-balanced over $distinct tasks"
	elif ((distinct == 1)); then
		bad "VIP: http://sl-web/ answered by only one task ($seen)"
	else
		bad "VIP: http://sl-web/ did not answer"
	fi
	for i in $(seq 1 "$N"); do
		check "by IP over TCP: task on sl-e1 fetches http://${ips[i]}/ (nc)" fetch 1 "${ips[i]}"
	done
}

say "guest starts: kernel $(uname -r), $(nproc) cpu(s), $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MB, uptime $(now) s"
step1 || exit 1
((STEPS >= 2)) || exit 0
step2 || exit 1
((STEPS >= 3)) || exit 0
step3 || exit 1
exit 0
