#!/usr/bin/env bash
# Run a deploy on the VM over SSH: ship this checkout's files there, then run
# `ci/deploy.sh ENV TAG` on the VM (ci/deploy.sh does the blue/green switch).
#
#   ci/remote-deploy.sh ENV TAG
#     ENV  staging, or prod (production is accepted as prod: GitHub's environment name)
#     TAG  the image tag to run, the commit SHA it was built from
#
# Environment (deploy.yml passes the secrets in; nothing is read from files):
#   DEPLOY_HOST         the VM's host name or address                          (required)
#   DEPLOY_USER         the SSH user, `deploy` from config/cloud-init.yaml       (required)
#   DEPLOY_SSH_KEY      that user's private key, the whole text                  (required)
#   DEPLOY_KNOWN_HOSTS  known_hosts line(s) for DEPLOY_HOST (ssh-keyscan output,
#                       checked out of band); the host key must match one        (required)
#   DEPLOY_PORT         SSH port (default 22)
#   DEPLOY_DIR          base directory on the VM (default /srv/pier); the files go to
#                       DEPLOY_DIR/src/ENV, replaced as a whole on every deploy
#   PIER_IMAGE          image repository, e.g. ghcr.io/owner/pier; exported to ci/deploy.sh
#   REGISTRY_USER, REGISTRY_TOKEN
#                       when set, the VM logs in to PIER_IMAGE's registry for this deploy
#                       only (a throwaway DOCKER_CONFIG, removed afterwards); the token
#                       travels on SSH's stdin, never on a command line
#   PIER_METRICS_TOKEN  when set, the bearer token /metrics requires in ENV: it travels on
#                       SSH's stdin to `sudo pier-secret ENV metrics-token` on the VM, which
#                       stores it root-owned for the containers and Prometheus (cloud-init)
#
# Before ci/deploy.sh, `sudo pier-host-setup DEPLOY_DIR/src/ENV` (from config/cloud-init.yaml)
# applies the shipped nginx and Prometheus config: checked first (nginx -t, promtool), the
# service reloaded only when it changed; a rejected config stops the deploy. VMs without
# pier-host-setup (set up by an older cloud-init.yaml) skip this step.
#
# The host key is checked strictly against DEPLOY_KNOWN_HOSTS alone (StrictHostKeyChecking=yes,
# no global or user known_hosts): an unknown or changed key stops the deploy. The key and
# known_hosts live in a private temporary directory that is removed on exit.
# Exit status: ci/deploy.sh's on the VM; 2 for bad arguments; 255 when SSH itself fails.
set -euo pipefail

say() { printf 'remote-deploy: %s\n' "$*" >&2; }
die() {
  say "$2"
  exit "$1"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

[[ $# -eq 2 ]] || {
  usage >&2
  exit 2
}
case $1 in
  staging) env=staging ;;
  prod | production) env=prod ;;
  *) die 2 "ENV must be staging or prod (production), got '$1'" ;;
esac
tag=$2
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die 2 "TAG '$tag' is not an image tag"

host=${DEPLOY_HOST:-}
user=${DEPLOY_USER:-}
port=${DEPLOY_PORT:-22}
dir=${DEPLOY_DIR:-/srv/pier}
image=${PIER_IMAGE:-}
[[ -n $host ]] || die 2 "DEPLOY_HOST is not set"
[[ -n $user ]] || die 2 "DEPLOY_USER is not set"
[[ -n ${DEPLOY_SSH_KEY:-} ]] || die 2 "DEPLOY_SSH_KEY is not set"
[[ -n ${DEPLOY_KNOWN_HOSTS:-} ]] || die 2 "DEPLOY_KNOWN_HOSTS is not set"
[[ $host =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^[0-9A-Fa-f:]+$ ]] || die 2 "DEPLOY_HOST '$host' is not a host name or address"
[[ $user =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die 2 "DEPLOY_USER '$user' is not a user name"
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
  die 2 "DEPLOY_PORT '$port' is not a port"
fi
[[ $dir =~ ^/[A-Za-z0-9._/-]+$ && $dir != *..* ]] || die 2 "DEPLOY_DIR '$dir' must be an absolute plain path"
[[ -z $image || $image =~ ^[a-z0-9][a-z0-9._/:-]*$ ]] || die 2 "PIER_IMAGE '$image' is not a lower-case image repository"
if [[ -n ${REGISTRY_TOKEN:-} ]]; then
  [[ -n $image ]] || die 2 "REGISTRY_TOKEN needs PIER_IMAGE (to know the registry)"
  [[ ${REGISTRY_USER:-} =~ ^[A-Za-z0-9_.-]+$ ]] || die 2 "REGISTRY_USER is not set or not a user name"
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
umask 077 # the key and known_hosts files below: readable by this user only
secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
# A secret pasted without its final newline is not a valid key file for OpenSSH.
printf '%s\n' "$DEPLOY_SSH_KEY" | tr -d '\r' >"$secrets/key"
printf '%s\n' "$DEPLOY_KNOWN_HOSTS" | tr -d '\r' >"$secrets/known_hosts"

lookup=$host
((port == 22)) || lookup="[$host]:$port"
ssh-keygen -F "$lookup" -f "$secrets/known_hosts" >/dev/null ||
  die 2 "DEPLOY_KNOWN_HOSTS has no key for $lookup (get it with ssh-keyscan -p $port $host, and check its fingerprint on the VM's console)"

ssh_opts=(
  -i "$secrets/key" -o IdentitiesOnly=yes -o IdentityAgent=none
  -o UserKnownHostsFile="$secrets/known_hosts" -o GlobalKnownHostsFile=/dev/null
  -o StrictHostKeyChecking=yes -o CheckHostIP=no -o UpdateHostKeys=no
  -o BatchMode=yes -o ConnectTimeout=20 -o ServerAliveInterval=15 -o ServerAliveCountMax=4
  -o LogLevel=ERROR -p "$port"
)
target="$user@$host"
remote_src="$dir/src/$env"

# 1. The repository's files at this commit (ci/deploy.sh and what it uses: config/, docker/).
#    A new copy is unpacked beside the old one and swapped in, so a broken upload leaves
#    the previous copy whole.
say "uploading $(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo 'the work tree') to $target:$remote_src"
q_src=$(printf '%q' "$remote_src")
unpack="set -eu; umask 022; rm -rf $q_src.new; mkdir -p $q_src.new; tar --no-same-owner --no-same-permissions -x -C $q_src.new -f -"
unpack+="; rm -rf $q_src.old; if [ -d $q_src ]; then mv $q_src $q_src.old; fi; mv $q_src.new $q_src; rm -rf $q_src.old"
# $unpack is expanded here on purpose: its paths were quoted with %q above.
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # shellcheck disable=SC2029
  git -C "$root" archive --format=tar HEAD | ssh "${ssh_opts[@]}" "$target" "$unpack"
else
  # shellcheck disable=SC2029
  tar -C "$root" --exclude=.git --exclude=./build --exclude=node_modules -cf - . |
    ssh "${ssh_opts[@]}" "$target" "$unpack"
fi

# 2. The deploy itself. The script arrives on stdin inside one { } block, so bash has read
#    all of it before ci/deploy.sh starts; ci/deploy.sh gets /dev/null as its stdin.
registry=${image%%/*}
script=$(
  printf '{\nset -euo pipefail\n'
  printf 'cd %q\n' "$remote_src"
  [[ -n $image ]] && printf 'export PIER_IMAGE=%q\n' "$image"
  printf 'export PIER_DEPLOY_DIR=%q\n' "$dir"
  if [[ -n ${REGISTRY_TOKEN:-} ]]; then
    # shellcheck disable=SC2016 # expanded on the VM
    printf 'export DOCKER_CONFIG="$(mktemp -d)"\n'
    # shellcheck disable=SC2016 # expanded on the VM
    printf 'trap '\''rm -rf "$DOCKER_CONFIG"'\'' EXIT\n'
    printf 'printf %%s %q | docker login %q -u %q --password-stdin >/dev/null\n' \
      "$REGISTRY_TOKEN" "$registry" "$REGISTRY_USER"
    printf 'echo "remote-deploy: logged in to %s for this deploy" >&2\n' "$registry"
  fi
  if [[ -n ${PIER_METRICS_TOKEN:-} ]]; then
    # printf is a bash builtin on the VM: the token is in no process's arguments.
    printf 'printf %%s %q | sudo -n /usr/local/sbin/pier-secret %q metrics-token\n' \
      "$PIER_METRICS_TOKEN" "$env"
  fi
  printf 'if [ -x /usr/local/sbin/pier-host-setup ]; then sudo -n /usr/local/sbin/pier-host-setup %q; fi\n' \
    "$remote_src"
  # shellcheck disable=SC2016 # expanded on the VM
  printf 'echo "remote-deploy: $(hostname): ci/deploy.sh %s %s" >&2\n' "$env" "$tag"
  printf 'ci/deploy.sh %q %q </dev/null\n' "$env" "$tag"
  printf 'exit $?\n}\n'
)
say "running ci/deploy.sh $env $tag on $target"
start=$SECONDS
rc=0
ssh "${ssh_opts[@]}" "$target" bash -s <<<"$script" || rc=$?
say "ci/deploy.sh $env $tag on $host finished with status $rc after $((SECONDS - start))s"
exit "$rc"
