#!/usr/bin/env bash
# measure-resources.sh — the figures behind the Deployment's requests and limits.
#
# Starts pier with config/pier/prod.yaml (and the Deployment's PIER_SHUTDOWN_GRACE_MS) on
# 127.0.0.1 and an ephemeral port, then drives it with wrk through a few bounded loads,
# sampling VmRSS from /proc/PID/status every 0.2 s and pier's CPU time from /proc/PID/stat.
# Prints one line per load: requests/s, CPU cores used, CPU-seconds per 1000 requests,
# and peak RSS. Not a pass/fail test; see docs/kubernetes.md#requests-and-limits for how the numbers were used.
#
# Usage: ci/k8s/measure-resources.sh [SECONDS_PER_LOAD]   (default 15; needs wrk, curl)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pier_bin="${PIER_BIN:-$root/build/default/pier}"
secs="${1:-15}"
for tool in wrk curl; do
  command -v "$tool" >/dev/null || {
    echo "measure-resources: $tool is not installed" >&2
    exit 1
  }
done
[ -x "$pier_bin" ] || {
  echo "measure-resources: no pier binary at $pier_bin" >&2
  exit 1
}

tmp="$(mktemp -d "${TMPDIR:-/tmp}/pier-measure.XXXXXX")"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# The access log goes through a pipe, as it does to the container runtime.
PIER_SHUTDOWN_GRACE_MS=5000 "$pier_bin" --config "$root/config/pier/prod.yaml" \
  --set listen.host=127.0.0.1 --set listen.port=0 > >(cat >"$tmp/pier.log") 2>"$tmp/pier.err" &
pid=$!
port=""
for _ in $(seq 1 50); do
  port="$(grep -o '"msg":"listening".*"port":[0-9]*' "$tmp/pier.log" 2>/dev/null | grep -o '"port":[0-9]*' | cut -d: -f2 || true)"
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || {
  echo "measure-resources: pier did not start" >&2
  cat "$tmp/pier.err" >&2
  exit 1
}
prefix="$(grep -o '"prefix":"[^"]*"' "$tmp/pier.log" | head -n 1 | cut -d'"' -f4)"
base="http://127.0.0.1:$port$prefix"
ticks="$(getconf CLK_TCK)"

rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

echo "pier $("$pier_bin" --version 2>/dev/null | head -n 1), pid $pid, port $port, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
sleep 1
c0="$(cpu_ticks)"
sleep 5
echo "idle: RSS $(rss_kb) kB, CPU $(($(cpu_ticks) - c0)) ticks in 5 s"

load() { # load NAME WRK-ARGS...
  local name="$1" c0 c1 t0 t1 max=0 r w rps out
  shift
  out="$tmp/wrk-$(printf '%s' "$name" | tr -c 'a-zA-Z0-9' _).txt"
  c0="$(cpu_ticks)"
  t0="$(date +%s.%N)"
  timeout $((secs + 30)) wrk "$@" >"$out" 2>&1 &
  w=$!
  while kill -0 "$w" 2>/dev/null; do
    r="$(rss_kb)"
    [ "$r" -gt "$max" ] && max="$r"
    sleep 0.2
  done
  wait "$w" || true
  c1="$(cpu_ticks)"
  t1="$(date +%s.%N)"
  rps="$(awk '/^Requests\/sec/{print $2}' "$out")"
  awk -v n="$name" -v rps="${rps:-0}" -v c="$((c1 - c0))" -v hz="$ticks" -v t0="$t0" -v t1="$t1" -v max="$max" \
    'BEGIN { cores = c / hz / (t1 - t0);
             printf "%-28s %9.0f req/s  %5.2f cores  %6.3f CPU-s/1000 req  peak RSS %6.1f MiB\n",
                    n, rps, cores, (rps > 0 ? cores / rps * 1000 : 0), max / 1024 }'
}

printf '{"data":"%s"}' "$(head -c 65536 /dev/zero | tr '\0' x)" >"$tmp/64k.json"
printf '{"data":"%s"}' "$(head -c 1048000 /dev/zero | tr '\0' x)" >"$tmp/1m.json"
for size in 64k 1m; do
  cat >"$tmp/post-$size.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$tmp/$size.json", "rb"); wrk.body = f:read("*a"); f:close()
EOF
done

load "GET /health, 100 conns" -t2 -c100 -d"${secs}s" "$base/health"
load "GET /, 1000 conns" -t2 -c1000 -d"${secs}s" "$base/"
load "GET /metrics, 50 conns" -t2 -c50 -d"${secs}s" "$base/metrics"
load "POST /echo 64 KiB, 100 conns" -t2 -c100 -d"${secs}s" -s "$tmp/post-64k.lua" "$base/echo"
load "POST /echo 1 MiB, 200 conns" -t2 -c200 -d"${secs}s" --timeout 10s -s "$tmp/post-1m.lua" "$base/echo"
echo "after the loads: RSS $(rss_kb) kB, peak (VmHWM) $(awk '/^VmHWM/{print $2}' "/proc/$pid/status") kB"
