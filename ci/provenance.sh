#!/usr/bin/env bash
# Which environment a deploy.yml run deploys, which commit, and whether it builds an image —
# or why it may not run at all. deploy.yml's `provenance` job runs it before anything is
# built or reaches the VM; every rule is a refusal here (docs/delivery.md#provenance-rules).
#
#   ci/provenance.sh --event EVENT --ref REF --sha SHA [--environment ENV] [--tag TAG]
#
#   EVENT  push or workflow_dispatch (github.event_name)
#   REF    the run's ref (github.ref): refs/heads/develop or refs/heads/main, nothing else
#   SHA    the run's commit (github.sha)
#   ENV    workflow_dispatch's environment input: staging (from develop) or production (from main)
#   TAG    workflow_dispatch's tag input: a commit SHA (40 hex) whose image is in the registry;
#          empty = this run's commit
#
# Rules:
#   - images are built, and deploys run, only from develop or main; a run on any other ref
#     builds nothing and deploys nothing;
#   - staging deploys from develop, production from main (a dispatch must name the
#     environment of its branch);
#   - a production TAG is an ancestor of origin/main; a staging TAG of origin/develop or
#     origin/main;
#   - production runs the image staging ran: a production commit on develop's first-parent
#     line (a release: main fast-forwarded to develop) is never rebuilt, and deploy.yml's gate
#     job waits for a successful staging deployment of that same commit (`staged=true`). A
#     commit on main that is not on that line (a hotfix) never ran on staging: it is built
#     from main and deployed with a warning (`staged=false`);
#   - a dispatch with a TAG deploys an image that is already in the registry: nothing is built.
#
# Needs a clone with origin/main and origin/develop (actions/checkout with fetch-depth: 0).
# Prints `key=value` lines for $GITHUB_OUTPUT on stdout: environment, tag, build (true/false),
# staged (true/false); what it decided, on stderr. Exit 1 when the run is refused (the
# reason on stderr, as a GitHub error annotation when GITHUB_ACTIONS is set), 2 on bad arguments.
set -euo pipefail

say() { echo "provenance: $*" >&2; }
refuse() {
  if [[ -n ${GITHUB_ACTIONS:-} ]]; then echo "::error title=deploy refused::$*" >&2; fi
  say "REFUSED: $*"
  exit 1
}
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

event="" ref="" sha="" environment="" tag=""
while (($#)); do
  [[ $# -ge 2 ]] || usage
  case $1 in
    --event) event=$2 ;;
    --ref) ref=$2 ;;
    --sha) sha=$2 ;;
    --environment) environment=$2 ;;
    --tag) tag=$2 ;;
    *) usage ;;
  esac
  shift 2
done
[[ $event == push || $event == workflow_dispatch ]] || {
  say "--event '$event': expected push or workflow_dispatch"
  exit 2
}
[[ $sha =~ ^[0-9a-f]{40}$ ]] || {
  say "--sha '$sha': expected a full commit SHA (40 hex digits)"
  exit 2
}

case $ref in
  refs/heads/develop) branch=develop own=staging ;;
  refs/heads/main) branch=main own=production ;;
  *) refuse "deploy.yml builds images and deploys only from develop or main; this run is on '$ref': nothing is built or deployed" ;;
esac

if [[ $event == push ]]; then
  [[ -z $environment && -z $tag ]] || {
    say "a push has no --environment or --tag"
    exit 2
  }
  environment=$own
else
  case $environment in
    staging | production) ;;
    *)
      say "--environment '$environment': expected staging or production"
      exit 2
      ;;
  esac
  [[ $environment == "$own" ]] ||
    refuse "$environment deploys only from $([[ $environment == production ]] && echo main || echo develop); this run is on $branch (run it with --ref $([[ $environment == production ]] && echo main || echo develop))"
fi

build=true
if [[ -n $tag ]]; then
  [[ $tag =~ ^[0-9a-f]{40}$ ]] ||
    refuse "tag '$tag' is not a full commit SHA (40 hex digits), the only tags deploy.yml pushes and deploys"
  build=false # an image that is in the registry already
else
  tag=$sha
fi

git cat-file -e "$tag^{commit}" 2>/dev/null || refuse "commit $tag is not in this repository"
for b in main develop; do
  git rev-parse -q --verify "refs/remotes/origin/$b^{commit}" >/dev/null ||
    refuse "origin/$b is missing from this clone (deploy.yml checks out with fetch-depth: 0)"
done
is_ancestor() { git merge-base --is-ancestor "$1" "$2"; }

if [[ $environment == production ]]; then
  is_ancestor "$tag" refs/remotes/origin/main ||
    refuse "production deploys only commits on main: $tag is not an ancestor of origin/main"
else
  is_ancestor "$tag" refs/remotes/origin/develop || is_ancestor "$tag" refs/remotes/origin/main ||
    refuse "staging deploys only commits on develop or main: $tag is on neither"
fi

staged=false
if [[ $environment == production ]]; then
  # develop's first-parent line: the commits develop pointed at, which pushes deployed to
  # staging (a back-merge's second parent, a hotfix, is not on it).
  if git rev-list --first-parent refs/remotes/origin/develop | grep -x "$tag" >/dev/null; then
    staged=true
    build=false
    say "$tag is on develop: production gets the image staging ran, after staging deployed it"
  else
    if [[ -n ${GITHUB_ACTIONS:-} ]]; then
      echo "::warning title=not staged::$tag is on main but not on develop's line (a hotfix): it never ran on staging" >&2
    fi
    say "$tag is on main but not on develop's line (a hotfix): it never ran on staging"
  fi
fi

say "environment=$environment tag=$tag build=$build staged=$staged (event $event on $branch)"
printf 'environment=%s\ntag=%s\nbuild=%s\nstaged=%s\n' "$environment" "$tag" "$build" "$staged"
