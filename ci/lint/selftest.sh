#!/usr/bin/env bash
# Behaviour tests of the delivery scripts, offline and on loopback only (ci/lint.sh runs
# them as the `ci-scripts` check):
#   ci/public-smoke.sh    against a fake pier on 127.0.0.1 (pass after retries, an old
#                         release still answering, refused connections, bad arguments)
#   ci/github-protect.sh  --dry-run output, --reviews (0 for one maintainer), bad arguments
#   ci/changelog.py       release notes of one version; a CHANGELOG.md broken in each way it
#                         checks is refused (and gives no release notes)
#   ci/remote-deploy.sh   argument and secret checks; and, when sshd is installed and we
#                         are root, a real deploy through a throwaway sshd on a loopback
#                         port: files shipped, ci/deploy.sh's exit status passed back, the
#                         registry token used and thrown away, a wrong host key refused.
# Every server it starts is stopped by its PID on exit. Prints `ok`/`FAIL` per case and
# `selftest: N passed, M failed`; exits 1 when any failed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

passed=0 failed=0
# expect STATUS DESCRIPTION CMD...: CMD must exit with STATUS; its output goes to $work/out.
expect() {
  local want=$1 what=$2 got
  shift 2
  "$@" >"$work/out" 2>&1
  got=$?
  if [[ $got == "$want" ]]; then
    passed=$((passed + 1))
    echo "ok   $what"
  else
    failed=$((failed + 1))
    echo "FAIL $what: exit $got, want $want; output:"
    sed 's/^/     /' "$work/out"
  fi
}
# output_has REGEX DESCRIPTION: the last expect's output matches REGEX.
output_has() {
  if grep -qE "$1" "$work/out"; then
    passed=$((passed + 1))
    echo "ok   $2"
  else
    failed=$((failed + 1))
    echo "FAIL $2: no /$1/ in:"
    sed 's/^/     /' "$work/out"
  fi
}

# --- ci/public-smoke.sh ------------------------------------------------------------------

# fake_pier COMMIT FAILURES: a pier look-alike on an ephemeral loopback port that answers
# FAILURES requests with 502 first. Sets $port.
fake_pier() {
  rm -f "$work/port"
  python3 - "$1" "$2" "$work/port" <<'PY' &
import http.server, json, sys
commit, failures, port_file = sys.argv[1], [int(sys.argv[2])], sys.argv[3]
class Pier(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        if failures[0] > 0:
            failures[0] -= 1
            self.send_response(502)
            self.end_headers()
            return
        bodies = {
            "/prod/health": {"status": "pass", "version": "1.2.3", "releaseId": commit,
                             "serviceId": "pier", "environment": "prod", "uptime_s": 1},
            "/prod/version": {"version": "1.2.3", "commit": commit, "build_time": "now"},
        }
        body = json.dumps(bodies.get(self.path, {"error": {"status": 404}})).encode()
        self.send_response(200 if self.path in bodies else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Request-Id", self.headers.get("X-Request-Id", "none"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.HTTPServer(("127.0.0.1", 0), Pier)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_port))
import os; os.rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
  pids+=($!)
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $work/port ]] && break
    sleep 0.1
  done
  port=$(cat "$work/port")
}

sha=0123456789abcdef0123456789abcdef01234567
export SMOKE_DELAY=0 SMOKE_TIMEOUT=5
fake_pier "${sha:0:12}" 2
expect 0 "public-smoke: passes once the new release answers (after two 502s)" \
  env SMOKE_ATTEMPTS=5 "$root/ci/public-smoke.sh" "http://127.0.0.1:$port/" /prod "$sha"
output_has 'attempt 3\)' "public-smoke: retried until the third attempt"
fake_pier abcdef012345 0
expect 1 "public-smoke: fails while another commit answers" \
  env SMOKE_ATTEMPTS=2 "$root/ci/public-smoke.sh" "http://127.0.0.1:$port" /prod "$sha"
output_has "releaseId 'abcdef012345' is not commit" "public-smoke: says which commit answered"
expect 1 "public-smoke: fails on a wrong prefix (404)" \
  env SMOKE_ATTEMPTS=1 "$root/ci/public-smoke.sh" "http://127.0.0.1:$port" /staging abcdef0
expect 1 "public-smoke: fails when nothing listens" \
  env SMOKE_ATTEMPTS=2 "$root/ci/public-smoke.sh" "http://127.0.0.1:1" /prod "$sha"
expect 2 "public-smoke: rejects a URL with a path" "$root/ci/public-smoke.sh" http://x/y /prod "$sha"
expect 2 "public-smoke: rejects a prefix ending in /" "$root/ci/public-smoke.sh" http://x /prod/ "$sha"
expect 2 "public-smoke: rejects a tag with shell characters" "$root/ci/public-smoke.sh" http://x /prod 'a;b'

# --- ci/github-protect.sh ----------------------------------------------------------------

expect 0 "github-protect: --dry-run works offline" "$root/ci/github-protect.sh" --dry-run
output_has '"required_linear_history": true' "github-protect: linear history required"
output_has '"required_approving_review_count": 1,' "github-protect: one approving review by default"
expect 2 "github-protect: rejects a bad branch name" "$root/ci/github-protect.sh" --dry-run 'a..b'
expect 0 "github-protect: --reviews 0 (one maintainer)" "$root/ci/github-protect.sh" --dry-run --reviews 0 main
output_has '"required_approving_review_count": 0,' "github-protect: --reviews 0 requires no approval"
output_has '"require_last_push_approval": false' "github-protect: --reviews 0 needs no approval of the last push"
output_has '"enforce_admins": true' "github-protect: --reviews 0 still binds administrators"
expect 2 "github-protect: rejects --reviews 7" "$root/ci/github-protect.sh" --dry-run --reviews 7

# --- ci/changelog.py ---------------------------------------------------------------------

cl=$work/changelog
mkdir -p "$cl"
cat >"$cl/good.md" <<'EOF'
# Changelog

Intro text.

## [Unreleased]

### Added

- Something not released yet.

## [1.1.0] - 2026-03-02

### Added

- A feature.
  Its second line.

### Fixed

- A bug.

## [1.0.0] - 2026-01-15

### Added

- The first release.

[1.1.0]: https://example.com/compare/v1.0.0...v1.1.0
EOF
printf '### Added\n\n- A feature.\n  Its second line.\n\n### Fixed\n\n- A bug.\n' >"$cl/want-1.1.0"
printf 'project(pier VERSION 1.1.0 LANGUAGES C)\n' >"$cl/CMakeLists.txt"
printf 'project(pier VERSION 1.2.0 LANGUAGES C)\n' >"$cl/CMakeLists-1.2.0.txt"
expect 0 "changelog: a well-formed file passes, its CMake version has a section" \
  "$root/ci/changelog.py" check "$cl/good.md" --cmake "$cl/CMakeLists.txt"
expect 0 "changelog: section 1.1.0 prints" "$root/ci/changelog.py" section 1.1.0 "$cl/good.md"
cp "$work/out" "$cl/got-1.1.0"
expect 0 "changelog: section 1.1.0 is exactly that version's entries" diff "$cl/want-1.1.0" "$cl/got-1.1.0"
expect 1 "changelog: no section for 1.2.0 (release notes refused)" \
  "$root/ci/changelog.py" section 1.2.0 "$cl/good.md"
output_has 'no section for version 1.2.0' "changelog: says which version is missing"
expect 1 "changelog: CMakeLists.txt at 1.2.0 without a section fails the check" \
  "$root/ci/changelog.py" check "$cl/good.md" --cmake "$cl/CMakeLists-1.2.0.txt"
output_has 'version 1.2.0, which has no' "changelog: names the version without notes"
# broken NAME SED-SCRIPT REGEX: the good file edited by SED-SCRIPT fails the check with REGEX.
broken() {
  sed -e "$2" "$cl/good.md" >"$cl/$1.md"
  expect 1 "changelog: refuses $1" "$root/ci/changelog.py" check "$cl/$1.md"
  output_has "$3" "changelog: $1 reported"
  expect 1 "changelog: no release notes from a file with $1" \
    "$root/ci/changelog.py" section 1.0.0 "$cl/$1.md"
}
broken "a duplicate version" 's/^## \[1.0.0\]/## [1.1.0]/' '\[1.1.0\] again'
broken "versions out of order" 's/^## \[1.0.0\]/## [1.2.0]/' 'newest first'
broken "an impossible date" 's/2026-01-15/2026-02-30/' 'is not a date'
broken "dates out of order" 's/2026-01-15/2026-04-01/' 'is dated after'
broken "an unknown kind of change" 's/^### Fixed/### Improved/' 'the kinds are'
broken "a heading that is not a version" 's/^## \[1.0.0\] - 2026-01-15/## Version 1.0.0/' 'a section heading is'
broken "no Unreleased section" '/^## \[Unreleased\]/d' 'Unreleased'
broken "a release with no entries" '/^- The first release\.$/d' '\[1.0.0\] lists no change'
broken "an entry outside a kind" 's/^## \[1.0.0\] - 2026-01-15$/&\n\n- A loose entry./' 'outside an'
broken "a missing title" '1s/.*/# Changes/' 'first line must be'
expect 0 "changelog: the repository's CHANGELOG.md passes, with a section for CMakeLists.txt's version" \
  "$root/ci/changelog.py" check "$root/CHANGELOG.md" --cmake "$root/CMakeLists.txt"

# --- ci/remote-deploy.sh -----------------------------------------------------------------

expect 2 "remote-deploy: refuses to run without the secrets" \
  env -u DEPLOY_HOST -u DEPLOY_USER -u DEPLOY_SSH_KEY -u DEPLOY_KNOWN_HOSTS \
  "$root/ci/remote-deploy.sh" staging abc1234
ssh-keygen -q -t ed25519 -N '' -f "$work/other_host_key"
export DEPLOY_HOST=127.0.0.1 DEPLOY_USER=deploy DEPLOY_SSH_KEY=not-a-key
DEPLOY_KNOWN_HOSTS="otherhost $(cut -d' ' -f1,2 "$work/other_host_key.pub")"
export DEPLOY_KNOWN_HOSTS
expect 2 "remote-deploy: rejects an unknown environment" "$root/ci/remote-deploy.sh" dev abc1234
# shellcheck disable=SC2016 # the $(...) is the point: it must not run
expect 2 "remote-deploy: rejects a tag with shell characters" "$root/ci/remote-deploy.sh" staging 'x$(id)'
expect 2 "remote-deploy: refuses a host missing from DEPLOY_KNOWN_HOSTS" \
  "$root/ci/remote-deploy.sh" staging abc1234
output_has 'has no key for 127.0.0.1' "remote-deploy: says the host key is missing"

if [[ -x /usr/sbin/sshd && $EUID -eq 0 ]]; then
  # A repository with remote-deploy.sh and a fake ci/deploy.sh, a fake docker on the
  # "VM", and an sshd on a free loopback port that only accepts our key.
  vm=$work/vm repo=$work/repo
  mkdir -p "$vm/bin" "$vm/srv" "$repo/ci" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$work/user_key"
  cp "$work/user_key.pub" "$work/authorized_keys"
  cat >"$vm/bin/docker" <<EOF
#!/bin/sh
echo "docker \$* config=\$DOCKER_CONFIG password=\$(cat)" >>"$vm/docker.log"
mkdir -p "\$DOCKER_CONFIG" && echo '{}' >"\$DOCKER_CONFIG/config.json"
EOF
  cat >"$repo/ci/deploy.sh" <<'EOF'
#!/bin/sh
echo "deploy.sh env=$1 tag=$2 image=$PIER_IMAGE in=$(pwd) config=$DOCKER_CONFIG stdin=[$(cat)]"
[ -f "$DOCKER_CONFIG/config.json" ] && echo "logged in"
exit "$(cat exit-status 2>/dev/null || echo 0)"
EOF
  chmod +x "$vm/bin/docker" "$repo/ci/deploy.sh"
  cp "$root/ci/remote-deploy.sh" "$repo/ci/"
  echo 0 >"$repo/exit-status"
  git -C "$repo" init -q && git -C "$repo" add -A &&
    git -C "$repo" -c user.name=t -c user.email=t@t commit -qm one
  ssh_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$work/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv PATH=$vm/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
EOF
  /usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log" -D &
  pids+=($!)
  for ((i = 0; i < 50; i++)); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $ssh_port), 1)" 2>/dev/null && break
    sleep 0.1
  done
  export DEPLOY_USER=root DEPLOY_PORT=$ssh_port DEPLOY_DIR=$vm/srv
  DEPLOY_SSH_KEY=$(cat "$work/user_key")
  DEPLOY_KNOWN_HOSTS="[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$work/host_key.pub")"
  # shellcheck disable=SC2016 # a token with quotes and a $ must arrive unchanged
  token='t0k"en $x'
  expect 0 "remote-deploy: deploys over SSH" env PIER_IMAGE=ghcr.io/acme/pier REGISTRY_USER=bot \
    REGISTRY_TOKEN="$token" "$repo/ci/remote-deploy.sh" production "$sha"
  output_has "deploy.sh env=prod tag=$sha image=ghcr.io/acme/pier in=$vm/srv/src/prod" \
    "remote-deploy: ci/deploy.sh ran in the shipped copy with ENV, TAG and PIER_IMAGE"
  output_has 'stdin=\[\]' "remote-deploy: ci/deploy.sh does not read the deploy script"
  output_has '^logged in$' "remote-deploy: the registry login was in place during the deploy"
  if grep -qF "password=$token" "$vm/docker.log" && ! ls -d "$(sed -n 's/.*config=\([^ ]*\).*/\1/p' "$vm/docker.log")" 2>/dev/null; then
    passed=$((passed + 1))
    echo "ok   remote-deploy: token given on stdin, its docker config removed afterwards"
  else
    failed=$((failed + 1))
    echo "FAIL remote-deploy: token handling:"
    sed 's/^/     /' "$vm/docker.log"
  fi
  echo 3 >"$repo/exit-status"
  git -C "$repo" -c user.name=t -c user.email=t@t commit -qam two
  expect 3 "remote-deploy: returns ci/deploy.sh's exit status" "$repo/ci/remote-deploy.sh" staging "$sha"
  expect 0 "remote-deploy: staging got the new commit's files" grep -qx 3 "$vm/srv/src/staging/exit-status"
  expect 0 "remote-deploy: prod kept its own copy" grep -qx 0 "$vm/srv/src/prod/exit-status"
  DEPLOY_KNOWN_HOSTS="[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$work/other_host_key.pub")"
  expect 255 "remote-deploy: refuses a changed host key" "$repo/ci/remote-deploy.sh" staging "$sha"
else
  echo "skip remote-deploy over SSH (needs root and /usr/sbin/sshd: apt-get install openssh-server)"
fi

echo "selftest: $passed passed, $failed failed"
((failed == 0))
