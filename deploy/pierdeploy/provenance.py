"""Only main's commits reach production (issue 19): before a prod deploy starts anything,
the release's commit must be in the history of the repository's main branch.

The commit is the TAG when it is a commit SHA (CI tags images with it), else the image's
org.opencontainers.image.revision label (ci/image.sh sets it); when both exist they must
agree. The repository (host.repo_url) is fetched into a root-owned bare clone,
STATE_DIR/repo.git, by root on the VM; nothing in it is ever checked out or run. A commit
that is not an ancestor of main (a feature branch, develop ahead of main), or that cannot
be told, stops the deploy before any container starts (exit 1).
"""

import os
import re
import subprocess

SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")


class NotOnMain(Exception):
    pass


def git(repo, *args, timeout=120):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_TERMINAL_PROMPT": "0",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(["git", "-C", repo, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, env=env)


def commit_of(tag, revision):
    """The commit a release claims to be, from its TAG and its image's revision label."""
    revision = (revision or "").strip().lower()
    if SHA.match(tag):
        t = tag.lower()
        if revision and not (revision.startswith(t) or t.startswith(revision)):
            raise NotOnMain(f"TAG {tag} and the image's revision label {revision} disagree")
        return t
    if SHA.match(revision):
        return revision
    raise NotOnMain(f"cannot tell which commit {tag} is: it is not a commit SHA and the image has no revision label")


def check(repo, url, branch, commit):
    """Fetch BRANCH of URL into the bare clone REPO; raise NotOnMain unless COMMIT is in its
    history. Returns the full commit id."""
    if not os.path.isdir(os.path.join(repo, "objects")):
        os.makedirs(repo, mode=0o700, exist_ok=True)
        p = git(repo, "init", "--quiet", "--bare")
        if p.returncode != 0:
            raise NotOnMain(f"cannot make {repo}: {p.stderr.strip()}")
    p = git(repo, "fetch", "--quiet", "--prune", "--no-tags", url, f"+refs/heads/{branch}:refs/heads/{branch}")
    if p.returncode != 0:
        raise NotOnMain(f"cannot fetch {branch} of {url}: {p.stderr.strip()[-300:]}")
    p = git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if p.returncode != 0:
        raise NotOnMain(f"commit {commit} is not on {branch} of {url} (it is not in that branch's history at all)")
    full = p.stdout.strip()
    p = git(repo, "merge-base", "--is-ancestor", full, f"refs/heads/{branch}")
    if p.returncode != 0:
        raise NotOnMain(f"commit {full[:12]} is not on {branch} of {url}")
    return full
