#!/usr/bin/env bash
# The outcome of a deploy as Markdown, for GitHub's job summary (deploy.yml appends it to
# $GITHUB_STEP_SUMMARY, also when the deploy failed): whether the release went live, the
# watch's verdict with the figures it was judged on, and the watch's progress lines.
#
#   ci/deploy-summary.sh LOG     LOG: the output of deploy/pier-deploy deploy
set -euo pipefail

log=${1:?usage: ci/deploy-summary.sh LOG}
[[ -r $log ]] || {
  printf '### Deploy\n\nNo deploy output (%s): the deploy did not start.\n' "$log"
  exit 0
}
line() { grep -Eo "$1" "$log" | tail -n 1 || true; }
verdict=$(line 'VERDICT: .*')
failed=$(line 'FAILED: .*')
ok=$(line 'OK: .*')
printf '### Deploy\n\n'
if [[ -n $failed ]]; then
  printf ':x: **Not deployed**: %s\n\nThe previous release keeps serving.\n' "${failed#FAILED: }"
elif [[ $verdict == *"rolled back"* ]]; then
  printf ':leftwards_arrow_with_hook: **Switched back by the watch**: %s\n' "${verdict#VERDICT: }"
elif [[ -n $verdict ]]; then
  printf ':white_check_mark: **Deployed**, watch verdict: %s\n' "${verdict#VERDICT: }"
elif [[ -n $ok ]]; then
  printf ':white_check_mark: **Deployed** (not watched): %s\n' "${ok#OK: }"
else
  printf ':grey_question: No verdict in the output: see the log of the deploy step.\n'
fi
if grep -q 'deploy: watch ' "$log"; then
  printf '\n<details><summary>The watch</summary>\n\n```\n'
  grep -Eo '(watching|watch [0-9.]+/|switched).*' "$log" | tail -n 40
  printf '```\n</details>\n'
fi
