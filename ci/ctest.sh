#!/usr/bin/env bash
# Run one ctest preset and fail when a test was skipped, not only when one failed: a test
# whose tool is missing exits 77 (SKIP_RETURN_CODE) and ctest reports it Skipped, which
# ctest itself counts as a success. `make test` installs every tool the tests use, so on a
# machine it prepared, a skip means a missing install step.
#   ci/ctest.sh PRESET [ctest args …]
set -uo pipefail
preset=${1:?usage: ci/ctest.sh PRESET [ctest args …]}
shift
log=$(mktemp "${TMPDIR:-/tmp}/pier-ctest.XXXXXX")
trap 'rm -f "$log"' EXIT
ctest --preset "$preset" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# ctest lists them under "The following tests did not run:" as "  N - name (Skipped)"
skipped=$(grep -cE '^[[:space:]]*[0-9]+ - .* \(Skipped\)$' "$log")
if [ "$skipped" -gt 0 ]; then
  echo "ctest ($preset): $skipped test(s) skipped; every test must run:" >&2
  grep -E '^[[:space:]]*[0-9]+ - .* \(Skipped\)$' "$log" >&2
  [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
