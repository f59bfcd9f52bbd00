#!/usr/bin/env bash
# End-to-end test of ci/deploy.sh and ci/rollback.sh with this machine as the VM: Docker runs
# the slots, an nginx started from config/nginx (its own prefix, pid file and loopback port,
# never the system service) is the front door, and test/deploy/load.py counts what clients
# see while releases change under them.
#
#   ci/deploy-test.sh
#
#   1. images v1 and v2 from docker/Dockerfile (ci/image.sh VERSION), and three bad ones:
#      test/deploy/broken-config.Dockerfile (pier refuses its config), unhealthy.Dockerfile
#      (health check never passes), and v2 tagged v3 (reports the wrong version);
#   2. deploy v1 to prod; /prod/version through nginx says v1;
#   3. under load: deploy v2 (0 failed requests, /prod/version says v2 afterwards);
#   4. under load: deploy the broken image (deploy fails, v2 keeps serving, 0 failed);
#      then the unhealthy and the mislabelled image, and v1 while nginx -t fails and while
#      nginx ignores the reload (all fail, v2 keeps serving, the upstream file is unchanged);
#   5. under load: ci/rollback.sh prod (v1 serves again, 0 failed);
#   6. under load on /prod/: deploy v2 to staging (prod's containers and upstream untouched);
#   7. the history, image pruning, and nginx's log (no 5xx).
# Each load phase runs DEPLOY_TEST_CLIENTS keep-alive clients for DEPLOY_TEST_LOAD_SECONDS
# (and at least 2 s past the deploy) and prints total / non-2xx / errors.
#
#   DEPLOY_TEST_REPO          repository of the test's images (default pier-deploytest)
#   DEPLOY_TEST_CLIENTS       concurrent clients (default 6)
#   DEPLOY_TEST_LOAD_SECONDS  load per phase (default 20)
# Containers are named pier-deploytest-<pid>-ENV-SLOT, ports are free loopback ports, the
# state and nginx live in a temporary directory: it runs beside other tests. Prints PASS/FAIL
# per check, the phase counts, and last "deploy: N passed, M failed"; exits 1 if any failed.
# Removes its containers (by name), its images, its nginx (by PID) and its directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
repo=${DEPLOY_TEST_REPO:-pier-deploytest}
clients=${DEPLOY_TEST_CLIENTS:-6}
load_s=${DEPLOY_TEST_LOAD_SECONDS:-20}
prefix=pier-deploytest-$$
t_begin=$SECONDS

# shellcheck source=ci/test-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"
say() { printf 'deploy-test: %s\n' "$*"; }
declare -A taken=()
free_port() {
  local p
  for _ in $(seq 1 500); do
    p=$((20000 + RANDOM % 40000))
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
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  fi
done
docker info >/dev/null 2>&1 || "$root/ci/start-dockerd.sh"

tmp=$(mktemp -d /tmp/pier-deploy-test.XXXXXX)
chmod 755 "$tmp"
names=()
for e in prod staging; do for s in blue green; do names+=("$prefix-$e-$s"); done; done
images=()
nginx_pid=""
load_pid=""
cleanup() {
  if [[ -n $load_pid ]]; then
    kill "$load_pid" 2>/dev/null || true
    wait "$load_pid" 2>/dev/null || true
  fi
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

# ------------------------------------------------------------------ images
t0=$SECONDS
for v in v1 v2; do
  images+=("$repo:$v")
  tb=$SECONDS
  if ! IMAGE_REPO=$repo timeout 1200 "$root/ci/image.sh" "$v" >"$tmp/build-$v.log" 2>&1; then
    tail -n 30 "$tmp/build-$v.log"
    check "ci/image.sh $v builds $repo:$v" false
    echo "deploy: $pass passed, $fail failed"
    exit 1
  fi
  say "built $repo:$v with ci/image.sh in $((SECONDS - tb)) s"
done
images+=("$repo:broken" "$repo:unhealthy" "$repo:v3")
for bad in broken:broken-config unhealthy:unhealthy; do
  docker build -q -t "$repo:${bad%%:*}" --build-arg BASE="$repo:v2" \
    -f "$root/test/deploy/${bad#*:}.Dockerfile" "$root/test/deploy" >/dev/null 2>"$tmp/build-bad.log" ||
    { cat "$tmp/build-bad.log"; exit 1; }
done
docker tag "$repo:v2" "$repo:v3" # a release whose /version does not say what its tag says
say "images ready after $((SECONDS - t0)) s"
t_deploys=$SECONDS

# ------------------------------------------------------------------ the "VM"
nginx_port=$(free_port)
prod_blue=$(free_port) prod_green=$(free_port) staging_blue=$(free_port) staging_green=$(free_port)
cp -r "$root/config/nginx" "$tmp/conf"
sed -i -E "s/^( *listen ).*;/\\1127.0.0.1:$nginx_port;/" "$tmp/conf/pier.conf"
sed -i -E "s/^server 127\\.0\\.0\\.1:[0-9]+/server 127.0.0.1:$prod_blue/" "$tmp/conf/upstreams/prod.conf"
sed -i -E "s/^server 127\\.0\\.0\\.1:[0-9]+/server 127.0.0.1:$staging_blue/" "$tmp/conf/upstreams/staging.conf"
nginx -q -t -p "$tmp/" -c "$tmp/conf/nginx.conf"
nginx -p "$tmp/" -c "$tmp/conf/nginx.conf" -g 'daemon off;' >"$tmp/nginx-access.log" 2>"$tmp/nginx-error.log" &
nginx_pid=$!
url=http://127.0.0.1:$nginx_port
for _ in $(seq 1 50); do
  curl -s -o /dev/null "$url/" && break
  sleep 0.1
done

export PIER_IMAGE=$repo PIER_DEPLOY_DIR=$tmp/state PIER_NAME_PREFIX=$prefix
export PIER_PROD_PORTS="$prod_blue $prod_green" PIER_STAGING_PORTS="$staging_blue $staging_green"
export NGINX_UPSTREAM_DIR=$tmp/conf/upstreams NGINX_BIN=nginx NGINX_PREFIX=$tmp/
export NGINX_CONF=$tmp/conf/nginx.conf NGINX_PID_FILE=$tmp/nginx.pid NGINX_SUDO=""
export PIER_HEALTH_TIMEOUT=30 PIER_PULL_TIMEOUT=20
history=$tmp/state/releases/history.tsv
say "nginx $nginx_pid on 127.0.0.1:$nginx_port; prod slots $prod_blue/$prod_green, staging $staging_blue/$staging_green"

version_of() { # version_of PATH: the "version" nginx's answer for PATH carries
  curl -s --max-time 5 "$url$1" | jq -r '.version // empty' 2>/dev/null || true
}
live_id() { # live_id ENV: ID of the running container in the slot nginx points ENV at
  local port slot=blue
  port=$(sed -nE 's/^server 127\.0\.0\.1:([0-9]+).*/\1/p' "$tmp/conf/upstreams/$1.conf")
  [[ $port == "$prod_green" || $port == "$staging_green" ]] && slot=green
  docker inspect -f '{{if .State.Running}}{{.Id}}{{end}}' "$prefix-$1-$slot" 2>/dev/null || true
}
last_history() { # last_history ENV: "action tag result" of ENV's newest line
  awk -F '\t' -v e="$1" '$2 == e { l = $3 " " $4 " " $5 } END { print l }' "$history"
}

# run_deploy NAME CMD...: run a deploy (bounded), keep its output, set $rc.
run_deploy() {
  local name=$1
  shift
  rc=0
  timeout 150 "$@" >"$tmp/$name.log" 2>&1 || rc=$?
  sed 's/^/    | /' "$tmp/$name.log"
}

# load_phase NAME PATH CMD...: load on PATH through nginx; CMD starts 2 s in; the load goes on
# for load_s seconds in all and at least 2 s after CMD ended. Sets $rc and the phase counts.
declare -A ph_total ph_non2xx ph_errors ph_retries ph_versions
phases=()
load_phase() {
  local name=$1 path=$2 stop=$tmp/stop-$1 started until
  shift 2
  rm -f "$stop"
  python3 "$root/test/deploy/load.py" --port "$nginx_port" --path "$path" --clients "$clients" \
    --max-seconds $((load_s + 170)) --stop-file "$stop" >"$tmp/load-$name.json" &
  load_pid=$!
  started=$SECONDS
  sleep 2
  run_deploy "$name" "$@"
  until=$((started + load_s))
  ((SECONDS + 2 > until)) && until=$((SECONDS + 2))
  while ((SECONDS < until)); do sleep 0.2; done
  touch "$stop"
  wait "$load_pid" || true
  load_pid=""
  local j=$tmp/load-$name.json
  ph_total[$name]=$(jq .total "$j")
  ph_non2xx[$name]=$(jq .non_2xx "$j")
  ph_errors[$name]=$(jq .errors "$j")
  ph_retries[$name]=$(jq .keepalive_retries "$j")
  ph_versions[$name]=$(jq -r '[.versions | to_entries[] | "\(.key) \(.value)"] | join(", ")' "$j")
  phases+=("$name")
  say "load $name ($path): $(jq -r '"\(.total) requests in \(.seconds) s (\(.rps)/s), non-2xx \(.non_2xx), errors \(.errors), keep-alive retries \(.keepalive_retries), max latency \(.max_latency_ms) ms"' "$j"); answers by version: ${ph_versions[$name]}"
  jq -r '.first_errors[]' "$j" | sed 's/^/    ! /'
}
no_failures() { [[ ${ph_total[$1]} -gt 0 && ${ph_non2xx[$1]} -eq 0 && ${ph_errors[$1]} -eq 0 ]]; }

# ------------------------------------------------------------------ 1. first deploy
say "1. deploy v1 to prod"
run_deploy deploy-v1 "$root/ci/deploy.sh" prod v1
check "ci/deploy.sh prod v1 exits 0 (got $rc)" test "$rc" = 0
v=$(version_of /prod/version)
check "/prod/version through nginx says v1 (got '$v')" test "$v" = v1
id=$(live_id prod)
check "the live prod container runs as deployed (read-only, cap-drop ALL, no-new-privileges, 65532, unless-stopped, 127.0.0.1, labels)" \
  test "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.Config.User}} {{.HostConfig.RestartPolicy.Name}} {{(index (index .HostConfig.PortBindings "8000/tcp") 0).HostIp}} {{index .Config.Labels "pier.env"}} {{index .Config.Labels "pier.tag"}} {{range .Config.Env}}{{if eq . "PIER_ENV=prod"}}{{.}}{{end}}{{end}}' "$id" 2>/dev/null)" \
  = "true [ALL] [no-new-privileges] 65532:65532 unless-stopped 127.0.0.1 prod v1 PIER_ENV=prod"

# ------------------------------------------------------------------ 2. v1 -> v2 under load
say "2. deploy v2 to prod under load"
v1_id=$id
load_phase v1-to-v2 /prod/version "$root/ci/deploy.sh" prod v2
check "ci/deploy.sh prod v2 under load exits 0 (got $rc)" test "$rc" = 0
check "v1 -> v2: 0 non-2xx, 0 errors of ${ph_total[v1-to-v2]} requests" no_failures v1-to-v2
check "v1 -> v2: clients got v1 and then v2 answers during the load (${ph_versions[v1-to-v2]})" \
  bash -c "[[ '${ph_versions[v1-to-v2]}' == 'v1 '*', v2 '* ]]"
v=$(version_of /prod/version)
check "/prod/version says v2 afterwards (got '$v')" test "$v" = v2
check "the v1 slot was stopped gracefully (exit status 0, not killed)" \
  test "$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}' "$v1_id" 2>/dev/null)" = "exited 0 false"

# ------------------------------------------------------------------ 3. bad releases
say "3. deploy a broken image (pier refuses its config) to prod under load"
v2_id=$(live_id prod)
upstream_sum=$(sha256sum <"$tmp/conf/upstreams/prod.conf")
load_phase broken /prod/version "$root/ci/deploy.sh" prod broken
check "ci/deploy.sh prod broken exits non-zero (got $rc) and says why" \
  bash -c "test $rc -ne 0 && grep -q 'FAILED: prod broken: .*exited with status 1' '$tmp/broken.log'"
check "broken: 0 non-2xx, 0 errors of ${ph_total[broken]} requests, all from v2 (${ph_versions[broken]})" \
  bash -c "[[ ${ph_non2xx[broken]} -eq 0 && ${ph_errors[broken]} -eq 0 && ${ph_total[broken]} -gt 0 && '${ph_versions[broken]}' =~ ^v2\ [0-9]+\$ ]]"
v=$(version_of /prod/version)
check "v2 keeps serving (got '$v'), the same container, the prod upstream file unchanged" \
  bash -c "test '$v' = v2 && test '$(live_id prod)' = '$v2_id' && test '$(sha256sum <"$tmp/conf/upstreams/prod.conf")' = '$upstream_sum'"
check "the broken container was removed" \
  test -z "$(docker ps -aq --filter "name=^/$prefix-prod-" --filter "label=pier.tag=broken")"
check "history records the broken deploy as failed ($(last_history prod))" test "$(last_history prod)" = "deploy broken failed"

say "3b. deploy an image that never becomes healthy (PIER_HEALTH_TIMEOUT=6)"
PIER_HEALTH_TIMEOUT=6 run_deploy unhealthy "$root/ci/deploy.sh" prod unhealthy
check "ci/deploy.sh prod unhealthy exits non-zero after the health timeout (got $rc)" \
  bash -c "test $rc -ne 0 && grep -q 'not healthy after 6s' '$tmp/unhealthy.log'"
say "3c. deploy an image whose /version is not its tag (v2 tagged v3)"
run_deploy mislabelled "$root/ci/deploy.sh" prod v3
check "ci/deploy.sh prod v3 exits non-zero: the version check fails (got $rc)" \
  bash -c "test $rc -ne 0 && grep -q \"reports version 'v2'.*not v3\" '$tmp/mislabelled.log'"
say "3d. nginx -t rejects the new upstream file (NGINX_BIN=false)"
NGINX_BIN=false run_deploy nginx-t-fails "$root/ci/deploy.sh" prod v1
check "ci/deploy.sh exits non-zero when nginx -t fails (got $rc)" \
  bash -c "test $rc -ne 0 && grep -q 'nginx -t rejects' '$tmp/nginx-t-fails.log'"
say "3e. nginx does not apply the reload (test/deploy/nginx-ignores-reload.sh, NGINX_SETTLE_TIMEOUT=3)"
NGINX_BIN=$root/test/deploy/nginx-ignores-reload.sh NGINX_SETTLE_TIMEOUT=3 \
  run_deploy nginx-no-reload "$root/ci/deploy.sh" prod v1
check "ci/deploy.sh exits non-zero when nginx starts no new workers (got $rc), and restores the file" \
  bash -c "test $rc -ne 0 && grep -q 'started no new workers' '$tmp/nginx-no-reload.log' && grep -q 'restored the previous' '$tmp/nginx-no-reload.log'"
check "the upstream directory holds only prod.conf and staging.conf (no temporary files left)" \
  test "$(find "$tmp/conf/upstreams" -mindepth 1 -printf '%f\n' | sort | tr '\n' ' ')" = "prod.conf staging.conf "
v=$(version_of /prod/version)
check "after five failed deploys v2 still serves (got '$v') from the same container, upstream unchanged" \
  bash -c "test '$v' = v2 && test '$(live_id prod)' = '$v2_id' && test '$(sha256sum <"$tmp/conf/upstreams/prod.conf")' = '$upstream_sum'"
check "no container of a failed release is left: v2's is the only prod container" \
  test "$(docker ps -aq --filter "name=^/$prefix-prod-")" = "$(docker ps -q --filter "id=$v2_id")"

# ------------------------------------------------------------------ 4. rollback under load
say "4. ci/rollback.sh prod under load (as by hand on the VM: no PIER_IMAGE)"
load_phase rollback /prod/version env -u PIER_IMAGE "$root/ci/rollback.sh" prod
check "ci/rollback.sh prod (PIER_IMAGE unset) exits 0 (got $rc) and took v1 and $repo from the history" \
  bash -c "test $rc -eq 0 && grep -q 'rolling back to v1' '$tmp/rollback.log' && grep -q 'image repository from the history: $repo\$' '$tmp/rollback.log'"
check "rollback: 0 non-2xx, 0 errors of ${ph_total[rollback]} requests (${ph_versions[rollback]})" no_failures rollback
v=$(version_of /prod/version)
check "/prod/version says v1 after the rollback (got '$v')" test "$v" = v1
check "history records it as a rollback ($(last_history prod))" test "$(last_history prod)" = "rollback v1 success"

# ------------------------------------------------------------------ 5. staging leaves prod alone
say "5. deploy v2 to staging, with load on /prod/"
prod_ids() { docker ps -aq --no-trunc --filter "name=^/$prefix-prod-" | sort | while read -r c; do docker inspect -f '{{.Id}} {{.State.Status}} {{.State.StartedAt}}' "$c"; done; }
prod_before=$(prod_ids)
upstream_sum=$(sha256sum <"$tmp/conf/upstreams/prod.conf")
load_phase staging /prod/version "$root/ci/deploy.sh" staging v2
check "ci/deploy.sh staging v2 exits 0 (got $rc)" test "$rc" = 0
v=$(version_of /staging/version)
check "/staging/version says v2 (got '$v')" test "$v" = v2
check "prod's containers (IDs, state, start time) are the same before and after" test "$(prod_ids)" = "$prod_before"
check "prod's upstream file is unchanged" test "$(sha256sum <"$tmp/conf/upstreams/prod.conf")" = "$upstream_sum"
check "prod under load during the staging deploy: 0 non-2xx, 0 errors of ${ph_total[staging]}, all v1 (${ph_versions[staging]})" \
  bash -c "[[ ${ph_non2xx[staging]} -eq 0 && ${ph_errors[staging]} -eq 0 && ${ph_total[staging]} -gt 0 && '${ph_versions[staging]}' =~ ^v1\ [0-9]+\$ ]]"
staging_sum=$(sha256sum <"$tmp/conf/upstreams/staging.conf")
run_deploy rollback-staging "$root/ci/rollback.sh" staging
check "ci/rollback.sh staging with one release in the history exits 1 and says so, staging untouched" \
  bash -c "test $rc -eq 1 && grep -q 'no successful staging release before v2' '$tmp/rollback-staging.log' && test '$(sha256sum <"$tmp/conf/upstreams/staging.conf")' = '$staging_sum'"

# ------------------------------------------------------------------ 6. history, images, nginx log
want_history=$'prod deploy v1 success\nprod deploy v2 success\nprod deploy broken failed\nprod deploy unhealthy failed\nprod deploy v3 failed\nprod deploy v1 failed\nprod deploy v1 failed\nprod rollback v1 success\nstaging deploy v2 success'
got_history=$(awk -F '\t' '{ print $2, $3, $4, $5 }' "$history")
check "the history has every attempt with its result, in order" test "$got_history" = "$want_history"
left=$(docker image ls "$repo" --format '{{.Tag}}' | sort | tr '\n' ' ')
check "images: v1 and v2 kept (current and previous), broken, unhealthy and v3 pruned (left: $left)" \
  test "$left" = "v1 v2 "
fivexx=$(grep -c '"status":5' "$tmp/nginx-access.log" || true)
check "nginx's access log has $(wc -l <"$tmp/nginx-access.log") lines and no 5xx (found ${fivexx})" test "$fivexx" = 0

echo
printf '%-10s %9s %8s %7s %17s  %s\n' phase total non-2xx errors keepalive-retries versions
for p in "${phases[@]}"; do
  printf '%-10s %9s %8s %7s %17s  %s\n' "$p" "${ph_total[$p]}" "${ph_non2xx[$p]}" "${ph_errors[$p]}" "${ph_retries[$p]}" "${ph_versions[$p]}"
done
say "took $((SECONDS - t_begin)) s: images $((t_deploys - t0)) s, deploy tests $((SECONDS - t_deploys)) s"
if ((fail > 0)); then
  sed 's/^/  nginx| /' "$tmp/nginx-error.log" | tail -n 20
fi
echo "deploy: $pass passed, $fail failed"
((fail == 0))
