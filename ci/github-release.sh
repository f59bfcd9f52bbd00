#!/usr/bin/env bash
# The GitHub release of a version (deploy.yml's release job, after ci/release.sh): git tag
# vVERSION on COMMIT, with VERSION's section of CHANGELOG.md *at COMMIT* as the notes.
#
#   ci/github-release.sh [--dry-run] VERSION COMMIT
#
# Run in a clone that has COMMIT and the tags (actions/checkout with fetch-depth: 0). Needs
# `gh` with GH_TOKEN (contents: write) and GH_REPO, except with --dry-run, which prints the
# notes and the command instead. Never moves anything: when the tag vVERSION exists on
# another commit, or the release exists, it says so and stops (exit 0). Refused (exit 1):
# CHANGELOG.md at COMMIT has no well-formed section for VERSION (ci/changelog.py).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "github-release: $*" >&2; }
refuse() {
  if [[ -n ${GITHUB_ACTIONS:-} ]]; then echo "::error title=release notes::$*" >&2; fi
  say "REFUSED: $*"
  exit 1
}
summary() { if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then printf '%s\n' "$*" >>"$GITHUB_STEP_SUMMARY"; fi; }

dry_run=0
if [[ ${1:-} == --dry-run ]]; then
  dry_run=1
  shift
fi
(($# == 2)) || {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}
version=$1 commit=$2
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || {
  say "'$version' is not X.Y.Z"
  exit 2
}
[[ $commit =~ ^[0-9a-f]{40}$ ]] || {
  say "'$commit' is not a full commit SHA"
  exit 2
}
tag=v$version
git cat-file -e "$commit^{commit}" 2>/dev/null || refuse "commit $commit is not in this clone"

if existing=$(git rev-parse -q --verify "refs/tags/$tag^{commit}"); then
  if [[ $existing != "$commit" ]]; then
    say "git tag $tag is on $existing, not $commit: it is not moved, no release made"
    summary "GitHub release: tag \`$tag\` is on \`$existing\` and was not moved."
    exit 0
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git show "$commit:CHANGELOG.md" >"$work/CHANGELOG.md" 2>/dev/null ||
  refuse "commit $commit has no CHANGELOG.md"
"$root/ci/changelog.py" section "$version" "$work/CHANGELOG.md" >"$work/notes" 2>"$work/err" ||
  refuse "CHANGELOG.md at $commit gives no notes for $version: $(tr '\n' ' ' <"$work/err")"

cmd=(gh release create "$tag" --target "$commit" --title "pier $version" --notes-file "$work/notes")
if ((dry_run)); then
  cat "$work/notes"
  echo "--- would run: ${cmd[*]}"
  exit 0
fi
command -v gh >/dev/null 2>&1 || refuse "gh is not installed"
if gh release view "$tag" >/dev/null 2>&1; then
  say "the release $tag exists: not changed"
  summary "GitHub release: \`$tag\` exists, not changed."
  exit 0
fi
"${cmd[@]}"
say "made the release $tag on $commit"
summary "GitHub release: \`$tag\` on \`$commit\`, notes from CHANGELOG.md."
