#!/usr/bin/env bash
# Create (or repair) the directories the blue/green deploy puts pier's Unix sockets in, as
# root, once per VM (config/cloud-init.yaml runs it; safe to run again). docs/deploys.md
# explains the layout:
#
#   DIR                      root:root         0755
#   DIR/ENV                  DEPLOY:GROUP      0750   ci/deploy.sh renames ENV/current here
#   DIR/ENV/blue, green      65532:GROUP       2750   the slot's replicas make a.sock, b.sock
#   DIR/ENV/current -> blue                           (made by the first deploy)
#
# 65532 is pier's user in the image. The slot directories are setgid, so each socket pier
# creates belongs to GROUP (nginx's workers' group) and pier's 0660 lets nginx connect; no
# container gets an extra group. It is on disk, not in /run: the `current` link (the live
# slot) survives a reboot, and the stale socket files a reboot leaves are removed by pier.
#
#   ci/socket-dirs.sh [DIR]        DIR default /srv/pier/run
#   SOCKET_DIRS_GROUP   nginx's workers' group (default www-data)
#   SOCKET_DIRS_OWNER   the deploy user (default deploy; root when there is none)
set -euo pipefail

dir=${1:-/srv/pier/run}
group=${SOCKET_DIRS_GROUP:-www-data}
owner=${SOCKET_DIRS_OWNER:-deploy}
say() { printf 'socket-dirs: %s\n' "$*" >&2; }

((EUID == 0)) || {
  say "run as root (it gives directories to uid 65532 and group $group)"
  exit 2
}
[[ $dir == /* ]] || {
  say "DIR must be an absolute path, got '$dir'"
  exit 2
}
getent group "$group" >/dev/null || {
  say "no group '$group' (nginx's workers' group; SOCKET_DIRS_GROUP)"
  exit 2
}
id -u "$owner" >/dev/null 2>&1 || owner=root

install -d -m 0755 -o root -g root "$dir"
for env in prod staging; do
  install -d -m 0750 -o "$owner" -g "$group" "$dir/$env"
  for slot in blue green; do
    install -d -m 2750 -o 65532 -g "$group" "$dir/$env/$slot"
  done
done
say "$dir/{prod,staging}/{blue,green}: sockets of uid 65532, group $group; $owner switches current"
