#!/usr/bin/env bash
# Blue/green deploy of one pier image to one environment, on the VM (ci/remote-deploy.sh
# runs it there over SSH; docs/deploys.md explains it;
# docs/runbooks.md#runbook-a-failed-production-deploy is the runbook).
#
#   ci/deploy.sh ENV TAG
#     ENV  prod (or production) | staging
#     TAG  the image tag to run: PIER_IMAGE:TAG (CI uses the commit SHA)
#
# Each environment has two slots, blue and green, each a container with its own host port
# on 127.0.0.1 (pier inside keeps its configured port). nginx's upstream file for the
# environment names the live slot. A deploy:
#   1. makes sure the image is here (present, else `docker load` PIER_IMAGE_FILE, else pull);
#   2. starts it in the idle slot (read-only, no capabilities, no-new-privileges, uid 65532,
#      restart unless-stopped, PIER_ENV=ENV, labels pier.env/slot/tag);
#   3. waits until Docker says `healthy` (PIER_HEALTH_TIMEOUT) and checks that the slot's
#      {prefix}/version reports TAG (the version, or the commit when TAG is a SHA);
#   4. rewrites the upstream file atomically, `nginx -t` (the old file is put back if it
#      fails), `nginx -s reload`, and waits until nginx's old workers have exited;
#   5. stops the old slot with `docker stop --time` (grace + drain + 5 s): pier keeps
#      serving for the grace period, then finishes what is in flight and exits;
#   6. appends the release to the history, prunes this repository's images older than
#      each environment's current and previous release.
# When step 1 or 3 fails, the new container is removed, nginx and the old slot are not
# touched, `failed` is recorded and the exit status is 1: traffic never reaches it.
#
# Environment (defaults are the VM's, from config/cloud-init.yaml):
#   PIER_IMAGE            image repository (default pier; CI: ghcr.io/OWNER/REPO)
#   PIER_IMAGE_FILE       `docker load` this file when the image is not here (no pull)
#   PIER_PULL_TIMEOUT     seconds for `docker pull` (default 300)
#   PIER_DEPLOY_DIR       state directory (default /srv/pier): releases/history.tsv, locks
#   PIER_NAME_PREFIX      container names PREFIX-ENV-blue|green (default pier)
#   PIER_PROD_PORTS       blue and green host ports of prod (default "8000 8010")
#   PIER_STAGING_PORTS    the same for staging (default "8001 8011")
#   PIER_HEALTH_TIMEOUT   seconds to wait for `healthy` (default 60)
#   PIER_SLOT_GRACE_MS    shutdown.grace_ms given to every slot (default 3000)
#   PIER_SLOT_DRAIN_MS    shutdown.drain_ms (default: config/pier/ENV.yaml's, else 10000)
#   PIER_KEEP_RELEASES    releases per environment whose images are kept (default 2)
#   NGINX_UPSTREAM_DIR    where ENV.conf lives (default /etc/nginx/upstreams)
#   NGINX_BIN             nginx binary (default /usr/sbin/nginx); NGINX_PREFIX and
#   NGINX_CONF            NGINX_CONF add -p and -c (a test's own nginx)
#   NGINX_SUDO            command prefix for nginx (default `sudo -n` unless root)
#   NGINX_PID_FILE        the nginx master's pid file (default /run/nginx.pid)
#   NGINX_SETTLE_TIMEOUT  seconds to wait for old nginx workers to exit (default 30)
# Exit status: 0 deployed; 1 not deployed (the old release keeps serving); 2 bad usage.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deploy_prog=deploy
# shellcheck source=deploy-lib.sh
. "$root/ci/deploy-lib.sh"

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
settle_timeout=${NGINX_SETTLE_TIMEOUT:-30}
keep_releases=${PIER_KEEP_RELEASES:-2}
for n in "$health_timeout" "$settle_timeout" "$keep_releases" "${PIER_SLOT_GRACE_MS:-0}" \
  "${PIER_SLOT_DRAIN_MS:-0}" "${PIER_PULL_TIMEOUT:-0}"; do
  [[ $n =~ ^[0-9]+$ ]] || die 2 "'$n' is not a whole number (PIER_* / NGINX_* timeouts)"
done

# pier's port and prefix inside the container, and its drain time, from the shipped config.
cfg=$root/config/pier/$env.yaml
container_port=$(cfg_get "$cfg" listen.port)
prefix=$(cfg_get "$cfg" prefix)
default_drain=$(cfg_get "$cfg" shutdown.drain_ms)
case $env in
  prod) container_port=${container_port:-8000} prefix=${prefix:-/prod} ;;
  staging) container_port=${container_port:-8001} prefix=${prefix:-/staging} ;;
esac
grace_ms=${PIER_SLOT_GRACE_MS:-3000}
drain_ms=${PIER_SLOT_DRAIN_MS:-${default_drain:-10000}}
stop_timeout=$(((grace_ms + drain_ms + 999) / 1000 + 5))

t_start=$(now_ms)
lock "$env" "${PIER_LOCK_TIMEOUT:-600}" || exit 1

old_slot=$(active_slot "$env")
if [[ -n $old_slot ]]; then
  new_slot=$(other_slot "$old_slot")
  old_name=$(container_name "$env" "$old_slot")
else
  new_slot=blue
  old_name=""
fi
new_name=$(container_name "$env" "$new_slot")
new_port=$(slot_port "$env" "$new_slot")
[[ $new_port =~ ^[0-9]+$ ]] || die 2 "no port for $env $new_slot (PIER_${env^^}_PORTS)"
old_tag=""
if [[ -n $old_name ]]; then
  old_tag=$(docker inspect -f '{{index .Config.Labels "pier.tag"}}' "$old_name" 2>/dev/null || true)
fi
say "$action $env $tag: live slot ${old_slot:-none}${old_tag:+ ($old_tag)}, new slot $new_slot on 127.0.0.1:$new_port"

# ------------------------------------------------------------------ failure path
# Until nginx is seen serving from the new slot, any failure (or an interrupt) puts the
# previous upstream file back (and reloads nginx if it had been told to reload), removes
# the new container and records `failed`. The old slot is never touched on that path.
phase=init
recorded=0
fail_msg=""
upstream_file=$upstream_dir/$env.conf
upstream_prev=""
upstream_new=""
fail() {
  fail_msg=$1
  say "FAILED: $env $tag: $1"
  exit 1
}
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $upstream_new ]] && rm -f "$upstream_new"
  if [[ -n $upstream_prev ]]; then
    if [[ $phase == switching || $phase == reloaded ]]; then
      if [[ -s $upstream_prev ]]; then mv -f "$upstream_prev" "$upstream_file"; else rm -f "$upstream_file"; fi
      say "restored the previous $upstream_file"
      if [[ $phase == reloaded ]]; then
        if nginx_run -s reload >/dev/null 2>&1; then
          say "nginx reloaded with it"
        else
          say "WARNING: nginx -s reload with the restored file failed: check nginx now"
        fi
      fi
    fi
    rm -f "$upstream_prev"
  fi
  if ((rc != 0)) && [[ $phase == starting || $phase == switching || $phase == reloaded ]]; then
    docker rm -f "$new_name" >/dev/null 2>&1 && say "removed $new_name; ${old_slot:-nothing} keeps serving${old_tag:+ $old_tag}"
  fi
  if ((rc != 0 && recorded == 0)); then
    history_add "$env" "$action" "$tag" failed "$new_slot" "$new_port" "$image" \
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
if docker inspect "$new_name" >/dev/null 2>&1; then
  say "removing the idle slot's old container $new_name"
  docker rm -f "$new_name" >/dev/null
fi
if ss -Htln "sport = :$new_port" 2>/dev/null | grep -q .; then
  fail "port $new_port ($env $new_slot) is taken by something that is not $new_name"
fi
phase=starting
t_run=$(now_ms)
cid=$(docker run -d --name "$new_name" \
  --read-only --cap-drop ALL --security-opt no-new-privileges --user 65532:65532 \
  --restart unless-stopped \
  -e PIER_ENV="$env" -e PIER_SHUTDOWN_GRACE_MS="$grace_ms" -e PIER_SHUTDOWN_DRAIN_MS="$drain_ms" \
  -p "127.0.0.1:$new_port:$container_port" \
  --label pier.env="$env" --label pier.slot="$new_slot" --label pier.tag="$tag" \
  --label pier.stop-timeout="$stop_timeout" --label pier.deployed="$(iso_now)" \
  "$image") || fail "docker run $image failed"
unlock images
say "started $new_name (${cid:0:12}) from $image"

# ------------------------------------------------------------------ 3. health, version
show_container() { # the new container's last words, for the log of a failed deploy
  docker logs --tail 20 "$cid" 2>&1 | sed "s/^/  $new_name| /" >&2 || true
  docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{end}}{{end}}' "$cid" 2>/dev/null |
    grep -v '^[[:space:]]*$' | tail -n 3 | sed "s/^/  health| /" >&2 || true
}
deadline=$((SECONDS + health_timeout))
while :; do
  state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.RestartCount}} {{.State.ExitCode}}' "$cid") ||
    fail "container $new_name disappeared"
  read -r status health restarts code <<<"$state"
  if [[ $status == running && $health == healthy ]]; then
    break
  fi
  if [[ $health == none ]]; then
    fail "$image has no HEALTHCHECK: cannot tell when it is ready"
  fi
  if [[ $status != running && $status != created ]] || ((restarts > 0)); then
    show_container
    fail "$new_name exited with status $code (state $status, restarted $restarts times) before it was healthy"
  fi
  if [[ $health == unhealthy ]]; then
    show_container
    fail "$new_name is unhealthy"
  fi
  if ((SECONDS >= deadline)); then
    show_container
    fail "$new_name not healthy after ${health_timeout}s (health: $health)"
  fi
  sleep 0.2
done
say "$new_name healthy after $(secs_since "$t_run") s"

# The version the slot reports must be the one deployed: a TAG that is a commit SHA must
# match the reported commit (the shorter, at least 7 digits, starts the longer); any other
# TAG must equal the reported version (a leading v aside). Same rule as ci/public-smoke.sh.
version_url=http://127.0.0.1:$new_port$prefix/version
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
say "$version_url reports version $reported_version, commit $reported_commit"

# ------------------------------------------------------------------ 4. nginx
lock nginx 300 || fail "could not take the nginx lock"
old_workers=$(nginx_workers | tr '\n' ' ')
mkdir -p "$upstream_dir"
phase=switching
upstream_prev=$(mktemp "$upstream_dir/.$env.conf.prev.XXXXXX")
upstream_new=$(mktemp "$upstream_dir/.$env.conf.new.XXXXXX")
if [[ -f $upstream_file ]]; then
  cp "$upstream_file" "$upstream_prev"
fi
server_re='^([[:space:]]*server[[:space:]]+127\.0\.0\.1:)[0-9]+'
if grep -qE "$server_re" "$upstream_file" 2>/dev/null; then
  # Only the port changes; whatever else the line says (max_fails, ...) stays.
  sed -E "s/$server_re/\\1$new_port/" "$upstream_file" >"$upstream_new"
else
  printf '# The server(s) behind %s/. Rewritten by the blue/green deploy (ci/deploy.sh).\nserver 127.0.0.1:%s max_fails=1 fail_timeout=2s;\n' \
    "$prefix" "$new_port" >"$upstream_new"
fi
chmod 0644 "$upstream_new"
mv -f "$upstream_new" "$upstream_file"
upstream_new=""
if ! out=$(nginx_run -t 2>&1); then
  printf '%s\n' "$out" | sed 's/^/  nginx -t| /' >&2
  fail "nginx -t rejects the new $upstream_file (the previous one is restored)"
fi
if ! out=$(nginx_run -s reload 2>&1); then
  printf '%s\n' "$out" | sed 's/^/  nginx -s reload| /' >&2
  fail "nginx -s reload failed (the previous $upstream_file is restored)"
fi
phase=reloaded

# `nginx -s reload` only signals the master. The switch has happened when new workers run
# (the master accepted the configuration); the old workers finish the requests they hold
# (some on the old slot), then exit, and only then is the old slot told to stop. No new
# workers within NGINX_SETTLE_TIMEOUT: the master kept its old configuration (see its error
# log), so the deploy fails and the old file is put back. Without a readable pid file,
# a fixed 2 s wait stands in (the old slot's grace period covers what it cannot see).
t_settle=$(now_ms)
if [[ -n ${old_workers// /} ]]; then
  deadline=$((SECONDS + settle_timeout))
  while :; do
    alive=0 fresh=0
    for p in $old_workers; do
      [[ -d /proc/$p ]] && alive=1
    done
    for p in $(nginx_workers); do
      [[ " $old_workers " == *" $p "* ]] || fresh=1
    done
    ((fresh == 1 && alive == 0)) && break
    if ((SECONDS >= deadline)); then
      ((fresh == 1)) || fail "nginx started no new workers within ${settle_timeout}s of the reload: it kept its old configuration (see nginx's error log)"
      say "WARNING: old nginx workers still running after ${settle_timeout}s; the old slot's grace and drain cover them"
      break
    fi
    sleep 0.1
  done
  ((alive == 0)) && say "nginx: new workers run, old workers exited after $(secs_since "$t_settle") s"
else
  say "no nginx pid file at $nginx_pid_file: waiting 2 s for the reload"
  sleep 2
fi
phase=switched
rm -f "$upstream_prev"
upstream_prev=""
say "nginx: $env -> $new_slot (127.0.0.1:$new_port)"
unlock nginx

# ------------------------------------------------------------------ 5. the old slot
history_add "$env" "$action" "$tag" success "$new_slot" "$new_port" "$image" \
  "previous: ${old_tag:-none}${old_slot:+ on $old_slot}; digest: ${digest:-none (not from a registry)}"
recorded=1
if [[ -n $old_name ]] && docker inspect "$old_name" >/dev/null 2>&1; then
  old_timeout=$(docker inspect -f '{{index .Config.Labels "pier.stop-timeout"}}' "$old_name" 2>/dev/null || true)
  [[ $old_timeout =~ ^[0-9]+$ ]] || old_timeout=$stop_timeout
  t_stop=$(now_ms)
  if docker stop --time "$old_timeout" "$old_name" >/dev/null; then
    say "stopped $old_name ($old_tag) after $(secs_since "$t_stop") s, exit status $(docker inspect -f '{{.State.ExitCode}}' "$old_name")"
  else
    say "WARNING: docker stop $old_name failed"
  fi
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
say "OK: $env runs $tag on $new_slot (127.0.0.1:$new_port) after $(secs_since "$t_start") s; rollback: ci/rollback.sh $env"
