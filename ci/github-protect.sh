#!/usr/bin/env bash
# Branch protection as code: apply pier's rules to main and develop with the GitHub CLI.
#
#   ci/github-protect.sh [--repo OWNER/NAME] [--reviews N] [BRANCH...]   apply (default: main develop)
#   ci/github-protect.sh --dry-run [--reviews N] [BRANCH...]             print, change nothing
#
#   --reviews N   approving reviews a pull request needs, 0 to 6 (default 1, or
#                 PIER_REQUIRED_REVIEWS). A repository with one maintainer uses 0: GitHub
#                 never lets the author approve their own pull request, so with 1 and
#                 administrators bound too, nothing could ever merge. 0 still requires a
#                 pull request and every check; only the approval is dropped.
#
# Rules, the same for both branches:
#   - every ci.yml job (REQUIRED_CHECKS below) must pass, reported by GitHub Actions
#     (app id 15368, so no other app can post a look-alike status), on a branch that is up
#     to date with its base;
#   - changes arrive by pull request with N approving reviews; a new push dismisses old
#     approvals; with N >= 1 the last pusher can't be the only approver; review threads
#     must be resolved;
#   - no force pushes, no deletion;
#   - all of it also binds administrators.
# Linear history is NOT required, on either branch: the release flow (docs/delivery.md#branches)
# merges main back into develop with a merge commit after a hotfix, and the next release
# fast-forwards main to develop, merge commit included; GitHub's linear-history rule refuses
# any push that contains a merge commit, so it would refuse that release for good.
# ci/release-flow-test.sh replays the flow against a repository whose hooks enforce exactly
# these rules (read from --dry-run), and shows that linear history on main breaks it.
# Applying also allows merge commits in the repository (for the back-merge pull request
# main -> develop; features and hotfixes are squashed or rebased) and deletes merged branches.
#
# Needs `gh` logged in as a repository admin (`gh auth login`, or GH_TOKEN). The repository
# is --repo, else GH_REPO, else the one `gh repo view` finds for this checkout. A branch must
# exist before it can be protected. Running it again applies the same rules again.
#
# --dry-run needs neither gh nor a network: for each branch it prints the JSON body it would
# PUT to repos/OWNER/NAME/branches/BRANCH/protection on stdout (one document per branch; the
# request line goes to stderr). ci/lint.sh checks that this is valid JSON and that the
# required checks are exactly the jobs of .github/workflows/ci.yml.
set -euo pipefail

# The ci.yml job ids (a job's check name is its id when it has no `name:`).
REQUIRED_CHECKS=(lint test tsan fuzz memcheck bench-smoke monitoring kubernetes ubuntu image nginx compose deploy-test vm-rehearsal)
GITHUB_ACTIONS_APP_ID=15368

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

payload() {
  local checks="" c
  for c in "${REQUIRED_CHECKS[@]}"; do
    checks+="${checks:+,}
      { \"context\": \"$c\", \"app_id\": $GITHUB_ACTIONS_APP_ID }"
  done
  cat <<EOF
{
  "required_status_checks": {
    "strict": true,
    "checks": [$checks
    ]
  },
  "enforce_admins": true,
  "required_pull_request_reviews": {
    "required_approving_review_count": $reviews,
    "dismiss_stale_reviews": true,
    "require_code_owner_reviews": false,
    "require_last_push_approval": $( ((reviews > 0)) && echo true || echo false)
  },
  "restrictions": null,
  "required_linear_history": false,
  "allow_force_pushes": false,
  "allow_deletions": false,
  "required_conversation_resolution": true,
  "block_creations": false,
  "lock_branch": false
}
EOF
}

dry_run=0
repo=${GH_REPO:-}
reviews=${PIER_REQUIRED_REVIEWS:-1}
branches=()
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    --repo)
      [[ $# -ge 2 ]] || {
        echo "github-protect: --repo needs OWNER/NAME" >&2
        exit 2
      }
      repo=$2
      shift
      ;;
    --reviews)
      [[ $# -ge 2 ]] || {
        echo "github-protect: --reviews needs a number" >&2
        exit 2
      }
      reviews=$2
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "github-protect: unknown option $1" >&2
      usage >&2
      exit 2
      ;;
    *) branches+=("$1") ;;
  esac
  shift
done
((${#branches[@]})) || branches=(main develop)

if [[ ! $reviews =~ ^[0-6]$ ]]; then
  echo "github-protect: --reviews '$reviews': expected a number from 0 to 6" >&2
  exit 2
fi

for b in "${branches[@]}"; do
  if [[ ! $b =~ ^[A-Za-z0-9_][A-Za-z0-9._/-]*$ || $b == *..* || $b == */ || $b == *.lock ]]; then
    echo "github-protect: '$b' is not a branch name this script accepts" >&2
    exit 2
  fi
done

if ((dry_run)); then
  for b in "${branches[@]}"; do
    echo "# gh api --method PUT repos/${repo:-OWNER/NAME}/branches/$b/protection --input -" >&2
    payload
  done
  echo "# gh repo edit ${repo:-OWNER/NAME} --enable-merge-commit --enable-squash-merge" \
    "--enable-rebase-merge --delete-branch-on-merge" >&2
  exit 0
fi

command -v gh >/dev/null 2>&1 || {
  echo "github-protect: the GitHub CLI (gh) is not installed" >&2
  exit 1
}
if [[ -z $repo ]]; then
  repo=$(gh repo view --json nameWithOwner --jq .nameWithOwner) || {
    echo "github-protect: no repository: pass --repo OWNER/NAME" >&2
    exit 1
  }
fi
if [[ ! $repo =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]]; then
  echo "github-protect: '$repo' is not OWNER/NAME" >&2
  exit 2
fi

echo "github-protect: $repo: merge commits (back-merges), squash and rebase merges on"
gh repo edit "$repo" --enable-merge-commit --enable-squash-merge --enable-rebase-merge \
  --delete-branch-on-merge

for b in "${branches[@]}"; do
  echo "github-protect: $repo: protecting $b (reviews: $reviews; checks: ${REQUIRED_CHECKS[*]})"
  payload | gh api --method PUT \
    -H "Accept: application/vnd.github+json" -H "X-GitHub-Api-Version: 2022-11-28" \
    "repos/$repo/branches/$b/protection" --input - \
    --jq '"  enforce_admins=\(.enforce_admins.enabled) linear=\(.required_linear_history.enabled) checks=\([.required_status_checks.checks[].context] | join(","))"'
done
echo "github-protect: done"
