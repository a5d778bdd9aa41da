#!/usr/bin/env bash
# End-to-end tests with the real Docker engine and the real vxsec managed
# plugin (`make e2e` runs `make build` first).
#
# Installs what is missing, uses the running Docker engine or starts its own
# (scripts/engine.sh), builds the test image (scripts/image.sh), builds and
# enables the plugin (scripts/plugin.sh), then runs the Go tests in e2e/.
# The plugin is left installed; test containers and networks are removed; the
# engine is stopped again only if this script started it.
#
#   E2E_ENGINES  the engines to run on, one after the other (default "20.10 28":
#                Debian bookworm's docker.io and Debian sid's docker.io 28.5.x,
#                see VXSEC_ENGINE in lib.sh); each run starts the harness's own
#                engine of that version. With an engine running that the harness
#                did not start, the tests run once, on it, and say so.
#   E2E_RUN      go test -run pattern (default: all)
#   E2E_TIMEOUT  go test -timeout (default 20m)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
cd "$VXSEC_REPO_ROOT"

if [[ -z ${VXSEC_E2E_ONE:-} ]]; then
	if engine_answers && ! engine_started_by_harness; then
		warn "a Docker engine the harness did not start answers ($(engine_version)): the e2e tests run on it ONLY, not on ${E2E_ENGINES:-20.10 28}"
		VXSEC_E2E_ONE=1 VXSEC_ENGINE_GIVEN='' exec "$0" "$@"
	fi
	declare -a summary=()
	failed=0
	for engine in ${E2E_ENGINES:-20.10 28}; do
		log "===== e2e on Docker $engine ====="
		rc=0
		VXSEC_E2E_ONE=1 VXSEC_ENGINE=$engine VXSEC_ENGINE_GIVEN=1 "$0" "$@" || rc=$?
		if ((rc == 0)); then
			summary+=("Docker $engine: PASS ($(sed -n 's/.*top-level tests: //p' "build/e2e-$engine.summary" 2>/dev/null))")
		else
			summary+=("Docker $engine: FAIL (exit $rc; build/e2e-$engine.log)")
			failed=$((failed + 1))
		fi
	done
	log "e2e summary:"
	printf '    %s\n' "${summary[@]}" >&2
	((failed == 0)) || die "e2e failed on $failed engine(s)"
	exit 0
fi
command -v go >/dev/null || die "go is not installed (the tests are Go tests): install Go $(sed -n 's/^go //p' go.mod) or newer"
[[ -x bin/vxsec ]] || die "bin/vxsec does not exist: run 'make e2e' (which builds it) or 'make build' first"

ensure_host_packages

engine_was_running=0
if engine_answers; then
	engine_was_running=1
fi
ensure_engine
started_here=0
if ((engine_was_running == 0)) && engine_started_by_harness; then
	started_here=1
fi

finish() {
	local rc=$?
	trap - EXIT
	if ((rc != 0)); then
		local id
		if id=$(docker plugin inspect -f '{{.Id}}' vxsec 2>/dev/null) && engine_started_by_harness; then
			mkdir -p build
			grep -F "plugin=$id" "$VXSEC_E2E_LOG" >build/e2e-plugin.log 2>/dev/null || true
			echo "----- the plugin's last 40 log lines (all of them: build/e2e-plugin.log; dockerd: $VXSEC_E2E_LOG) -----" >&2
			tail -n 40 build/e2e-plugin.log >&2 || true
			echo "-----" >&2
		else
			log "the plugin's output is in the log of the Docker engine (lines with plugin=<plugin id>)"
		fi
	fi
	log "removing e2e leftovers (containers and networks named e2e-<run>-*)"
	local ids
	ids=$(docker ps -aq --filter 'name=^/?e2e-[0-9a-f]{6}-' 2>/dev/null || true)
	if [[ -n $ids ]]; then
		# shellcheck disable=SC2086 # word splitting of ids is intended
		docker rm -f $ids >/dev/null || warn "could not remove containers: $ids"
	fi
	ids=$(docker network ls -q --filter 'name=^e2e-[0-9a-f]{6}-' 2>/dev/null || true)
	if [[ -n $ids ]]; then
		# shellcheck disable=SC2086
		docker network rm $ids >/dev/null || warn "could not remove networks: $ids"
	fi
	if ((started_here)); then
		stop_engine
	else
		log "leaving the Docker engine running (this script did not start it)"
	fi
	if ((rc == 0)); then
		log "E2E PASSED"
	else
		log "E2E FAILED (exit code $rc)"
	fi
	exit "$rc"
}
trap finish EXIT

"$VXSEC_REPO_ROOT/scripts/image.sh"
"$VXSEC_REPO_ROOT/scripts/plugin.sh"

log "go test -tags 'nosystemd e2e' -count=1 -v -timeout ${E2E_TIMEOUT:-20m} ./test/e2e/ ${E2E_RUN:+-run $E2E_RUN}"
go_args=(test -tags 'nosystemd e2e' -count=1 -v -timeout "${E2E_TIMEOUT:-20m}")
if [[ -n ${E2E_RUN:-} ]]; then
	go_args+=(-run "$E2E_RUN")
fi
mkdir -p build
tag=${VXSEC_ENGINE_GIVEN:+$VXSEC_ENGINE}
tag=${tag:-$(engine_version)}
elog=build/e2e-${tag:-unknown}.log
log "engine: Docker $(docker version -f '{{.Server.Version}}' 2>/dev/null), CLI $(docker version -f '{{.Client.Version}}' 2>/dev/null) ($(command -v docker)); log $elog"
set +e
go "${go_args[@]}" ./test/e2e/ 2>&1 | tee "$elog"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -c -- '^--- PASS' "$elog" || true)
failed=$(grep -c -- '^--- FAIL' "$elog" || true)
# Subtests count too: a skipped subtest is a part of the proof that did not run.
skipped=$(grep -cE -- '^ *--- SKIP' "$elog" || true)
log "top-level tests: $passed passed, $failed failed; skipped tests and subtests: $skipped (full log: $elog)" 2>&1 | tee "build/e2e-${tag:-unknown}.summary" >&2
if ((rc != 0)); then
	die "e2e tests failed (go test exit code $rc); see the failures above (full log: $elog)"
fi
if ((skipped > 0)); then
	grep -E -A1 -- '^ *--- SKIP' "$elog" >&2
	if [[ ${E2E_ALLOW_SKIP:-} != 1 ]]; then
		die "SKIPPED: $skipped e2e test(s) did not run (above); a skip is not a pass. E2E_ALLOW_SKIP=1 accepts it on a machine whose engine the harness may not restart"
	fi
	log "WARNING: $skipped e2e test(s) SKIPPED and accepted by E2E_ALLOW_SKIP=1: this run proves less"
fi
