#!/usr/bin/env bash
# deploy.yml's gate: wait, through the GitHub API with the job's own token, until a commit
# may be deployed — or say why it may not.
#
#   ci/github-gate.sh checks SHA   every ci.yml job that branch protection requires (the list
#                                  REQUIRED_CHECKS in ci/github-protect.sh) has passed on SHA:
#                                  the newest check run of each name, made by GitHub Actions,
#                                  concluded `success`
#   ci/github-gate.sh staged SHA   a deployment of SHA to the `staging` environment reached
#                                  `success` (production then runs the image staging ran)
#
# It waits while a check or deployment is missing, queued or running: every GATE_POLL
# seconds (default 30), at most GATE_TIMEOUT seconds (default 3600), then fails. It fails at
# once on a check that concluded otherwise (failure, cancelled, timed_out, ...) and on
# deployments of SHA that all ended without success.
#
# Environment: GITHUB_TOKEN (the job's token: checks: read, deployments: read),
# GITHUB_REPOSITORY (owner/name), GITHUB_API_URL (default https://api.github.com).
# API: "List check runs for a Git reference" (filter=latest) and "List deployments" /
# "List deployment statuses" of the REST API, version 2022-11-28.
# Exit 0: may deploy; 1: may not (why, on stderr); 2: bad arguments or environment.
set -euo pipefail

GITHUB_ACTIONS_APP_ID=15368
api=${GITHUB_API_URL:-https://api.github.com}
poll=${GATE_POLL:-30}
timeout=${GATE_TIMEOUT:-3600}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { echo "gate: $*" >&2; }
refuse() {
  if [[ -n ${GITHUB_ACTIONS:-} ]]; then echo "::error title=deploy refused::$*" >&2; fi
  say "REFUSED: $*"
  exit 1
}
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

(($# == 2)) || usage
what=$1 sha=$2
[[ $what == checks || $what == staged ]] || usage
[[ $sha =~ ^[0-9a-f]{40}$ ]] || {
  say "'$sha' is not a full commit SHA"
  exit 2
}
[[ -n ${GITHUB_TOKEN:-} && ${GITHUB_REPOSITORY:-} =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]] || {
  say "needs GITHUB_TOKEN and GITHUB_REPOSITORY (owner/name)"
  exit 2
}
[[ $poll =~ ^[0-9]+$ && $timeout =~ ^[0-9]+$ ]] || {
  say "GATE_POLL and GATE_TIMEOUT are seconds"
  exit 2
}
for tool in curl jq; do
  command -v "$tool" >/dev/null 2>&1 || {
    say "$tool is not installed"
    exit 2
  }
done

# get PATH: the API's JSON answer on stdout, status 0; else status 1 and the error on
# stderr. A failed request is never read as "nothing there".
get() {
  local out code
  out=$(mktemp)
  code=$(curl -sS -o "$out" -w '%{http_code}' --max-time 30 \
    -H "Authorization: Bearer $GITHUB_TOKEN" -H 'Accept: application/vnd.github+json' \
    -H 'X-GitHub-Api-Version: 2022-11-28' "$api/repos/$GITHUB_REPOSITORY/$1" 2>/dev/null) || code=000
  if [[ $code != 200 ]] || ! jq -e . "$out" >/dev/null 2>&1; then
    say "GET $1: HTTP $code $(head -c 300 "$out" 2>/dev/null | tr '\n' ' ')"
    rm -f "$out"
    return 1
  fi
  cat "$out"
  rm -f "$out"
}

# One look. Prints what it saw; returns 0 (pass), 1 (refuse), 3 (not yet), 4 (the API failed).
look_checks() {
  local runs verdict
  runs=$(get "commits/$sha/check-runs?filter=latest&per_page=100") || return 4
  # Per required name, the newest run from GitHub Actions (another app's look-alike is
  # ignored): "bad name:conclusion", "wait name:status" or "missing name".
  verdict=$(jq -r --argjson app "$GITHUB_ACTIONS_APP_ID" --args '
    .check_runs as $runs | $ARGS.positional[] as $n
    | ([$runs[] | select(.name == $n and .app.id == $app)] | sort_by(.id) | last) as $r
    | if $r == null then "missing \($n)"
      elif $r.status != "completed" then "wait \($n):\($r.status)"
      elif $r.conclusion != "success" then "bad \($n):\($r.conclusion)"
      else "ok \($n)" end' "${required[@]}" <<<"$runs") || return 4
  local bad waiting missing
  bad=$(sed -n 's/^bad //p' <<<"$verdict" | xargs)
  waiting=$(sed -n 's/^wait //p' <<<"$verdict" | xargs)
  missing=$(sed -n 's/^missing //p' <<<"$verdict" | xargs)
  if [[ -n $bad ]]; then
    echo "ci.yml did not pass on $sha: $bad"
    return 1
  fi
  if [[ -n $waiting$missing ]]; then
    echo "waiting for ci.yml on $sha: ${waiting}${missing:+ no run yet: $missing}"
    return 3
  fi
  echo "ci.yml passed on $sha: ${required[*]}"
}

look_staged() {
  local deployments id states ok=0 running=0 ended=0
  deployments=$(get "deployments?sha=$sha&environment=staging&per_page=100") || return 4
  for id in $(jq -r '.[].id' <<<"$deployments"); do
    [[ $id =~ ^[0-9]+$ ]] || continue
    states=$(get "deployments/$id/statuses?per_page=100") || return 4
    states=$(jq -r '[.[].state] | join(" ")' <<<"$states")
    # A later deployment marks an earlier successful one `inactive`: success anywhere in its
    # statuses counts.
    if [[ " $states " == *" success "* ]]; then
      ok=1
    elif [[ -z $states || " $states " == *" queued "* || " $states " == *" in_progress "* ||
      " $states " == *" pending "* ]] && [[ " $states " != *" failure "* && " $states " != *" error "* ]]; then
      running=$((running + 1))
    else
      ended=$((ended + 1))
    fi
  done
  if ((ok)); then
    echo "staging ran $sha (a successful deployment to staging)"
    return 0
  fi
  if ((running)); then
    echo "waiting for the staging deployment of $sha ($running running)"
    return 3
  fi
  if ((ended)); then
    echo "staging did not run $sha: its $ended deployment(s) to staging ended without success"
    return 1
  fi
  echo "waiting for a staging deployment of $sha (none yet)"
  return 3
}

if [[ $what == checks ]]; then
  read -r -a required < <(sed -nE 's/^REQUIRED_CHECKS=\((.*)\)$/\1/p' "$root/ci/github-protect.sh")
  ((${#required[@]})) || {
    say "no REQUIRED_CHECKS in ci/github-protect.sh"
    exit 2
  }
fi

start=$SECONDS
last="" api_errors=0
while :; do
  rc=0
  msg=$("look_$what") || rc=$?
  if ((rc == 4)); then
    api_errors=$((api_errors + 1))
    ((api_errors < 3)) || refuse "the GitHub API failed $api_errors times in a row; nothing is deployed"
    msg="the GitHub API failed (attempt $api_errors of 3)"
  else
    api_errors=0
  fi
  [[ $msg != "$last" ]] && say "$msg"
  last=$msg
  case $rc in
    0) exit 0 ;;
    1) refuse "$msg" ;;
  esac
  ((SECONDS - start + poll <= timeout)) || refuse "gave up after ${timeout}s: $msg"
  sleep "$poll"
done
