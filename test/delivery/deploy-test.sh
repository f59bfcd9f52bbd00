#!/usr/bin/env bash
# End-to-end test of deploy/pier-deploy with this machine as the VM (test/delivery/lib.sh):
# Docker runs the slots (two pier replicas each, on Unix sockets), an nginx started from
# config/nginx (its own prefix, pid file and port, never the system service) is the front
# door, and strict clients (test/delivery/load.py: nothing is ever sent twice) run through it
# on BOTH environments during every scenario. The metrics token is set up exactly as on the
# VM (`pier-deploy setup` makes it, root:65532 0640; pier requires it; the watch reads it as
# root). One stand, in this order:
#
#   first        first deploys: prod <sha> (v1's build, tagged with its commit), staging v1
#   v1, v2       deploy v1 then v2 over it (prod), each watched and kept
#   broken       an image whose config pier refuses (exit 1 before healthy)
#   unhealthy    an image that never turns healthy (health.timeout_s=6 by override)
#   exits        an image that exits at once (exit 2); mislabelled: its /version is not its tag
#   rollback x3  v2 -> v1 -> <sha> (the release live before v1), then nothing left: refused
#   staging      deploy v2 to staging (prod's clients watched)
#   concurrent   two deploys of prod at once (the second waits for the lock, saying so)
#   kill-9       kill -9 of one live prod replica; Docker restarts it
#   echo-500     a test build answering 500 to POST /echo: switched back, exit 3, rolled-back
#   slow-100ms   a test build 100 ms slower: switched back on p99
#   watch-kill   kill -9 of a NEW replica during the watch: the restart is counted, switched back
#   sigkill      SIGKILL of the deploy mid-watch; `status` says so; the next deploy reconciles
#   ssh-drop     the deploy driven over SSH (a throwaway sshd on loopback), the SSH session
#                killed mid-watch: the deploy on the host completes its watch (kept)
#   quiet        a watched deploy with no traffic: kept, "not judged"
#   usr1         a 300 s window ended early with SIGUSR1: kept
#   registry     v2 pulled from a registry on loopback, the digest in the history
# Every scenario fails on a single failed request of any client (refused, reset, EOF,
# timeout, non-2xx, a wrong echo), except: a POST inside a replica killed by kill -9 may fail
# (nginx never resends a POST it sent), and echo-500's POSTs answered 500 by that release
# (the fault the watch must catch). Also: nginx is never reloaded (its PIDs are the same at
# the end, its log has no signal), the history, image pruning, the container limits.
# Prints a table per scenario; last line "deploy: N passed, M failed".
#
#   test/delivery/deploy-test.sh
#   DEPLOY_TEST_REPO   repository of the test's images (default pier-deploytest-<pid>)
#   DEPLOY_TEST_AFTER  seconds of load after each deploy ends (default 2)
set -euo pipefail

test_name=deploy
# shellcheck source=test/delivery/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v docker-registry >/dev/null 2>&1 || "$root/ci/install-deps.sh" --only docker-registry
[[ -x /usr/sbin/sshd ]] || "$root/ci/install-deps.sh" --only openssh-server

# ------------------------------------------------------------------ images
t0=$SECONDS
build_release v1
build_release v2
build_release bad500 echo-500
build_release slow100 slow-100ms
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
# The release before v1: v1's build under its commit's tag (a SHA tag must match /version's commit).
sha=$(docker run --rm --entrypoint /pier "$repo:v1" --version 2>/dev/null | grep -o 'commit [0-9a-f]*' | cut -d' ' -f2 || true)
[[ $sha =~ ^[0-9a-f]{7,40}$ ]] || sha=$(git -C "$root" rev-parse --short=12 HEAD)
docker tag "$repo:v1" "$repo:$sha"
images+=("$repo:$sha")
say "images ready after $((SECONDS - t0)) s (the release before v1: $repo:$sha)"
t_deploys=$SECONDS
start_vm

verdict_of() { grep -o 'VERDICT: .*' "$tmp/$1.log" | tail -n 1 || true; }
history_of() { awk -F '\t' -v t="$1" '$4 == t { r = $3 " " $5 " | " $9 } END { print r }' "$history"; }
live_tag() { "$pd" status "$1" 2>/dev/null | sed -n "s/^$1: \([^ ]*\) live on.*/\1/p"; }
posts_only_500() { # the clients' only failures are POSTs answered 500 (echo-500's release)
  jq -e '.post.codes == {"500": .post.failed} and ([.keepalive.failed, .newconn.failed, .post.errors, .post.bad_echo] | add) == 0' "$1" >/dev/null
}

# ------------------------------------------------------------------ first deploys
say "first deploys: $sha to prod, v1 to staging"
run_deploy first-prod "$pd" deploy prod "$sha"
check "pier-deploy deploy prod $sha exits 0 (got $rc), a first deploy: no live slot, no watch" \
  bash -c "test $rc = 0 && grep -q 'first deploy of prod (no live slot yet)' '$tmp/first-prod.log' && grep -q 'first deploy of prod: no watch' '$tmp/first-prod.log'"
run_deploy first-staging "$pd" deploy staging v1
check "pier-deploy deploy staging v1 exits 0 (got $rc)" test "$rc" = 0
check "prod's link is current -> blue, the sockets are nogroup 660" \
  test "$(live prod) $(stat -c '%G %a' "$run/prod/blue/a.sock" "$run/prod/blue/b.sock" | tr '\n' ' ')" = "blue nogroup 660 nogroup 660 "
id=$(docker inspect -f '{{.Id}}' "$prefix-prod-blue-a")
check "a live replica runs as deployed (read-only, cap-drop ALL, no-new-privileges, 65532, unless-stopped, 127.0.0.1, labels)" \
  test "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.Config.User}} {{.HostConfig.RestartPolicy.Name}} {{(index (index .HostConfig.PortBindings "8000/tcp") 0).HostIp}} {{index .Config.Labels "pier.env"}} {{index .Config.Labels "pier.replica"}} {{index .Config.Labels "pier.tag"}}' "$id")" \
  = "true [ALL] [no-new-privileges] 65532:65532 unless-stopped 127.0.0.1 prod a $sha"
mounts=$(docker inspect -f '{{range .Mounts}}{{.Source}}:{{.Destination}}:{{.RW}} {{end}}' "$id")
check "its mounts: the slot's socket directory, the secrets read-only ($mounts)" \
  bash -c "[[ ' $mounts' == *' $run/prod/blue:/run/pier:true '* && ' $mounts' == *' $tmp/secrets/prod:/run/secrets:false '* ]]"
limits=$(docker inspect -f '{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}} {{.HostConfig.NanoCpus}}' "$id")
check "docker inspect: the deploy file's limits (memory 64m, no swap, pids 64, cpus 0.5): $limits" \
  test "$limits" = "67108864 67108864 64 500000000"
token_perm=$(stat -c '%U:%g %a' "$tmp/secrets/prod/metrics-token")
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ports[0]}/prod/metrics" || true)
check "the metrics token as on the VM: $token_perm, and /metrics without it answers $code" \
  test "$token_perm $code" = "root:65532 640 401"

# ------------------------------------------------------------------ v1, v2
say "v1, v2: deploy v1 then v2 to prod (watched ${WINDOW:-8} s each), clients on both environments"
scenario v1 "$pd" deploy prod v1
check "v1: exits 0 (got $rc), kept by the watch ($(verdict_of v1))" \
  bash -c "test $rc = 0 && grep -q 'VERDICT: prod v1 kept: [0-9]* requests' '$tmp/v1.log'"
check "v1: 0 failed of $(requests_of v1) requests" no_failures v1
v1_ids=$(live_ids prod)
scenario v2 "$pd" deploy prod v2
check "v2: exits 0 (got $rc), 0 failed of $(requests_of v2) requests" deployed_cleanly v2
check "v2: the watch judged real traffic: $(verdict_of v2)" \
  bash -c "grep -Eq 'VERDICT: prod v2 kept: ([2-9][0-9]|[0-9]{3,}) requests' '$tmp/v2.log'"
check "v2: prod's keep-alive clients got v1, then v2 ($(jq -c .keepalive.versions "$tmp/load-v2-prod.json"))" \
  jq_ok '.keepalive.versions | keys_unsorted == ["v1", "v2"]' "$tmp/load-v2-prod.json"
check "v2: /prod/version says v2, current -> blue" test "$(version_of /prod/version) $(live prod)" = "v2 blue"
check "v2: both old replicas exited 0 (drained, not killed)" \
  test "$(for c in $v1_ids; do docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$c"; done | sort -u)" = "exited 0"
check "v2: the history records it kept, with the figures ($(history_of v2))" \
  bash -c "[[ '$(history_of v2)' == 'deploy success | kept: '*' requests in '* ]]"

# ------------------------------------------------------------------ releases that fail
prod_state=$(env_state prod)
say "broken: an image whose config pier refuses"
scenario broken "$pd" deploy prod broken
check "broken: exits 1, reports status 1 and pier's error line (got $rc)" \
  bash -c "test $rc = 1 && grep -q 'FAILED: prod broken: .*exited with status 1 before it was healthy' '$tmp/broken.log' && grep -q 'listen.port: expected an integer' '$tmp/broken.log'"
check "broken: 0 failed of $(requests_of broken) requests" no_failures broken
check "broken: prod unchanged (link, containers, v2 answering)" test "$(env_state prod)" = "$prod_state"
check "broken: its containers were removed" \
  test -z "$(docker ps -aq --filter "name=^/$prefix-prod-" --filter "label=pier.tag=broken")"
say "unhealthy: an image that never turns healthy (PIER_DEPLOY_HEALTH_TIMEOUT_S=6)"
scenario unhealthy env PIER_DEPLOY_HEALTH_TIMEOUT_S=6 "$pd" deploy prod unhealthy
check "unhealthy: exits 1 after the health timeout (got $rc), the override is reported" \
  bash -c "test $rc = 1 && grep -q 'not healthy after 6s' '$tmp/unhealthy.log' && grep -q 'override: prod health.timeout_s = 6 (PIER_DEPLOY_HEALTH_TIMEOUT_S)' '$tmp/unhealthy.log'"
check "unhealthy: 0 failed of $(requests_of unhealthy) requests" no_failures unhealthy
check "unhealthy: prod unchanged" test "$(env_state prod)" = "$prod_state"
say "exits: an image that exits at once"
scenario exits "$pd" deploy prod exits
check "exits: exits 1, reports status 2 and pier's 'unknown argument' line (got $rc)" \
  bash -c "test $rc = 1 && grep -q 'exited with status 2 before it was healthy' '$tmp/exits.log' && grep -q 'unknown argument --no-such-option' '$tmp/exits.log'"
check "exits: 0 failed of $(requests_of exits) requests" no_failures exits
check "exits: prod unchanged" test "$(env_state prod)" = "$prod_state"
run_deploy mislabelled "$pd" deploy prod v3
check "mislabelled: v2 tagged v3 is refused by the version check (got $rc)" \
  bash -c "test $rc = 1 && grep -q \"reports version 'v2'.*not v3\" '$tmp/mislabelled.log'"
check "after four failed deploys prod is unchanged, and no failed release left a container" \
  bash -c "test '$(env_state prod)' = '$prod_state' && test \"\$(docker ps -aq --filter 'name=^/$prefix-prod-' --filter status=running | wc -l)\" = 2"

# ------------------------------------------------------------------ rollback, twice
say "rollback: twice, v2 -> v1 -> $sha, then nothing left"
scenario rollback "$pd" rollback prod
check "rollback: exits 0 (got $rc), from v2 to v1, not watched" \
  bash -c "test $rc = 0 && grep -q 'live release v2, rolling back to v1' '$tmp/rollback.log' && ! grep -q 'watching' '$tmp/rollback.log'"
check "rollback: 0 failed of $(requests_of rollback) requests, v1 live ($(live_tag prod))" \
  bash -c "[[ $(no_failures rollback && echo ok) == ok && '$(live_tag prod)' == v1 ]]"
scenario rollback-2 "$pd" rollback prod
check "a second rollback goes one further back (v1 -> $sha), never forward to v2 (got $rc: $(grep -o 'rolling back to [^ ]*' "$tmp/rollback-2.log"))" \
  bash -c "test $rc = 0 && grep -q 'live release v1, rolling back to $sha' '$tmp/rollback-2.log' && test '$(live_tag prod)' = '$sha'"
check "rollback-2: 0 failed of $(requests_of rollback-2) requests" no_failures rollback-2
run_deploy rollback-3 "$pd" rollback prod
check "a third rollback has nowhere to go: refused, exit 1 ($(grep -o 'FAILED.*' "$tmp/rollback-3.log"))" \
  bash -c "test $rc = 1 && grep -q 'names no release before it' '$tmp/rollback-3.log' && test '$(live_tag prod)' = '$sha'"
run_deploy rollback-tag "$pd" rollback prod v2
check "rollback prod v2 (an explicit TAG) goes there (got $rc, live $(live_tag prod))" \
  bash -c "test $rc = 0 && test '$(live_tag prod)' = v2"

# ------------------------------------------------------------------ staging, two at once, kill -9
say "staging: deploy v2 to staging, prod's clients watched"
prod_state=$(env_state prod)
scenario staging "$pd" deploy staging v2
check "staging: exits 0 (got $rc), /staging/version says v2" test "$rc $(version_of /staging/version)" = "0 v2"
check "staging: 0 failed of $(requests_of staging) requests" no_failures staging
check "staging: prod unchanged (link, containers, v2)" test "$(env_state prod)" = "$prod_state"
two_deploys() { # deploy v1 and, 1 s later, v2 to prod; both must succeed, the second waits
  PIER_DEPLOY_LOCK_SAY=2 timeout 200 "$pd" deploy prod v1 --no-watch >"$tmp/concurrent-1.log" 2>&1 &
  local p1=$! rc1=0 rc2=0
  sleep 1
  PIER_DEPLOY_LOCK_SAY=2 timeout 200 "$pd" deploy prod v2 --no-watch >"$tmp/concurrent-2.log" 2>&1 || rc2=$?
  wait "$p1" || rc1=$?
  echo "rc $rc1 $rc2"
  cat "$tmp/concurrent-1.log" "$tmp/concurrent-2.log"
  ((rc1 == 0 && rc2 == 0))
}
say "concurrent: two deploys of prod at once"
scenario concurrent two_deploys
check "concurrent: both exit 0 (got $rc), the second said every 2 s that it waited for the first" \
  bash -c "test $rc = 0 && grep -q 'waiting for the prod lock, held by pid [0-9]*, deploy v1' '$tmp/concurrent-2.log'"
check "concurrent: 0 failed of $(requests_of concurrent) requests" no_failures concurrent
check "concurrent: the second deploy's release (v2) is live" test "$(version_of /prod/version)" = v2
port_of() { # port_of NAME: the 127.0.0.1 port of a prod replica
  local i=0
  [[ $(docker inspect -f '{{index .Config.Labels "pier.slot"}}' "$1") == green ]] && i=2
  [[ $(docker inspect -f '{{index .Config.Labels "pier.replica"}}' "$1") == b ]] && i=$((i + 1))
  echo "${ports[$i]}"
}
kill_replica() { # kill_replica NAME: kill -9 of its pier, as a crash; wait until Docker restarted it and it answers
  local n=$1 t port c="" up
  port=$(port_of "$n")
  # Docker restarts a container only once it has run 10 s ("started successfully").
  up=$(($(date +%s) - $(date -d "$(docker inspect -f '{{.State.StartedAt}}' "$n")" +%s)))
  ((up >= 11)) || sleep $((11 - up))
  t=$(now_ms)
  kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$n")" || return 1
  echo "kill -9 of $n's pier at $(date +%s.%N)"
  for _ in $(seq 1 150); do
    c=$(docker inspect -f '{{.RestartCount}} {{.State.Running}}' "$n")
    [[ $c == "1 true" ]] && curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$port/prod/health" && break
    sleep 0.1
  done
  echo "restarted by Docker and answering after $(secs $(($(now_ms) - t))) s ($c)"
  [[ $c == "1 true" ]]
}
victim=$prefix-prod-$(live prod)-a
say "kill-9: kill -9 of $victim"
scenario kill-9 kill_replica "$victim"
check "kill-9: Docker restarted $victim and it answers again ($(grep restarted "$tmp/kill-9.log" || true))" test "$rc" = 0
check "kill-9: 0 failed GET (keep-alive and new-connection clients) of both environments" \
  test "$(failed_of kill-9 keepalive newconn)" = 0
check "kill-9: staging's POSTs: 0 failed" test "${res[kill-9.staging.post.failed]}" = 0
# nginx never resends a POST (non-idempotent): one in flight on the killed replica is lost, with
# a 502. Each POST client has at most one request in flight, so at most that many are lost.
posts_lost_in_flight() { # SCENARIO: prod's failed POSTs are all 502 and at most one per POST client
  jq -e --argjson n "$post_clients" '.post.failed <= $n and ((.post.failed == 0) or (.post.codes == {"502": .post.failed}))
    and ([.post.errors, .post.bad_echo] | add) == 0' "$tmp/load-$1-prod.json" >/dev/null
}
check "kill-9: prod's POSTs lost: ${res[kill-9.prod.post.failed]} of ${res[kill-9.prod.post.requests]}, only those in flight on the killed replica (502, at most one per POST client: $post_clients)" \
  posts_lost_in_flight kill-9

# ------------------------------------------------------------------ the watch: bad releases
say "echo-500: a release whose POST /echo answers 500"
scenario echo-500 "$pd" deploy prod bad500
check "echo-500: exits 3, switched back on the 5xx ratio ($(verdict_of echo-500))" \
  bash -c "test $rc = 3 && grep -q 'VERDICT: prod bad500 rolled back: 5xx ratio' '$tmp/echo-500.log' && grep -q 'switched back: ' '$tmp/echo-500.log'"
echo500_ok() { [[ $(failed_of echo-500 keepalive newconn) == 0 && ${res[echo-500.staging.post.failed]} == 0 ]] && posts_only_500 "$tmp/load-echo-500-prod.json"; }
check "echo-500: 0 failed GETs; the only failures are POSTs answered 500 by that release ($(jq -c '.post.codes' "$tmp/load-echo-500-prod.json") of ${res[echo-500.prod.post.requests]})" echo500_ok
check "echo-500: the history says rolled-back with the figures; v2 serves again" \
  bash -c "[[ '$(history_of bad500)' == 'deploy rolled-back | rolled back: 5xx ratio '* && '$(version_of /prod/version)' == v2 ]]"
say "slow-100ms: a release 100 ms slower on every request"
scenario slow-100ms "$pd" deploy prod slow100
check "slow-100ms: exits 3, switched back on p99 against the old slot's recent p99 ($(verdict_of slow-100ms))" \
  bash -c "test $rc = 3 && grep -q 'VERDICT: prod slow100 rolled back: p99 [0-9.]* ms > 2x the old slot' '$tmp/slow-100ms.log'"
check "slow-100ms: 0 failed of $(requests_of slow-100ms) requests, v2 serves again" \
  bash -c "[[ $(no_failures slow-100ms && echo ok) == ok && '$(version_of /prod/version)' == v2 ]]"

# ------------------------------------------------------------------ the watch: a replica killed during it
watch_kill() { # deploy v1 (window 40 s); once watching, kill -9 a new replica
  local p rc=0 new
  PIER_DEPLOY_WATCH_WINDOW_S=40 "$pd" deploy prod v1 >"$tmp/watch-kill-deploy.log" 2>&1 &
  p=$!
  for _ in $(seq 1 600); do grep -q 'watching v1' "$tmp/watch-kill-deploy.log" && break; sleep 0.1; done
  new=$prefix-prod-$(live prod)-b
  sleep 1
  kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$new")" && echo "kill -9 of $new's pier during the watch"
  wait "$p" || rc=$?
  cat "$tmp/watch-kill-deploy.log"
  return "$rc"
}
say "watch-kill: kill -9 of a new replica during the watch"
scenario watch-kill watch_kill
check "watch-kill: the restart is counted: switched back, exit 3 ($(verdict_of watch-kill))" \
  bash -c "test $rc = 3 && grep -q 'VERDICT: prod v1 rolled back: the new replicas restarted or stopped 1 time' '$tmp/watch-kill.log'"
check "watch-kill: 0 failed GETs of both environments" test "$(failed_of watch-kill keepalive newconn)" = 0
check "watch-kill: prod's POSTs lost: ${res[watch-kill.prod.post.failed]}, only those in flight on the killed replica (502, at most $post_clients)" \
  posts_lost_in_flight watch-kill
check "watch-kill: v2 serves again" test "$(version_of /prod/version)" = v2

# ------------------------------------------------------------------ SIGKILL of the deploy mid-watch
sigkill() { # deploy v1 (window 60 s); once watching, kill -9 the deploy; then status; then deploy v2
  local p rc=0
  PIER_DEPLOY_WATCH_WINDOW_S=60 "$pd" deploy prod v1 >"$tmp/sigkill-deploy.log" 2>&1 &
  p=$!
  for _ in $(seq 1 600); do grep -q 'watching v1' "$tmp/sigkill-deploy.log" && break; sleep 0.1; done
  sleep 2
  kill -KILL "$p" && echo "kill -9 of the deploy (pid $p) mid-watch"
  wait "$p" || true
  "$pd" status prod >"$tmp/sigkill-status.log" 2>&1 || true
  sed 's/^/status| /' "$tmp/sigkill-status.log"
  timeout 200 "$pd" deploy prod v2 >"$tmp/sigkill-next.log" 2>&1 || rc=$?
  cat "$tmp/sigkill-next.log"
  "$pd" status prod >"$tmp/sigkill-status2.log" 2>&1 || rc=1
  sed 's/^/status after| /' "$tmp/sigkill-status2.log"
  return "$rc"
}
say "sigkill: SIGKILL of the deploy mid-watch, then status, then a new deploy"
scenario sigkill sigkill
check "sigkill: status tells the truth: v1 live, its watch interrupted, the old slot still running" \
  bash -c "grep -q '^prod: v1 live on' '$tmp/sigkill-status.log' && grep -q 'interrupted during its watch' '$tmp/sigkill-status.log' && grep -q 'idle slot .* has running containers' '$tmp/sigkill-status.log'"
check "sigkill: the next deploy reconciles (the interrupted watch recorded, the stray slot stopped) and deploys v2 (got $rc)" \
  bash -c "test $rc = 0 && grep -q 'reconcile: a deploy of v1 .* was interrupted during its watch' '$tmp/sigkill-next.log' && grep -q 'reconcile: the idle slot .* left by an interrupted deploy' '$tmp/sigkill-next.log'"
check "sigkill: afterwards status is clean (v2 live, no problem, no interrupted watch, the lock free)" \
  bash -c "grep -q '^prod: v2 live on' '$tmp/sigkill-status2.log' && ! grep -Eq 'problem|interrupted|a deploy is running' '$tmp/sigkill-status2.log'"
check "sigkill: 0 failed of $(requests_of sigkill) requests" no_failures sigkill

# ------------------------------------------------------------------ the SSH session dropped mid-watch
ssh_port=$(free_port)
mkdir -p "$tmp/ssh" "$tmp/bin" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$tmp/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/ssh/user_key"
cp "$tmp/ssh/user_key.pub" "$tmp/ssh/authorized_keys"
# On the VM `pier-deploy` is the root-owned copy setup installed; here, this checkout's.
printf '#!/bin/sh\nexec %q --here --file %q "$@"\n' "$pd" "$stand" >"$tmp/bin/pier-deploy"
chmod 755 "$tmp/bin/pier-deploy"
cat >"$tmp/ssh/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $tmp/ssh/host_key
PidFile $tmp/ssh/sshd.pid
AuthorizedKeysFile $tmp/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv PATH=$tmp/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
/usr/sbin/sshd -f "$tmp/ssh/sshd_config" -E "$tmp/ssh/sshd.log" -D &
extra_pids+=($!)
for _ in $(seq 1 50); do port_free "$ssh_port" || break; sleep 0.1; done
ssh_drop() { # deploy v1 over SSH (the host's window: 8 s); once watching, kill the ssh client; wait for the host side
  local p ssh_pid rc=0
  PIER_DEPLOY_SSH_HOST=127.0.0.1 PIER_DEPLOY_SSH_PORT=$ssh_port PIER_DEPLOY_SSH_USER=root \
    DEPLOY_SSH_KEY="$(cat "$tmp/ssh/user_key")" DEPLOY_KNOWN_HOSTS="[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$tmp/ssh/host_key.pub")" \
    "$pd" deploy prod v1 >"$tmp/ssh-drop-client.log" 2>&1 &
  p=$!
  for _ in $(seq 1 600); do grep -q 'watching v1' "$tmp/ssh-drop-client.log" && break; sleep 0.1; done
  ssh_pid=$(pgrep -P "$p" -x ssh || true)
  sleep 2
  [[ -n $ssh_pid ]] && kill -KILL "$ssh_pid" && echo "kill -9 of the ssh client (pid $ssh_pid) mid-watch: the session is gone"
  wait "$p" || rc=$?
  echo "the client exited with status $rc"
  cat "$tmp/ssh-drop-client.log"
  local st
  for _ in $(seq 1 600); do # the host side goes on: wait until it let go of the lock
    st=$("$pd" status prod 2>&1 || true)
    [[ $st == *'a deploy is running'* ]] || break
    sleep 0.2
  done
  "$pd" status prod >"$tmp/ssh-drop-status.log" 2>&1 || true
  sed 's/^/status| /' "$tmp/ssh-drop-status.log"
  [[ $rc == 255 ]]
}
say "ssh-drop: the deploy over SSH, the session killed mid-watch"
scenario ssh-drop ssh_drop
check "ssh-drop: the session died (client status 255) mid-watch" test "$rc" = 0
check "ssh-drop: the host side completed its watch: history 'success | kept', v1 live, status clean ($(history_of v1 | cut -c1-60))" \
  bash -c "[[ '$(history_of v1)' == 'deploy success | kept: '* ]] && grep -q '^prod: v1 live on' '$tmp/ssh-drop-status.log' && ! grep -Eq 'problem|interrupted' '$tmp/ssh-drop-status.log'"
check "ssh-drop: the deploy log on the host has the verdict" grep -q 'VERDICT: prod v1 kept' "$tmp/state/deploy.log"
check "ssh-drop: 0 failed of $(requests_of ssh-drop) requests" no_failures ssh-drop

# ------------------------------------------------------------------ quiet, usr1
run_deploy quiet env PIER_DEPLOY_WATCH_WINDOW_S=4 "$pd" deploy prod v2
check "quiet: no traffic: kept and says it could not judge ($(verdict_of quiet))" \
  bash -c "test $rc = 0 && grep -q 'VERDICT: prod v2 kept, not judged: only [0-9]* requests' '$tmp/quiet.log'"
usr1() { # deploy v1 with a 300 s window; 3 s into it, SIGUSR1 to the pid the deploy names
  local p rc=0 named=""
  PIER_DEPLOY_WATCH_WINDOW_S=300 "$pd" deploy prod v1 >"$tmp/usr1-deploy.log" 2>&1 &
  p=$!
  for _ in $(seq 1 600); do
    named=$(sed -n 's/.*end early: kill -USR1 \([0-9]*\).*/\1/p' "$tmp/usr1-deploy.log")
    [[ -n $named ]] && break
    sleep 0.1
  done
  sleep 3
  [[ -n $named ]] && kill -USR1 "$named"
  for _ in $(seq 1 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill "$p" 2>/dev/null || true
  wait "$p" || rc=$?
  cat "$tmp/usr1-deploy.log"
  return "$rc"
}
scenario usr1 usr1
check "usr1: a 300 s window ended by SIGUSR1: exits 0 in ${dur[usr1]} s, kept ($(verdict_of usr1))" \
  bash -c "test $rc = 0 && grep -q 'VERDICT: prod v1 kept: the watch was ended early (SIGUSR1)' '$tmp/usr1.log' && test ${dur[usr1]%.*} -lt 120"
check "usr1: 0 failed of $(requests_of usr1) requests" no_failures usr1

# ------------------------------------------------------------------ a release pulled from a registry
say "registry: deploy v2 to staging from a registry on loopback (pull, digest in the history)"
reg_port=$(free_port)
mkdir -p "$tmp/registry"
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$tmp/registry" "$reg_port" >"$tmp/registry.yml"
docker-registry serve "$tmp/registry.yml" >"$tmp/registry-server.log" 2>&1 &
extra_pids+=($!)
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$reg_port/v2/" && break; sleep 0.1; done
reg_repo=127.0.0.1:$reg_port/${repo##*/}
images+=("$reg_repo:v2")
docker tag "$repo:v2" "$reg_repo:v2"
pushed=""
if timeout 120 docker push -q "$reg_repo:v2" >"$tmp/push.log" 2>&1; then
  pushed=$(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$reg_repo:v2" | sed -n "s|^$reg_repo@||p" | head -n 1)
fi
check "registry: docker push to the loopback registry gives a digest (${pushed:-none})" test -n "$pushed"
docker rmi "$reg_repo:v2" >/dev/null 2>&1 || true # the VM does not have it: the deploy must pull
PIER_DEPLOY_STAGING_IMAGE=$reg_repo run_deploy registry "$pd" deploy staging v2 --no-watch
check "registry: exits 0 and pulled the image (got $rc)" bash -c "test $rc -eq 0 && grep -q 'pulling $reg_repo:v2' '$tmp/registry.log'"
got_digest=$(awk -F '\t' -v e=staging '$2 == e { l = $9 } END { print l }' "$history" | sed -n 's/.*digest: //p')
check "registry: the history records the digest it was pulled by (${got_digest:-none})" \
  test -n "$pushed" -a "$got_digest" = "$pushed"

# ------------------------------------------------------------------ history, images, nginx, summary
want="prod deploy $sha success|staging deploy v1 success|prod deploy v1 success|prod deploy v2 success|prod deploy broken failed|prod deploy unhealthy failed|prod deploy exits failed|prod deploy v3 failed|prod rollback v1 success|prod rollback $sha success|prod rollback v2 success|staging deploy v2 success|prod deploy v1 success|prod deploy v2 success|prod deploy bad500 rolled-back|prod deploy slow100 rolled-back|prod deploy v1 rolled-back|prod reconcile v1 interrupted|prod deploy v2 success|prod deploy v1 success|prod deploy v2 success|prod deploy v1 success|staging deploy v2 success"
got=$(awk -F '\t' '{ printf "%s%s %s %s %s", (NR > 1 ? "|" : ""), $2, $3, $4, $5 }' "$history")
check "the history has every attempt with its result, in order (the third rollback was refused before it started)" test "$got" = "$want"
[[ $got == "$want" ]] || { echo "  want: $want"; echo "  got:  $got"; }
left=$(docker image ls "$repo" --format '{{.Tag}}' | sort | tr '\n' ' ')
check "images: the live releases and their rollback targets (v1, v2) kept; $sha, broken, unhealthy, exits, v3, bad500, slow100 pruned (left: $left)" \
  test "$left" = "v1 v2 "
check "nginx was never reloaded: the same master and workers at the end ($(nginx_procs | tr '\n' ' '))" \
  test "$(nginx_procs)" = "$nginx_before"
check "nginx's log has no signal or reconfiguration" bash -c "! grep -Ei 'signal|reconfigur|reopen' '$tmp/nginx-error.log'"
"$root/ci/deploy-summary.sh" "$tmp/echo-500.log" >"$tmp/summary.md"
check "ci/deploy-summary.sh: the verdict of a switched-back release, with the watch's lines" \
  bash -c "grep -q 'Switched back by the watch.*5xx ratio' '$tmp/summary.md' && grep -q 'watch [0-9.]*/8 s' '$tmp/summary.md'"
kept_md=$("$root/ci/deploy-summary.sh" "$tmp/v2.log")
unwatched_md=$("$root/ci/deploy-summary.sh" "$tmp/first-prod.log")
check "ci/deploy-summary.sh: a kept release, an unwatched one" \
  bash -c "[[ \$1 == *'**Deployed**, watch verdict: prod v2 kept: '* && \$2 == *'**Deployed** (not watched)'* ]]" _ "$kept_md" "$unwatched_md"

print_table ", kill-9's is until the replica answers again"
echo
for s in v2 echo-500 slow-100ms watch-kill ssh-drop; do
  printf '  %-11s %s\n' "$s" "$(verdict_of "$s" | cut -c1-220)"
done
sed 's/^/  summary| /' "$tmp/summary.md" | head -n 8
say "took $((SECONDS - t_begin)) s: images $((t_deploys - t0)) s, scenarios $((SECONDS - t_deploys)) s"
((fail > 0)) && sed 's/^/  nginx| /' "$tmp/nginx-error.log" | tail -n 20
echo "deploy: $pass passed, $fail failed"
((fail == 0))
