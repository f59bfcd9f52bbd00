#!/usr/bin/env bash
# Blue/green deploy of one pier image to one environment, on the VM (ci/remote-deploy.sh
# runs it there over SSH; docs/deploys.md explains it;
# docs/runbooks.md#runbook-a-failed-production-deploy is the runbook).
#
#   ci/deploy.sh [--no-watch] ENV TAG
#     ENV  prod (or production) | staging
#     TAG  the image tag to run: PIER_IMAGE:TAG (CI uses the commit SHA)
#     --no-watch  skip the watch after the switch (step 5)
#
# Each environment has two slots, blue and green; a slot is two pier containers (replicas
# a and b). nginx reaches the live slot through Unix sockets, PIER_SOCKET_DIR/ENV/current/
# {a,b}.sock, where `current` is a symlink to the slot's directory. Each replica also
# publishes its TCP port on 127.0.0.1 for Docker's health probe, these checks and
# Prometheus. A deploy:
#   1. makes sure the image is here (present, else `docker load` PIER_IMAGE_FILE, else pull);
#   2. starts both replicas in the idle slot (read-only, no capabilities, no-new-privileges,
#      uid 65532, the slot's socket directory mounted at /run/pier, PIER_ENV=ENV, labels
#      pier.env/slot/replica/tag) with no restart policy, so a replica that exits is seen
#      exiting, with its real status;
#   3. waits until both are healthy (PIER_HEALTH_TIMEOUT): the image's health command run
#      by the deploy every 0.2 s succeeds, or Docker says `healthy`; checks their
#      sockets (present, group PIER_NGINX_GROUP, mode 0660) and that {prefix}/version
#      reports TAG (the version, or the commit when TAG is a SHA); then gives them the
#      restart policy (unless-stopped): from now on Docker restarts a replica that dies;
#   4. switches: renames a new `current` link over the old one (one rename(2)); nginx's
#      next connect() goes to the new slot. nginx is not reloaded, restarted or signalled;
#   5. watches the new slot for PIER_WATCH_SECONDS (60): every PIER_WATCH_INTERVAL (5) s,
#      the 5xx ratio and p99 latency of what it served since the switch (its replicas'
#      /metrics), against thresholds and the old slot's p99; the old slot stays up. Too
#      many 5xx or too slow: switch back (the same rename), stop the new slot, record
#      `rolled-back`, exit 3. SIGUSR1 ends the watch early and keeps the release. Not for
#      a rollback or a first deploy;
#   6. stops the old slot's replicas with `docker stop --time` (grace + drain + 5 s): pier
#      answers what still arrives on nginx's cached connections with Connection: close,
#      leaves idle ones to nginx (upstream keepalive_timeout 4 s), and exits 0 when none
#      is left;
#   7. appends the release to the history, prunes this repository's images older than
#      each environment's current and previous release.
# When step 1, 2 or 3 fails, the new containers are removed, `current` and the old slot are
# not touched, `failed` is recorded and the exit status is 1: traffic never reaches them.
#
# Environment (defaults are the VM's, from config/cloud-init.yaml):
#   PIER_IMAGE            image repository (default pier; CI: ghcr.io/OWNER/REPO)
#   PIER_IMAGE_FILE       `docker load` this file when the image is not here (no pull)
#   PIER_PULL_TIMEOUT     seconds for `docker pull` (default 300)
#   PIER_DEPLOY_DIR       state directory (default /srv/pier): releases/history.tsv, locks
#   PIER_SOCKET_DIR       the slots' socket directories (default /srv/pier/run; made by
#                         ci/socket-dirs.sh, which a deploy running as root calls itself)
#   PIER_NGINX_GROUP      nginx's workers' group, which the sockets must have (www-data)
#   PIER_NAME_PREFIX      container names PREFIX-ENV-SLOT-REPLICA (default pier)
#   PIER_PROD_PORTS       host ports of blue a, blue b, green a, green b
#                         (default "8000 8002 8010 8012")
#   PIER_STAGING_PORTS    the same for staging (default "8001 8003 8011 8013")
#   PIER_HEALTH_TIMEOUT   seconds to wait for `healthy` (default 60)
#   PIER_SLOT_GRACE_MS    shutdown.grace_ms given to every replica (default 1000)
#   PIER_SLOT_DRAIN_MS    shutdown.drain_ms (default: config/pier/ENV.yaml's, else 10000)
#   PIER_KEEP_RELEASES    releases per environment whose images are kept (default 2)
#   PIER_LOCK_TIMEOUT     seconds to wait for another deploy of ENV (default 600)
#   PIER_WATCH_SECONDS    the watch's window (default 60; 0: no watch); per environment
#                         PIER_WATCH_SECONDS_PROD, PIER_WATCH_SECONDS_STAGING
#   PIER_WATCH_INTERVAL   seconds between two looks at the new slot's metrics (default 5)
#   PIER_WATCH_MIN_REQUESTS   fewer requests than this: not judged, kept (default 50)
#   PIER_WATCH_MAX_5XX_RATIO  switch back above this 5xx ratio (default 0.01)
#   PIER_WATCH_P99_FACTOR, PIER_WATCH_P99_MIN_MS
#                         switch back when p99 > FACTOR x the old slot's and > MIN_MS (2, 50)
#   PIER_METRICS_TOKEN_FILE   bearer token for /metrics, when pier requires one
# Exit status: 0 deployed; 1 not deployed (the old release keeps serving); 2 bad usage;
# 3 deployed, then switched back by the watch (the old release serves again).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deploy_prog=deploy
# shellcheck source=deploy-lib.sh
. "$root/ci/deploy-lib.sh"

no_watch=0
args=()
for a in "$@"; do
  if [[ $a == --no-watch ]]; then no_watch=1; else args+=("$a"); fi
done
set -- "${args[@]}"
if [[ $# -ne 2 ]]; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
fi
env=$(deploy_env "$1") || die 2 "ENV must be prod (production) or staging, got '$1'"
tag=$2
valid_tag "$tag" || die 2 "TAG '$tag' is not an image tag"
action=${PIER_DEPLOY_ACTION:-deploy}
image=$image_repo:$tag
health_timeout=${PIER_HEALTH_TIMEOUT:-60}
keep_releases=${PIER_KEEP_RELEASES:-2}
lock_timeout=${PIER_LOCK_TIMEOUT:-600}
nginx_group=${PIER_NGINX_GROUP:-www-data}
for n in "$health_timeout" "$keep_releases" "$lock_timeout" "${PIER_SLOT_GRACE_MS:-0}" \
  "${PIER_SLOT_DRAIN_MS:-0}" "${PIER_PULL_TIMEOUT:-0}"; do
  [[ $n =~ ^[0-9]+$ ]] || die 2 "'$n' is not a whole number (PIER_* timeouts)"
done
[[ $socket_dir == /* ]] || die 2 "PIER_SOCKET_DIR must be an absolute path, got '$socket_dir'"

# The watch after the switch (docs/deploys.md#the-watch-after-the-switch). A rollback is not
# watched (it goes back to a release that was judged already), nor a first deploy (there is
# nothing to switch back to).
env_upper=${env^^}
watch_var=PIER_WATCH_SECONDS_$env_upper
watch_s=${!watch_var:-${PIER_WATCH_SECONDS:-60}}
watch_interval=${PIER_WATCH_INTERVAL:-5}
watch_min=${PIER_WATCH_MIN_REQUESTS:-50}
watch_max_5xx=${PIER_WATCH_MAX_5XX_RATIO:-0.01}
watch_p99_factor=${PIER_WATCH_P99_FACTOR:-2}
watch_p99_min=${PIER_WATCH_P99_MIN_MS:-50}
for n in "$watch_s" "$watch_interval" "$watch_min"; do
  [[ $n =~ ^[0-9]+$ ]] || die 2 "'$n' is not a whole number (PIER_WATCH_SECONDS*, _INTERVAL, _MIN_REQUESTS)"
done
for n in "$watch_max_5xx" "$watch_p99_factor" "$watch_p99_min"; do
  [[ $n =~ ^[0-9]+([.][0-9]+)?$ ]] || die 2 "'$n' is not a number (PIER_WATCH_MAX_5XX_RATIO, _P99_FACTOR, _P99_MIN_MS)"
done
((watch_interval > 0)) || watch_interval=1
if ((no_watch)) || [[ $action == rollback ]]; then watch_s=0; fi

# pier's port and prefix inside the container, and its drain time, from the shipped config.
cfg=$root/config/pier/$env.yaml
container_port=$(cfg_get "$cfg" listen.port)
prefix=$(cfg_get "$cfg" prefix)
default_drain=$(cfg_get "$cfg" shutdown.drain_ms)
case $env in
  prod) container_port=${container_port:-8000} prefix=${prefix:-/prod} ;;
  staging) container_port=${container_port:-8001} prefix=${prefix:-/staging} ;;
esac
grace_ms=${PIER_SLOT_GRACE_MS:-1000}
drain_ms=${PIER_SLOT_DRAIN_MS:-${default_drain:-10000}}
stop_timeout=$(((grace_ms + drain_ms + 999) / 1000 + 5))

t_start=$(now_ms)
lock "$env" "$lock_timeout" || exit 1

env_dir=$socket_dir/$env
old_slot=$(active_slot "$env")
if [[ -n $old_slot ]]; then new_slot=$(other_slot "$old_slot"); else new_slot=blue; fi
new_dir=$env_dir/$new_slot
declare -A new_name new_port old_name
port_list=""
for r in "${replicas[@]}"; do
  new_name[$r]=$(container_name "$env" "$new_slot" "$r")
  new_port[$r]=$(slot_port "$env" "$new_slot" "$r")
  [[ ${new_port[$r]} =~ ^[0-9]+$ ]] || die 2 "no port for $env $new_slot $r (PIER_${env^^}_PORTS needs four)"
  port_list+=${port_list:+,}${new_port[$r]}
  old_name[$r]=""
  [[ -n $old_slot ]] && old_name[$r]=$(container_name "$env" "$old_slot" "$r")
done
old_tag=""
if [[ -n $old_slot ]]; then
  old_tag=$(docker inspect -f '{{index .Config.Labels "pier.tag"}}' "${old_name[a]}" 2>/dev/null || true)
  say "$action $env $tag: live slot $old_slot${old_tag:+ ($old_tag)}, new slot $new_slot (127.0.0.1:$port_list)"
else
  say "$action $env $tag: first deploy of $env (no live slot yet), new slot $new_slot (127.0.0.1:$port_list)"
fi

# ------------------------------------------------------------------ failure path
# Until `current` is switched, any failure (or an interrupt) removes the new containers and
# records `failed`. The link and the old slot are never touched on that path.
phase=init
recorded=0
fail_msg=""
fail() {
  fail_msg=$1
  say "FAILED: $env $tag: $1"
  exit 1
}
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)) && [[ $phase == watching ]]; then
    # Something broke during the watch: the old release is the one known to work.
    if switch_slot "$env" "$old_slot"; then
      say "switched back: $env_dir/current -> $old_slot"
      docker kill -s USR2 "${old_name[@]}" >/dev/null 2>&1 || true
    else
      say "FAILED to switch $env_dir/current back to $old_slot: do it by hand (docs/runbooks.md)"
    fi
  fi
  if ((rc != 0)) && [[ $phase == starting ]]; then
    docker rm -f "${new_name[@]}" >/dev/null 2>&1 || true
    say "removed ${new_name[a]} and ${new_name[b]}; ${old_slot:-nothing} keeps serving${old_tag:+ $old_tag}"
  fi
  if ((rc != 0 && recorded == 0)); then
    history_add "$env" "$action" "$tag" failed "$new_slot" "$port_list" "$image" \
      "${fail_msg:-exit status $rc}" || true
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'fail "interrupted"' INT TERM

# ------------------------------------------------------------------ 1. the image
# The images lock keeps a concurrent prune (the other environment's deploy) from removing
# the image between here and `docker run`.
lock images 300 || fail "could not take the images lock"
if docker image inspect "$image" >/dev/null 2>&1; then
  say "image $image is here"
elif [[ -n ${PIER_IMAGE_FILE:-} ]]; then
  [[ -r $PIER_IMAGE_FILE ]] || fail "PIER_IMAGE_FILE $PIER_IMAGE_FILE is not readable"
  say "loading $image from $PIER_IMAGE_FILE"
  docker load -q -i "$PIER_IMAGE_FILE" >&2 || fail "docker load -i $PIER_IMAGE_FILE failed"
  docker image inspect "$image" >/dev/null 2>&1 || fail "$PIER_IMAGE_FILE does not contain $image"
else
  say "pulling $image"
  timeout "${PIER_PULL_TIMEOUT:-300}" docker pull -q "$image" >&2 ||
    fail "cannot pull $image: is the tag pushed, is this VM logged in to the registry? (or set PIER_IMAGE_FILE)"
fi

# The registry digest of what runs (empty for an image built or loaded here): the history
# records it, so a tag moved or re-pushed later cannot hide which bytes were deployed.
digest=$(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$image" 2>/dev/null |
  sed -n "s|^$image_repo@||p" | head -n 1)

# ------------------------------------------------------------------ 2. the idle slot
# The slot's directory: uid 65532 (pier) creates its sockets there; setgid with nginx's
# group, so each socket gets that group and nginx's workers may connect (pier makes it 0660).
slot_dir_ok() {
  [[ -d $new_dir && -w $env_dir && $(stat -c '%u %G %A' "$new_dir" 2>/dev/null) == "65532 $nginx_group drwxr-s---" ]]
}
if ! slot_dir_ok; then
  if ((EUID == 0)); then
    SOCKET_DIRS_GROUP=$nginx_group "$root/ci/socket-dirs.sh" "$socket_dir" || fail "ci/socket-dirs.sh $socket_dir failed"
  fi
  slot_dir_ok || fail "$new_dir is not a socket directory for uid 65532 and group $nginx_group (mode 2750, $env_dir writable by $(id -un)): run sudo $root/ci/socket-dirs.sh $socket_dir"
fi
for r in "${replicas[@]}"; do
  if docker inspect "${new_name[$r]}" >/dev/null 2>&1; then
    say "removing the idle slot's old container ${new_name[$r]}"
    docker rm -f "${new_name[$r]}" >/dev/null
  fi
done
for r in "${replicas[@]}"; do
  if ss -Htln "sport = :${new_port[$r]}" 2>/dev/null | grep -q .; then
    fail "port ${new_port[$r]} ($env $new_slot $r) is taken by something that is not ${new_name[$r]}"
  fi
done
# Secrets: files that pier-secret (config/cloud-init.yaml) stored for this environment,
# mounted read-only; only their paths reach the container's environment (docker inspect).
secret_args=()
secret_dir=${PIER_SECRETS_DIR:-/etc/pier/secrets}/$env
if [[ -f $secret_dir/metrics-token ]]; then
  secret_args=(-v "$secret_dir:/run/secrets:ro" -e PIER_METRICS_TOKEN_FILE=/run/secrets/metrics-token)
  say "metrics token: $secret_dir/metrics-token, mounted read-only at /run/secrets"
fi
phase=starting
t_run=$(now_ms)
declare -A cid
for r in "${replicas[@]}"; do
  # No restart policy yet: a replica that exits stays exited, so its status is its own and
  # not that of a restart Docker made meanwhile.
  cid[$r]=$(docker run -d --name "${new_name[$r]}" \
    --read-only --cap-drop ALL --security-opt no-new-privileges --user 65532:65532 \
    --restart no "${secret_args[@]}" \
    -v "$new_dir:/run/pier" \
    -e PIER_ENV="$env" -e PIER_SHUTDOWN_GRACE_MS="$grace_ms" -e PIER_SHUTDOWN_DRAIN_MS="$drain_ms" \
    -e PIER_LISTEN_UNIX="/run/pier/$r.sock" -e PIER_LISTEN_UNIX_MODE=0660 \
    -p "127.0.0.1:${new_port[$r]}:$container_port" \
    --label pier.env="$env" --label pier.slot="$new_slot" --label pier.replica="$r" \
    --label pier.tag="$tag" --label pier.stop-timeout="$stop_timeout" \
    --label pier.deployed="$(iso_now)" \
    "$image") || fail "docker run $image (${new_name[$r]}) failed"
done
unlock images
say "started ${new_name[a]} (${cid[a]:0:12}) and ${new_name[b]} (${cid[b]:0:12}) from $image"

# ------------------------------------------------------------------ 3. health, sockets, version
show_container() { # show_container REPLICA: its last words, for the log of a failed deploy
  local c=${cid[$1]} n=${new_name[$1]}
  docker logs --tail 20 "$c" 2>&1 | sed "s/^/  $n| /" >&2 || true
  docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{end}}{{end}}' "$c" 2>/dev/null |
    grep -v '^[[:space:]]*$' | tail -n 3 | sed "s/^/  $n health| /" >&2 || true
}
# The image's HEALTHCHECK runs every 15 s (cheap when idle), so Docker says `healthy` 15 s
# after the start at the earliest (Docker 25's --start-interval is not on 20.10). The deploy
# does not wait for that: it runs the image's own health command itself (docker exec) every
# 0.2 s until it succeeds, so a deploy is as quick as with a 1 s interval.
probe=()
mapfile -t probe < <(docker inspect -f '{{json .Config.Healthcheck.Test}}' "${cid[a]}" 2>/dev/null |
  jq -r 'if type == "array" and .[0] == "CMD" then .[1:][]
    elif type == "array" and .[0] == "CMD-SHELL" then "/bin/sh", "-c", .[1] else empty end' 2>/dev/null)
deadline=$((SECONDS + health_timeout))
declare -A healthy=()
while ((${#healthy[@]} < ${#replicas[@]})); do
  for r in "${replicas[@]}"; do
    [[ -n ${healthy[$r]:-} ]] && continue
    n=${new_name[$r]}
    state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "${cid[$r]}") ||
      fail "container $n disappeared"
    read -r status health code <<<"$state"
    if [[ $status == running && $health == healthy ]]; then
      healthy[$r]=1
      say "$n healthy after $(secs_since "$t_run") s"
      continue
    fi
    if [[ $status == running && $health == starting && ${#probe[@]} -gt 0 ]] &&
      timeout 5 docker exec "${cid[$r]}" "${probe[@]}" >/dev/null 2>&1; then
      healthy[$r]=1
      say "$n healthy (its health command, run by the deploy) after $(secs_since "$t_run") s"
      continue
    fi
    [[ $health == none ]] && fail "$image has no HEALTHCHECK: cannot tell when it is ready"
    if [[ $status != running && $status != created ]]; then
      show_container "$r"
      fail "$n exited with status $code before it was healthy (its last log lines are above)"
    fi
    if [[ $health == unhealthy ]]; then
      show_container "$r"
      fail "$n is unhealthy"
    fi
    if ((SECONDS >= deadline)); then
      show_container "$r"
      fail "$n not healthy after ${health_timeout}s (health: $health)"
    fi
  done
  ((${#healthy[@]} < ${#replicas[@]})) && sleep 0.2
done

# The sockets nginx will connect to: there, with nginx's group and mode 0660.
for r in "${replicas[@]}"; do
  s=$new_dir/$r.sock
  [[ -S $s ]] || fail "${new_name[$r]} is healthy but $s is not a socket: is PIER_LISTEN_UNIX honoured by $image?"
  got=$(stat -c '%G %a' "$s")
  [[ $got == "$nginx_group 660" ]] ||
    fail "$s has group and mode '$got', not '$nginx_group 660': nginx's workers could not connect (is $new_dir setgid, group $nginx_group?)"
done

# The version each replica reports must be the one deployed: a TAG that is a commit SHA must
# match the reported commit (the shorter, at least 7 digits, starts the longer); any other
# TAG must equal the reported version (a leading v aside). Same rule as ci/public-smoke.sh.
for r in "${replicas[@]}"; do
  version_url=http://127.0.0.1:${new_port[$r]}$prefix/version
  body=""
  for _ in 1 2 3 4 5; do
    body=$(curl -fsS --max-time 3 "$version_url" 2>/dev/null) && break
    sleep 0.5
  done
  [[ -n $body ]] || fail "GET $version_url failed"
  reported_version=$(jq -r '.version // empty' <<<"$body" 2>/dev/null || true)
  reported_commit=$(jq -r '.commit // empty' <<<"$body" 2>/dev/null || true)
  version_ok=0
  if [[ $tag =~ ^[0-9a-fA-F]{7,40}$ ]]; then
    a=${reported_commit,,} b=${tag,,}
    if ((${#a} > ${#b})); then t=$a a=$b b=$t; fi
    [[ ${#a} -ge 7 && $a =~ ^[0-9a-f]+$ && $b == "$a"* ]] && version_ok=1
  elif [[ -n $reported_version && ${reported_version#v} == "${tag#v}" ]]; then
    version_ok=1
  fi
  if ((version_ok == 0)); then
    fail "$version_url reports version '${reported_version}' commit '${reported_commit}', not $tag"
  fi
done
say "both replicas report version $reported_version, commit $reported_commit; sockets $new_dir/{a,b}.sock"
docker update --restart unless-stopped "${cid[@]}" >/dev/null || fail "docker update --restart unless-stopped failed"

# ------------------------------------------------------------------ 4. switch
old_ports=()
if [[ -n $old_slot ]]; then
  for r in "${replicas[@]}"; do old_ports+=("$(slot_port "$env" "$old_slot" "$r")"); done
fi
if ((watch_s > 0)) && [[ -z $old_slot ]]; then
  say "first deploy of $env: no watch (there is no old slot to switch back to)"
  watch_s=0
fi
if ((watch_s > 0)); then
  # What the old slot served until now (its p99 is the reference), and the new slot's
  # counters before any traffic (the deploy's own checks are not traffic).
  old_snap=$(metrics_snapshot "$prefix" "${old_ports[@]}")
  new_base=$(metrics_snapshot "$prefix" "${new_port[@]}")
fi
switch_slot "$env" "$new_slot" || fail "cannot switch $env_dir/current to $new_slot"
phase=switched
t_switch=$(now_ms)
say "switched: $env_dir/current -> $new_slot after $(secs_since "$t_start") s (nginx not reloaded)"
history_msg="previous: ${old_tag:-none}${old_slot:+ on $old_slot}; digest: ${digest:-none (not from a registry)}"

# stop_slot SLOT TAG NAME...: docker stop the slot's replicas (pier drains: answers what
# arrives on nginx's cached connections with Connection: close, leaves idle ones to nginx),
# and say how long it took and how each exited.
stop_slot() {
  local slot=$1 stag=$2 n names=() t codes="" timeout
  shift 2
  for n in "$@"; do docker inspect "$n" >/dev/null 2>&1 && names+=("$n"); done
  ((${#names[@]} > 0)) || return 0
  timeout=$(docker inspect -f '{{index .Config.Labels "pier.stop-timeout"}}' "${names[0]}" 2>/dev/null || true)
  [[ $timeout =~ ^[0-9]+$ ]] || timeout=$stop_timeout
  t=$(now_ms)
  docker stop --time "$timeout" "${names[@]}" >/dev/null || say "WARNING: docker stop ${names[*]} failed"
  for n in "${names[@]}"; do
    codes+="${codes:+, }$n $(docker inspect -f '{{.State.ExitCode}}' "$n" 2>/dev/null || echo '?')"
  done
  say "stopped the $slot slot${stag:+ ($stag)} after $(secs_since "$t") s, exit status: $codes"
}

# ------------------------------------------------------------------ 4b. the watch
# The old slot stays up with keep-alive off (SIGUSR1: nginx's cached connections to it finish
# there, and it can take the traffic back at once). Every PIER_WATCH_INTERVAL seconds: what the new slot served since
# the switch (both replicas' /metrics, probes and scrapes left out). A 5xx ratio above
# PIER_WATCH_MAX_5XX_RATIO, or a p99 above PIER_WATCH_P99_FACTOR times the old slot's and
# above PIER_WATCH_P99_MIN_MS, over at least PIER_WATCH_MIN_REQUESTS requests: switch back
# (the same rename), stop the new slot, record `rolled-back`, exit 3. SIGUSR1 (or
# --no-watch before) ends the watch and keeps the release; SIGINT/SIGTERM during the watch
# switch back.
verdict=""
if ((watch_s > 0)); then
  phase=watching
  # nginx's cache keys upstream connections by the socket path, which did not change: it
  # would go on reusing its connections to the old replicas. SIGUSR1 makes them answer with
  # Connection: close (and keep serving), so each of those connections ends after its next
  # request and all traffic reaches the new slot within a moment.
  docker kill -s USR1 "${old_name[@]}" >/dev/null 2>&1 || say "WARNING: could not send SIGUSR1 to the old slot's replicas"
  old_fig=$(watch_figures "0 0" "$old_snap")
  read -r old_n _ _ old_p99 <<<"$old_fig"
  # Too few requests on the old slot to know its p99: the p99 rule cannot compare.
  ((old_n >= watch_min)) || old_p99=-
  say "watching $tag for ${watch_s}s (every ${watch_interval}s): switch back if 5xx > $(awk -v r="$watch_max_5xx" 'BEGIN { printf "%g%%", r * 100 }') or p99 > ${watch_p99_factor}x the old slot's (${old_p99} ms) and > ${watch_p99_min} ms, over >= $watch_min requests; end early: kill -USR1 $$"
  watch_stop=0 watch_abort=0
  trap 'watch_stop=1' USR1
  trap 'watch_abort=1' INT TERM
  deadline_ms=$((t_switch + watch_s * 1000))
  while :; do
    sleep "$watch_interval" &
    wait $! || true
    now_snap=$(metrics_snapshot "$prefix" "${new_port[@]}")
    read -r w_n w_e w_ratio w_p99 <<<"$(watch_figures "$new_base" "$now_snap")"
    elapsed=$(secs_since "$t_switch")
    pct=$(awk -v r="$w_ratio" 'BEGIN { printf "%.2f%%", r * 100 }')
    [[ $now_snap == partial* ]] && say "WARNING: a replica of $new_slot did not answer its /metrics"
    say "watch ${elapsed}/${watch_s} s: $w_n requests, 5xx $pct ($w_e), p99 ${w_p99} ms (old slot ${old_p99} ms)"
    why=""
    if ((w_n >= watch_min)); then
      if awk -v r="$w_ratio" -v m="$watch_max_5xx" 'BEGIN { exit !(r > m) }'; then
        why="5xx ratio $pct ($w_e of $w_n requests) > $(awk -v m="$watch_max_5xx" 'BEGIN { printf "%g%%", m * 100 }')"
      elif [[ $w_p99 != - && $old_p99 != - ]] &&
        awk -v p="$w_p99" -v o="$old_p99" -v f="$watch_p99_factor" -v m="$watch_p99_min" 'BEGIN { exit !(p > f * o && p > m) }'; then
        why="p99 ${w_p99} ms > ${watch_p99_factor}x the old slot's ${old_p99} ms and > ${watch_p99_min} ms ($w_n requests)"
      fi
    fi
    figures="$w_n requests in ${elapsed} s, 5xx $pct ($w_e), p99 ${w_p99} ms (old slot ${old_p99} ms)"
    if [[ -n $why ]]; then
      verdict="rolled back: $why"
      break
    fi
    if ((watch_abort)); then
      verdict="rolled back: interrupted during the watch ($figures)"
      break
    fi
    if ((watch_stop)); then
      verdict="kept: the watch was ended early (SIGUSR1) after $figures"
      break
    fi
    if (($(now_ms) >= deadline_ms)); then
      if ((w_n < watch_min)); then
        verdict="kept, not judged: only $w_n requests in ${elapsed} s (fewer than $watch_min); 5xx $pct, p99 ${w_p99} ms"
      else
        verdict="kept: $figures"
      fi
      break
    fi
  done
  trap - USR1
  trap 'fail "interrupted"' INT TERM
  if [[ $verdict == "rolled back"* ]]; then
    switch_slot "$env" "$old_slot" || {
      say "FAILED to switch $env_dir/current back to $old_slot: do it by hand (docs/runbooks.md)"
      exit 1
    }
    say "switched back: $env_dir/current -> $old_slot after $(secs_since "$t_switch") s (nginx not reloaded)"
    docker kill -s USR2 "${old_name[@]}" >/dev/null 2>&1 || true # keep-alive on again
    say "VERDICT: $env $tag $verdict; $old_slot${old_tag:+ ($old_tag)} serves again"
    history_add "$env" "$action" "$tag" rolled-back "$new_slot" "$port_list" "$image" \
      "$verdict; $history_msg"
    recorded=1
    phase=finished
    stop_slot "$new_slot" "$tag" "${new_name[@]}"
    exit 3
  fi
  say "VERDICT: $env $tag $verdict"
  history_msg="$verdict; $history_msg"
fi
history_add "$env" "$action" "$tag" success "$new_slot" "$port_list" "$image" "$history_msg"
recorded=1

# ------------------------------------------------------------------ 5. the old slot
# nginx may still hold keep-alive connections to the old replicas (the sockets' paths did
# not change, so its cache does not know they moved): pier answers what arrives on them
# with Connection: close during its grace and drain, and nginx drops idle ones after 4 s.
if [[ -n $old_slot ]]; then
  stop_slot "old $old_slot" "$old_tag" "${old_name[@]}"
fi

# ------------------------------------------------------------------ 6. prune
# Images of this repository that a deploy ran (they are in the history) and that are
# neither the current nor the previous release of any environment, nor used by a container.
lock images 300 || true
declare -A keep=([$tag]=1)
for e in prod staging; do
  while read -r t; do [[ -n $t ]] && keep[$t]=1; done < <(history_recent "$e" "$keep_releases")
done
while read -r ref; do
  [[ $ref == "$image_repo":* ]] && keep[${ref##*:}]=1
done < <(docker ps -a --format '{{.Image}}')
declare -A known=()
while IFS=$'\t' read -r _ _ _ t _ _ _ img _; do
  [[ $img == "$image_repo:$t" ]] && known[$t]=1
done <"$history_file"
while read -r ref; do
  t=${ref##*:}
  [[ $t == '<none>' || -n ${keep[$t]:-} || -z ${known[$t]:-} ]] && continue
  if docker rmi "$ref" >/dev/null 2>&1; then say "pruned $ref"; fi
done < <(docker image ls "$image_repo" --format '{{.Repository}}:{{.Tag}}')
unlock images

phase=finished
say "OK: $env runs $tag on $new_slot (sockets $new_dir/{a,b}.sock, 127.0.0.1:$port_list) after $(secs_since "$t_start") s; rollback: ci/rollback.sh $env"
