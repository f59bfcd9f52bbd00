# shellcheck shell=bash disable=SC2034 # its variables are used by the scripts that source it
# Shared by ci/deploy.sh and ci/rollback.sh (sourced, not run): the settings of a VM's
# deploys, the release history, locks and the nginx commands. Everything that differs
# between the VM and a test is an environment variable read here; docs/deploys.md#settings lists them.
#
# Layout on the VM (PIER_DEPLOY_DIR, default /srv/pier):
#   releases/history.tsv   one line per deploy attempt, tab-separated:
#                          time  env  action  tag  result  slot  port  image  message
#   releases/.*.lock       flock files: one per environment, one for nginx, one for images
# The live colour of an environment is the port in NGINX_UPSTREAM_DIR/ENV.conf: what nginx
# sends traffic to is the truth, not a state file that could disagree with it.

deploy_dir=${PIER_DEPLOY_DIR:-/srv/pier}
releases_dir=$deploy_dir/releases
history_file=$releases_dir/history.tsv
image_repo=${PIER_IMAGE:-pier}
name_prefix=${PIER_NAME_PREFIX:-pier}
upstream_dir=${NGINX_UPSTREAM_DIR:-/etc/nginx/upstreams}
nginx_pid_file=${NGINX_PID_FILE:-/run/nginx.pid}

say() { printf '%s: %s\n' "${deploy_prog:-deploy}" "$*" >&2; }
die() { # die STATUS MESSAGE
  say "$2"
  exit "$1"
}
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
iso_now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# deploy_env NAME: prints prod or staging (production is GitHub's name for prod).
deploy_env() {
  case $1 in
    prod | production) echo prod ;;
    staging) echo staging ;;
    *) return 1 ;;
  esac
}

# valid_tag TAG: what docker accepts as a tag.
valid_tag() { [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; }

# slot_port ENV SLOT: the host port (on 127.0.0.1) of ENV's blue or green slot.
#   PIER_PROD_PORTS="8000 8010", PIER_STAGING_PORTS="8001 8011" (blue first).
slot_port() {
  local ports
  case $1 in
    prod) read -r -a ports <<<"${PIER_PROD_PORTS:-8000 8010}" ;;
    staging) read -r -a ports <<<"${PIER_STAGING_PORTS:-8001 8011}" ;;
  esac
  case $2 in
    blue) echo "${ports[0]}" ;;
    green) echo "${ports[1]}" ;;
  esac
}
other_slot() { if [[ $1 == blue ]]; then echo green; else echo blue; fi; }
container_name() { echo "$name_prefix-$1-$2"; } # container_name ENV SLOT

# cfg_get FILE KEY: a scalar from one of pier's shipped YAML files (two levels, `a` or
# `a.b`), without quotes and comments; empty when absent. Enough for config/pier/*.yaml.
cfg_get() {
  [[ -f $1 ]] || return 0
  awk -v key="$2" '
    { sub(/^[ \t]*#.*$/, ""); sub(/[ \t]+#.*$/, "") }
    /^[ \t]*$/ { next }
    /^[^ \t]/ { split($0, kv, ":"); top = kv[1]; path = top }
    /^[ \t]+[^ \t]/ { s = $0; sub(/^[ \t]+/, "", s); split(s, kv, ":"); path = top "." kv[1] }
    path == key {
      v = $0; sub(/^[^:]*:[ \t]*/, "", v); sub(/[ \t]+$/, "", v)
      gsub(/^["\047]|["\047]$/, "", v)
      if (v != "") { print v; exit }
    }' "$1"
}

# upstream_port ENV: the port nginx's upstream file for ENV points at (empty if none).
upstream_port() {
  local f=$upstream_dir/$1.conf
  [[ -f $f ]] || return 0
  sed -nE 's/^[[:space:]]*server[[:space:]]+127\.0\.0\.1:([0-9]+).*/\1/p' "$f" | head -n 1
}

# active_slot ENV: blue or green if nginx points at one of ENV's slots, else empty.
active_slot() {
  local port s
  port=$(upstream_port "$1")
  for s in blue green; do
    if [[ -n $port && $port == "$(slot_port "$1" "$s")" ]]; then
      echo "$s"
      return 0
    fi
  done
}

# ------------------------------------------------------------------ locks
# lock NAME [SECONDS]: hold releases/.NAME.lock until the shell exits or unlock NAME.
declare -A lock_fds=()
lock() {
  local name=$1 wait_s=${2:-600} fd
  mkdir -p "$releases_dir"
  exec {fd}>>"$releases_dir/.$name.lock"
  if ! flock -w "$wait_s" "$fd"; then
    exec {fd}>&-
    say "another deploy holds $releases_dir/.$name.lock (waited ${wait_s}s)"
    return 1
  fi
  lock_fds[$name]=$fd
}
unlock() {
  local fd=${lock_fds[$1]:-}
  [[ -n $fd ]] || return 0
  exec {fd}>&-
  unset "lock_fds[$1]"
}

# ------------------------------------------------------------------ history
# history_add ENV ACTION TAG RESULT SLOT PORT IMAGE MESSAGE
history_add() {
  local msg=${8//$'\t'/ }
  msg=${msg//$'\n'/ }
  mkdir -p "$releases_dir"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(iso_now)" "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$msg" \
    >>"$history_file"
}

# history_successes ENV: the tags of ENV's successful deploys, oldest first.
history_successes() {
  [[ -f $history_file ]] || return 0
  awk -F '\t' -v env="$1" '$2 == env && $5 == "success" { print $4 }' "$history_file"
}

# history_recent ENV N: ENV's last N distinct successful tags, newest first (current, previous).
history_recent() {
  history_successes "$1" | tac | awk -v n="$2" '!seen[$0]++ { print; if (++k == n) exit }'
}

# ------------------------------------------------------------------ nginx
# nginx_run ARGS...: nginx with NGINX_PREFIX (-p) and NGINX_CONF (-c) when set, through
# `sudo -n` when not root (the VM's deploy user may run exactly `/usr/sbin/nginx -t` and
# `/usr/sbin/nginx -s reload`, see config/cloud-init.yaml). NGINX_SUDO overrides the prefix.
nginx_run() {
  local cmd=()
  if [[ -n ${NGINX_SUDO+set} ]]; then
    read -r -a cmd <<<"$NGINX_SUDO"
  elif ((EUID != 0)); then
    cmd=(sudo -n)
  fi
  cmd+=("${NGINX_BIN:-/usr/sbin/nginx}")
  [[ -n ${NGINX_PREFIX:-} ]] && cmd+=(-p "$NGINX_PREFIX")
  [[ -n ${NGINX_CONF:-} ]] && cmd+=(-c "$NGINX_CONF")
  "${cmd[@]}" "$@"
}

# nginx_workers: the PIDs of the nginx master's children (its workers), one per line.
# Read from /proc (field 4 of /proc/PID/stat is the parent), so procps is not needed.
nginx_workers() {
  local master p stat ppid
  [[ -r $nginx_pid_file ]] || return 0
  master=$(tr -dc 0-9 <"$nginx_pid_file")
  [[ -n $master ]] || return 0
  for p in /proc/[0-9]*; do
    { read -r stat <"$p/stat"; } 2>/dev/null || continue
    read -r _ ppid _ <<<"${stat##*) }"
    if [[ $ppid == "$master" ]]; then echo "${p#/proc/}"; fi
  done
}
