#!/usr/bin/env bash
# Make sure a Docker daemon answers on this machine, for the container jobs (image.sh,
# smoke.sh, compose-test.sh). CI machines start without one: install docker.io when the
# binaries are missing, start dockerd in the background when `docker info` fails, and wait
# (bounded) until it answers. Safe to run again: a daemon that answers is left alone.
#
#   DOCKERD_LOG          where dockerd writes (default /var/log/pier-dockerd.log)
#   DOCKERD_PIDFILE      the PID of the dockerd this script started (default /run/pier-dockerd.pid)
#   DOCKERD_WAIT_SECONDS how long to wait for the socket (default 60, at most 60)
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/pier-dockerd.log}
pidfile=${DOCKERD_PIDFILE:-/run/pier-dockerd.pid}
wait_s=${DOCKERD_WAIT_SECONDS:-60}
if (( wait_s > 60 )); then wait_s=60; fi

say() { printf 'start-dockerd: %s\n' "$*"; }

apt_install() { "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" --only "$@"; }
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  say "installing docker.io"
  apt_install docker.io iptables
fi

if docker info >/dev/null 2>&1; then
  say "dockerd already answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
  exit 0
fi

# A dockerd we started earlier may still be starting up: wait for it rather than start a second.
pid=""
if [[ -s $pidfile ]]; then
  pid=$(<"$pidfile")
  if ! kill -0 "$pid" 2>/dev/null || [[ $(cat "/proc/$pid/comm" 2>/dev/null) != dockerd ]]; then
    pid=""
  fi
fi

if [[ -z $pid ]]; then
  mkdir -p "$(dirname "$log")" "$(dirname "$pidfile")"
  say "starting dockerd (log: $log)"
  # setsid: the daemon must outlive this script and the CI step that ran it.
  setsid dockerd >>"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
else
  say "dockerd $pid is already starting"
fi

deadline=$((SECONDS + wait_s))
until docker info >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then
    say "dockerd exited; last lines of $log:"
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
  if (( SECONDS >= deadline )); then
    say "dockerd did not answer within ${wait_s}s; last lines of $log:"
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
  sleep 0.5
done
say "dockerd $pid answers after ${SECONDS}s ($(docker version -f '{{.Server.Version}}'))"
