#!/usr/bin/env bash
# Test docker/compose.yaml: bring the stack (prod, staging, nginx) up under a unique project
# name, wait until all three are healthy, check through the stack's nginx what smoke.sh
# checks through a host nginx, check the limits compose applied, stop, `down -v`.
#
#   ci/compose-test.sh [IMAGE]   (pier image, default pier:latest; built by compose if missing)
#
#   COMPOSE                 the compose command (default docker-compose; "docker compose" for v2)
#   COMPOSE_HEALTHY_TIMEOUT seconds to wait for healthy (default 60)
#   SMOKE_DRAIN_SECONDS     docker stop must end pier with exit code 0 sooner (default 10)
# Prints PASS/FAIL per check and, last, "compose: N passed, M failed"; exits 1 if any failed.
# shellcheck disable=SC2016 # the jq filters name $id, a jq variable
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
read -r -a compose <<<"${COMPOSE:-docker-compose}"
healthy_timeout=${COMPOSE_HEALTHY_TIMEOUT:-60}
drain_s=${SMOKE_DRAIN_SECONDS:-10}
project=piertest$$${RANDOM}

# shellcheck source=ci/test-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12768)) # 20000-32767: below the ephemeral range (32768-60999)
    if port_free "$p"; then echo "$p"; return 0; fi
  done
  return 1
}
dc() { "${compose[@]}" -p "$project" -f "$root/docker/compose.yaml" "$@"; }

apt_install() { "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" --only "$@"; }
for tool in jq curl; do
  command -v "$tool" >/dev/null 2>&1 || apt_install "$tool"
done
if [[ ${compose[0]} == docker-compose ]] && ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose
fi

export PIER_IMAGE=${1:-${IMAGE:-pier:latest}}
PIER_NGINX_PORT=$(free_port)
PIER_PROD_PORT=$(free_port)
PIER_STAGING_PORT=$(free_port)
export PIER_NGINX_PORT PIER_PROD_PORT PIER_STAGING_PORT

tmp=$(mktemp -d)
cleanup() {
  dc down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "compose: project $project, image $PIER_IMAGE, nginx on :$PIER_NGINX_PORT"
t0=$(now_ms)
# up -d itself waits for prod and staging to be healthy before it starts nginx.
if ! timeout 300 "${compose[@]}" -p "$project" -f "$root/docker/compose.yaml" up -d >"$tmp/up.log" 2>&1; then
  cat "$tmp/up.log" >&2
fi
declare -A id healthy_ms
for svc in prod staging nginx; do
  id[$svc]=$(dc ps -q "$svc" 2>/dev/null || true)
done

deadline=$((SECONDS + healthy_timeout))
while (( SECONDS < deadline )); do
  waiting=0
  for svc in prod staging nginx; do
    [[ -n ${healthy_ms[$svc]:-} ]] && continue
    if [[ -z ${id[$svc]} ]]; then
      id[$svc]=$(dc ps -q "$svc" 2>/dev/null || true)
      waiting=1
      continue
    fi
    status=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "${id[$svc]}")
    case $status in
      "running healthy") healthy_ms[$svc]=$(($(now_ms) - t0)) ;;
      running* | restarting* | created*) waiting=1 ;;
      *) echo "compose: $svc is '$status'" >&2; healthy_ms[$svc]=-1 ;;
    esac
  done
  (( waiting )) || break
  sleep 0.1
done
for svc in prod staging nginx; do
  ms=${healthy_ms[$svc]:-}
  if [[ -n $ms && $ms -ge 0 ]]; then
    check "$svc healthy ($(secs "$ms") s after up)" true
  else
    check "$svc healthy within ${healthy_timeout}s" false
    [[ -n ${id[$svc]} ]] && docker logs "${id[$svc]}" 2>&1 | tail -n 20 | sed "s/^/  $svc| /"
  fi
done

# What compose applied to the containers.
for svc in prod staging nginx; do
  [[ -n ${id[$svc]} ]] || continue
  check "$svc: read-only, cap_drop ALL, no-new-privileges, 64 MiB, 0.5 CPU, unless-stopped, log rotation" \
    bash -c "test \"\$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}}' ${id[$svc]})\" = 'true [ALL] [no-new-privileges:true] 67108864 500000000 unless-stopped json-file 10m'"
done
for svc in prod staging; do
  [[ -n ${id[$svc]} ]] || continue
  check "$svc runs as 65532:65532 and publishes on 127.0.0.1 only" bash -c \
    "test \"\$(docker inspect -f '{{.Config.User}}' ${id[$svc]})\" = 65532:65532 &&
     ! docker port ${id[$svc]} | grep -v -- '-> 127.0.0.1:' | grep -q ."
done

url=http://127.0.0.1:$PIER_NGINX_PORT
get() { # get PATH [CURL ARGS...]: body in $tmp/body, headers in $tmp/headers, prints status
  local path=$1
  shift
  curl -s -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' --max-time 5 "$@" "$url$path" || echo 000
}
header() { sed -n -E "s/^$1: *([^[:space:]]*)[[:space:]]*\$/\\1/Ip" "$tmp/headers" | tail -n 1; }
logged() { # logged SERVICE JQ-FILTER ID: a JSON line of SERVICE's docker logs matches
  local _
  for _ in $(seq 1 20); do
    if docker logs "${id[$1]}" 2>/dev/null | jq -n -R -e --arg id "$3" "any(inputs | fromjson?; $2)" >/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

code=$(get /prod/health)
check "GET /prod/health -> 200 (got $code)" test "$code" = 200
check "/prod/health says \"environment\":\"prod\"" jq_ok '.environment == "prod" and .status == "pass"' "$tmp/body"
code=$(get /staging/health)
check "GET /staging/health -> 200 (got $code)" test "$code" = 200
check "/staging/health says \"environment\":\"staging\"" jq_ok '.environment == "staging"' "$tmp/body"
code=$(get /prod/staging/health)
check "GET /prod/staging/health -> 404 (got $code)" test "$code" = 404
code=$(get /elsewhere/health)
check "GET /elsewhere/health -> 404 (got $code)" test "$code" = 404
check "/elsewhere/health body is {\"error\":{\"status\":404,…}}" jq_ok '.error.status == 404' "$tmp/body"

rid="compose-$RANDOM$RANDOM"
get /prod/health -H "X-Request-Id: $rid" >/dev/null
check "X-Request-Id $rid comes back through nginx" test "$(header x-request-id)" = "$rid"
check "pier's JSON access log has request_id $rid" logged prod '.msg == "request" and .request_id == $id' "$rid"
get /staging/health >/dev/null
generated=$(header x-request-id)
check "without a client id nginx makes one and pier echoes it ($generated)" \
  bash -c "[[ '$generated' =~ ^[0-9a-f]{32}\$ ]]"
check "pier logged nginx's id" logged staging '.msg == "request" and .request_id == $id' "$generated"
check "nginx's JSON access log (docker logs) has the id and the staging upstream" \
  logged nginx '.request_id == $id and (.upstream | endswith(":8001")) and .status == 200' "$generated"

for svc in prod staging; do
  [[ -n ${id[$svc]} ]] || continue
  t0=$(now_ms)
  docker stop -t $((drain_s + 20)) "${id[$svc]}" >/dev/null
  took=$(($(now_ms) - t0))
  code=$(docker inspect -f '{{.State.ExitCode}}' "${id[$svc]}")
  check "docker stop $svc: exit code $code in $(secs "$took") s (< ${drain_s} s drain)" \
    bash -c "test $code = 0 && test $took -lt $((drain_s * 1000))"
done

if (( fail > 0 )); then
  sed 's/^/  up| /' "$tmp/up.log" | tail -n 20
  for svc in prod staging nginx; do
    [[ -n ${id[$svc]} ]] && docker logs "${id[$svc]}" 2>&1 | tail -n 15 | sed "s/^/  $svc| /"
  done
fi
echo "compose: $pass passed, $fail failed"
(( fail == 0 ))
