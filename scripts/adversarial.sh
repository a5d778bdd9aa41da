#!/usr/bin/env bash
# The adversarial tier (`make adversarial`): every attack test, TestAttack*,
# of the module. Each is an attacker's attempt, the count that proves it
# failed and a positive control that the attacker is otherwise a working
# member (docs/threat-model.md). In-process attacks run as they are; the
# ones on daemons in network namespaces run with the integration tag, as
# root. Attacks are found, not listed here: a new one runs without touching
# this script, and the tier fails unless every one defined passed (a test
# that did not run counts as a failure, never as a pass).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_root
export PATH=/usr/local/go/bin:$PATH
GO=${GO:-go}
out=build/adversarial
mkdir -p "$out"

defined() { # the attacks defined in files of these build tags
	grep -rhoE --include='*_test.go' '^func TestAttack[A-Za-z0-9_]*' "$@" | sed 's/^func //' | sort -u
}
mapfile -t inproc < <(grep -rlE --include='*_test.go' '^func TestAttack' . | grep -v '^./test/' | xargs -r -n1 dirname | sort -u)
mapfile -t want < <(defined --exclude-dir=test . ; defined test/integration)
((${#want[@]} > 0)) || die "no attack tests found: the adversarial tier would prove nothing"

rc=0
log "in-process attacks: ${inproc[*]}"
"$GO" test -tags nosystemd -count=1 -v -run '^TestAttack' "${inproc[@]}" >"$out/inproc.log" 2>&1 || rc=1
log "attacks on daemons in network namespaces: ./test/integration"
"$GO" test -tags 'nosystemd integration' -count=1 -p 1 -v -timeout 15m -run '^TestAttack' ./test/integration/ >"$out/integration.log" 2>&1 || rc=1

echo "==================== vxsec attacks ===================="
missing=0
for name in "${want[@]}"; do
	if grep -qE "^--- PASS: ${name} " "$out"/*.log; then
		printf '  PASS  %s\n' "$name"
	elif grep -qE "^--- FAIL: ${name} " "$out"/*.log; then
		printf '  FAIL  %s\n' "$name"
		missing=$((missing + 1))
	else
		printf '  NOT RUN  %s\n' "$name"
		missing=$((missing + 1))
	fi
done
# What each attack observed: its t.Log lines (counts, refusals, controls).
grep -hE '^\s+[a-z_]+_test\.go:[0-9]+: ' "$out"/*.log | sed 's/^\s*/    /' | grep -iE 'refus|control|lost|drop|reached|takeover|held|accepted|forg|replay' | head -80 || true
echo "attacks: $((${#want[@]} - missing)) of ${#want[@]} passed (logs: $out/)"
if ((missing > 0 || rc != 0)); then
	tail -50 "$out"/*.log >&2
	die "the adversarial tier failed: ${missing} attack(s) did not pass"
fi
