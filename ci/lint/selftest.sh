#!/usr/bin/env bash
# Behaviour tests of the delivery scripts, offline and on loopback only (ci/lint.sh runs
# them as the `ci-scripts` check):
#   ci/public-smoke.sh    against a fake pier on 127.0.0.1 (pass after retries, an old
#                         release still answering, refused connections, bad arguments)
#   ci/github-protect.sh  --dry-run output, --reviews (0 for one maintainer), bad arguments
#   ci/changelog.py       release notes of one version; a CHANGELOG.md broken in each way it
#                         checks is refused (and gives no release notes)
#   ci/provenance.sh      against a scratch repository (develop, main, a release, a hotfix, a
#                         back-merge, a feature branch): every refusal and every decision
#   ci/github-gate.sh     against a fake GitHub API on loopback: checks passed, failed, running,
#                         missing, a look-alike from another app, the API down; staging ran,
#                         failed, running, never
#   ci/github-release.sh  --dry-run: notes from CHANGELOG.md at the released commit; a broken
#                         one refused; an existing tag not moved
#   checks.py deploy-workflow  passes on deploy.yml, and fails on copies with a rule broken
#   checks.py docs-names, docs-facts, getting-started  pass on the repository, and each fails on
#                         a copy with one name, fact or command of the docs (or of what they
#                         describe) broken
#   deploy/pier-deploy    its SSH client: argument and host-key checks; and, when sshd is
#                         installed and we are root, commands through a throwaway sshd on a
#                         loopback port: only the checked verb and arguments sent, the
#                         registry token on stdin, the exit status passed back, a changed
#                         host key refused.
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
output_has '"required_linear_history": false' "github-protect: no linear history (back-merges reach main)"
output_has '"allow_force_pushes": false' "github-protect: no force pushes"
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

# --- ci/provenance.sh, against a scratch repository ---------------------------------------

# origin: main and develop at c0; d1 on develop, released (main fast-forwarded to it); d2 on
# develop (not released); hotfix h on main; develop back-merges main (b); f only on a
# feature branch. clone: a fresh clone, as deploy.yml's checkout with fetch-depth: 0.
pv=$work/provenance
g() { git -C "$pv/dev" -c user.name=t -c user.email=t@t -c init.defaultBranch=main "$@"; }
git init -q --bare "$pv/origin.git"
git init -q -b main "$pv/dev"
g remote add origin "$pv/origin.git"
g commit -q --allow-empty -m c0 && c0=$(g rev-parse HEAD)
g push -q origin main main:develop
g checkout -q -b develop origin/develop
g commit -q --allow-empty -m d1 && d1=$(g rev-parse HEAD)
g push -q origin develop develop:main
g commit -q --allow-empty -m d2 && d2=$(g rev-parse HEAD)
g push -q origin develop
g checkout -q -B main origin/main
g commit -q --allow-empty -m hotfix && h=$(g rev-parse HEAD)
g push -q origin main
g checkout -q develop
g merge -q --no-ff -m back-merge origin/main && b=$(g rev-parse HEAD)
g push -q origin develop
g checkout -q -b feature/x
g commit -q --allow-empty -m feature && f=$(g rev-parse HEAD)
g push -q origin feature/x
git clone -q "$pv/origin.git" "$pv/clone"
prov() { (cd "$pv/clone" && "$root/ci/provenance.sh" "$@"); }
: "$c0"

expect 0 "provenance: a push to develop deploys staging and builds" \
  prov --event push --ref refs/heads/develop --sha "$b"
output_has '^environment=staging$' "provenance: develop -> staging"
output_has '^build=true$' "provenance: develop builds its image"
expect 0 "provenance: a push to main of develop's commit (a release)" \
  prov --event push --ref refs/heads/main --sha "$d1"
output_has '^environment=production$' "provenance: main -> production"
output_has '^build=false$' "provenance: a release is never rebuilt (production runs staging's image)"
output_has '^staged=true$' "provenance: a release waits for its staging deployment"
expect 0 "provenance: a push to main of a hotfix" prov --event push --ref refs/heads/main --sha "$h"
output_has '^build=true$' "provenance: a hotfix is built from main"
output_has '^staged=false$' "provenance: a hotfix never ran on staging"
output_has 'never ran on staging' "provenance: says so"
expect 1 "provenance: a dispatch on a feature branch is refused" \
  prov --event workflow_dispatch --ref refs/heads/feature/x --sha "$f" --environment staging --tag ''
output_has 'only from develop or main.*nothing is built' "provenance: says nothing is built, and why"
expect 1 "provenance: a push of a tag ref is refused" prov --event push --ref refs/tags/v1 --sha "$d1"
expect 0 "provenance: production rollback to a commit on main" \
  prov --event workflow_dispatch --ref refs/heads/main --sha "$h" --environment production --tag "$d1"
output_has "^tag=$d1\$" "provenance: deploys the rollback's TAG"
output_has '^build=false$' "provenance: a rollback builds nothing"
expect 1 "provenance: production of a develop-only commit is refused" \
  prov --event workflow_dispatch --ref refs/heads/main --sha "$h" --environment production --tag "$d2"
output_has 'not an ancestor of origin/main' "provenance: says TAG is not on main"
expect 1 "provenance: production of a feature commit is refused" \
  prov --event workflow_dispatch --ref refs/heads/main --sha "$h" --environment production --tag "$f"
expect 0 "provenance: the back-merged hotfix is still not staged" \
  prov --event workflow_dispatch --ref refs/heads/main --sha "$h" --environment production --tag "$h"
output_has '^staged=false$' "provenance: a back-merge's second parent is not on develop's line"
expect 1 "provenance: production from develop is refused" \
  prov --event workflow_dispatch --ref refs/heads/develop --sha "$b" --environment production --tag ''
expect 1 "provenance: staging from main is refused" \
  prov --event workflow_dispatch --ref refs/heads/main --sha "$h" --environment staging --tag ''
expect 1 "provenance: staging of a feature-only commit is refused" \
  prov --event workflow_dispatch --ref refs/heads/develop --sha "$b" --environment staging --tag "$f"
expect 1 "provenance: a short tag is refused" \
  prov --event workflow_dispatch --ref refs/heads/main --sha "$h" --environment production --tag "${d1:0:12}"
expect 2 "provenance: an unknown event" prov --event pull_request --ref refs/heads/main --sha "$h"

# --- ci/github-gate.sh, against a fake GitHub API on loopback -----------------------------

# The fake answers from the scenario named in $work/scenario (read at every request); a
# route's answers advance one per request and stay on the last. No token: 401.
fake_api() {
  rm -f "$work/api-port"
  python3 - "$work/scenario" "$work/api-port" "$root/ci/github-protect.sh" "$sha" <<'PY' &
import http.server, json, re, sys
scenario_file, port_file, protect, sha = sys.argv[1:5]
required = re.search(r"^REQUIRED_CHECKS=\((.*)\)$", open(protect).read(), re.M).group(1).split()
ACTIONS = 15368
def runs(overrides=None, other_app=None):
    out, i = [], 100
    for name in required:
        status, conclusion = (overrides or {}).get(name, ("completed", "success"))
        if status is None:
            continue
        out.append({"id": i, "name": name, "status": status, "conclusion": conclusion,
                    "app": {"id": ACTIONS}})
        i += 1
    for name, conclusion in (other_app or {}).items():
        out.append({"id": 999, "name": name, "status": "completed", "conclusion": conclusion,
                    "app": {"id": 4242}})
    return {"total_count": len(out), "check_runs": out}
C = f"/repos/acme/pier/commits/{sha}/check-runs"
D = "/repos/acme/pier/deployments"
S = "/repos/acme/pier/deployments/7/statuses"
def st(*states):
    return [{"state": s} for s in reversed(states)]  # newest first, as the API lists them
SCENARIOS = {
    "pass": {C: [runs()]},
    "one-failed": {C: [runs({"memcheck": ("completed", "failure")})]},
    "running-then-pass": {C: [runs({"vm-rehearsal": ("in_progress", None)}), runs()]},
    "missing": {C: [runs({"lint": (None, None)})]},
    "look-alike": {C: [runs({"lint": ("completed", "failure")}, other_app={"lint": "success"})]},
    "api-down": {C: [500]},
    "staged": {D: [[{"id": 7}]], S: [st("in_progress", "success", "inactive")]},
    "staging-failed": {D: [[{"id": 7}]], S: [st("in_progress", "failure")]},
    "staging-running-then-ok": {D: [[{"id": 7}]], S: [st("queued"), st("in_progress"), st("in_progress", "success")]},
    "never-staged": {D: [[]]},
}
counters = {}
class API(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        name = open(scenario_file).read().strip()
        path = self.path.split("?")[0]
        answers = SCENARIOS.get(name, {}).get(path)
        if self.headers.get("Authorization") != "Bearer t0ken":
            code, body = 401, {"message": "Bad credentials"}
        elif answers is None:
            code, body = 404, {"message": "Not Found"}
        else:
            k = (name, path)
            i = counters.get(k, 0)
            counters[k] = i + 1
            body = answers[min(i, len(answers) - 1)]
            code = 200
            if isinstance(body, int):
                code, body = body, {"message": "boom"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
server = http.server.HTTPServer(("127.0.0.1", 0), API)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_port))
import os; os.rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
  pids+=($!)
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $work/api-port ]] && break
    sleep 0.1
  done
  api_port=$(cat "$work/api-port")
}
if command -v jq >/dev/null 2>&1; then
  fake_api
  # gate SCENARIO ARGS...: GATE_TIMEOUT 30 s, or $gate_timeout for the cases that must give up.
  gate() {
    echo "$1" >"$work/scenario"
    shift
    env GITHUB_API_URL="http://127.0.0.1:$api_port" GITHUB_REPOSITORY=acme/pier GITHUB_TOKEN=t0ken \
      GATE_POLL=0 GATE_TIMEOUT="${gate_timeout:-30}" "$root/ci/github-gate.sh" "$@"
  }
  expect 0 "gate: every required ci.yml check passed" gate pass checks "$sha"
  output_has 'ci.yml passed on' "gate: says so"
  expect 1 "gate: a failed check refuses the deploy" gate one-failed checks "$sha"
  output_has 'memcheck:failure' "gate: names the failed check"
  expect 0 "gate: waits while a check runs, then passes" gate running-then-pass checks "$sha"
  output_has 'waiting for ci.yml.*vm-rehearsal:in_progress' "gate: said what it waited for"
  gate_timeout=3 expect 1 "gate: a required check that never ran: gives up at the timeout" \
    gate missing checks "$sha"
  output_has 'gave up after 3s.*no run yet: lint' "gate: says which check never ran"
  expect 1 "gate: another app's passing look-alike does not count" gate look-alike checks "$sha"
  output_has 'lint:failure' "gate: the Actions run of lint decided"
  expect 1 "gate: an API that fails is never read as a pass" gate api-down checks "$sha"
  output_has 'API failed 3 times' "gate: says the API failed"
  expect 2 "gate: needs a token" env -u GITHUB_TOKEN GITHUB_REPOSITORY=acme/pier "$root/ci/github-gate.sh" checks "$sha"
  expect 0 "gate: staging ran the commit (success, later inactive)" gate staged staged "$sha"
  expect 1 "gate: a failed staging deployment refuses production" gate staging-failed staged "$sha"
  output_has 'ended without success' "gate: says staging did not run it"
  expect 0 "gate: waits for a running staging deployment" gate staging-running-then-ok staged "$sha"
  gate_timeout=3 expect 1 "gate: never staged: gives up" gate never-staged staged "$sha"
  output_has 'none yet' "gate: says there is no staging deployment"
else
  echo "skip gate tests (jq is not installed)"
  failed=$((failed + 1))
fi

# --- ci/github-release.sh --dry-run ---------------------------------------------------------

cp "$cl/good.md" "$pv/dev/CHANGELOG.md"
g checkout -q develop
g add CHANGELOG.md && g commit -q -m "changelog" && rel=$(g rev-parse HEAD)
printf '# Changelog\n\n## [Unreleased]\n\n## [1.1.0] - 2026-03-02\n' >"$pv/dev/CHANGELOG.md"
g commit -q -am "broken changelog" && rel_bad=$(g rev-parse HEAD)
g tag v1.0.0 "$d1"
ghrel() { (cd "$pv/dev" && "$root/ci/github-release.sh" "$@"); }
expect 0 "github-release: notes from CHANGELOG.md at the released commit" ghrel --dry-run 1.1.0 "$rel"
output_has '^- A feature\.$' "github-release: the notes are 1.1.0's section"
output_has 'gh release create v1.1.0 --target '"$rel" "github-release: tags the released commit"
expect 1 "github-release: a CHANGELOG.md without 1.1.0's entries gives no release" \
  ghrel --dry-run 1.1.0 "$rel_bad"
output_has 'gives no notes for 1.1.0' "github-release: says why"
expect 0 "github-release: an existing tag on another commit is not moved" ghrel --dry-run 1.0.0 "$rel"
output_has 'v1.0.0 is on .*not moved' "github-release: says the tag stays"
if grep -q 'would run' "$work/out"; then
  failed=$((failed + 1))
  echo "FAIL github-release: made a release for a tag on another commit"
fi

# --- checks.py deploy-workflow: each rule broken on a copy of deploy.yml -----------------------

dw=$work/deploy-workflow
mkdir -p "$dw"
py=${PY:-python3} # a Python with PyYAML (ci/lint.sh passes the one it found)
expect 0 "deploy-workflow: deploy.yml keeps the provenance rules" \
  "$py" "$root/ci/lint/checks.py" deploy-workflow "$root/.github/workflows/deploy.yml"
# mutant NAME PYTHON-EXPRESSION-ON-doc REGEX: deploy.yml changed so must fail with REGEX.
mutant() {
  "$py" - "$root/.github/workflows/deploy.yml" "$dw/$1.yml" "$2" <<'PY'
import sys, yaml
src, dst, change = sys.argv[1:4]
doc = yaml.safe_load(open(src))
on = doc.pop(True)
doc["on"] = on
jobs = doc["jobs"]
exec(change)
yaml.safe_dump(doc, open(dst, "w"), sort_keys=False)
PY
  expect 1 "deploy-workflow: refuses $1" "$py" "$root/ci/lint/checks.py" deploy-workflow "$dw/$1.yml"
  output_has "$3" "deploy-workflow: $1 reported"
}
mutant "a build on any branch" "on['push']['branches'].append('feature/**')" 'only from develop and main'
mutant "a build that ignores provenance" "jobs['build'].pop('if')" 'build job must need provenance'
mutant "a deploy without the gate" "jobs['deploy']['needs'].remove('gate')" 'must need provenance, gate and build'
mutant "a deploy that skips a failed gate" \
  "jobs['deploy']['if'] = jobs['deploy']['if'].replace(\"needs.gate.result == 'success'\", 'true')" \
  "lacks needs.gate.result"
mutant "a TAG from the inputs" "jobs['deploy']['env']['TAG'] = '\${{ inputs.tag || github.sha }}'" \
  "env TAG must be"
mutant "a release version from CMakeLists.txt" \
  "jobs['release']['steps'].insert(2, {'run': 'sed -n s/x/y/p CMakeLists.txt'})" 'reads CMakeLists.txt'
mutant "packages written by the deploy job" "jobs['deploy']['permissions']['packages'] = 'write'" \
  'only build and release'
mutant "a pull_request trigger" "on['pull_request'] = {}" 'only push and workflow_dispatch'
mutant "a cancellable deploy" "doc['concurrency']['cancel-in-progress'] = True" 'never cancelled'

# --- the docs checks (ci/lint/docs_checks.py): each broken on a copy of the repository ------

dc=$work/docs-checks
# docs_copy NAME: the files the docs checks read, copied to $dc/NAME (printed).
docs_copy() {
  local dst=$dc/$1
  mkdir -p "$dst/test/delivery"
  (cd "$root" && tar -cf - README.md docs .github deploy config docker) | tar -C "$dst" -xf -
  cp "$root/test/delivery/vm-rehearsal.sh" "$dst/test/delivery/"
  printf '%s\n' "$dst"
}
# docs_mutant CHECK NAME FILE PYTHON-EXPRESSION REGEX: FILE of a copy rewritten by the expression
# (on the string s) must make `checks.py CHECK` fail with REGEX.
docs_mutant() {
  local check=$1 name=$2 file=$3 change=$4 want=$5 d
  d=$(docs_copy "$name")
  "$py" - "$d/$file" "$change" <<'PY'
import sys
path, change = sys.argv[1:3]
s = open(path).read()
new = eval(change, {"s": s})
if new == s:
    sys.exit(f"the mutation changed nothing in {path}")
open(path, "w").write(new)
PY
  expect 1 "$check: refuses $name" "$py" "$root/ci/lint/checks.py" "$check" "$d"
  output_has "$want" "$check: $name reported"
}
for check in docs-names docs-facts getting-started; do
  expect 0 "$check: the repository's docs pass" "$py" "$root/ci/lint/checks.py" "$check" "$root"
done
docs_mutant docs-names "a secret no workflow reads" docs/troubleshooting.md \
  "s + '\ngh secret set DEPLOY_HOSTNAME --env production --body x\n'" 'names DEPLOY_HOSTNAME, which no workflow reads'
docs_mutant docs-names "a workflow secret the docs never name" .github/workflows/deploy.yml \
  "s.replace('DEPLOY_SSH_KEY: \${{ secrets.DEPLOY_SSH_KEY }}', 'DEPLOY_SSH_KEY: \${{ secrets.DEPLOY_SSH_KEY }}\n          EXTRA: \${{ secrets.DEPLOY_EXTRA_TOKEN }}')" \
  'secret DEPLOY_EXTRA_TOKEN is read here but no page'
docs_mutant docs-names "a secret set for production only" docs/getting-started.md \
  "s.replace('gh secret set DEPLOY_SSH_KEY --repo \"\$R\" --env staging <\"\$S/deploy_key_staging\"\n', '')" \
  'never sets it there \(gh secret set DEPLOY_SSH_KEY --env staging\)'
docs_mutant docs-names "a variable the tool does not read" docs/vm.md \
  "s.replace('PIER_DEPLOY_ADMIN=azureuser', 'PIER_DEPLOY_ADMIN_USER=azureuser', 1)" \
  'PIER_DEPLOY_ADMIN_USER: neither a workflow nor deploy/pier-deploy reads it'
docs_mutant docs-facts "a slot port in the table the deploy file contradicts" docs/deploys.md \
  "s.replace('| prod | 8000 | 8002 |', '| prod | 8000 | 8004 |', 1)" 'prod blue b is port 8004 here, 8002 in deploy/pier-deploy.yml'
docs_mutant docs-facts "a slot moved in the deploy file" deploy/pier-deploy.yml \
  "s.replace('green: [8010, 8012]', 'green: [8020, 8022]', 1)" 'prod green a is port 8010 here, 8020 in deploy/pier-deploy.yml'
docs_mutant docs-facts "nginx's upstream keepalive changed" config/nginx/pier.conf \
  "s.replace('keepalive_timeout 4s;', 'keepalive_timeout 5s;')" "upstream keepalive_timeout is 4 s here, 5 s in config/nginx/pier.conf"
docs_mutant docs-facts "a stale upstream keepalive in the docs" docs/cloud.md \
  "s.replace(\"nginx's upstream \`keepalive_timeout\` 4 s\", 'nginx upstream keepalive 60 s', 1)" "upstream keepalive_timeout is 60 s here, 4 s"
docs_mutant docs-facts "the replicas' grace changed in the deploy file" deploy/pier-deploy.yml \
  "s.replace('grace_ms: 1000', 'grace_ms: 2000', 1)" 'PIER_SHUTDOWN_GRACE_MS=1000 here; the deploy file gives the replicas 1000/2000'
docs_mutant docs-facts "a stale grace period in the docs" docs/monitoring.md \
  "s.replace('shutdown grace, the deploy file', 'shutdown grace of 3 s, the deploy file', 1)" 'grace 3000 ms here'
docs_mutant docs-facts "pier's drain changed in config/pier" config/pier/prod.yaml \
  "s.replace('drain_ms: 10000', 'drain_ms: 20000', 1)" 'drain 10 s here, 20000 ms in config/pier/prod.yaml'
docs_mutant docs-facts "the image's health interval changed" docker/Dockerfile \
  "s.replace('HEALTHCHECK --interval=15s', 'HEALTHCHECK --interval=30s')" 'HEALTHCHECK --interval=15s here, 30s in docker/Dockerfile'
docs_mutant docs-facts "healthy sooner than Docker can say so" docs/containers.md \
  "s.replace('then (healthy) ~15 s after the start', '(healthy) within about 2 s')" "Docker's \`healthy\` within 2 s here"
docs_mutant getting-started "the domain left as a placeholder" docs/getting-started.md \
  "s.replace('  -e \"s|PIER_DOMAIN=REPLACE-ME-domain|PIER_DOMAIN=\$DOMAIN|\" \\\\\n', '')" 'still has a placeholder'
docs_mutant getting-started "the staging key not written into the deploy file" docs/getting-started.md \
  "s.replace('  -e \"s|public_key: \\\\\"\\\\\"  # the staging deploy key', '  -e \"s|public_key: \\\\\"\\\\\"  # the staging key')" \
  "staging ssh.public_key is not"
docs_mutant getting-started "a setup command the rehearsal does not run" docs/getting-started.md \
  "s.replace('PIER_DEPLOY_ADMIN_KEY=\"\$(cat', 'PIER_DEPLOY_KEY=\"\$(cat', 1)" "test/delivery/vm-rehearsal.sh's setup passes"

# --- deploy/pier-deploy's SSH client ----------------------------------------------------

pd=$root/deploy/pier-deploy
expect 2 "pier-deploy: rejects an unknown environment" "$pd" deploy dev abc1234
# shellcheck disable=SC2016 # the $(...) is the point: it must not run
expect 2 "pier-deploy: rejects a tag with shell characters" "$pd" deploy staging 'x$(id)'
ssh-keygen -q -t ed25519 -N '' -f "$work/other_host_key"
export PIER_DEPLOY_SSH_HOST=127.0.0.1 DEPLOY_SSH_KEY=not-a-key
DEPLOY_KNOWN_HOSTS="otherhost $(cut -d' ' -f1,2 "$work/other_host_key.pub")"
export DEPLOY_KNOWN_HOSTS
expect 1 "pier-deploy: refuses a host missing from DEPLOY_KNOWN_HOSTS" "$pd" status staging
output_has 'have no key for 127.0.0.1' "pier-deploy: says the host key is missing"

if [[ -x /usr/sbin/sshd && $EUID -eq 0 ]]; then
  # A fake pier-deploy on the "VM" (first on sshd's PATH) that shows what it was asked and
  # what came on its stdin, and an sshd on a free loopback port that only accepts our key.
  vm=$work/vm
  mkdir -p "$vm/bin" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$work/user_key"
  cp "$work/user_key.pub" "$work/authorized_keys"
  # shellcheck disable=SC2016 # expanded by the fake pier-deploy, on the "VM"
  printf '#!/bin/sh\necho "remote: pier-deploy $* stdin=[$(cat)]"\nexit "$(cat %s/exit-status 2>/dev/null || echo 0)"\n' "$vm" >"$vm/bin/pier-deploy"
  chmod +x "$vm/bin/pier-deploy"
  ssh_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf '%s\n' "Port $ssh_port" "ListenAddress 127.0.0.1" "HostKey $work/host_key" "PidFile $work/sshd.pid" \
    "AuthorizedKeysFile $work/authorized_keys" "PermitRootLogin prohibit-password" "PasswordAuthentication no" \
    "KbdInteractiveAuthentication no" "UsePAM no" "StrictModes no" \
    "SetEnv PATH=$vm/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" >"$work/sshd_config"
  /usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log" -D &
  pids+=($!)
  for ((i = 0; i < 50; i++)); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $ssh_port), 1)" 2>/dev/null && break
    sleep 0.1
  done
  export PIER_DEPLOY_SSH_USER=root PIER_DEPLOY_SSH_PORT=$ssh_port
  DEPLOY_SSH_KEY=$(cat "$work/user_key")
  DEPLOY_KNOWN_HOSTS="[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$work/host_key.pub")"
  # shellcheck disable=SC2016 # a token with quotes and a $ must arrive unchanged
  token='t0k"en $x'
  expect 0 "pier-deploy: deploys over SSH" env REGISTRY_USER=bot REGISTRY_TOKEN="$token" "$pd" deploy production "$sha"
  output_has "^remote: pier-deploy deploy prod $sha stdin=" \
    "pier-deploy: the VM is sent only the checked verb and arguments (production -> prod)"
  # shellcheck disable=SC2016 # a literal $ in the expected text
  output_has 'stdin=\[\{"registry": \{"user": "bot", "password": "t0k\\"en \$x", "server": "ghcr.io"\}\}\]' \
    "pier-deploy: the registry token travels on stdin, as sent"
  output_has 'override: prod ssh.host = 127.0.0.1 \(PIER_DEPLOY_SSH_HOST\)' "pier-deploy: says which keys the environment overrides"
  output_has "^pier-deploy: root@127.0.0.1:$ssh_port: pier-deploy deploy prod $sha\$" "pier-deploy: its command line has no token"
  expect 0 "pier-deploy: status over SSH" "$pd" status staging
  output_has '^remote: pier-deploy status staging stdin=\[\]$' "pier-deploy: status sends nothing on stdin"
  echo 3 >"$vm/exit-status"
  expect 3 "pier-deploy: returns the VM's exit status" "$pd" deploy staging "$sha"
  DEPLOY_KNOWN_HOSTS="[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$work/other_host_key.pub")"
  expect 255 "pier-deploy: refuses a changed host key" "$pd" deploy staging "$sha"
  output_has 'Host key verification failed' "pier-deploy: ssh says why"
else
  echo "skip pier-deploy over SSH (needs root and /usr/sbin/sshd: apt-get install openssh-server)"
fi

echo "selftest: $passed passed, $failed failed"
((failed == 0))
