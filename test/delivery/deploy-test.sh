#!/usr/bin/env bash
# End-to-end test of ci/deploy.sh and ci/rollback.sh with this machine as the VM: Docker runs
# the slots (two pier replicas each, on Unix sockets), an nginx started from config/nginx (its
# own prefix, pid file and port, never the system service) is the front door, and strict
# clients (test/delivery/load.py: nothing is ever sent twice) run through it on BOTH
# environments during every scenario:
#
#   v1-to-v2     deploy v2 over v1 (prod)
#   broken       deploy an image whose config pier refuses (exit 1 before healthy)
#   unhealthy    deploy an image that never turns healthy (PIER_HEALTH_TIMEOUT=6)
#   exits        deploy an image that exits at once (exit 2)
#   rollback     ci/rollback.sh prod (as by hand on the VM: no PIER_IMAGE)
#   staging      deploy v2 to staging (prod's clients watched)
#   concurrent   two deploys of prod at once (the second waits for the lock, saying so)
#   kill-9       kill -9 of one prod replica; Docker restarts it
#
# Every scenario fails on a single failed request of any client (refused, reset, EOF, timeout,
# non-2xx, a wrong echo), except that in kill-9 a POST in flight at the kill may fail (nginx
# never resends a POST it already sent); those are reported, GETs must all succeed. Also
# checked: the first deploy reports no live slot; each failed deploy reports the real exit
# status and pier's last log lines and leaves the live slot, its containers and the link
# alone; a release whose /version is not its tag is refused; nginx is never reloaded or
# signalled (its master's and workers' PIDs are the same at the end, its log has no signal);
# the history; image pruning; and a release pulled from a registry on loopback (Debian's
# docker-registry): ci/deploy.sh pulls it and the history records its digest. Prints a
# table: scenario, deploy duration, requests / failed per environment and client kind.
#
#   test/delivery/deploy-test.sh
#   DEPLOY_TEST_REPO   repository of the test's images (default pier-deploytest-<pid>)
#   DEPLOY_TEST_AFTER  seconds of load after each deploy ends (default 2)
# Containers are named pier-deploytest-<pid>-ENV-SLOT-REPLICA; ports are free loopback ports
# below the kernel's ephemeral range (20000-32767); state, sockets and nginx live in a
# temporary directory: it runs beside other tests. Last line "deploy: N passed, M failed",
# exit 1 if any failed. Removes its containers (by name), images, nginx (by PID), directory.
set -euo pipefail

test_name=deploy-test
# shellcheck source=test/delivery/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PIER_WATCH_SECONDS=0 # the watch after the switch has its own test (test/delivery/deploy-watch-test.sh)
command -v docker-registry >/dev/null 2>&1 || "$root/ci/install-deps.sh" --only docker-registry

# ------------------------------------------------------------------ images
t0=$SECONDS
build_release v1
build_release v2
images+=("$repo:broken" "$repo:unhealthy" "$repo:exits" "$repo:v3")
for bad in broken:broken-config unhealthy:unhealthy exits:exits; do
  docker build -q -t "$repo:${bad%%:*}" --build-arg BASE="$repo:v2" \
    -f "$root/test/delivery/images/${bad#*:}.Dockerfile" "$root/test/delivery/images" >/dev/null 2>"$tmp/build-bad.log" ||
    {
      cat "$tmp/build-bad.log"
      exit 1
    }
done
docker tag "$repo:v2" "$repo:v3" # a release whose /version does not say what its tag says
say "images ready after $((SECONDS - t0)) s"
t_deploys=$SECONDS
start_vm

# ------------------------------------------------------------------ first deploys
say "first deploys: v1 to prod and staging"
run_deploy deploy-v1 "$root/ci/deploy.sh" prod v1
check "ci/deploy.sh prod v1 exits 0 (got $rc) and calls it a first deploy, with no live slot" \
  bash -c "test $rc = 0 && grep -q 'first deploy of prod (no live slot yet)' '$tmp/deploy-v1.log' && ! grep -q 'live slot blue' '$tmp/deploy-v1.log'"
run_deploy deploy-v1-staging "$root/ci/deploy.sh" staging v1
check "ci/deploy.sh staging v1 exits 0 (got $rc)" test "$rc" = 0
v=$(version_of /prod/version) w=$(version_of /staging/version)
check "/prod/version and /staging/version through nginx say v1 (got '$v', '$w')" test "$v $w" = "v1 v1"
check "prod's link is current -> blue, the sockets are nogroup 660" \
  test "$(live prod) $(stat -c '%G %a' "$run/prod/blue/a.sock" "$run/prod/blue/b.sock" | tr '\n' ' ')" = "blue nogroup 660 nogroup 660 "
id=$(docker inspect -f '{{.Id}}' "$prefix-prod-blue-a")
check "a live replica runs as deployed (read-only, cap-drop ALL, no-new-privileges, 65532, unless-stopped once healthy, 127.0.0.1, socket dir mounted, labels)" \
  test "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.Config.User}} {{.HostConfig.RestartPolicy.Name}} {{(index (index .HostConfig.PortBindings "8000/tcp") 0).HostIp}} {{range .Mounts}}{{.Source}}:{{.Destination}}{{end}} {{index .Config.Labels "pier.env"}} {{index .Config.Labels "pier.replica"}} {{index .Config.Labels "pier.tag"}}' "$id" 2>/dev/null)" \
  = "true [ALL] [no-new-privileges] 65532:65532 unless-stopped 127.0.0.1 $run/prod/blue:/run/pier prod a v1"

# ------------------------------------------------------------------ v1 -> v2
say "v1-to-v2: deploy v2 to prod, clients on both environments"
v1_ids=$(live_ids prod)
scenario v1-to-v2 "$root/ci/deploy.sh" prod v2
check "v1-to-v2: exits 0 (got $rc), 0 failed of $(requests_of v1-to-v2) requests" deployed_cleanly v1-to-v2
check "v1-to-v2: prod's keep-alive clients got v1, then v2 ($(jq -c .keepalive.versions "$tmp/load-v1-to-v2-prod.json"))" \
  jq_ok '.keepalive.versions | keys_unsorted == ["v1", "v2"]' "$tmp/load-v1-to-v2-prod.json"
check "v1-to-v2: /prod/version says v2, current -> green" test "$(version_of /prod/version) $(live prod)" = "v2 green"
check "v1-to-v2: both old replicas exited 0 (drained, not killed)" \
  test "$(for c in $v1_ids; do docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$c"; done | sort -u)" = "exited 0"
check "v1-to-v2: the old slot's sockets were removed by the old replicas" \
  bash -c "! test -e '$run/prod/blue/a.sock' && ! test -e '$run/prod/blue/b.sock'"

# ------------------------------------------------------------------ releases that fail
prod_state=$(env_state prod)
say "broken: deploy an image whose config pier refuses"
scenario broken "$root/ci/deploy.sh" prod broken
check "broken: exits 1, reports status 1 and pier's error line (got $rc)" \
  bash -c "test $rc = 1 && grep -q 'FAILED: prod broken: .*exited with status 1 before it was healthy' '$tmp/broken.log' && grep -q 'listen.port: expected an integer' '$tmp/broken.log'"
check "broken: 0 failed of $(requests_of broken) requests" no_failures broken
check "broken: prod unchanged (link, containers, v2 answering)" test "$(env_state prod)" = "$prod_state"
check "broken: its containers were removed" \
  test -z "$(docker ps -aq --filter "name=^/$prefix-prod-" --filter "label=pier.tag=broken")"

say "unhealthy: deploy an image that never turns healthy (PIER_HEALTH_TIMEOUT=6)"
scenario unhealthy env PIER_HEALTH_TIMEOUT=6 "$root/ci/deploy.sh" prod unhealthy
check "unhealthy: exits 1 after the health timeout (got $rc)" bash -c "test $rc = 1 && grep -q 'not healthy after 6s' '$tmp/unhealthy.log'"
check "unhealthy: 0 failed of $(requests_of unhealthy) requests" no_failures unhealthy
check "unhealthy: prod unchanged" test "$(env_state prod)" = "$prod_state"

say "exits: deploy an image that exits at once"
scenario exits "$root/ci/deploy.sh" prod exits
check "exits: exits 1, reports status 2 and pier's 'unknown argument' line (got $rc)" \
  bash -c "test $rc = 1 && grep -q 'exited with status 2 before it was healthy' '$tmp/exits.log' && grep -q 'unknown argument --no-such-option' '$tmp/exits.log'"
check "exits: 0 failed of $(requests_of exits) requests" no_failures exits
check "exits: prod unchanged" test "$(env_state prod)" = "$prod_state"

say "mislabelled: deploy v2 tagged v3 (its /version says v2)"
run_deploy mislabelled "$root/ci/deploy.sh" prod v3
check "mislabelled: exits 1, the version check fails (got $rc)" bash -c "test $rc = 1 && grep -q \"reports version 'v2'.*not v3\" '$tmp/mislabelled.log'"
check "after four failed deploys prod is unchanged, and no failed release left a container" \
  bash -c "test '$(env_state prod)' = '$prod_state' && test \"\$(docker ps -aq --filter 'name=^/$prefix-prod-' --filter status=running | wc -l)\" = 2"

# ------------------------------------------------------------------ rollback
say "rollback: ci/rollback.sh prod (no PIER_IMAGE, as by hand on the VM)"
scenario rollback env -u PIER_IMAGE "$root/ci/rollback.sh" prod
check "rollback: exits 0 (got $rc), took v1 and $repo from the history" \
  bash -c "test $rc = 0 && grep -q 'rolling back to v1' '$tmp/rollback.log' && grep -q 'image repository from the history: $repo\$' '$tmp/rollback.log'"
check "rollback: 0 failed of $(requests_of rollback) requests" no_failures rollback
check "rollback: /prod/version says v1, recorded as a rollback ($(last_history prod))" \
  test "$(version_of /prod/version) $(last_history prod)" = "v1 rollback v1 success"

# ------------------------------------------------------------------ staging
say "staging: deploy v2 to staging, prod's clients watched"
prod_state=$(env_state prod)
scenario staging "$root/ci/deploy.sh" staging v2
check "staging: exits 0 (got $rc), /staging/version says v2" test "$rc $(version_of /staging/version)" = "0 v2"
check "staging: 0 failed of $(requests_of staging) requests (prod's: ${res[staging.prod.keepalive.requests]} + ${res[staging.prod.newconn.requests]} + ${res[staging.prod.post.requests]})" no_failures staging
check "staging: prod unchanged (link, containers, v1)" test "$(env_state prod)" = "$prod_state"

# ------------------------------------------------------------------ two deploys at once
two_deploys() { # deploy v2 and, 1 s later, v1 to prod; both must succeed, the second waits
  LOCK_SAY=2 timeout 200 "$root/ci/deploy.sh" prod v2 >"$tmp/concurrent-1.log" 2>&1 &
  local p1=$!
  sleep 1
  LOCK_SAY=2 timeout 200 "$root/ci/deploy.sh" prod v1 >"$tmp/concurrent-2.log" 2>&1
  local rc2=$?
  wait "$p1"
  local rc1=$?
  echo "rc $rc1 $rc2"
  cat "$tmp/concurrent-1.log" "$tmp/concurrent-2.log"
  ((rc1 == 0 && rc2 == 0))
}
say "concurrent: two deploys of prod at once"
scenario concurrent two_deploys
check "concurrent: both deploys exit 0 (got $rc), the second said every 2 s that it waited for the first" \
  bash -c "test $rc = 0 && grep -q 'waiting for the prod lock, held by pid [0-9]*, deploy v2' '$tmp/concurrent-2.log'"
check "concurrent: 0 failed of $(requests_of concurrent) requests" no_failures concurrent
check "concurrent: the second deploy's release (v1) is live" test "$(version_of /prod/version)" = v1

# ------------------------------------------------------------------ kill -9
victim_slot=$(live prod)
victim=$prefix-prod-$victim_slot-a
kill_one() { # kill -9 one live prod replica; wait until Docker restarted it and it serves
  local t n=0 p
  p=$(slot_port_of a)
  t=$(now_ms)
  # The process, as a crash would end it (`docker kill` counts as a manual stop, and Docker
  # would not restart the container).
  kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$victim")" || return 1
  echo "kill -9 of $victim's pier at $(date +%s.%N)"
  for _ in $(seq 1 150); do
    n=$(docker inspect -f '{{.RestartCount}} {{.State.Running}}' "$victim")
    [[ $n == "1 true" ]] && curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$p/prod/health" && break
    sleep 0.1
  done
  echo "restarted by Docker and answering after $(secs $(($(now_ms) - t))) s ($n)"
  [[ $n == "1 true" ]]
}
slot_port_of() { # the victim's TCP port
  local i=0
  [[ $victim_slot == green ]] && i=2
  [[ $1 == b ]] && i=$((i + 1))
  echo "${ports[$i]}"
}
say "kill-9: kill -9 of $victim, clients on both environments"
scenario kill-9 kill_one
check "kill-9: Docker restarted $victim and it answers again ($(grep restarted "$tmp/kill-9.log" || true))" test "$rc" = 0
check "kill-9: 0 failed GET (keep-alive and new-connection clients) of both environments" \
  test "$(failed_of kill-9 keepalive newconn)" = 0
check "kill-9: staging's POSTs: 0 failed" test "${res[kill-9.staging.post.failed]}" = 0
check "kill-9: its socket is a socket again after the restart" test -S "$run/prod/$victim_slot/a.sock"
kill_posts=${res[kill-9.prod.post.failed]}
say "kill-9: prod POSTs in flight at the kill that failed: $kill_posts of ${res[kill-9.prod.post.requests]} ($(jq -c '.post.codes, .post.error_kinds' "$tmp/load-kill-9-prod.json" | tr '\n' ' '))"

# ------------------------------------------------------------------ history, images, nginx
want_history=$'prod deploy v1 success\nstaging deploy v1 success\nprod deploy v2 success\nprod deploy broken failed\nprod deploy unhealthy failed\nprod deploy exits failed\nprod deploy v3 failed\nprod rollback v1 success\nstaging deploy v2 success\nprod deploy v2 success\nprod deploy v1 success'
got_history=$(awk -F '\t' '{ print $2, $3, $4, $5 }' "$history")
check "the history has every attempt with its result, in order" test "$got_history" = "$want_history"
left=$(docker image ls "$repo" --format '{{.Tag}}' | sort | tr '\n' ' ')
check "images: v1 and v2 kept, broken, unhealthy, exits and v3 pruned (left: $left)" test "$left" = "v1 v2 "
check "nginx was never reloaded: the same master and workers at the end ($(nginx_procs | tr '\n' ' '))" \
  test "$(nginx_procs)" = "$nginx_before"
check "nginx's log has no signal or reconfiguration" bash -c "! grep -Ei 'signal|reconfigur|reopen' '$tmp/nginx-error.log'"
fivexx=$(grep -c '"status":5' "$tmp/nginx-access.log" || true)
check "nginx's access log ($(wc -l <"$tmp/nginx-access.log") lines) has no 5xx but the POSTs lost at the kill ($fivexx, $kill_posts)" \
  test "$fivexx" -le "$kill_posts"


# ------------------------------------------------------------------ a release pulled from a registry
# What CI does: the image is not on the VM, ci/deploy.sh pulls it, and the history records
# the digest it was pulled by. The registry is Debian's docker-registry on a loopback port
# (Docker trusts 127.0.0.0/8 without TLS).
say "registry: deploy v2 to staging from a registry on loopback (pull, digest in the history)"
reg_port=$(free_port)
mkdir -p "$tmp/registry"
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$tmp/registry" "$reg_port" >"$tmp/registry.yml"
docker-registry serve "$tmp/registry.yml" >"$tmp/registry-server.log" 2>&1 &
registry_pid=$!
extra_pids+=("$registry_pid")
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$reg_port/v2/" && break
  sleep 0.1
done
reg_repo=127.0.0.1:$reg_port/${repo##*/}
images+=("$reg_repo:v2")
docker tag "$repo:v2" "$reg_repo:v2"
pushed=""
if timeout 120 docker push -q "$reg_repo:v2" >"$tmp/push.log" 2>&1; then
  pushed=$(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$reg_repo:v2" | sed -n "s|^$reg_repo@||p" | head -n 1)
fi
check "registry: docker push to the loopback registry gives a digest (${pushed:-none}; $(tail -n 1 "$tmp/push.log"))" test -n "$pushed"
docker rmi "$reg_repo:v2" >/dev/null 2>&1 || true # the VM does not have it: deploy.sh must pull
PIER_IMAGE=$reg_repo run_deploy registry "$root/ci/deploy.sh" staging v2
check "registry: ci/deploy.sh staging v2 exits 0 and pulled the image (got $rc)" \
  bash -c "test $rc -eq 0 && grep -q 'pulling $reg_repo:v2' '$tmp/registry.log'"
v=$(version_of /staging/version)
check "registry: /staging/version says v2 (got '$v')" test "$v" = v2
got_digest=$(awk -F '\t' -v e=staging '$2 == e { l = $9 } END { print l }' "$history" | sed -n 's/.*digest: //p')
check "registry: the history records the digest it was pulled by (${got_digest:-none})" \
  test -n "$pushed" -a "$got_digest" = "$pushed"
kill "$registry_pid" 2>/dev/null || true
wait "$registry_pid" 2>/dev/null || true
registry_pid=""
extra_pids=()

print_table ", kill-9's is until the replica answers again"
say "took $((SECONDS - t_begin)) s: images $((t_deploys - t0)) s, deploy tests $((SECONDS - t_deploys)) s"
if ((fail > 0)); then
  sed 's/^/  nginx| /' "$tmp/nginx-error.log" | tail -n 20
fi
echo "deploy: $pass passed, $fail failed"
((fail == 0))
