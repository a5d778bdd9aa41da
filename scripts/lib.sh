# shellcheck shell=bash disable=SC2034 # variables here are used by the scripts that source this file
# Helpers shared by vxsec's scripts: package installation and the Docker engine
# the harness uses. Source this file; do not run it.
#
# The engine: if a Docker engine already answers on the default socket, the
# harness uses it and never stops or restarts it. Otherwise it starts its own
# dockerd (from Debian's docker.io) with a separate data root and exec root and
# live-restore on, listening on the default socket so the plain `docker` CLI
# works, and records that it did (a marker file next to its pidfile), so that
# tests know they may restart it and scripts know they may stop it.

if [[ -n "${_VXSEC_LIB_SOURCED:-}" ]]; then
	return 0
fi
_VXSEC_LIB_SOURCED=1

VXSEC_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# VXSEC_ENGINE is the Docker engine the harness starts and tests against:
#   20.10  Debian bookworm's docker.io (the system package, the default);
#   28     Debian sid's docker.io 28.5.x with sid's docker-cli, containerd and
#          tini-static: downloaded with apt from a private sources list and
#          lists directory, unpacked under $VXSEC_SID_PREFIX (dpkg-deb -x) and
#          run with bookworm's runc. No system package is replaced: the engine
#          and its CLI are found first on PATH, which this file sets.
# An engine already running that the harness did not start is used as it is
# unless VXSEC_ENGINE was given (VXSEC_ENGINE_GIVEN).
VXSEC_ENGINE_GIVEN=${VXSEC_ENGINE_GIVEN:-${VXSEC_ENGINE:+1}}
VXSEC_ENGINE=${VXSEC_ENGINE:-20.10}
VXSEC_SID_PREFIX=${VXSEC_SID_PREFIX:-/opt/vxsec/docker-sid}
VXSEC_SID_APT=/var/lib/vxsec/apt-sid
VXSEC_SID_PACKAGES=(docker.io docker-cli containerd tini-static)
VXSEC_E2E_RUN_DIR=/run/vxsec-e2e
case $VXSEC_ENGINE in
20.10)
	VXSEC_E2E_DATA_ROOT=/var/lib/vxsec-e2e/docker
	VXSEC_E2E_EXEC_ROOT=$VXSEC_E2E_RUN_DIR/docker
	;;
28)
	# Its own data root: 28 migrates a data root, and 20.10 could not read
	# it afterwards.
	VXSEC_E2E_DATA_ROOT=/var/lib/vxsec-e2e/docker-28
	VXSEC_E2E_EXEC_ROOT=$VXSEC_E2E_RUN_DIR/docker-28
	case :$PATH: in
	*":$VXSEC_SID_PREFIX/usr/bin:"*) ;;
	*) export PATH=$VXSEC_SID_PREFIX/usr/sbin:$VXSEC_SID_PREFIX/usr/bin:$PATH ;;
	esac
	;;
*)
	printf '==> VXSEC_ENGINE=%s: want 20.10 (Debian bookworm'"'"'s docker.io) or 28 (Debian sid'"'"'s docker.io 28.5.x)\n' "$VXSEC_ENGINE" >&2
	exit 2
	;;
esac
export VXSEC_ENGINE VXSEC_ENGINE_GIVEN
VXSEC_E2E_PIDFILE=$VXSEC_E2E_RUN_DIR/dockerd.pid
VXSEC_E2E_MARKER=$VXSEC_E2E_RUN_DIR/engine-started-by-harness
# live-restore is set in a config file, not by the --live-restore flag, so that
# it can be switched off at run time (SIGHUP) for swarm mode, which 20.10
# refuses to enter while live-restore is on (see bench.sh).
VXSEC_E2E_CONFIG=$VXSEC_E2E_RUN_DIR/daemon.json
VXSEC_E2E_LOG=/var/log/vxsec-e2e-dockerd.log
VXSEC_DOCKER_SOCK=/var/run/docker.sock
VXSEC_ENGINE_TIMEOUT=${VXSEC_ENGINE_TIMEOUT:-60}

# Everything the scripts and the e2e tests run on the host.
VXSEC_HOST_PACKAGES=(docker.io containerd runc tini iptables nftables iproute2
	util-linux busybox-static iputils-ping iperf3 tcpdump procps)

# The docker CLI talks to a 20.10 engine; the classic builder is the one that
# builds FROM scratch offline.
export DOCKER_BUILDKIT=0

log() {
	printf '==> [%s] %s\n' "${0##*/}" "$*" >&2
}

warn() {
	printf '==> [%s] WARNING: %s\n' "${0##*/}" "$*" >&2
}

die() {
	printf '\n==> [%s] ERROR: %s\n\n' "${0##*/}" "$*" >&2
	exit 1
}

require_root() {
	[[ ${EUID} -eq 0 ]] || die "this script must run as root (it installs packages, starts dockerd and changes the host's network); rerun it with sudo"
}

_vxsec_pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# ensure_packages PKG...: install the Debian packages that are missing. Runs
# `apt-get update` at most once per run (also across scripts that call each
# other: the fact is exported), and only when something is missing.
ensure_packages() {
	local missing=() p
	for p in "$@"; do
		_vxsec_pkg_installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		log "packages already installed: $*"
		return 0
	fi
	require_root
	command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and there is no apt-get: this harness supports Debian 12; install them by hand"
	# Package scripts must not start daemons behind the harness's back (docker.io
	# would start a system dockerd): a policy-rc.d that says "no" while we install.
	local policy=/usr/sbin/policy-rc.d policy_added=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		policy_added=1
	fi
	local rc=0
	if [[ ${VXSEC_APT_UPDATED:-0} != 1 ]]; then
		log "apt-get update (missing: ${missing[*]})"
		DEBIAN_FRONTEND=noninteractive apt-get update || rc=$?
		if ((rc == 0)); then
			export VXSEC_APT_UPDATED=1
		fi
	fi
	if ((rc == 0)); then
		log "apt-get install -y ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || rc=$?
	fi
	if ((policy_added)); then
		rm -f "$policy"
	fi
	((rc == 0)) || die "could not install packages: ${missing[*]} (apt-get exit code $rc; see its output above)"
	for p in "${missing[@]}"; do
		_vxsec_pkg_installed "$p" || die "package $p is still not installed after apt-get install"
	done
}

ensure_host_packages() {
	ensure_packages "${VXSEC_HOST_PACKAGES[@]}"
}

# ensure_sid_engine: the 28 engine under $VXSEC_SID_PREFIX, downloaded and
# unpacked unless it is there already. Debian's archive is read through a
# sources list and lists directory of the harness's own, so the system's apt
# state and packages are untouched.
ensure_sid_engine() {
	local prefix=$VXSEC_SID_PREFIX have
	if [[ -x $prefix/usr/sbin/dockerd && -x $prefix/usr/bin/docker && -f $prefix/VERSIONS ]]; then
		have=$("$prefix/usr/sbin/dockerd" --version 2>/dev/null || true)
		if [[ $have == "Docker version 28."* ]]; then
			log "Docker 28 engine already unpacked under $prefix: $(tr '\n' ' ' <"$prefix/VERSIONS")"
			return 0
		fi
		warn "$prefix holds '$have', not Docker 28: fetching it again"
	fi
	require_root
	ensure_packages apt debian-archive-keyring
	local uris
	uris=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n 1)
	uris=${uris:-http://deb.debian.org/debian}
	mkdir -p "$VXSEC_SID_APT/lists/partial" "$VXSEC_SID_APT/debs"
	printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\n' "$uris" >"$VXSEC_SID_APT/sources.list"
	local opts=(-q -o "Dir::Etc::SourceList=$VXSEC_SID_APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$VXSEC_SID_APT/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
		-o APT::Sandbox::User=root)
	log "apt-get update of Debian sid's package lists (private: $VXSEC_SID_APT; the system's apt state is untouched)"
	apt-get "${opts[@]}" update >"$VXSEC_SID_APT/update.log" 2>&1 ||
		{ tail -n 20 "$VXSEC_SID_APT/update.log" >&2; die "apt-get update of Debian sid's lists failed (log above, $VXSEC_SID_APT/update.log)"; }
	rm -f "$VXSEC_SID_APT/debs"/*.deb
	log "apt-get download ${VXSEC_SID_PACKAGES[*]} (Debian sid)"
	(cd "$VXSEC_SID_APT/debs" && apt-get "${opts[@]}" download "${VXSEC_SID_PACKAGES[@]}") >"$VXSEC_SID_APT/download.log" 2>&1 ||
		{ tail -n 20 "$VXSEC_SID_APT/download.log" >&2; die "downloading Debian sid's ${VXSEC_SID_PACKAGES[*]} failed (log above)"; }
	local tmp deb
	tmp=$(mktemp -d "${prefix%/*}/.docker-sid.XXXXXX" 2>/dev/null) || { mkdir -p "${prefix%/*}"; tmp=$(mktemp -d "${prefix%/*}/.docker-sid.XXXXXX"); }
	for deb in "$VXSEC_SID_APT/debs"/*.deb; do
		dpkg-deb -x "$deb" "$tmp" || die "dpkg-deb -x $deb failed"
		printf '%s=%s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$tmp/VERSIONS"
	done
	have=$("$tmp/usr/sbin/dockerd" --version 2>/dev/null || true)
	[[ $have == "Docker version 28."* ]] ||
		die "Debian sid's docker.io is now '$have', not 28.5.x: the harness tests Docker 28 (README, "Docker engines")"
	rm -rf "$prefix"
	mv "$tmp" "$prefix"
	log "Docker 28 engine unpacked under $prefix: $(tr '\n' ' ' <"$prefix/VERSIONS")"
}

# engine_version: the major.minor of the engine that answers ("" if none).
engine_version() {
	docker version -f '{{.Server.Version}}' 2>/dev/null | sed -n 's/^\([0-9]*\.[0-9]*\).*/\1/p'
}

# engine_wanted: does the engine that answers run the VXSEC_ENGINE version?
engine_wanted() {
	local v
	v=$(engine_version)
	[[ $v == "$VXSEC_ENGINE" || $v == "$VXSEC_ENGINE".* ]]
}

# engine_answers: does a Docker engine answer on the default socket?
engine_answers() {
	timeout 15 docker info >/dev/null 2>&1
}

# harness_engine_pid: print the pid of the dockerd the harness started, if it
# is still running; fail otherwise.
harness_engine_pid() {
	[[ -f $VXSEC_E2E_MARKER && -f $VXSEC_E2E_PIDFILE ]] || return 1
	local pid exe
	pid=$(<"$VXSEC_E2E_PIDFILE")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ ${exe##*/} == dockerd* ]] || return 1
	printf '%s\n' "$pid"
}

engine_started_by_harness() {
	harness_engine_pid >/dev/null
}

_vxsec_ensure_cgroups() {
	# On a machine without systemd nothing may have mounted the cgroup
	# filesystems that runc needs.
	if [[ -e /sys/fs/cgroup/cgroup.controllers || -d /sys/fs/cgroup/memory || -d /sys/fs/cgroup/unified ]]; then
		return 0
	fi
	log "no cgroup filesystem under /sys/fs/cgroup: mounting cgroup2 there"
	mkdir -p /sys/fs/cgroup
	mount -t cgroup2 none /sys/fs/cgroup || die "could not mount cgroup2 on /sys/fs/cgroup; dockerd cannot run containers without cgroups"
}

# start_engine: start the harness's own dockerd and wait until it answers.
start_engine() {
	require_root
	if [[ $VXSEC_ENGINE == 28 ]]; then
		ensure_sid_engine
	fi
	command -v dockerd >/dev/null || die "dockerd not found: install the docker.io package (ensure_packages docker.io)"
	if engine_answers; then
		die "a Docker engine already answers on $VXSEC_DOCKER_SOCK; the harness will not start a second one"
	fi
	local other
	if other=$(pidof dockerd); then
		die "dockerd is running (pid $other) but does not answer on $VXSEC_DOCKER_SOCK within 15 s; stop it (or fix it) before running the harness"
	fi
	_vxsec_ensure_cgroups
	mkdir -p "$VXSEC_E2E_DATA_ROOT" "$VXSEC_E2E_EXEC_ROOT" "$(dirname "$VXSEC_E2E_LOG")"
	rm -f "$VXSEC_E2E_MARKER"
	if [[ -S /run/containerd/containerd.sock ]]; then
		log "a system containerd socket exists (/run/containerd/containerd.sock): dockerd will use that containerd"
	else
		log "no system containerd: dockerd will start and supervise its own containerd"
	fi
	# A plugin with a propagated mount (vxsec's) runs with its root's
	# propagation rshared, and runc refuses to pivot_root into it when its
	# data root lies on a private mount (this machine's / has no systemd to
	# make it shared): "pivot_root .: invalid argument". Docker 20.10 makes
	# its data root a shared mount itself; 28 leaves it to the host.
	if ! mountpoint -q "$VXSEC_E2E_DATA_ROOT"; then
		mount --bind "$VXSEC_E2E_DATA_ROOT" "$VXSEC_E2E_DATA_ROOT" || die "could not bind-mount the data root $VXSEC_E2E_DATA_ROOT on itself"
	fi
	mount --make-shared "$VXSEC_E2E_DATA_ROOT" || die "could not make the data root $VXSEC_E2E_DATA_ROOT a shared mount"
	printf '{\n  "live-restore": true\n}\n' >"$VXSEC_E2E_CONFIG"
	log "starting dockerd $(dockerd --version | sed 's/^Docker version //') ($(command -v dockerd)): data root $VXSEC_E2E_DATA_ROOT, exec root $VXSEC_E2E_EXEC_ROOT, live-restore on ($VXSEC_E2E_CONFIG), log $VXSEC_E2E_LOG"
	printf '\n===== %s: vxsec harness starts dockerd =====\n' "$(date -Is)" >>"$VXSEC_E2E_LOG"
	setsid nohup dockerd \
		--data-root "$VXSEC_E2E_DATA_ROOT" \
		--exec-root "$VXSEC_E2E_EXEC_ROOT" \
		--pidfile "$VXSEC_E2E_PIDFILE" \
		--config-file "$VXSEC_E2E_CONFIG" \
		-H "unix://$VXSEC_DOCKER_SOCK" \
		</dev/null >>"$VXSEC_E2E_LOG" 2>&1 &
	local pid=$! waited=0
	while ! engine_answers; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "----- last 40 lines of $VXSEC_E2E_LOG -----" >&2
			tail -n 40 "$VXSEC_E2E_LOG" >&2 || true
			die "dockerd (pid $pid) exited during startup; its log is above and in $VXSEC_E2E_LOG"
		fi
		if ((waited >= VXSEC_ENGINE_TIMEOUT)); then
			echo "----- last 40 lines of $VXSEC_E2E_LOG -----" >&2
			tail -n 40 "$VXSEC_E2E_LOG" >&2 || true
			die "dockerd (pid $pid) did not answer on $VXSEC_DOCKER_SOCK within ${VXSEC_ENGINE_TIMEOUT} s; its log is above and in $VXSEC_E2E_LOG (it is left running for inspection)"
		fi
		sleep 1
		waited=$((waited + 1))
	done
	printf 'pid=%s\nstarted=%s\n' "$pid" "$(date -Is)" >"$VXSEC_E2E_MARKER"
	harness_engine_pid >/dev/null || die "dockerd answers, but its pidfile $VXSEC_E2E_PIDFILE does not name a running dockerd"
	log "dockerd is up (pid $(harness_engine_pid), server $(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
}

# ensure_engine: use the engine that answers on the default socket, or start
# the harness's own.
ensure_engine() {
	command -v docker >/dev/null || die "the docker CLI is not installed: install the docker.io package"
	if engine_answers; then
		local pid
		if pid=$(harness_engine_pid) && ! engine_wanted; then
			log "the harness's dockerd (pid $pid) runs Docker $(engine_version), and VXSEC_ENGINE=$VXSEC_ENGINE: stopping it"
			stop_engine
			start_engine
			return 0
		fi
		if ! engine_wanted && [[ -n $VXSEC_ENGINE_GIVEN ]]; then
			die "the Docker engine on $VXSEC_DOCKER_SOCK runs $(engine_version), not VXSEC_ENGINE=$VXSEC_ENGINE, and the harness did not start it: stop it, or set VXSEC_ENGINE=$(engine_version)"
		fi
		if [[ $VXSEC_ENGINE == 28 ]] && engine_wanted; then
			ensure_sid_engine
		fi
		if pid=$(harness_engine_pid); then
			log "using the harness's dockerd (pid $pid, started earlier by the harness; it may be restarted and stopped by the harness)"
		else
			log "using the Docker engine already running on $VXSEC_DOCKER_SOCK (not started by the harness: it will not be stopped or restarted)"
		fi
		return 0
	fi
	start_engine
}

# stop_engine [live]: stop dockerd, but only if the harness started it.
# Without an argument it is a full stop: live-restore is switched off first, so
# dockerd stops its containers and plugins and leaves no process behind. With
# "live", live-restore stays on: running containers and enabled plugins keep
# running and the next dockerd takes them over (what restart_engine does).
stop_engine() {
	local mode=${1:-full} pid
	if ! pid=$(harness_engine_pid); then
		log "not stopping the Docker engine: the harness did not start it"
		return 0
	fi
	if [[ $mode == full ]]; then
		local running
		running=$(docker ps -q 2>/dev/null | wc -l)
		if [[ $(docker info -f '{{.LiveRestoreEnabled}}' 2>/dev/null) == true ]]; then
			set_live_restore false
		fi
		log "stopping the harness's dockerd (pid $pid) with its $running running container(s) and its plugins"
	else
		log "stopping the harness's dockerd (pid $pid); live-restore keeps containers and plugins running"
	fi
	kill -TERM "$pid" 2>/dev/null || true
	local waited=0
	while kill -0 "$pid" 2>/dev/null; do
		if ((waited >= 120)); then
			die "dockerd (pid $pid) did not exit within 60 s of SIGTERM; see $VXSEC_E2E_LOG"
		fi
		sleep 0.5
		waited=$((waited + 1))
	done
	rm -f "$VXSEC_E2E_MARKER"
	log "dockerd (pid $pid) stopped"
	if [[ $mode == full ]]; then
		_vxsec_reap_shims
	fi
}

# _vxsec_reap_shims: dockerd stops its plugins at shutdown only if it started
# without live-restore (the setting is read once, at start), so after a full
# stop the harness ends what is left of its own containerd's tasks: the shims
# whose -address is a containerd socket under the harness's run directory, and
# their children. Any of its engines': the engine stopped may be the other
# version's (VXSEC_ENGINE=20.10 stopping a Docker 28 the harness started), and
# a plugin left running would hold the ports the next engine's plugin needs.
_vxsec_reap_shims() {
	local p cmd shims=() children=()
	for p in /proc/[0-9]*; do
		cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
		if [[ $cmd == *containerd-shim*" -address $VXSEC_E2E_RUN_DIR/"*"/containerd/containerd.sock"* ]]; then
			shims+=("${p#/proc/}")
		fi
	done
	((${#shims[@]} > 0)) || return 0
	local s c
	for s in "${shims[@]}"; do
		while read -r c; do
			[[ -n $c ]] && children+=("$c")
		done < <(ps -o pid= --ppid "$s" 2>/dev/null | tr -d ' ')
	done
	log "ending what the stopped engine left running: shims ${shims[*]}, their processes ${children[*]:-none}"
	for c in "${children[@]}"; do
		kill -TERM "$c" 2>/dev/null || true
	done
	local i
	for i in $(seq 1 20); do
		local alive=0
		for c in "${children[@]}"; do
			kill -0 "$c" 2>/dev/null && alive=1
		done
		((alive)) || break
		sleep 0.5
	done
	for c in "${children[@]}" "${shims[@]}"; do
		kill -KILL "$c" 2>/dev/null || true
	done
}

# restart_engine: stop and start the harness's dockerd. Refuses for an engine
# the harness did not start.
restart_engine() {
	engine_started_by_harness || die "refusing to restart the Docker engine: the harness did not start it"
	stop_engine live
	start_engine
}

# set_live_restore true|false: switch live-restore of the harness's dockerd at
# run time (config file + SIGHUP) and wait until the engine reports it.
set_live_restore() {
	local want=$1 pid
	[[ $want == true || $want == false ]] || die "set_live_restore: want true or false, got '$want'"
	pid=$(harness_engine_pid) || die "cannot switch live-restore: the harness did not start this Docker engine"
	log "live-restore -> $want (rewriting $VXSEC_E2E_CONFIG, SIGHUP to dockerd $pid)"
	printf '{\n  "live-restore": %s\n}\n' "$want" >"$VXSEC_E2E_CONFIG"
	kill -HUP "$pid"
	local i
	for i in $(seq 1 40); do
		if [[ $(docker info -f '{{.LiveRestoreEnabled}}' 2>/dev/null) == "$want" ]]; then
			return 0
		fi
		sleep 0.25
	done
	die "dockerd did not switch live-restore to $want after SIGHUP; see $VXSEC_E2E_LOG"
}
