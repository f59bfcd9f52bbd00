#!/usr/bin/env bash
# Smoke test of the pier image the way production runs it: prod and staging containers
# (read-only, no capabilities, no-new-privileges, user 65532), nginx from config/nginx in
# front of them on a loopback port, and checks of what a client, nginx and `docker logs` see.
#
#   ci/smoke.sh [IMAGE]          (default pier:latest; ci/image.sh builds it)
#
#   SMOKE_HEALTHY_TIMEOUT  seconds to wait for both containers to be healthy (default 30)
#   SMOKE_DRAIN_SECONDS    pier's shutdown.drain_ms in seconds: docker stop must end the
#                          container with exit code 0 sooner than this (default 10)
# Prints PASS/FAIL per check and, last, "smoke: N passed, M failed"; exits 1 if any failed.
# Cleans up its containers (by ID) and its nginx (by PID).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${1:-${IMAGE:-pier:latest}}
healthy_timeout=${SMOKE_HEALTHY_TIMEOUT:-30}
drain_s=${SMOKE_DRAIN_SECONDS:-10}

# shellcheck source=ci/test-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"
free_port() { # free_port [PREFERRED]
  if [[ -n ${1:-} ]] && port_free "$1"; then echo "$1"; return 0; fi
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12768)) # 20000-32767: below the ephemeral range (32768-60999)
    if port_free "$p"; then echo "$p"; return 0; fi
  done
  return 1
}

apt_install() { "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" --only "$@"; }
for tool in nginx jq curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    pkg=$tool
    [[ $tool == nginx ]] && pkg=nginx-light
    apt_install "$pkg"
  fi
done
if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "smoke: no image $image (build it with ci/image.sh)" >&2
  exit 1
fi

tmp=$(mktemp -d)
chmod 755 "$tmp"
containers=()
nginx_pid=""
cleanup() {
  if [[ -n $nginx_pid ]]; then
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
  fi
  for id in "${containers[@]}"; do
    docker rm -f "$id" >/dev/null 2>&1 || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# ------------------------------------------------------------------ the two containers
prod_port=$(free_port 8000)
staging_port=$(free_port 8001)
declare -A id started healthy_ms
for env in prod staging; do
  case $env in
    prod) host_port=$prod_port container_port=8000 ;;
    staging) host_port=$staging_port container_port=8001 ;;
  esac
  started[$env]=$(now_ms)
  id[$env]=$(docker run -d --read-only --cap-drop ALL --security-opt no-new-privileges \
    --user 65532:65532 -e PIER_ENV="$env" -p "127.0.0.1:$host_port:$container_port" \
    --label pier.smoke=1 "$image")
  containers+=("${id[$env]}")
done
echo "smoke: $image prod ${id[prod]:0:12} on 127.0.0.1:$prod_port, staging ${id[staging]:0:12} on 127.0.0.1:$staging_port"

deadline=$((SECONDS + healthy_timeout))
while (( SECONDS < deadline )); do
  waiting=0
  for env in prod staging; do
    [[ -n ${healthy_ms[$env]:-} ]] && continue
    status=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "${id[$env]}")
    case $status in
      "running healthy") healthy_ms[$env]=$(($(now_ms) - started[$env])) ;;
      running*) waiting=1 ;;
      *) echo "smoke: $env container is '$status'" >&2; healthy_ms[$env]=-1 ;;
    esac
  done
  (( waiting )) || break
  sleep 0.05
done
for env in prod staging; do
  ms=${healthy_ms[$env]:-}
  if [[ -n $ms && $ms -ge 0 ]]; then
    echo "smoke: $env healthy $(secs "$ms") s after docker run"
    check "$env container healthy within ${healthy_timeout}s ($(secs "$ms") s)" true
  else
    check "$env container healthy within ${healthy_timeout}s" false
    docker logs "${id[$env]}" 2>&1 | tail -n 20 | sed "s/^/  $env| /"
    docker inspect -f '{{json .State.Health}}' "${id[$env]}" 2>/dev/null | sed "s/^/  $env health| /"
  fi
done

# What the kernel says about pier's process: the user, capabilities, no_new_privs.
for env in prod staging; do
  pid=$(docker inspect -f '{{.State.Pid}}' "${id[$env]}")
  status_file=/proc/$pid/status
  check "$env runs as uid/gid 65532, no capabilities, no_new_privs" bash -c "
    grep -qE '^Uid:\\s+65532\\s+65532\\s+65532\\s+65532\$' $status_file &&
    grep -qE '^Gid:\\s+65532\\s+65532\\s+65532\\s+65532\$' $status_file &&
    grep -qE '^CapEff:\\s+0+\$' $status_file && grep -qE '^CapBnd:\\s+0+\$' $status_file &&
    grep -qE '^NoNewPrivs:\\s+1\$' $status_file"
  check "$env root filesystem is read-only" \
    test "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "${id[$env]}")" = true
done
check "published ports are on 127.0.0.1 only" bash -c \
  "docker port ${id[prod]} | grep -qx '8000/tcp -> 127.0.0.1:$prod_port' &&
   docker port ${id[staging]} | grep -qx '8001/tcp -> 127.0.0.1:$staging_port'"

# ------------------------------------------------------------------ nginx in front
nginx_port=$(free_port)
cp -r "$root/config/nginx" "$tmp/conf"
sed -i -E "s/^( *listen ).*;/\\1127.0.0.1:$nginx_port;/" "$tmp/conf/pier.conf"
# The shipped upstream files name the VM's Unix sockets (deploy/pier-deploy); here each
# environment is one container on a loopback port.
printf 'server 127.0.0.1:%s;\n' "$prod_port" >"$tmp/conf/upstreams/prod.conf"
printf 'server 127.0.0.1:%s;\n' "$staging_port" >"$tmp/conf/upstreams/staging.conf"
# nginx -t with its output in a file we own: as non-root, nginx cannot open /dev/stdout
# when it is a pipe that belongs to another user.
nginx_t() {
  nginx -e stderr -q -t "$@" >"$tmp/nginx-t.log" 2>&1 || { cat "$tmp/nginx-t.log"; return 1; }
}
check "nginx -t accepts config/nginx" nginx_t -p "$tmp/" -c "$tmp/conf/nginx.conf"
nginx -e stderr -p "$tmp/" -c "$tmp/conf/nginx.conf" -g 'daemon off;' >"$tmp/nginx-access.log" 2>"$tmp/nginx-error.log" &
nginx_pid=$!
url=http://127.0.0.1:$nginx_port
for _ in $(seq 1 50); do
  curl -s -o /dev/null "$url/" && break
  sleep 0.1
done

get() { # get PATH [CURL ARGS...]: body in $tmp/body, headers in $tmp/headers, prints status
  local path=$1
  shift
  curl -s -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' --max-time 5 "$@" "$url$path" || echo 000
}
header() { sed -n -E "s/^$1: *([^[:space:]]*)[[:space:]]*\$/\\1/Ip" "$tmp/headers" | tail -n 1; }

code=$(get /prod/health)
check "GET /prod/health -> 200 (got $code)" test "$code" = 200
check "/prod/health says \"environment\":\"prod\", status pass" \
  jq_ok '.environment == "prod" and .status == "pass"' "$tmp/body"
code=$(get /staging/health)
check "GET /staging/health -> 200 (got $code)" test "$code" = 200
check "/staging/health says \"environment\":\"staging\"" jq_ok '.environment == "staging"' "$tmp/body"
code=$(get /prod/staging/health)
check "GET /prod/staging/health -> 404 (got $code)" test "$code" = 404
code=$(get /staging/prod/health)
check "GET /staging/prod/health -> 404 (got $code)" test "$code" = 404
code=$(get /elsewhere/health)
check "GET /elsewhere/health -> 404 (got $code)" test "$code" = 404
check "/elsewhere/health body is {\"error\":{\"status\":404,…}}" jq_ok '.error.status == 404' "$tmp/body"

# The version the image was built to report is the one its label carries.
label_version=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$image")
code=$(get /prod/version)
check "/prod/version reports the image's version label '$label_version'" \
  bash -c "test $code = 200 && jq -e --arg v '$label_version' '.version == \$v' '$tmp/body' >/dev/null"

# Request ids: the client's goes through nginx to pier and back, and into pier's log.
in_pier_log() { # in_pier_log ENV ID: pier logged an access line with this request id
  local _
  for _ in $(seq 1 20); do
    if docker logs "${id[$1]}" 2>/dev/null |
      jq -n -R -e --arg id "$2" 'any(inputs | fromjson? | select(.msg == "request"); .request_id == $id)' >/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}
rid="smoke-$RANDOM$RANDOM"
code=$(get /prod/health -H "X-Request-Id: $rid")
check "X-Request-Id $rid comes back through nginx" test "$(header x-request-id)" = "$rid"
check "pier's JSON access log (docker logs) has request_id $rid" in_pier_log prod "$rid"
code=$(get /staging/health)
generated=$(header x-request-id)
check "without a client id nginx makes one and pier echoes it ($generated)" \
  bash -c "[[ '$generated' =~ ^[0-9a-f]{32}\$ ]]"
check "pier logged nginx's id" in_pier_log staging "$generated"
check "nginx's JSON access log has the id and the upstream address" bash -c \
  "jq -n -R -e --arg id '$generated' 'any(inputs | fromjson?; .request_id == \$id and .upstream == \"127.0.0.1:$staging_port\" and .status == 200)' '$tmp/nginx-access.log' >/dev/null"

# ------------------------------------------------------------------ graceful stop
# nginx still holds idle keep-alive connections to both: pier must close them and exit.
for env in prod staging; do
  t0=$(now_ms)
  docker stop -t $((drain_s + 20)) "${id[$env]}" >/dev/null
  took=$(($(now_ms) - t0))
  code=$(docker inspect -f '{{.State.ExitCode}}' "${id[$env]}")
  check "docker stop $env: exit code $code in $(secs "$took") s (< ${drain_s} s drain)" \
    bash -c "test $code = 0 && test $took -lt $((drain_s * 1000))"
done

if (( fail > 0 )); then
  for env in prod staging; do
    docker logs "${id[$env]}" 2>&1 | tail -n 15 | sed "s/^/  $env| /"
  done
  sed 's/^/  nginx| /' "$tmp/nginx-error.log" | tail -n 15
fi
echo "smoke: $pass passed, $fail failed"
(( fail == 0 ))
