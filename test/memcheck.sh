#!/usr/bin/env bash
# memcheck.sh — the core integration tests with pier running under valgrind memcheck, and the
# fuzz replay drivers over their corpora; fails unless every pier process valgrind watched
# reports 0 errors and 0 bytes definitely lost.
#
#   test/memcheck.sh                    (make memcheck: builds build/default first)
#
# Environment:
#   PIER_BUILD_DIR   build tree with pier and the replay drivers (default build/default); must
#                    be a build without sanitizers (valgrind and ASan do not mix)
#   MEMCHECK_TESTS   integration test files to run (default: core cli ops hostile limits)
#   MEMCHECK_KEEP=1  keep the valgrind logs
# Bounded: each test file gets `timeout 600`. Takes about 3 minutes on 2 cores.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${PIER_BUILD_DIR:-$root/build/default}
bin="$build/pier"
tests=${MEMCHECK_TESTS:-"core cli ops hostile limits"}

command -v valgrind >/dev/null || { echo "memcheck: valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
[ -x "$bin" ] || { echo "memcheck: $bin not found: build first (make build)" >&2; exit 2; }
if grep -q __asan_init "$bin"; then
  echo "memcheck: $bin is built with AddressSanitizer; use a plain build" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/pier-memcheck.XXXXXX")
cleanup() { [ "${MEMCHECK_KEEP:-0}" = 1 ] || [ "${failed:-0}" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT
failed=0

vg=(valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite
    --errors-for-leak-kinds=definite --track-origins=yes --num-callers=30)

# The integration harness starts $PIER_BIN: point it at a wrapper that runs pier under
# valgrind, one log per process (the CLI tests start many).
cat >"$work/pier" <<EOF
#!/bin/sh
exec ${vg[*]} --log-file=$work/vg.pier.%p.log "$bin" "\$@"
EOF
chmod +x "$work/pier"

for t in $tests; do
  script="$root/test/integration/test_$t.py"
  [ -f "$script" ] || { echo "memcheck: no $script" >&2; failed=1; continue; }
  echo "== integration.$t under valgrind"
  if ! PIER_BIN="$work/pier" PIER_SOURCE_DIR="$root" PIER_TEST_INSTRUMENTED=1 \
      timeout --kill-after=10 600 python3 "$script" >"$work/$t.out" 2>&1; then
    echo "!! integration.$t failed under valgrind:" >&2
    tail -n 30 "$work/$t.out" >&2
    failed=1
  fi
  tail -n 1 "$work/$t.out"
done

# The whole HTTP pipeline and the config loader over every seed and saved crash input.
for h in session config json; do
  replay=$(find "$build" -name "fuzz_${h}_replay" -type f -perm -u+x | head -n 1)
  [ -n "$replay" ] || continue
  echo "== fuzz_${h}_replay under valgrind"
  timeout --kill-after=10 600 "${vg[@]}" --log-file="$work/vg.replay-$h.%p.log" \
    "$replay" "$root/test/fuzz/corpus/$h" "$root/test/fuzz/regressions/$h" \
    "$root/test/fuzz/replay-only/$h" >/dev/null 2>&1 || {
    echo "!! fuzz_${h}_replay failed under valgrind" >&2
    failed=1
  }
done

logs=$(find "$work" -name 'vg.*.log' | wc -l)
errors=0
lost=0
for f in "$work"/vg.*.log; do
  [ -f "$f" ] || continue
  e=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$f" | tr -d , | tail -n 1)
  l=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$f" | tr -d , | tail -n 1)
  if [ -z "$e" ]; then # SIGKILLed (a test's timeout ran out, or the harness gave up waiting)
    echo "!! $f has no error summary (killed before valgrind could write it):" \
      "$(sed -n 's/^==[0-9]*== Command: //p' "$f" | head -n 1)" >&2
    failed=1
    continue
  fi
  if [ "$e" != 0 ] || [ "${l:-0}" != 0 ]; then
    echo "!! $f: $e errors, ${l:-0} bytes definitely lost" >&2
    sed -n '1,80p' "$f" >&2
    failed=1
  fi
  errors=$((errors + e))
  lost=$((lost + ${l:-0}))
done
if [ "$logs" -eq 0 ]; then
  echo "memcheck: valgrind wrote no log: nothing was checked" >&2
  failed=1
fi
echo "memcheck: $logs processes under valgrind: $errors errors, $lost bytes definitely lost"
if [ "$failed" = 1 ]; then
  echo "memcheck: FAILED; logs kept in $work" >&2
  exit 1
fi
