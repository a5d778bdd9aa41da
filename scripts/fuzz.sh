#!/usr/bin/env bash
# The fuzz tier (`make fuzz`): every Go fuzz target of the module, each
# fuzzed for FUZZTIME (default 3s), one after the other (a target is fuzzed
# by every core). Targets are found, not listed here, so a new one is run
# without touching this script. A target that fails or cannot run fails the
# tier; the rest still run, and each is reported by name. A failing input
# is left where `go test` writes it, <package>/testdata/fuzz/<target>/: keep
# it as the regression test of the fix. `go test ./...` (the unit tier)
# runs every committed input, without fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
export PATH=/usr/local/go/bin:$PATH
GO=${GO:-go}
command -v "$GO" >/dev/null || die "no Go toolchain on PATH (expected /usr/local/go/bin/go)"
FUZZTIME=${FUZZTIME:-3s}
TAGS=nosystemd

# Packages whose tests declare a fuzz target (cheap to find; `go test -list`
# then names the targets, as the toolchain sees them).
mapfile -t pkgs < <(grep -l --include='*_test.go' -r -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . |
	xargs -r -n1 dirname | sort -u)
((${#pkgs[@]} > 0)) || die "no fuzz targets found: the fuzz tier would prove nothing"

fuzz_one() {
	"$GO" test -tags "$TAGS" -run '^$' -fuzz "^${2}\$" -fuzztime "$FUZZTIME" "$1" 2>&1
}

passed=0
failed=0
declare -a failures=()
start=$SECONDS

# One listing for every package (they build in parallel): each package's
# target names come before its "ok <import path>" line.
listing=$("$GO" test -tags "$TAGS" -list '^Fuzz' "${pkgs[@]}" 2>&1) || true
declare -a targets=()
names=()
while IFS= read -r line; do
	case $line in
	Fuzz*) names+=("$line") ;;
	ok*)
		read -r _ importpath _ <<<"$line"
		for name in "${names[@]}"; do
			targets+=("$importpath $name")
		done
		names=()
		;;
	FAIL*)
		read -r _ importpath _ <<<"$line"
		echo "FAIL $importpath (cannot list its fuzz targets)"
		failed=$((failed + 1))
		failures+=("$importpath")
		names=()
		;;
	esac
done <<<"$listing"
((failed == 0)) || grep -v -E '^(Fuzz|ok)' <<<"$listing" | sed 's/^/    /'
((${#targets[@]} + failed > 0)) || { printf '%s\n' "$listing"; die "go test -list found no fuzz targets in ${pkgs[*]}"; }

for target in "${targets[@]}"; do
	read -r pkg name <<<"$target"
	t0=$SECONDS
	out=$(fuzz_one "$pkg" "$name") && rc=0 || rc=$?
	# Go 1.26's fuzzing coordinator can report the end of -fuzztime
	# itself as a failure, "context deadline exceeded", more often on a
	# loaded machine (go.dev/issue/75804, fixed in Go 1.27). That failure
	# writes no input; a real one always does. Such a run is repeated
	# once, said so, and fails the tier if it fails again.
	if ((rc != 0)) && grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
		echo "RETRY $pkg $name: \"context deadline exceeded\" with no failing input (go.dev/issue/75804)"
		out=$(fuzz_one "$pkg" "$name") && rc=0 || rc=$?
	fi
	if ((rc == 0)); then
		echo "PASS $pkg $name ($((SECONDS - t0)) s)"
		passed=$((passed + 1))
	else
		echo "FAIL $pkg $name (exit $rc, $((SECONDS - t0)) s):"
		# go test's own report: the failure, and where the input went.
		grep -v '^fuzz: elapsed' <<<"$out" | tail -n 40 | sed 's/^/    /'
		failed=$((failed + 1))
		failures+=("$pkg $name")
	fi
done

echo "fuzzed for $FUZZTIME each, $((SECONDS - start)) s in all"
if ((failed > 0)); then
	printf '  failed: %s\n' "${failures[@]}"
fi
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
