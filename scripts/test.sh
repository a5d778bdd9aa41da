#!/usr/bin/env bash
# The README's test command (`make test`) and what CI runs: installs what a
# fresh Debian machine lacks, then runs every tier and reports each one by
# name. A tier that cannot run fails the run; nothing is skipped quietly.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_root
export PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || die "no Go toolchain on PATH (expected /usr/local/go/bin/go)"
ensure_host_packages

declare -a names=() results=()
failed=0
# A tier's function may set TIER_CAUSE to say why it failed, and TIER_NOTE to
# say what its pass needed (the summary shows either).
TIER_CAUSE='' TIER_NOTE=''
tier() {
	local name=$1
	shift
	log "tier $name: $*"
	local start=$SECONDS rc=0
	TIER_CAUSE='' TIER_NOTE=''
	"$@" || rc=$?
	names+=("$name")
	if ((rc == 0)); then
		results+=("PASS ($((SECONDS - start)) s)${TIER_NOTE:+: $TIER_NOTE}")
	else
		results+=("FAIL (exit $rc, $((SECONDS - start)) s)${TIER_CAUSE:+: $TIER_CAUSE}")
		failed=$((failed + 1))
	fi
}

# Each tier is its Makefile target, so that a tier alone runs as CI runs it.
tier static make lint
tier build make build
tier unit make unit
tier fuzz make fuzz
tier integration make integration
tier adversarial make adversarial
tier e2e make e2e

# The kernel lab: Debian's kernel (with ESP and GCM, which this machine's
# lacks) under qemu. Test binaries are built here and run inside: the ESP
# layer alone, then encrypted networks across three lab hosts.
tier kernel-lab make kernel-lab

# The swarm lab (issue 5, docs/swarm.md): a swarm of three Docker engines in one
# kernel-lab VM, the plugin installed from a registry with no setting, and the
# checks of vxsec in a real swarm. SWARM_LAB_SKIP=1 leaves it out: the summary
# says NOT RUN and the run fails, unless SWARM_LAB_ALLOW_SKIP=1 accepts that.
swarm_lab() {
	local rc=0
	scripts/swarm-lab.sh || rc=$?
	if [[ -s build/swarm-lab/attempts ]]; then
		TIER_NOTE="in a second attempt, after: $(tr '\n' ' ' <build/swarm-lab/attempts)"
	fi
	if ((rc == 124)); then
		TIER_CAUSE="timed out (build/swarm-lab/console.log)"
	elif ((rc != 0)); then
		TIER_CAUSE=$(grep -o '^FAIL \[[^]]*\]' build/swarm-lab/logs/results.txt 2>/dev/null | sed 's/^FAIL //' | head -n 6 | tr '\n' ' ')
		TIER_CAUSE="failed checks: ${TIER_CAUSE:-none recorded, see build/swarm-lab/console.log}"
	fi
	if ((rc != 0)) && [[ -n $TIER_NOTE ]]; then
		TIER_CAUSE="$TIER_CAUSE; $TIER_NOTE"
	fi
	return "$rc"
}
notrun=0
if [[ ${SWARM_LAB_SKIP:-} == 1 ]]; then
	names+=(swarm-lab)
	notrun=1
	if [[ ${SWARM_LAB_ALLOW_SKIP:-} == 1 ]]; then
		results+=("NOT RUN (SWARM_LAB_SKIP=1, accepted by SWARM_LAB_ALLOW_SKIP=1: this run proves nothing about swarm)")
		warn "tier swarm-lab NOT RUN (SWARM_LAB_SKIP=1), accepted by SWARM_LAB_ALLOW_SKIP=1"
	else
		results+=("NOT RUN (SWARM_LAB_SKIP=1): counts as a failure; SWARM_LAB_ALLOW_SKIP=1 accepts it")
		failed=$((failed + 1))
		warn "tier swarm-lab NOT RUN (SWARM_LAB_SKIP=1): the run fails unless SWARM_LAB_ALLOW_SKIP=1"
	fi
else
	tier swarm-lab swarm_lab
fi

echo
echo "==================== vxsec test tiers ===================="
for i in "${!names[@]}"; do
	printf '  %-12s %s\n' "${names[$i]}" "${results[$i]}"
done
echo "  NOTE: the kernel-lab tier runs in a VM with Debian's kernel: encrypted networks need ESP and GCM,"
echo "        which this machine's kernel lacks (here they are refused, and the integration tier checks that)."
echo "  NOTE: the swarm-lab tier runs a swarm of three engines in that VM (build/swarm-lab/logs/results.txt)."
echo "==========================================================="
if ((notrun)); then
	# A tier not run counts among the failures unless it was accepted.
	echo "tiers: $((${#names[@]} - failed - (${SWARM_LAB_ALLOW_SKIP:-0} == 1 ? 1 : 0))) passed, $failed failed, $notrun NOT RUN"
else
	echo "tiers: $((${#names[@]} - failed)) passed, $failed failed"
fi
((failed == 0))
