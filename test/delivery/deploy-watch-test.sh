#!/usr/bin/env bash
# End-to-end test of the watch after the switch (ci/deploy.sh, docs/deploys.md#the-watch-after-the-switch),
# on the same stand-in VM as test/delivery/deploy-test.sh (test/delivery/lib.sh: Docker, nginx from
# config/nginx, strict clients through it on both environments during every scenario):
#
#   good        v2 over v1: kept after the window, the figures recorded in the history
#   echo-500    a test build whose /health passes but whose POST /echo answers 500: switched
#               back within the window on the 5xx ratio, exit 3; the clients' only failures
#               are the 500s that release returned (no error, nothing from the switching)
#   slow-100ms  a test build that adds 100 ms to every request: switched back on p99, exit 3
#   usr1        v1 over v2 with a long window, ended early with SIGUSR1: kept
#   quiet       a deploy with no traffic: kept, "not judged" (fewer than the minimum)
#   --no-watch  no watch at all
# The test builds (-DPIER_TEST_FAULT, docker/Dockerfile's PIER_TEST_FAULT) exist only here.
# Prints, per scenario: the time from the switch to the verdict, the requests the watch saw,
# the figures that decided, and requests/failed per client; then ci/deploy-summary.sh's
# Markdown for one of them. Last line "deploy-watch: N passed, M failed".
#
#   test/delivery/deploy-watch-test.sh
#   DEPLOY_WATCH_SECONDS   the window in the test (default 20; PIER_WATCH_INTERVAL is 2)
set -euo pipefail

test_name=deploy-watch
# shellcheck source=test/delivery/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
window=${DEPLOY_WATCH_SECONDS:-20}
export PIER_WATCH_SECONDS=$window PIER_WATCH_INTERVAL=2

t0=$SECONDS
build_release v1
build_release v2
build_release bad500 echo-500
build_release slow100 slow-100ms
t_deploys=$SECONDS
start_vm

switch_to_verdict() { # switch_to_verdict NAME: seconds from "switched:" to the verdict line
  awk '/deploy: switched: / { s = $0; sub(/.* after /, "", s); sub(/ s .*/, "", s) }
       /deploy: watch [0-9.]+\// { w = $3; sub(/\/.*/, "", w) }
       END { print w }' "$tmp/$1.log"
}
verdict_of() { grep -o 'VERDICT: .*' "$tmp/$1.log" | tail -n 1 || true; }
history_result() { awk -F '\t' -v t="$1" '$4 == t { r = $5 " | " $9 } END { print r }' "$history"; }
history_is() { [[ $(history_result "$1") == $2* ]]; } # history_is TAG PREFIX
declare -A seen decided
note() { # note NAME: the watch's figures for the summary table
  seen[$1]=$(grep -Eo 'deploy: watch [0-9.]+/[0-9]+ s: [0-9]+ requests' "$tmp/$1.log" | tail -n 1 | awk '{ print $5 }')
  decided[$1]=$(verdict_of "$1" | sed 's/^VERDICT: [a-z]* [^ ]* //')
}

say "first deploys: v1 to prod and staging (a first deploy is not watched)"
run_deploy first-prod "$root/ci/deploy.sh" prod v1
check "prod v1: exits 0 (got $rc), no watch on a first deploy" \
  bash -c "test $rc = 0 && grep -q 'first deploy of prod: no watch' '$tmp/first-prod.log'"
run_deploy first-staging "$root/ci/deploy.sh" staging v1
check "staging v1: exits 0 (got $rc)" test "$rc" = 0

# ------------------------------------------------------------------ a good release
say "good: v2 over v1, watched for ${window}s"
scenario good "$root/ci/deploy.sh" prod v2
note good
check "good: exits 0 after the window, kept ($(verdict_of good))" \
  bash -c "test $rc = 0 && grep -q 'VERDICT: prod v2 kept: [0-9]* requests' '$tmp/good.log'"
check "good: the watch printed its progress ($(grep -c 'deploy: watch [0-9.]*/' "$tmp/good.log") lines, one per look)" \
  test "$(grep -c 'deploy: watch [0-9.]*/' "$tmp/good.log")" -ge 3
check "good: 0 failed of $(requests_of good) requests" no_failures good
check "good: the history records it with the figures ($(history_result v2))" \
  history_is v2 "success | kept: $(verdict_of good | sed 's/^VERDICT: prod v2 kept: //')"
check "good: /prod/version says v2" test "$(version_of /prod/version)" = v2

# ------------------------------------------------------------------ 500s on POST /echo
say "echo-500: a release whose POST /echo answers 500"
scenario echo-500 "$root/ci/deploy.sh" prod bad500
note echo-500
check "echo-500: exits 3, switched back on the 5xx ratio within the window ($(verdict_of echo-500))" \
  bash -c "test $rc = 3 && grep -q 'VERDICT: prod bad500 rolled back: 5xx ratio' '$tmp/echo-500.log' && grep -q 'switched back: .* -> green' '$tmp/echo-500.log'"
j=$tmp/load-echo-500-prod.json
other=$(jq '[.keepalive.failed, .newconn.failed, .post.errors, .post.bad_echo] | add' "$j")
check "echo-500: the clients' only failures are POSTs answered 500 by the bad release ($(jq -c '.post.codes' "$j") of ${res[echo-500.prod.post.requests]} POSTs; every other failure: $other)" \
  jq_ok '.post.failed > 0 and .post.codes == {"500": .post.failed} and ([.keepalive.failed, .newconn.failed, .post.errors, .post.bad_echo] | add) == 0' "$j"
staging_failed=$((${res[echo-500.staging.keepalive.failed]} + ${res[echo-500.staging.newconn.failed]} + ${res[echo-500.staging.post.failed]}))
check "echo-500: staging's clients: 0 failed (got $staging_failed)" test "$staging_failed" = 0
check "echo-500: v2 serves again ($(version_of /prod/version)), the bad slot was stopped" \
  bash -c "test '$(version_of /prod/version)' = v2 && test -z \"\$(docker ps -q --filter 'name=^/$prefix-prod-blue-')\""
check "echo-500: the history says rolled-back, with the figures" history_is bad500 "rolled-back | rolled back: 5xx ratio "

# ------------------------------------------------------------------ 100 ms slower
say "slow-100ms: a release 100 ms slower on every request"
scenario slow-100ms "$root/ci/deploy.sh" prod slow100
note slow-100ms
check "slow-100ms: exits 3, switched back on p99 ($(verdict_of slow-100ms))" \
  bash -c "test $rc = 3 && grep -q 'VERDICT: prod slow100 rolled back: p99 [0-9.]* ms > 2x' '$tmp/slow-100ms.log'"
check "slow-100ms: 0 failed of $(requests_of slow-100ms) requests" no_failures slow-100ms
check "slow-100ms: v2 serves again ($(version_of /prod/version))" test "$(version_of /prod/version)" = v2
check "slow-100ms: the history says rolled-back, with the figures" history_is slow100 "rolled-back | rolled back: p99 "

# ------------------------------------------------------------------ ending the watch early
usr1() { # deploy v1 with a 300 s window; 4 s into it, SIGUSR1 to the pid the deploy names
  PIER_WATCH_SECONDS=300 "$root/ci/deploy.sh" prod v1 >"$tmp/usr1-deploy.log" 2>&1 &
  local p=$! rc=0 named=""
  for _ in $(seq 1 1200); do
    named=$(sed -n 's/.*end early: kill -USR1 \([0-9]*\).*/\1/p' "$tmp/usr1-deploy.log")
    [[ -n $named ]] && break
    sleep 0.1
  done
  sleep 4
  [[ -n $named ]] && kill -USR1 "$named"
  for _ in $(seq 1 600); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  kill "$p" 2>/dev/null || true # still running after 60 s: the signal did not end it
  wait "$p" || rc=$?
  cat "$tmp/usr1-deploy.log"
  echo "the deploy named pid ${named:-none}; its own pid was $p"
  return "$rc"
}
say "usr1: v1 over v2 with a 300 s window, ended early by SIGUSR1"
scenario usr1 usr1
usr1_s=${dur[usr1]%.*}
check "usr1: exits 0 well before the 300 s window, kept ($(verdict_of usr1)) in ${dur[usr1]} s" \
  bash -c "test $rc = 0 && grep -q 'VERDICT: prod v1 kept: the watch was ended early (SIGUSR1)' '$tmp/usr1.log' && test $usr1_s -lt 120"
check "usr1: 0 failed of $(requests_of usr1) requests" no_failures usr1

# ------------------------------------------------------------------ too little traffic
say "quiet: v2 over v1 with no traffic (window 6 s)"
PIER_WATCH_SECONDS=6 run_deploy quiet "$root/ci/deploy.sh" prod v2
check "quiet: exits 0, kept and says it could not judge ($(verdict_of quiet))" \
  bash -c "test $rc = 0 && grep -q 'VERDICT: prod v2 kept, not judged: only [0-9]* requests .*fewer than 50' '$tmp/quiet.log'"

say "--no-watch: v1 over v2"
run_deploy no-watch "$root/ci/deploy.sh" --no-watch prod v1
check "--no-watch: exits 0 with no watch" bash -c "test $rc = 0 && ! grep -q 'deploy: watch' '$tmp/no-watch.log'"
check "ci/rollback.sh is not watched (it returns to a judged release)" \
  bash -c "env -u PIER_IMAGE timeout 200 '$root/ci/rollback.sh' prod >'$tmp/rollback.log' 2>&1 && ! grep -q 'deploy: watch' '$tmp/rollback.log'"

# ------------------------------------------------------------------ the job summary
"$root/ci/deploy-summary.sh" "$tmp/echo-500.log" >"$tmp/summary.md"
check "ci/deploy-summary.sh: the verdict of a switched-back release, with the watch's lines" \
  bash -c "grep -q 'Switched back by the watch.*5xx ratio' '$tmp/summary.md' && grep -q 'watch [0-9.]*/$window s' '$tmp/summary.md'"
kept_md=$("$root/ci/deploy-summary.sh" "$tmp/good.log")
unwatched_md=$("$root/ci/deploy-summary.sh" "$tmp/first-prod.log")
check "ci/deploy-summary.sh: a kept release, an unwatched one" \
  bash -c "[[ \$1 == *'**Deployed**, watch verdict: prod v2 kept: '* && \$2 == *'**Deployed** (not watched)'* ]]" _ "$kept_md" "$unwatched_md"
check "nginx was never reloaded: the same master and workers at the end" test "$(nginx_procs)" = "$nginx_before"

print_table ""
echo
printf '%-11s %14s %9s  %s\n' image "switch->verdict" requests "decided on"
for s in good echo-500 slow-100ms; do
  printf '%-11s %12s s %9s  %s\n' "$s" "$(switch_to_verdict "$s")" "${seen[$s]:-?}" "${decided[$s]:-?}"
done
echo
sed 's/^/  summary| /' "$tmp/summary.md"
say "took $((SECONDS - t_begin)) s: images $((t_deploys - t0)) s, scenarios $((SECONDS - t_deploys)) s"
echo "deploy-watch: $pass passed, $fail failed"
((fail == 0))
