# shellcheck shell=bash disable=SC2034 # its variables are used by the scripts that source it
# Shared by ci/deploy.sh and ci/rollback.sh (sourced, not run): the settings of a VM's
# deploys, the release history, locks and the slot layout. Everything that differs between
# the VM and a test is an environment variable read here; docs/deploys.md lists them.
#
# Layout on the VM:
#   PIER_DEPLOY_DIR (/srv/pier)/releases/history.tsv
#                          one line per deploy attempt, tab-separated:
#                          time  env  action  tag  result  slot  ports  image  message
#   PIER_DEPLOY_DIR/releases/.*.lock   flock files: one per environment, one for images
#   PIER_SOCKET_DIR (/srv/pier/run)/ENV/{blue,green}/{a,b}.sock
#                          the Unix sockets of each slot's two replicas (ci/socket-dirs.sh)
#   PIER_SOCKET_DIR/ENV/current -> blue|green
#                          the live slot: nginx connects to ENV/current/a.sock and b.sock.
# What nginx sends traffic to (the link) is the state; no second file could disagree with it.

deploy_dir=${PIER_DEPLOY_DIR:-/srv/pier}
releases_dir=$deploy_dir/releases
history_file=$releases_dir/history.tsv
image_repo=${PIER_IMAGE:-pier}
name_prefix=${PIER_NAME_PREFIX:-pier}
socket_dir=${PIER_SOCKET_DIR:-/srv/pier/run}
replicas=(a b)

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

# slot_port ENV SLOT REPLICA: the host port (on 127.0.0.1) of one replica of ENV's blue or
# green slot, for Docker's health probe, the deploy's checks and Prometheus (nginx uses the
# sockets). PIER_PROD_PORTS="8000 8002 8010 8012", PIER_STAGING_PORTS="8001 8003 8011 8013":
# blue a, blue b, green a, green b.
slot_port() {
  local ports i=0
  case $1 in
    prod) read -r -a ports <<<"${PIER_PROD_PORTS:-8000 8002 8010 8012}" ;;
    staging) read -r -a ports <<<"${PIER_STAGING_PORTS:-8001 8003 8011 8013}" ;;
  esac
  [[ $2 == green ]] && i=2
  [[ $3 == b ]] && i=$((i + 1))
  echo "${ports[$i]:-}"
}
other_slot() { if [[ $1 == blue ]]; then echo green; else echo blue; fi; }
container_name() { echo "$name_prefix-$1-$2-$3"; } # container_name ENV SLOT REPLICA

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

# active_slot ENV: blue or green, the slot ENV/current links to; empty before the first deploy.
active_slot() {
  local t
  t=$(readlink "$socket_dir/$1/current" 2>/dev/null) || return 0
  case $t in
    blue | green) echo "$t" ;;
  esac
}

# switch_slot ENV SLOT: point ENV/current at SLOT in one rename(2): a connect() through the
# link reaches the old slot or the new one, never nothing. nginx is not told anything.
switch_slot() {
  local d=$socket_dir/$1 tmp
  tmp=$d/.current.$$
  rm -f "$tmp"
  ln -s "$2" "$tmp" && mv -Tf "$tmp" "$d/current"
}

# ------------------------------------------------------------------ locks
# lock NAME [SECONDS]: hold releases/.NAME.lock until the shell exits or unlock NAME. While
# another deploy holds it, say so every LOCK_SAY (5) seconds, with what that deploy wrote in
# releases/.NAME.owner (its pid, action, tag and start time).
declare -A lock_fds=()
lock() {
  local name=$1 wait_s=${2:-600} fd start=$SECONDS next_say=0 owner
  mkdir -p "$releases_dir"
  exec {fd}>>"$releases_dir/.$name.lock"
  while ! flock -n "$fd"; do
    if ((SECONDS - start >= wait_s)); then
      exec {fd}>&-
      say "another deploy holds $releases_dir/.$name.lock (waited ${wait_s}s)"
      return 1
    fi
    if ((SECONDS >= next_say)); then
      owner=$(cat "$releases_dir/.$name.owner" 2>/dev/null || true)
      say "waiting for the $name lock, held by ${owner:-another deploy} ($((SECONDS - start)) s of ${wait_s} s)"
      next_say=$((SECONDS + ${LOCK_SAY:-5}))
    fi
    sleep 0.2
  done
  printf 'pid %s, %s %s since %s\n' "$$" "${action:-deploy}" "${tag:-?}" "$(iso_now)" >"$releases_dir/.$name.owner"
  lock_fds[$name]=$fd
}
unlock() {
  local fd=${lock_fds[$1]:-}
  [[ -n $fd ]] || return 0
  exec {fd}>&-
  unset "lock_fds[$1]"
}

# ------------------------------------------------------------------ history
# history_add ENV ACTION TAG RESULT SLOT PORTS IMAGE MESSAGE
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

# ------------------------------------------------------------------ the watch's figures
# metrics_snapshot PREFIX PORT...: the traffic one slot has served, summed over its
# replicas' {prefix}/metrics on 127.0.0.1:PORT: "REQUESTS 5XX LE COUNT LE COUNT ...", the
# request counter and the latency histogram's cumulative buckets. The health probes and
# metrics scrapes (routes /health* and /metrics) are not traffic and are left out. A replica
# that does not answer counts nothing (and makes the line start with "partial").
# PIER_METRICS_TOKEN_FILE: send its content as the bearer token (metrics.token_file).
metrics_snapshot() {
  local prefix=$1 port out="" partial="" auth=()
  shift
  if [[ -n ${PIER_METRICS_TOKEN_FILE:-} && -r $PIER_METRICS_TOKEN_FILE ]]; then
    auth=(-H "Authorization: Bearer $(tr -d '\r\n' <"$PIER_METRICS_TOKEN_FILE")")
  fi
  for port in "$@"; do
    if ! out+=$(curl -fsS --max-time 3 "${auth[@]}" "http://127.0.0.1:$port$prefix/metrics" 2>/dev/null)$'\n'; then
      partial="partial "
    fi
  done
  printf '%s' "$partial"
  awk '
    function route_ok(s) { return s !~ /route="\/health/ && s !~ /route="\/metrics"/ }
    /^pier_http_requests_total\{/ && route_ok($0) {
      n += $NF
      if ($0 ~ /code="5/) e += $NF
    }
    /^pier_http_request_duration_seconds_bucket\{/ && route_ok($0) {
      le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le)
      if (!(le in b)) les[++k] = le
      b[le] += $NF
    }
    END {
      printf "%d %d", n, e
      for (i = 1; i <= k; i++) printf " %s %d", les[i], b[les[i]]
      printf "\n"
    }' <<<"$out"
}

# watch_figures BASE NOW: what the slot served between two snapshots of it:
# "REQUESTS 5XX RATIO P99_MS", P99 from the histogram like Prometheus' histogram_quantile
# (linear within the bucket; "-" when there were no requests).
watch_figures() {
  awk -v base="${1#partial }" -v now="${2#partial }" '
    BEGIN {
      nb = split(base, B, " "); nn = split(now, N, " ")
      for (i = 3; i < nb; i += 2) old[B[i]] = B[i + 1]
      n = N[1] - B[1]; e = N[2] - B[2]
      k = 0
      for (i = 3; i < nn; i += 2) { le[++k] = N[i]; c[k] = N[i + 1] - old[N[i]] }
      # buckets in increasing order of their bound (+Inf last)
      for (i = 2; i <= k; i++) for (j = i; j > 1 && (le[j] == "+Inf" ? 1e300 : le[j]) < (le[j-1] == "+Inf" ? 1e300 : le[j-1]); j--) {
        t = le[j]; le[j] = le[j-1]; le[j-1] = t; t = c[j]; c[j] = c[j-1]; c[j-1] = t
      }
      total = k ? c[k] : 0
      p99 = "-"
      if (total > 0) {
        want = 0.99 * total; prev = 0; prevc = 0
        for (i = 1; i <= k; i++) {
          if (c[i] >= want) {
            if (le[i] == "+Inf") { p99 = prev * 1000; break }
            p99 = (prev + (le[i] - prev) * (c[i] > prevc ? (want - prevc) / (c[i] - prevc) : 1)) * 1000
            break
          }
          prev = le[i]; prevc = c[i]
        }
      }
      printf "%d %d %.4f %s\n", n, e, (n > 0 ? e / n : 0), (p99 == "-" ? "-" : sprintf("%.1f", p99))
    }'
}
