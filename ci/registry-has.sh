#!/usr/bin/env bash
# Is IMAGE:TAG in its registry? Asked by pulling it (docker's own login and TLS rules), and a
# failure to ask is never read as "no": a tag would then be pushed over one that exists.
#
#   ci/registry-has.sh IMAGE:TAG
#
# Exit 0: it is there (and now pulled); 1: the registry says it is not (manifest unknown);
# 2: no answer either way (network, login, anything else; the error on stderr).
set -uo pipefail

(($# == 1)) || {
  sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}
if err=$(docker pull -q "$1" 2>&1 >/dev/null); then
  exit 0
fi
if grep -qiE 'manifest unknown|manifest for .* not found|not found: manifest' <<<"$err"; then
  exit 1
fi
echo "registry-has: cannot tell whether $1 exists: $err" >&2
exit 2
