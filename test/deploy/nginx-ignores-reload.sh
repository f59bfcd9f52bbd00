#!/usr/bin/env bash
# NGINX_BIN for ci/deploy-test.sh: nginx, except that `-s reload` does nothing and says
# nothing, like a master that refused the new configuration (ci/deploy.sh must notice that no
# new workers started, put the old upstream file back and leave the old slot alone).
set -euo pipefail
for a in "$@"; do
  [[ $a == reload ]] && exit 0
done
exec nginx "$@"
