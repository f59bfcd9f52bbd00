#!/usr/bin/env bash
# test/bench/run.sh — pier's health endpoint against nginx `return 200`, on this machine.
#
# What it measures, all on 127.0.0.1 (see docs/performance.md for the method and results):
#   1. pier (config/pier/prod.yaml, access log on, then off) and nginx (`return 200` with the same
#      body, Content-Type and path, the same worker count, access log on/off to match) run
#      alternately, A B A B, for BENCH_ROUNDS rounds. Each start is timed from exec to the
#      first 2xx; each server then gets `wrk -t1 -d${BENCH_DURATION}s --latency` at 64 and at
#      1000 connections. Per run: req/s, p50/p99, the server's CPU time (utime+stime from
#      /proc/PID/stat, every process of the server) divided by the requests wrk counted, RSS
#      idle and after the 1000-connection run. pier with `workers: auto` runs too.
#   2. nginx as a reverse proxy in front of pier against nginx answering alone; the proxy
#      to pier over TCP loopback and over a Unix socket (listen.unix), alternated per round.
#      The floor (test/bench/floor.c: one epoll loop, one read and one write of pier's own
#      answer per request, no parsing) runs in the same alternation: CPU per request against it
#      is what pier's parsing, routing and bookkeeping cost.
#   3. Instructions per request under callgrind: (Ir(N+1000) - Ir(1000)) / N, with N
#      keep-alive GETs over 1 and over 8 connections (test/bench/kaclient.c), pier and nginx
#      (`master_process off; daemon off;`), access log off and on, alternated, per round.
#   3b. (part post) The same for pier alone (log off, 1 connection) answering POST /echo with a
#      38-byte JSON body, chunked (two chunks and the last one) and with Content-Length: what
#      reading a body costs, and what chunked framing (llhttp's walk, src/chunked.c) adds. And
#      llhttp alone on those bodies (test/bench/llhttp_cost.c, built from node-llhttp's sources
#      as third_party/llhttp builds them): the announcing head, the chunked body from a copied
#      state, and a Content-Length body behind a head of its own.
#   4. Bytes per idle keep-alive connection: the least-squares slope of the server's RSS while
#      10,000 connections are opened, each answered once and then left idle (pier, nginx).
# It prints a table of medians, the ratios and the issue's targets, and writes it, with every
# raw figure, to test/bench/results/. It never fails on a figure; it fails (exit 1, naming
# what) when a measurement could not be taken.
#
# Environment:
#   PIER_BIN         the pier binary (default build/default/pier; `make bench` builds it)
#   BENCH_SMOKE=1    a short run that only proves the benchmark works (CI): 1 round of 1 s
#                    at 64 connections, callgrind over 200 requests, pier and nginx log off,
#                    idle slope over 1,000 connections
#   BENCH_ROUNDS     rounds of alternation (default 3)
#   BENCH_DURATION   seconds per wrk run (default 5)
#   BENCH_CONNS      wrk connection counts (default "64 1000")
#   BENCH_SERVERS    which servers of part 1 to run (default: all of them, see SERVERS below)
#   BENCH_PARTS      which parts to run (default "wrk proxy callgrind post idle")
#   BENCH_CG_CONNS   connection counts of part 3 (default "1 8")
#   BENCH_IDLE_N     idle connections of part 4 (default 10000, in 10 steps)
#   BENCH_WRK_HEADER an extra header for wrk, e.g. "Connection: close" (connection churn)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PIER_BIN=${PIER_BIN:-$ROOT/build/default/pier}
SMOKE=${BENCH_SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    ROUNDS=${BENCH_ROUNDS:-1}
    DURATION=${BENCH_DURATION:-1}
    CG_N=${BENCH_CALLGRIND_N:-200}
    CG_BASE=100
    CONNS=${BENCH_CONNS:-64}
    IDLE_N=${BENCH_IDLE_N:-1000}
else
    ROUNDS=${BENCH_ROUNDS:-3}
    DURATION=${BENCH_DURATION:-5}
    CG_N=${BENCH_CALLGRIND_N:-10000}
    CG_BASE=1000
    CONNS=${BENCH_CONNS:-64 1000}
    IDLE_N=${BENCH_IDLE_N:-10000}
fi
CG_CONNS=${BENCH_CG_CONNS:-1 8}
SERVERS=${BENCH_SERVERS:-pier-on nginx-on pier-off nginx-off floor pier-auto}
PARTS=${BENCH_PARTS:-wrk proxy callgrind post idle}
WRK_HEADER=${BENCH_WRK_HEADER:-}
PREFIX=/prod
HEALTH=$PREFIX/health
CLK_TCK=$(getconf CLK_TCK)

log() { printf 'bench: %s\n' "$*" >&2; }
FAILURES=()
fail() { # a measurement that could not be taken: said now, and again at the end (exit 1)
    FAILURES+=("$*")
    log "FAILED: $*"
}

# ---- tools --------------------------------------------------------------------------------

if [ ! -x "$PIER_BIN" ]; then
    log "no pier binary at $PIER_BIN (run 'make build', or set PIER_BIN)"
    exit 1
fi
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
case " $PARTS " in *" callgrind "* | *" post "*) command -v valgrind >/dev/null 2>&1 || need+=(valgrind) ;; esac
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    "$ROOT/ci/install-deps.sh" "${need[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

TMP=$(mktemp -d /tmp/pier-bench.XXXXXX)
PIDS=()

stop_pid() { # stop one server we started: TERM, then KILL after 3 s
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KACLIENT=$TMP/kaclient
FLOOR=$TMP/floor
cc -O2 -Wall -Wextra -o "$KACLIENT" "$ROOT/test/bench/kaclient.c"
cc -O2 -Wall -Wextra -o "$FLOOR" "$ROOT/test/bench/floor.c"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# a loopback port no socket uses, below the ephemeral range (wrk's own ports live there)
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
    local p span=$((EPHEMERAL_LOW - 10000))
    [ "$span" -gt 1000 ] || span=1000
    for _ in $(seq 1 50); do
        p=$((10000 + RANDOM % span))
        if ! ss -Htan "sport = :$p" 2>/dev/null | grep -q .; then
            echo "$p"
            return
        fi
    done
    echo 0
}

# ---- the reference body: the bytes pier answers (uptime 0), so nginx sends the same size ---
body_port=$(free_port)
"$PIER_BIN" --config "$ROOT/config/pier/prod.yaml" --set listen.host=127.0.0.1 \
    --set "listen.port=$body_port" --set log.access=false >"$TMP/body-pier.log" 2>&1 &
body_pid=$!
PIDS+=("$body_pid")
BODY=""
for _ in $(seq 1 100); do
    BODY=$(curl -fsS "http://127.0.0.1:$body_port$HEALTH" 2>/dev/null) && break
    sleep 0.05
done
# the floor answers with pier's whole response, head and body, byte for byte
curl -fsSi "http://127.0.0.1:$body_port$HEALTH" >"$TMP/floor-response" 2>/dev/null || true
stop_pid "$body_pid"
if [ -z "$BODY" ] || [ ! -s "$TMP/floor-response" ]; then
    log "pier did not answer $HEALTH; its output:"
    cat "$TMP/body-pier.log" >&2
    exit 1
fi
BODY=$(printf '%s' "$BODY" | sed 's/"uptime_s":[0-9]*/"uptime_s":0/')

# ---- server configs -----------------------------------------------------------------------

nginx_conf() { # nginx_conf FILE PORT WORKERS LOG(on|off) MODE(return|proxy|single) [UPSTREAM_PORT|unix:PATH]
    local file=$1 port=$2 workers=$3 logging=$4 mode=$5 up=${6:-0} access location
    local dir
    dir=$(dirname "$file")
    if [ "$logging" = on ]; then
        # buffered like pier's access log: one write per 32 KiB or 100 ms
        access="access_log $dir/access.log combined buffer=32k flush=100ms;"
    else
        access="access_log off;"
    fi
    if [ "$mode" = proxy ]; then
        location="location $PREFIX/ {
      proxy_pass http://pier_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }"
    else
        location="location = $HEALTH {
      default_type application/health+json;
      return 200 '$BODY
';
    }"
    fi
    {
        if [ "$mode" = single ]; then
            printf 'master_process off;\n'
        fi
        cat <<EOF
daemon off;
worker_processes $workers;
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections ${NGINX_CONNECTIONS:-8192}; }
http {
  $access
  keepalive_requests 1000000;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
EOF
        if [ "$mode" = proxy ]; then
            case $up in
            unix:*) printf '  upstream pier_upstream { server %s; keepalive 1024; }\n' "$up" ;;
            *) printf '  upstream pier_upstream { server 127.0.0.1:%s; keepalive 1024; }\n' "$up" ;;
            esac
        fi
        cat <<EOF
  server {
    listen 127.0.0.1:$port;
    $location
  }
}
EOF
    } >"$file"
}

# server_cmd NAME PORT DIR -> prints the argv (one per line) that starts server NAME
server_cmd() {
    local name=$1 port=$2 dir=$3
    case $name in
    pier-on | pier-off | pier-auto)
        local access=true workers=1
        [ "$name" = pier-on ] || access=false
        [ "$name" = pier-auto ] && workers=auto
        printf '%s\n' "$PIER_BIN" --config "$ROOT/config/pier/prod.yaml" \
            --set listen.host=127.0.0.1 --set "listen.port=$port" \
            --set "log.access=$access" --set "workers=$workers"
        # part 4 holds 10,000 idle connections, the default limit
        [ -n "${PIER_MAX_CONNECTIONS:-}" ] && printf '%s\n' --set "limits.max_connections=$PIER_MAX_CONNECTIONS"
        # part 2: pier also on a Unix socket, for nginx -> pier over it (0666: nginx's workers
        # run as nobody when the benchmark runs as root)
        [ -n "${PIER_UNIX_SOCK:-}" ] && printf '%s\n' --set "listen.unix=$PIER_UNIX_SOCK" --set listen.unix_mode=0666
        ;;
    nginx-on | nginx-off)
        nginx_conf "$dir/nginx.conf" "$port" 1 "${name#nginx-}" return
        printf '%s\n' "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
        ;;
    floor)
        printf '%s\n' "$FLOOR" "$port" "$TMP/floor-response"
        ;;
    *)
        log "unknown server $name"
        return 1
        ;;
    esac
}

# ---- measuring ----------------------------------------------------------------------------

# Every process of a server: the PID and its children (nginx workers).
server_pids() { # through /proc, so procps is not needed
    local pid=$1
    echo "$pid"
    # /proc/N/stat is "N (name) state ppid ...": the parent is the 2nd field after the ")".
    # cat, not awk on the files: a process that exits meanwhile must not end the scan.
    cat /proc/[0-9]*/stat 2>/dev/null |
        awk -v parent="$pid" '{ me = $1; sub(/.*\) /, ""); if ($2 == parent) print me }' || true
}
cpu_ticks() { # utime+stime of the processes given, in clock ticks
    local total=0 pid f
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        # fields after the ")" of comm: state is $1, utime $12, stime $13
        f=$(sed 's/.*) //' "/proc/$pid/stat")
        total=$((total + $(echo "$f" | awk '{print $12 + $13}')))
    done
    echo "$total"
}
rss_kib() {
    local total=0 pid v
    for pid in "$@"; do
        v=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
to_ms() { # "323.00us" "1.03ms" "2.1s" -> milliseconds
    awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}

RESULTS_DIR=$ROOT/test/bench/results
mkdir -p "$RESULTS_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS_DIR/$STAMP.raw.tsv
OUT=$RESULTS_DIR/$STAMP.txt
printf 'kind\tserver\tconns\tround\tvalue1\tvalue2\tvalue3\tvalue4\tvalue5\n' >"$RAW"

# run_wrk SERVER_LABEL CONNS ROUND PORT PIDS... -> appends a "wrk" record
run_wrk() {
    local label=$1 conns=$2 round=$3 port=$4
    shift 4
    local pids=("$@") before after out reqs rps p50 p99 cpu_us errs
    local hdr=()
    [ -n "$WRK_HEADER" ] && hdr=(-H "$WRK_HEADER")
    before=$(cpu_ticks "${pids[@]}")
    out=$(timeout $((DURATION + 30)) wrk -t1 -c"$conns" -d"${DURATION}s" --latency "${hdr[@]}" \
        "http://127.0.0.1:$port$HEALTH" 2>&1) || true
    after=$(cpu_ticks "${pids[@]}")
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/^Requests\/sec:/{print $2}')
    p50=$(to_ms "$(echo "$out" | awk '$1=="50%"{print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1=="99%"{print $2}')")
    errs=$(echo "$out" | awk '/Non-2xx|Socket errors/{printf "%s ", $0}')
    if [ -z "$reqs" ] || [ "$reqs" = 0 ]; then
        fail "$label c=$conns round $round: wrk counted no request: $out"
        return 0
    fi
    if [[ "$out" == *Non-2xx* ]]; then
        fail "$label c=$conns round $round: answers that were not 2xx: $errs"
        return 0
    fi
    cpu_us=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{printf "%.3f", t*1e6/hz/n}')
    printf 'wrk\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$conns" "$round" "$rps" "$p50" "$p99" \
        "$cpu_us" "$reqs" >>"$RAW"
    log "$(printf '%-18s c=%-4s round %s: %9.0f req/s  p50 %6.3f ms  p99 %7.3f ms  cpu %6.3f us/req %s' \
        "$label" "$conns" "$round" "$rps" "$p50" "$p99" "$cpu_us" "$errs")"
}

# start_server NAME -> sets SRV_PID, SRV_PORT; records startup time and idle RSS
start_server() {
    local name=$1 round=$2 dir ms
    dir=$TMP/$name.$round
    mkdir -p "$dir/tmp"
    SRV_PORT=$(free_port)
    local cmd=()
    mapfile -t cmd < <(server_cmd "$name" "$SRV_PORT" "$dir")
    ms=$("$KACLIENT" start "$SRV_PORT" "$HEALTH" "$dir/pid" "$dir/out.log" -- "${cmd[@]}") || {
        [ -s "$dir/pid" ] && PIDS+=("$(cat "$dir/pid")") && stop_pid "$(cat "$dir/pid")"
        fail "$name (round $round) did not start; its output follows"
        cat "$dir/out.log" "$dir/error.log" >&2 2>/dev/null || true
        return 1
    }
    SRV_PID=$(cat "$dir/pid")
    PIDS+=("$SRV_PID")
    sleep 0.3 # let nginx's workers and pier's threads settle before reading RSS
    local pids=()
    mapfile -t pids < <(server_pids "$SRV_PID")
    printf 'start\t%s\t-\t%s\t%s\t%s\n' "$name" "$round" "$ms" "$(rss_kib "${pids[@]}")" >>"$RAW"
    log "$(printf '%-14s round %s: exec to first response %.2f ms, idle RSS %s KiB' "$name" "$round" "$ms" "$(rss_kib "${pids[@]}")")"
}

bench_server() { # bench_server NAME ROUND
    local name=$1 round=$2 c pids=()
    start_server "$name" "$round" || return 0
    mapfile -t pids < <(server_pids "$SRV_PID")
    for c in $CONNS; do
        run_wrk "$name" "$c" "$round" "$SRV_PORT" "${pids[@]}"
    done
    printf 'rss_after\t%s\t%s\t%s\t%s\n' "$name" "${c:-0}" "$round" "$(rss_kib "${pids[@]}")" >>"$RAW"
    stop_pid "$SRV_PID"
}

# ---- part 1: pier against nginx, alternated -----------------------------------------------

if [[ " $PARTS " == *" wrk "* ]]; then
    log "part 1: ${ROUNDS} round(s) of ${SERVERS} at ${CONNS} connections, ${DURATION} s each (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    for round in $(seq 1 "$ROUNDS"); do
        for name in $SERVERS; do
            bench_server "$name" "$round"
        done
    done
fi

# ---- part 2: nginx in front of pier against nginx alone -----------------------------------

if [[ " $PARTS " == *" proxy "* ]]; then
    log "part 2: nginx -> pier (TCP, Unix socket) against nginx alone (access logs off)"
    for round in $(seq 1 "$ROUNDS"); do
        # nginx alone
        start_server nginx-off "p$round" || true
        mapfile -t pids < <(server_pids "$SRV_PID")
        for c in $CONNS; do run_wrk nginx-alone "$c" "$round" "$SRV_PORT" "${pids[@]}"; done
        stop_pid "$SRV_PID"
        # nginx -> pier: both processes' CPU counts. The same pier listens on TCP and on a
        # Unix socket; nginx proxies over one, then the other (the order alternates by round).
        chmod 0755 "$TMP" # nginx's workers (nobody, under root) reach the socket through it
        PIER_UNIX_SOCK=$TMP/proxy.$round.sock
        start_server pier-off "p$round" || true
        PIER_UNIX_SOCK=""
        pier_pid=$SRV_PID pier_port=$SRV_PORT
        transports="tcp unix"
        [ $((round % 2)) = 0 ] && transports="unix tcp"
        for tr in $transports; do
            dir=$TMP/proxy.$round.$tr
            mkdir -p "$dir/tmp"
            port=$(free_port)
            up=$pier_port label=nginx-to-pier
            [ "$tr" = unix ] && up=unix:$TMP/proxy.$round.sock label=nginx-to-pier-unix
            nginx_conf "$dir/nginx.conf" "$port" 1 off proxy "$up"
            "$KACLIENT" start "$port" "$HEALTH" "$dir/pid" "$dir/out.log" -- \
                "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >/dev/null || true
            if [ -s "$dir/pid" ]; then
                ngx_pid=$(cat "$dir/pid")
                PIDS+=("$ngx_pid")
                mapfile -t pids < <(server_pids "$ngx_pid")
                for c in $CONNS; do
                    run_wrk "$label" "$c" "$round" "$port" "${pids[@]}" "$pier_pid"
                done
                stop_pid "$ngx_pid"
            fi
        done
        stop_pid "$pier_pid"
    done
fi

# ---- part 3: instructions per request (callgrind) -----------------------------------------

# callgrind_ir N CONNS PORT DIR -- CMD... -> total Ir of CMD serving N keep-alive requests over
# CONNS connections; prints nothing when the client did not get N 2xx answers. The requests are
# `GET $HEALTH`, or with CG_BODY set (chunked or length) `POST $CG_PATH` with a JSON body.
callgrind_ir() {
    local n=$1 conns=$2 port=$3 dir=$4
    shift 5
    local f=$dir/cg.$n.out pid ok=1
    rm -f "$f"
    valgrind --tool=callgrind --callgrind-out-file="$f" "$@" >"$dir/cg.$n.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    "$KACLIENT" run "$port" "${CG_PATH:-$HEALTH}" "$n" "$conns" ${CG_BODY:+"$CG_BODY"} >&2 || ok=0
    # a signal can land while valgrind is not ready to deliver it (nginx then never sees
    # it): repeat it every second until the server is gone; KILL after 30 s
    for _ in $(seq 1 30); do
        kill -TERM "$pid" 2>/dev/null || break
        for _ in $(seq 1 10); do
            kill -0 "$pid" 2>/dev/null || break 2
            sleep 0.1
        done
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" || true
    [ "$ok" = 1 ] && [ -s "$f" ] && awk '/^summary:/{print $2}' "$f"
    return 0
}

if [[ " $PARTS " == *" callgrind "* ]]; then
    if ! command -v valgrind >/dev/null 2>&1; then
        fail "part 3: no valgrind"
    else
        log "part 3: callgrind, (Ir($((CG_N + CG_BASE))) - Ir($CG_BASE)) / $CG_N over $CG_CONNS keep-alive connection(s), ${ROUNDS} round(s)"
        cg_list="pier-off nginx-off pier-on nginx-on"
        [ "$SMOKE" = 1 ] && cg_list="pier-off nginx-off"
        for round in $(seq 1 "$ROUNDS"); do
            for c in $CG_CONNS; do
                for name in $cg_list; do
                    dir=$TMP/cg.$name.$c.$round
                    mkdir -p "$dir/tmp"
                    port=$(free_port)
                    cmd=()
                    case $name in
                    pier-*) mapfile -t cmd < <(server_cmd "$name" "$port" "$dir") ;;
                    nginx-*)
                        nginx_conf "$dir/nginx.conf" "$port" 1 "${name#nginx-}" single
                        cmd=("$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log")
                        ;;
                    esac
                    base=$(callgrind_ir "$CG_BASE" "$c" "$port" "$dir" -- "${cmd[@]}")
                    more=$(callgrind_ir $((CG_N + CG_BASE)) "$c" "$port" "$dir" -- "${cmd[@]}")
                    if [ -z "$base" ] || [ -z "$more" ] || [ "$more" -le "$base" ]; then
                        fail "callgrind $name c=$c round $round: no count (Ir '$base' and '$more'; the client's error, if any, is above)"
                        continue
                    fi
                    ipr=$(((more - base) / CG_N))
                    printf 'callgrind\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$round" "$ipr" "$base" "$more" >>"$RAW"
                    log "$(printf '%-10s c=%-2s round %s: %6d instructions per request' "$name" "$c" "$round" "$ipr")"
                done
            done
        done
    fi
fi

# ---- part 3b: instructions per POST /echo, chunked and Content-Length (pier) --------------

if [[ " $PARTS " == *" post "* ]]; then
    if ! command -v valgrind >/dev/null 2>&1; then
        fail "part post: no valgrind"
    else
        log "part post: callgrind, pier log off, POST $PREFIX/echo chunked and with Content-Length, 1 connection, ${ROUNDS} round(s)"
        for round in $(seq 1 "$ROUNDS"); do
            for body in chunked length; do
                dir=$TMP/cg.post-$body.$round
                mkdir -p "$dir/tmp"
                port=$(free_port)
                mapfile -t cmd < <(server_cmd pier-off "$port" "$dir")
                base=$(CG_PATH=$PREFIX/echo CG_BODY=$body callgrind_ir "$CG_BASE" 1 "$port" "$dir" -- "${cmd[@]}")
                more=$(CG_PATH=$PREFIX/echo CG_BODY=$body callgrind_ir $((CG_N + CG_BASE)) 1 "$port" "$dir" -- "${cmd[@]}")
                if [ -z "$base" ] || [ -z "$more" ] || [ "$more" -le "$base" ]; then
                    fail "callgrind POST $body round $round: no count (Ir '$base' and '$more'; the client's error, if any, is above)"
                    continue
                fi
                ipr=$(((more - base) / CG_N))
                printf 'post\t%s\t%s\t%s\t%s\t%s\n' "$body" "$round" "$ipr" "$base" "$more" >>"$RAW"
                log "$(printf 'POST %-7s round %s: %6d instructions per request' "$body" "$round" "$ipr")"
            done
        done
        # llhttp alone: deterministic, one round
        src=${PIER_LLHTTP_SOURCE_DIR:-/usr/share/llhttp} inc=${PIER_LLHTTP_INCLUDE_DIR:-/usr/share/include/llhttp}
        mkdir -p "$TMP/llhttp"
        if ! (cd "$TMP/llhttp" && cc -O2 -w -DLLHTTP_STRICT_MODE=1 -I"$inc" -c "$src/api.c" "$src/http.c" "$src/llhttp.c" &&
            cc -O2 -Wall -Wextra -I"$inc" -o llhttp_cost "$ROOT/test/bench/llhttp_cost.c" api.o http.o llhttp.o) >&2; then
            fail "part post: cannot build test/bench/llhttp_cost.c against llhttp in $src"
        else
            for mode in announce chunked length; do
                irs=()
                for n in "$CG_BASE" $((CG_N + CG_BASE)); do
                    valgrind --tool=callgrind --callgrind-out-file="$TMP/llhttp/cg.$mode.$n" \
                        "$TMP/llhttp/llhttp_cost" "$mode" "$n" >"$TMP/llhttp/$mode.$n.log" 2>&1 || true
                    irs+=("$(awk '/^summary:/{print $2}' "$TMP/llhttp/cg.$mode.$n" 2>/dev/null)")
                done
                if [ -z "${irs[0]}" ] || [ -z "${irs[1]}" ] || ! grep -q "^$((CG_N + CG_BASE)) of" "$TMP/llhttp/$mode.$((CG_N + CG_BASE)).log"; then
                    fail "part post: llhttp_cost $mode did not run (see $TMP/llhttp/$mode.*.log)"
                    continue
                fi
                ipr=$(((irs[1] - irs[0]) / CG_N))
                printf 'llhttp\t%s\t1\t%s\t%s\t%s\n' "$mode" "$ipr" "${irs[0]}" "${irs[1]}" >>"$RAW"
                log "$(printf 'llhttp alone, %-8s %6d instructions per body' "$mode" "$ipr")"
            done
        fi
    fi
fi

# ---- part 4: bytes per idle keep-alive connection -----------------------------------------

if [[ " $PARTS " == *" idle "* ]]; then
    step=$((IDLE_N / 10))
    log "part 4: server RSS slope over $IDLE_N idle keep-alive connections (steps of $step), ${ROUNDS} round(s)"
    NGINX_CONNECTIONS=$((IDLE_N + 1024)) PIER_MAX_CONNECTIONS=$((IDLE_N + 1024))
    export NGINX_CONNECTIONS PIER_MAX_CONNECTIONS
    for round in $(seq 1 "$ROUNDS"); do
        for name in pier-off nginx-off; do
            start_server "$name" "i$round" || continue
            mapfile -t pids < <(server_pids "$SRV_PID")
            out=$("$KACLIENT" idle "$SRV_PORT" "$HEALTH" "$IDLE_N" "$step" "${pids[@]}" 2>&1) || {
                fail "idle $name round $round: $out"
                stop_pid "$SRV_PID"
                continue
            }
            stop_pid "$SRV_PID"
            slope=$(echo "$out" | awk '$1 == "slope" {print $2}')
            printf 'idle\t%s\t%s\t%s\t%s\t%s\n' "$name" "$IDLE_N" "$round" "$slope" \
                "$(echo "$out" | awk '$1 != "slope" {printf "%s:%s ", $1, $2}')" >>"$RAW"
            log "$(printf '%-10s round %s: %5d bytes per idle connection' "$name" "$round" "$slope")"
        done
    done
    unset NGINX_CONNECTIONS PIER_MAX_CONNECTIONS
fi

# ---- summary ------------------------------------------------------------------------------

{
    echo "pier benchmark $STAMP  ($(uname -r), $(nproc) CPUs, load at end $(cut -d' ' -f1-3 /proc/loadavg))"
    echo "pier: $PIER_BIN ($("$PIER_BIN" --version 2>/dev/null | head -n 1))"
    echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); wrk -t1 -d${DURATION}s --latency; ${ROUNDS} round(s) alternated; medians"
    [ -n "$WRK_HEADER" ] && echo "wrk header: $WRK_HEADER"
    echo
    awk -F'\t' -v conns_list="$CONNS" -v cg_conns="$CG_CONNS" -v idle_n="$IDLE_N" '
    function median(key,   n, i, j, t, a) {
        n = split(vals[key], a, " ")
        if (n == 0 || vals[key] == "") return ""
        for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function add(key, v) { vals[key] = (key in vals) ? vals[key] " " v : v }
    NR == 1 { next }
    $1 == "wrk" {
        k = $2 SUBSEP $3
        if (!(k in seen)) { seen[k] = 1; order[++n] = k }
        add("rps" SUBSEP k, $5); add("p50" SUBSEP k, $6); add("p99" SUBSEP k, $7); add("cpu" SUBSEP k, $8)
    }
    $1 == "start" && $4 ~ /^[0-9]+$/ { add("start" SUBSEP $2, $5); add("idle" SUBSEP $2, $6) }
    $1 == "rss_after" { add("after" SUBSEP $2, $5) }
    $1 == "callgrind" { add("ir" SUBSEP $2 SUBSEP $3, $5) }
    $1 == "idle" { add("slope" SUBSEP $2, $5) }
    $1 == "post" { add("post" SUBSEP $2, $4) }
    $1 == "llhttp" { add("llhttp" SUBSEP $2, $4) }
    END {
        printf "%-18s %6s %10s %9s %9s %12s\n", "server", "conns", "req/s", "p50 ms", "p99 ms", "cpu us/req"
        for (i = 1; i <= n; i++) {
            split(order[i], kk, SUBSEP)
            r = median("rps" SUBSEP order[i]); c = median("cpu" SUBSEP order[i])
            m[kk[1], kk[2], "rps"] = r; m[kk[1], kk[2], "cpu"] = c
            m[kk[1], kk[2], "p99"] = median("p99" SUBSEP order[i])
            printf "%-18s %6s %10.0f %9.3f %9.3f %12.3f\n", kk[1], kk[2], r, median("p50" SUBSEP order[i]), m[kk[1], kk[2], "p99"], c
        }
        print ""
        printf "%-14s %12s %14s %18s\n", "server", "start ms", "idle RSS KiB", "RSS after KiB"
        split("pier-on nginx-on pier-off nginx-off pier-auto floor", names, " ")
        for (i = 1; i <= 6; i++) {
            s = names[i]
            if (!(("start" SUBSEP s) in vals) && !(("after" SUBSEP s) in vals)) continue
            printf "%-14s %12.2f %14d %18d\n", s, median("start" SUBSEP s), median("idle" SUBSEP s), median("after" SUBSEP s)
            st[s] = median("start" SUBSEP s); idle[s] = median("idle" SUBSEP s); aft[s] = median("after" SUBSEP s)
        }
        print ""
        print "ratios pier/nginx (medians; <1 is better for cpu, p99, RSS, start; >1 better for req/s)"
        nc = split(conns_list, cl, " ")
        for (lg = 1; lg <= 2; lg++) {
            L = (lg == 1) ? "on" : "off"
            for (ci = 1; ci <= nc; ci++) {
                c = cl[ci]
                if (m["pier-" L, c, "rps"] == "" || m["nginx-" L, c, "rps"] == "") continue
                printf "  log %-3s c=%-5s req/s %.3f   p99 %.3f   cpu/req %.3f\n", L, c,
                    m["pier-" L, c, "rps"] / m["nginx-" L, c, "rps"],
                    (m["nginx-" L, c, "p99"] > 0 ? m["pier-" L, c, "p99"] / m["nginx-" L, c, "p99"] : 0),
                    (m["nginx-" L, c, "cpu"] > 0 ? m["pier-" L, c, "cpu"] / m["nginx-" L, c, "cpu"] : 0)
            }
            if (idle["nginx-" L] > 0 && idle["pier-" L] != "")
                printf "  log %-3s idle RSS %.3f   RSS after %.3f   start %.3f\n", L,
                    idle["pier-" L] / idle["nginx-" L], (aft["nginx-" L] > 0 ? aft["pier-" L] / aft["nginx-" L] : 0),
                    (st["nginx-" L] > 0 ? st["pier-" L] / st["nginx-" L] : 0)
        }
        for (ci = 1; ci <= nc; ci++) {
            c = cl[ci]
            if (m["pier-auto", c, "cpu"] != "" && m["pier-off", c, "cpu"] > 0)
                printf "  workers auto / 1 (log off) c=%-5s req/s %.3f   cpu/req %.3f\n", c,
                    m["pier-auto", c, "rps"] / m["pier-off", c, "rps"], m["pier-auto", c, "cpu"] / m["pier-off", c, "cpu"]
            if (m["nginx-to-pier", c, "rps"] != "" && m["nginx-alone", c, "rps"] > 0)
                printf "  nginx->pier / nginx alone c=%-5s req/s %.3f   p99 %.3f   cpu/req (nginx+pier) %.3f\n", c,
                    m["nginx-to-pier", c, "rps"] / m["nginx-alone", c, "rps"],
                    (m["nginx-alone", c, "p99"] > 0 ? m["nginx-to-pier", c, "p99"] / m["nginx-alone", c, "p99"] : 0),
                    m["nginx-to-pier", c, "cpu"] / m["nginx-alone", c, "cpu"]
            if (m["nginx-to-pier-unix", c, "cpu"] != "" && m["nginx-to-pier", c, "cpu"] > 0)
                printf "  nginx->pier unix socket / TCP loopback c=%-5s req/s %.3f   p99 %.3f   cpu/req (nginx+pier) %.3f\n", c,
                    m["nginx-to-pier-unix", c, "rps"] / m["nginx-to-pier", c, "rps"],
                    (m["nginx-to-pier", c, "p99"] > 0 ? m["nginx-to-pier-unix", c, "p99"] / m["nginx-to-pier", c, "p99"] : 0),
                    m["nginx-to-pier-unix", c, "cpu"] / m["nginx-to-pier", c, "cpu"]
        }
        for (ci = 1; ci <= nc; ci++) {
            c = cl[ci]
            if (m["floor", c, "cpu"] <= 0) continue
            printf "  cpu/req against the epoll floor (%.3f us) c=%-5s pier log off %.3f   pier log on %.3f   nginx log off %.3f\n",
                m["floor", c, "cpu"], c, m["pier-off", c, "cpu"] / m["floor", c, "cpu"],
                m["pier-on", c, "cpu"] / m["floor", c, "cpu"], m["nginx-off", c, "cpu"] / m["floor", c, "cpu"]
            fl[c] = m["pier-off", c, "cpu"] / m["floor", c, "cpu"]
        }
        ncg = split(cg_conns, cc, " ")
        header = 0
        for (lg = 1; lg <= 2; lg++) {
            L = (lg == 1) ? "off" : "on"
            for (ci = 1; ci <= ncg; ci++) {
                c = cc[ci]
                p = median("ir" SUBSEP "pier-" L SUBSEP c); x = median("ir" SUBSEP "nginx-" L SUBSEP c)
                if (p == "") continue
                if (!header++) { print ""; print "instructions per request (callgrind, medians over rounds)" }
                printf "  log %-3s c=%-2s pier %6d   nginx %6s   ratio %s\n", L, c, p, x, (x > 0 ? sprintf("%.3f", p / x) : "-")
                irr[L, c] = (x > 0) ? p / x : ""
            }
        }
        pc = median("post" SUBSEP "chunked"); pl = median("post" SUBSEP "length")
        if (pc != "" && pl != "") {
            print ""
            printf "instructions per POST /echo, 38-byte JSON (pier, log off, 1 connection, callgrind): chunked %d   Content-Length %d   chunked framing %+d\n", pc, pl, pc - pl
        }
        la = median("llhttp" SUBSEP "announce"); lc = median("llhttp" SUBSEP "chunked"); ll = median("llhttp" SUBSEP "length")
        if (la != "")
            printf "llhttp alone, per body: the announcing head %d   the chunked body from a copied state %d   a Content-Length body with its own head %d\n", la, lc, ll
        sp = median("slope" SUBSEP "pier-off"); sx = median("slope" SUBSEP "nginx-off")
        if (sp != "") {
            print ""
            printf "bytes of RSS per idle keep-alive connection (slope over %s connections): pier %d   nginx %s   ratio %s\n",
                idle_n, sp, sx, (sx > 0 ? sprintf("%.3f", sp / sx) : "-")
        }
        print ""
        print "targets (issue 21; reported, never failed on)"
        for (lg = 1; lg <= 2; lg++) {
            L = (lg == 1) ? "off" : "on"; lim = (lg == 1) ? 0.5 : 0.55
            for (ci = 1; ci <= ncg; ci++)
                if (irr[L, cc[ci]] != "")
                    printf "  instructions/request pier/nginx, log %-3s c=%-2s %.3f  (<= %.2f) %s\n", L, cc[ci], irr[L, cc[ci]], lim, (irr[L, cc[ci]] <= lim ? "met" : "MISSED")
        }
        if (fl[64] != "")
            printf "  cpu/request pier (log off) / floor, c=64        %.3f  (<= 1.05) %s\n", fl[64], (fl[64] <= 1.05 ? "met" : "MISSED")
        if (sp != "")
            printf "  bytes per idle connection, pier               %5d  (<= 512)  %s\n", sp, (sp <= 512 ? "met" : "MISSED")
    }' "$RAW"
} | tee "$OUT"
log "results: $OUT (raw figures: $RAW)"
if [ ${#FAILURES[@]} -gt 0 ]; then
    log "${#FAILURES[@]} measurement(s) FAILED (the figures above lack them):"
    for f in "${FAILURES[@]}"; do log "  $f"; done
    exit 1
fi
