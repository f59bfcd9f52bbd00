#!/usr/bin/env bash
# The release flow of docs/delivery.md#branches, replayed against a scratch "origin" whose
# server-side hook enforces the branch protection that ci/github-protect.sh configures (read
# from its --dry-run: force pushes, deletions, linear history, per branch), plus the two
# rules of the flow that GitHub cannot express and reviewers keep (the "conventions"): no
# merge commit is made on main (main only gets develop's commits by fast-forward), and a
# merge commit on develop merges main in (the back-merge).
#
#   ci/release-flow-test.sh
#
# The flow: feature -> develop (squash) -> release (main fast-forwarded to develop) -> hotfix
# on main -> main merged back into develop -> the next release still fast-forwards, and
# main's head is develop's head (the commit, so the image, staging ran). ci/provenance.sh
# then says the release is staged and never rebuilt, the hotfix is not staged.
# The broken flows are refused: the hotfix cherry-picked into develop (the next release is
# no fast-forward, and forcing it is refused), a "merge release" on main, a feature merged
# into develop with a merge commit. And with linear history required on main (the rule
# before this flow), the good flow's next release is refused: the test can fail.
# Pull requests, reviews and required checks are GitHub's; here a push stands for a merged
# pull request. Prints PASS/FAIL per check and `release-flow: N passed, M failed`.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=ci/test-lib.sh
. "$root/ci/test-lib.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The protection of main and develop as ci/github-protect.sh would send it, into the hook's
# rules; `linear_main=1` turns linear history on for main (the counter-test).
rules() { # rules OUT [linear_main]
  "$root/ci/github-protect.sh" --dry-run main develop 2>/dev/null | python3 -c '
import json, sys
text, out, docs, i = sys.stdin.read(), sys.argv[1], [], 0
dec = json.JSONDecoder()
while i < len(text):
    if text[i].isspace():
        i += 1
        continue
    doc, i = dec.raw_decode(text, i)
    docs.append(doc)
assert len(docs) == 2, "expected one document per branch"
branches = {}
for name, doc in zip(("main", "develop"), docs):
    branches[name] = {k: doc[k] for k in ("allow_force_pushes", "allow_deletions", "required_linear_history")}
if len(sys.argv) > 2:
    branches["main"]["required_linear_history"] = True
json.dump({"branches": branches,
           "conventions": {"main": {"merge_commits_only_from": "develop"},
                           "develop": {"merge_commits_merge_in": "main"}}}, open(out, "w"), indent=1)
' "$@"
}

# origin NAME RULES: a bare repository whose pre-receive hook enforces RULES.
origin() {
  git init -q --bare "$work/$1.git"
  cat >"$work/$1.git/hooks/pre-receive" <<EOF
#!/usr/bin/env python3
import json, subprocess, sys
rules = json.load(open("$2"))
ZERO = "0" * 40
def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True)
def on(commit, branch):
    return git("merge-base", "--is-ancestor", commit, "refs/heads/" + branch).returncode == 0
refused = []
for line in sys.stdin.read().splitlines():
    old, new, ref = line.split()
    branch = ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else None
    rule = rules["branches"].get(branch)
    if rule is None:
        continue
    if new == ZERO:
        if not rule["allow_deletions"]:
            refused.append(f"{branch}: deleting it is not allowed")
        continue
    if old != ZERO and git("merge-base", "--is-ancestor", old, new).returncode != 0:
        if not rule["allow_force_pushes"]:
            refused.append(f"{branch}: not a fast-forward, and force pushes are not allowed")
        continue
    merges = git("rev-list", "--merges", new, "--not", old if old != ZERO else "--all").stdout.split()
    if merges and rule["required_linear_history"]:
        refused.append(f"{branch}: linear history is required, the push has {len(merges)} merge commit(s)")
    conv = rules["conventions"].get(branch, {})
    for m in merges:
        src = conv.get("merge_commits_only_from")
        if src and not on(m, src):
            refused.append(f"{branch}: merge commit {m[:12]} is not on {src}: no merge commit is made on {branch}")
        into = conv.get("merge_commits_merge_in")
        parents = git("rev-list", "--parents", "-n", "1", m).stdout.split()[1:]
        if into and not any(on(p, into) for p in parents[1:]):
            refused.append(f"{branch}: merge commit {m[:12]} does not merge {into} in (only back-merges are merge commits)")
for r in refused:
    print("refused: " + r)
sys.exit(1 if refused else 0)
EOF
  chmod +x "$work/$1.git/hooks/pre-receive"
}

# A working clone of origin NAME in $dev; G runs git there.
clone() {
  dev=$work/$1-dev
  git clone -q "$work/$1.git" "$dev" 2>/dev/null
}
G() { git -C "$dev" -c user.name=t -c user.email=t@example.com -c advice.detachedHead=false "$@"; }
n=0
commit() { # commit MESSAGE: a commit that changes a file of its own
  n=$((n + 1))
  echo "$1" >"$dev/file-$n"
  G add "file-$n" && G commit -q -m "$1"
}
# push REFSPEC...: its output (and the hook's) in $work/push.log
push() { G push "$@" >"$work/push.log" 2>&1; }
# refused REFSPEC...: the push fails, by the hook (refused: ...) or, for a push that is no
# fast-forward and not forced, by git itself, as GitHub's refuses it.
refused() { ! push "$@" && grep -qE 'refused:|\(non-fast-forward\)' "$work/push.log"; }
head_of() { G rev-parse "origin/$1"; }

# The common start: c0 on main and develop; feature f1 squashed into develop; released;
# feature f2 on develop (not released); a hotfix squashed into main.
start() {
  origin "$1" "$2"
  clone "$1"
  G checkout -q -b main
  commit c0
  push origin main main:develop || return 1
  G checkout -q -b feature/one origin/develop
  commit "feature one, part 1"
  commit "feature one, part 2"
  G checkout -q -B develop origin/develop
  G merge -q --squash feature/one >/dev/null && G commit -q -m "feature one (#1)"
  push origin develop || return 1
  push origin origin/develop:main || return 1 # release 1
  release1=$(head_of main)
  G checkout -q -b feature/two origin/develop
  commit "feature two"
  G checkout -q develop && G merge -q --ff-only feature/two
  push origin develop || return 1
  G checkout -q -b hotfix/one origin/main
  commit "hotfix one"
  G checkout -q -B main origin/main && G merge -q --squash hotfix/one >/dev/null && G commit -q -m "hotfix one (#3)"
  push origin main || return 1
  hotfix=$(head_of main)
}

rules "$work/rules.json"
rules "$work/rules-linear-main.json" linear_main
check "the hook's rules come from github-protect.sh: no force pushes, no deletions, no linear history" \
  python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))["branches"]
sys.exit(0 if all(not r["allow_force_pushes"] and not r["allow_deletions"] and not r["required_linear_history"]
                  for r in b.values()) else 1)' "$work/rules.json"

# ----------------------------------------------------------------- the flow: back-merge
check "flow: feature -> develop -> release -> hotfix on main" start good "$work/rules.json"
check "flow: release 1 put develop's commit on main" test "$release1" = "$(G rev-parse 'origin/develop~1')"
G checkout -q develop
G merge -q --no-ff -m "Merge main into develop (hotfix one)" origin/main
check "flow: main merged back into develop (a merge commit on develop)" push origin develop
check "flow: the next release fast-forwards main to develop" push origin origin/develop:main
check "flow: main's head is develop's head (the commit staging ran)" test "$(head_of main)" = "$(head_of develop)"
check "flow: the hotfix is on main and on develop" \
  bash -c "git -C '$dev' merge-base --is-ancestor $hotfix origin/main && git -C '$dev' merge-base --is-ancestor $hotfix origin/develop"
commit "feature three" && push origin HEAD:develop
check "flow: and the release after that" push origin origin/develop:main
prov() { (cd "$dev" && G fetch -q origin && "$root/ci/provenance.sh" "$@" 2>/dev/null); }
check "flow: ci/provenance.sh: the release is staged and not rebuilt" \
  bash -c "$(declare -f prov G); dev='$dev' root='$root'; prov --event push --ref refs/heads/main --sha $(head_of main) | grep -qx 'staged=true' &&
    prov --event push --ref refs/heads/main --sha $(head_of main) | grep -qx 'build=false'"
check "flow: ci/provenance.sh: the hotfix never ran on staging, it is built from main" \
  bash -c "$(declare -f prov G); dev='$dev' root='$root'; prov --event push --ref refs/heads/main --sha $hotfix | grep -qx 'staged=false' &&
    prov --event push --ref refs/heads/main --sha $hotfix | grep -qx 'build=true'"

# ----------------------------------------------------------------- broken: cherry-pick
check "cherry-pick: the same start" start cherry "$work/rules.json"
G checkout -q develop && G cherry-pick "$hotfix" >/dev/null
check "cherry-pick: the hotfix cherry-picked into develop" push origin develop
check "cherry-pick: the next release is refused (main is no longer an ancestor of develop)" \
  refused origin origin/develop:main
check "cherry-pick: git said why" grep -q 'non-fast-forward' "$work/push.log"
check "cherry-pick: forcing it is refused" refused --force origin origin/develop:main
check "cherry-pick: the hook said why" grep -q 'force pushes are not allowed' "$work/push.log"
G checkout -q -B release origin/main && G merge -q --no-ff -m "Merge develop into main" origin/develop
check "cherry-pick: a merge release (a merge commit made on main) is refused" refused origin release:main
check "cherry-pick: the hook said why" grep -q 'no merge commit is made on main' "$work/push.log"
check "cherry-pick: deleting develop is refused" refused origin :develop

# ----------------------------------------------------------------- broken: merge a feature
G checkout -q -b feature/merged origin/develop~1 && commit "feature four"
G checkout -q -B develop origin/develop && G merge -q --no-ff -m "Merge feature four" feature/merged
check "a feature merged into develop with a merge commit is refused" refused origin develop
check "the hook said why" grep -q 'only back-merges are merge commits' "$work/push.log"

# ----------------------------------------------------------------- counter-test: linear main
check "linear main: the same start" start linear "$work/rules-linear-main.json"
G checkout -q develop && G merge -q --no-ff -m "Merge main into develop" origin/main
check "linear main: the back-merge is accepted on develop" push origin develop
check "linear main: the next release is refused (the back-merge is a merge commit)" \
  refused origin origin/develop:main
check "linear main: the hook said linear history" grep -q 'linear history is required' "$work/push.log"

echo "release-flow: $pass passed, $fail failed"
((fail == 0))
