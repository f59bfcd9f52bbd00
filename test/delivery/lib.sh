# shellcheck shell=bash disable=SC2034 # its variables are used by the scripts that source it
# test/delivery/lib.sh — the deploy test's stand, sourced by test/delivery/deploy-test.sh: this
# machine as the VM (Docker for the slots, an nginx of its own from config/nginx in front, a
# deploy file of its own), strict clients (test/delivery/load.py) through nginx on both
# environments during a scenario, and the results table.
#
# Set test_name before sourcing. Then: build_release VERSION [FAULT], start_vm, scenario
# NAME CMD..., print_table. Containers are named pier-deploytest-<pid>-ENV-SLOT-REPLICA,
# images pier-deploytest-<pid>:TAG (DEPLOY_TEST_REPO); ports are free loopback ports below
# the kernel's ephemeral range (20000-32767); state, sockets and nginx live in a temporary
# directory: it runs beside other tests. Everything is removed at exit, also on failure.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
pd=$root/deploy/pier-deploy # the command under test
repo=${DEPLOY_TEST_REPO:-pier-deploytest-$$} # per run: tests running at once never share an image
after_s=${DEPLOY_TEST_AFTER:-2}
prefix=pier-deploytest-$$
t_begin=$SECONDS

# shellcheck source=ci/test-lib.sh
. "$root/ci/test-lib.sh"
say() { printf '%s: %s\n' "${test_name:-deploy-test}" "$*"; }
declare -A taken=()
free_port() { # below 32768: never a port the kernel hands to a client socket meanwhile
  local p
  for _ in $(seq 1 500); do
    p=$((20000 + RANDOM % 12768))
    if [[ -z ${taken[$p]:-} ]] && port_free "$p"; then
      taken[$p]=1
      echo "$p"
      return 0
    fi
  done
  return 1
}

for tool in nginx jq curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    pkg=$tool
    [[ $tool == nginx ]] && pkg=nginx-light
    "$root/ci/install-deps.sh" --only "$pkg"
  fi
done
docker info >/dev/null 2>&1 || "$root/ci/start-dockerd.sh"

tmp=$(mktemp -d /tmp/pier-deploy-test.XXXXXX)
chmod 755 "$tmp"
names=()
for e in prod staging; do for s in blue green; do for r in a b; do names+=("$prefix-$e-$s-$r"); done; done; done
images=()
nginx_pid=""
load_pids=()
extra_pids=() # other processes a test started (a registry): stopped by PID at exit
cleanup() {
  for p in "${load_pids[@]}" "${extra_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -n $nginx_pid ]]; then
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
  fi
  for n in "${names[@]}"; do docker rm -f "$n" >/dev/null 2>&1 || true; done
  for i in "${images[@]}"; do docker rmi "$i" >/dev/null 2>&1 || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# build_release VERSION [FAULT]: $repo:VERSION from docker/Dockerfile, reporting VERSION;
# with FAULT (echo-500, slow-100ms), a deliberately broken test build (-DPIER_TEST_FAULT).
build_release() {
  local v=$1 fault=${2:-} tb=$SECONDS ok=1
  images+=("$repo:$v")
  if [[ -z $fault ]]; then
    IMAGE_REPO=$repo timeout 1200 "$root/ci/image.sh" "$v" >"$tmp/build-$v.log" 2>&1 || ok=0
  else
    (cd "$root" && timeout 1200 docker build -f docker/Dockerfile -t "$repo:$v" \
      --build-arg BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}" \
      --build-arg PIER_VERSION_STRING="$v" --build-arg PIER_TEST_FAULT="$fault" .) \
      >"$tmp/build-$v.log" 2>&1 || ok=0
  fi
  if ((ok == 0)); then
    tail -n 30 "$tmp/build-$v.log"
    check "build $repo:$v${fault:+ (test fault $fault)}" false
    echo "${test_name:-deploy-test}: $pass passed, $fail failed"
    exit 1
  fi
  say "built $repo:$v${fault:+ (test fault $fault)} in $((SECONDS - tb)) s"
}

# start_vm: nginx from config/nginx (upstreams moved into $tmp, workers as nobody:nogroup),
# and the stand's deploy file ($stand, exported as PIER_DEPLOY_FILE): the repository's keys
# with this stand's paths, ports and image. Its socket directories and secrets (the metrics
# token, root:65532 0640, which pier then requires for /metrics) are made by `pier-deploy
# setup --only dirs,sockets,secrets`: the same code as on the VM. WINDOW: the watch's window.
start_vm() {
  nginx_port=$(free_port)
  ports=()
  for _ in 1 2 3 4 5 6 7 8; do ports+=("$(free_port)"); done
  run=$tmp/run
  cp -r "$root/config/nginx" "$tmp/conf"
  sed -i -E "s/^( *listen ).*;/\\1127.0.0.1:$nginx_port;/" "$tmp/conf/pier.conf"
  sed -i "s#unix:/srv/pier/run/#unix:$run/#" "$tmp/conf/upstreams/prod.conf" "$tmp/conf/upstreams/staging.conf"
  stand=$tmp/pier-deploy.yml
  local e i=0
  {
    echo "# The deploy test's stand (test/delivery/lib.sh): this machine as the VM."
    echo "host:"
    echo "  state_dir: $tmp/state"
    echo "  socket_dir: $run"
    echo "  secrets_dir: $tmp/secrets"
    echo "  prometheus_dir: $tmp/prometheus"
    echo "  nginx_group: nogroup"
    echo "  nginx_access_log: $tmp/nginx-access.log"
    echo "  name_prefix: $prefix"
    echo "  lock_timeout_s: 200"
    echo "  manage_host_config: false"
    echo "environments:"
    for e in prod staging; do
      echo "  $e:"
      echo "    image: $repo"
      echo "    prefix: /$e"
      echo "    container_port: $([[ $e == prod ]] && echo 8000 || echo 8001)"
      echo "    ports: {blue: [${ports[i]}, ${ports[i + 1]}], green: [${ports[i + 2]}, ${ports[i + 3]}]}"
      echo "    pull_timeout_s: 20"
      echo "    health: {timeout_s: 30}"
      echo "    watch: {window_s: ${WINDOW:-8}, interval_s: 2, min_requests: 20}"
      echo "    secrets: [metrics-token]"
      i=$((i + 4))
    done
  } >"$stand"
  export PIER_DEPLOY_FILE=$stand
  "$pd" setup --here --only dirs,sockets,secrets
  # nginx's workers run as nobody:nogroup (as www-data on the VM): the sockets' group decides.
  nginx -q -t -p "$tmp/" -c "$tmp/conf/nginx.conf" -g 'user nobody nogroup;'
  nginx -p "$tmp/" -c "$tmp/conf/nginx.conf" -g 'daemon off; user nobody nogroup;' \
    >"$tmp/nginx-access.log" 2>"$tmp/nginx-error.log" &
  nginx_pid=$!
  url=http://127.0.0.1:$nginx_port
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "$url/" && break
    sleep 0.1
  done
  nginx_before=$(nginx_procs)
  history=$tmp/state/history.tsv
  say "nginx $nginx_pid on 127.0.0.1:$nginx_port (master and workers: $(wc -l <<<"$nginx_before") processes); prod ports ${ports[*]:0:4}, staging ${ports[*]:4:4}; deploy file $stand"
}
nginx_procs() { # the master and its workers, "PID PPID" sorted: the same at the end = no reload
  local p stat ppid
  for p in /proc/[0-9]*; do
    { read -r stat <"$p/stat"; } 2>/dev/null || continue
    read -r _ ppid _ <<<"${stat##*) }"
    if [[ ${p#/proc/} == "$nginx_pid" || $ppid == "$nginx_pid" ]]; then echo "${p#/proc/} $ppid"; fi
  done | sort
}

version_of() { # version_of PATH: the "version" of nginx's answer for PATH
  curl -s --max-time 5 "$url$1" | jq -r '.version // empty' 2>/dev/null || true
}
live() { readlink "$run/$1/current" 2>/dev/null || true; }
live_ids() { # live_ids ENV: IDs of the running containers of the live slot
  local s
  s=$(live "$1")
  [[ -n $s ]] || return 0
  for r in a b; do docker inspect -f '{{if .State.Running}}{{.Id}}{{end}}' "$prefix-$1-$s-$r" 2>/dev/null || true; done
}
last_history() { # last_history ENV: "action tag result" of ENV's newest line
  awk -F '\t' -v e="$1" '$2 == e { l = $3 " " $4 " " $5 } END { print l }' "$history"
}
env_state() { # what must not change when a deploy of ENV fails: link, containers, version
  echo "$(live "$1") $(live_ids "$1" | tr '\n' ' ') $(version_of "/$1/version")"
}

# run_deploy NAME CMD...: run CMD (bounded), keep its output, set $rc and $took (seconds).
run_deploy() {
  local name=$1 t
  shift
  rc=0
  t=$(now_ms)
  if declare -F "$1" >/dev/null; then # a function of this script, which bounds itself
    "$@" >"$tmp/$name.log" 2>&1 || rc=$?
  else
    timeout 200 "$@" >"$tmp/$name.log" 2>&1 || rc=$?
  fi
  took=$(secs $(($(now_ms) - t)))
  sed 's/^/    | /' "$tmp/$name.log"
}

# scenario NAME CMD...: strict clients on /prod and /staging through nginx; CMD starts 1 s in
# and the load goes on DEPLOY_TEST_AFTER seconds after it ended. Sets $rc, $took and, per
# environment and client kind, the requests and failures (res[NAME.ENV.KIND.requests|failed]).
declare -A res dur
post_clients=2 # keep-alive POST clients per environment, each with one request in flight at most
scenarios=()
scenario() {
  local name=$1 stop=$tmp/stop-$1 e k
  shift
  rm -f "$stop"
  load_pids=()
  for e in prod staging; do
    python3 "$root/test/delivery/load.py" --port "$nginx_port" --prefix "/$e" \
      --post "$post_clients" --max-seconds 300 --stop-file "$stop" >"$tmp/load-$name-$e.json" &
    load_pids+=($!)
  done
  sleep 1
  run_deploy "$name" "$@"
  sleep "$after_s"
  touch "$stop"
  for p in "${load_pids[@]}"; do wait "$p" || true; done
  load_pids=()
  scenarios+=("$name")
  dur[$name]=$took
  for e in prod staging; do
    local j=$tmp/load-$name-$e.json
    for k in keepalive newconn post; do
      res[$name.$e.$k.requests]=$(jq ".$k.requests" "$j")
      res[$name.$e.$k.failed]=$(jq ".$k.failed" "$j")
    done
    say "load $name /$e: $(jq -r '[.keepalive, .newconn, .post] | map("\(.requests) req \(.failed) failed") | "keepalive \(.[0]), newconn \(.[1]), post \(.[2])"' "$j") in $(jq .seconds "$j") s; versions $(jq -c '.keepalive.versions' "$j")"
    jq -r '[.keepalive, .newconn, .post][] | .first_errors[]' "$j" | sed 's/^/    ! /'
  done
}
failed_of() { # failed_of SCENARIO [KINDS...]: failed requests of both environments
  local n=0 e k s=$1
  shift
  local kinds=("$@")
  ((${#kinds[@]})) || kinds=(keepalive newconn post)
  for e in prod staging; do for k in "${kinds[@]}"; do n=$((n + ${res[$s.$e.$k.failed]})); done; done
  echo "$n"
}
requests_of() {
  local n=0 e k
  for e in prod staging; do for k in keepalive newconn post; do n=$((n + ${res[$1.$e.$k.requests]})); done; done
  echo "$n"
}
no_failures() { # no_failures SCENARIO: every client of both environments sent, 0 failed
  local e k
  for e in prod staging; do for k in keepalive newconn post; do
    ((${res[$1.$e.$k.requests]} > 0 && ${res[$1.$e.$k.failed]} == 0)) || return 1
  done; done
}
deployed_cleanly() { [[ $rc == 0 ]] && no_failures "$1"; } # the command exited 0, 0 failed

# print_table NOTE: scenario, deploy duration, requests/failed per environment and client kind.
print_table() {
  echo
  printf '%-11s %8s  %-15s %-15s %-15s %-15s %-15s %-15s\n' scenario deploy_s \
    "prod keepalive" "prod newconn" "prod post" "stag keepalive" "stag newconn" "stag post"
  for s in "${scenarios[@]}"; do
    printf '%-11s %8s ' "$s" "${dur[$s]}"
    for e in prod staging; do for k in keepalive newconn post; do
      printf ' %-15s' "${res[$s.$e.$k.requests]}/${res[$s.$e.$k.failed]}"
    done; done
    echo
  done
  echo "(requests/failed per client kind; deploy_s is the command's wall time$1)"
}
