#!/usr/bin/env bash
# run.sh — build the libFuzzer harnesses (CMake preset `fuzz`: clang, ASan + UBSan) and run
# each for SECONDS (default 30) on a copy of its seed corpus.
#
#   test/fuzz/run.sh [SECONDS] [HARNESS...]        harnesses: session config json (default: all)
#
# A crash, a leak or a sanitizer report fails the run (exit 1): the input is copied to
# test/fuzz/regressions/<harness>/ (ctest replays that directory; commit it with the fix) and
# the report is left in the work directory printed at the end. Bounded: each harness gets
# -max_total_time=SECONDS plus a hard `timeout` of SECONDS+60.
# Environment: FUZZ_JOBS (default 1) parallel fuzzing processes per harness; FUZZ_KEEP=1
# keeps the work directory; FUZZ_BUILD_DIR (default build/fuzz).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-30}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(session config json)
build=${FUZZ_BUILD_DIR:-$root/build/fuzz}
jobs=${FUZZ_JOBS:-1}

case $seconds in '' | *[!0-9]*) echo "run.sh: SECONDS must be a number, got '$seconds'" >&2; exit 2 ;; esac
command -v clang >/dev/null || { echo "run.sh: clang is missing (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }

if [ "$build" = "$root/build/fuzz" ]; then
  (cd "$root" && cmake --preset fuzz >/dev/null)
else
  cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DPIER_FUZZ=ON \
    -DPIER_BUILD_TESTS=OFF \
    "-DCMAKE_C_FLAGS=-fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer -fno-sanitize-recover=all" >/dev/null
fi
targets=()
for h in "${harnesses[@]}"; do targets+=("fuzz_$h"); done
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/pier-fuzz.XXXXXX")
cleanup() { [ "${FUZZ_KEEP:-0}" = 1 ] || [ "${failed:-0}" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT
failed=0
parallel=()
[ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

for h in "${harnesses[@]}"; do
  corpus="$work/$h/corpus"
  artifacts="$work/$h/artifacts"
  mkdir -p "$corpus" "$artifacts"
  cp "$here/corpus/$h/"* "$corpus/"
  find "$here/regressions/$h" -type f ! -name 'README*' -exec cp {} "$corpus/" \;
  echo "== fuzz_$h for ${seconds}s (corpus: $(find "$corpus" -type f | wc -l) inputs)"
  rc=0
  (cd "$work/$h" && timeout --kill-after=10 $((seconds + 60)) "$build/test/fuzz/fuzz_$h" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -dict="$here/$h.dict" -artifact_prefix="$artifacts/" -print_final_stats=1 \
      -close_fd_mask=1 ${parallel[@]+"${parallel[@]}"} \
      "$corpus" >"$work/$h/log" 2>&1) || rc=$?
  tail -n 15 "$work/$h/log"
  crashes=$(find "$artifacts" -type f | wc -l)
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    echo "!! fuzz_$h failed (exit $rc, $crashes crash input(s)); log: $work/$h/log" >&2
    for f in "$artifacts"/*; do
      [ -f "$f" ] || continue
      dest="$here/regressions/$h/$(basename "$f")"
      cp "$f" "$dest"
      echo "!! saved $dest: replay with $build/test/fuzz/fuzz_$h $dest" >&2
    done
  else
    echo "== fuzz_$h: no crash in ${seconds}s"
  fi
done
if [ "$failed" = 1 ]; then
  echo "fuzzing found problems; work directory kept: $work" >&2
  exit 1
fi
echo "fuzz: ${#harnesses[@]} harness(es), ${seconds}s each, no crash"
