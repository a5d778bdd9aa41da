#!/usr/bin/env bash
# Manage the Docker engine the vxsec harness uses.
#
#   scripts/engine.sh ensure    use the running engine, or start the harness's own
#   scripts/engine.sh start     start the harness's own dockerd (fails if one answers)
#   scripts/engine.sh stop      stop dockerd and its containers and plugins, only if
#                               the harness started it
#   scripts/engine.sh restart   restart dockerd, only if the harness started it
#   scripts/engine.sh status    print "harness <pid>", "external" or "down"
#                               (exit 0, 0, 1)
#   scripts/engine.sh is-harness  exit 0 if the running engine is the harness's
#   scripts/engine.sh live-restore true|false  switch live-restore of the harness's
#                               engine (swarm mode on Docker 20.10 needs it off)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

cmd=${1:-}
case $cmd in
ensure)
	ensure_engine
	;;
start)
	start_engine
	;;
stop)
	stop_engine
	;;
restart)
	restart_engine
	;;
status)
	if ! engine_answers; then
		echo down
		exit 1
	fi
	if pid=$(harness_engine_pid); then
		echo "harness $pid"
	else
		echo external
	fi
	;;
is-harness)
	engine_answers && engine_started_by_harness
	;;
live-restore)
	set_live_restore "${2:-}"
	;;
*)
	usage
	;;
esac
