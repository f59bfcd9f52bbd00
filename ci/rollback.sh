#!/usr/bin/env bash
# Roll an environment back: redeploy its previous successful release (from the VM's release
# history), or TAG, through ci/deploy.sh: the same health wait, version check, switch
# and drain as a deploy, recorded in the history as action `rollback`. It is not watched
# after the switch (it returns to a release that was judged already): seconds, not a minute.
#
#   ci/rollback.sh ENV [TAG]
#     ENV  prod (or production) | staging
#     TAG  the image tag to go back to; default: the newest successful release of ENV
#          other than the current one (the current one is the newest successful release)
#
# Takes the same environment variables as ci/deploy.sh (PIER_DEPLOY_DIR, ...); without
# PIER_IMAGE, the image repository TAG was deployed from (the history says) is used.
# Exit status: ci/deploy.sh's; 1 when the history has no earlier release; 2 bad usage.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deploy_prog=rollback
# shellcheck source=deploy-lib.sh
. "$root/ci/deploy-lib.sh"

if [[ $# -lt 1 || $# -gt 2 ]]; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
fi
env=$(deploy_env "$1") || die 2 "ENV must be prod (production) or staging, got '$1'"
tag=${2:-}
if [[ -z $tag ]]; then
  mapfile -t recent < <(history_recent "$env" 2)
  if ((${#recent[@]} < 2)); then
    die 1 "$history_file has no successful $env release before ${recent[0]:-the current one}: give the TAG to roll back to"
  fi
  tag=${recent[1]}
  say "$env: current release ${recent[0]}, rolling back to ${tag}"
else
  valid_tag "$tag" || die 2 "TAG '$tag' is not an image tag"
  say "$env: rolling back to $tag"
fi
# Run by hand on the VM, PIER_IMAGE is usually not set: use the repository that TAG was
# deployed from, as the history says.
if [[ -z ${PIER_IMAGE:-} ]]; then
  img=$(awk -F '\t' -v e="$env" -v t="$tag" '$2 == e && $4 == t && $5 == "success" { i = $8 } END { print i }' \
    "$history_file" 2>/dev/null || true)
  if [[ -n $img ]]; then
    export PIER_IMAGE=${img%:*}
    say "image repository from the history: $PIER_IMAGE"
  fi
fi
PIER_DEPLOY_ACTION=rollback exec "$root/ci/deploy.sh" "$env" "$tag"
