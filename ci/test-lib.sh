# shellcheck shell=bash
# test-lib — what the shell test scripts in ci/ share: PASS/FAIL counting and small helpers.
# Source it: `. "$root/ci/test-lib.sh"`; then `check NAME CMD...` and, at the end,
# `finish NAME` prints "NAME: N passed, M failed" and returns non-zero on any failure.

pass=0
fail=0
check() { # check NAME CMD...: run CMD, count and print PASS/FAIL
  local name=$1
  shift
  if "$@"; then
    pass=$((pass + 1))
    printf 'PASS %s\n' "$name"
  else
    fail=$((fail + 1))
    printf 'FAIL %s\n' "$name"
  fi
}
jq_ok() { jq -e "$1" "$2" >/dev/null 2>&1; } # jq_ok FILTER FILE (one JSON value)
# Log files hold many JSON values: jq 1.6's -e would judge only the last one, so searches
# over logs fold them into one answer with `jq -n 'any(inputs ...)'`.
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
