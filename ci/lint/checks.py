#!/usr/bin/env python3
"""Small repo-specific checks that no off-the-shelf linter does; ci/lint.sh runs them.

    checks.py pins FILE...                  every `uses:` pinned to a full commit SHA + `# vX.Y.Z`,
                                            every workflow with a top-level `permissions:`
    checks.py ci-stages RUN CI_YML            every stage of .ci/run (but deps, dockerd, vm-images,
                                            base-image) is run by a job of ci.yml
    checks.py required-checks CI_YML JSON...  the status checks that ci/github-protect.sh
                                            requires are exactly the jobs of ci.yml
    checks.py cloud-init-keys FILE          every top-level key of a #cloud-config file is one
                                            that some cloud-init module reads (the schema
                                            command accepts unknown keys silently, so a typo
                                            like `package:` would pass it)
    checks.py cloud-init-scripts FILE DIR   write the shell scripts embedded in write_files
                                            (content starting with #!) to DIR, for shellcheck;
                                            prints one `extracted-file<TAB>where` line each

    checks.py deploy-workflow WORKFLOW      deploy.yml's provenance rules as structure: push only
                                            from develop/main; build only when ci/provenance.sh
                                            says so; deploy only after provenance, gate (ci.yml
                                            passed) and build; TAG/ENVIRONMENT only from
                                            provenance; release from the image's label (ci/
                                            release.sh), never CMakeLists.txt; who may write
                                            packages and contents

    checks.py deploy-rehearsal WORKFLOW SCRIPT
                                            the variables of the deploy job's steps that
                                            test/delivery/vm-rehearsal.sh runs (deploy/pier-deploy deploy,
                                            ci/public-smoke.sh) are exactly the ones the
                                            script gives values for (its VALUES block)

    checks.py docs-names ROOT               GitHub secrets and variables, the delivery tool's
                                            environment variables: named in the docs only if read,
                                            read only if named; set for every environment by
                                            docs/getting-started.md (ci/lint/docs_checks.py)
    checks.py docs-facts ROOT               slot ports, nginx's keepalive_timeout, the replicas'
                                            grace and drain, the HEALTHCHECK interval: the docs
                                            against the files that set them
    checks.py getting-started ROOT          runs docs/getting-started.md's marked blocks in a
                                            scratch copy and checks what they made

Each finding is printed as `FILE:LINE: message`; the exit status is 1 when there is any.
"""

import json
import re
import sys

import yaml

SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[^@\s]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^v\d+\.\d+\.\d+\b")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)\s*(?:#\s*(?P<comment>.*))?$")


def check_pins(paths):
    findings = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for lineno, line in enumerate(text.splitlines(), 1):
            m = USES_LINE.match(line)
            if not m:
                continue
            ref = m.group("ref").strip("'\"")
            comment = (m.group("comment") or "").strip()
            if ref.startswith("./"):
                continue  # an action of this repository, same commit
            if ref.startswith("docker://"):
                if "@sha256:" not in ref:
                    findings.append(f"{path}:{lineno}: docker action {ref} is not pinned by digest")
                continue
            if not SHA_PIN.match(ref):
                findings.append(f"{path}:{lineno}: {ref} is not pinned to a full 40-hex commit SHA")
            elif not VERSION_COMMENT.match(comment):
                findings.append(f"{path}:{lineno}: {ref} needs a `# vX.Y.Z` comment naming the release")
        if "/workflows/" in path:
            doc = yaml.safe_load(text) or {}
            if "permissions" not in doc:
                findings.append(f"{path}:1: workflow has no top-level `permissions:` (defaults are broad)")
    return findings


def check_required_checks(ci_yml, payloads):
    with open(ci_yml, encoding="utf-8") as f:
        jobs = (yaml.safe_load(f) or {}).get("jobs", {})
    # A job's check run is called by its `name:`, or by its id when it has none.
    expected = {str(job.get("name", job_id)) for job_id, job in jobs.items()}
    findings = []
    for payload in payloads:
        with open(payload, encoding="utf-8") as f:
            doc = json.load(f)
        checks = (doc.get("required_status_checks") or {}).get("checks", [])
        required = {c["context"] for c in checks}
        for missing in sorted(expected - required):
            findings.append(f"{payload}:1: job `{missing}` of {ci_yml} is not a required check")
        for extra in sorted(required - expected):
            findings.append(f"{payload}:1: required check `{extra}` is no job of {ci_yml}")
    return findings


def check_cloud_init_keys(path):
    from cloudinit.config.schema import get_schema  # Debian's cloud-init package

    schema = get_schema()
    known = set()
    for ref in schema.get("allOf", []):
        name = ref.get("$ref", "").rsplit("/", 1)[-1]
        known |= set(schema["$defs"].get(name, {}).get("properties", {}))
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    doc = yaml.safe_load("\n".join(lines)) or {}
    findings = []
    for key in doc:
        if key not in known:
            lineno = next((i for i, l in enumerate(lines, 1) if l.startswith(f"{key}:")), 1)
            findings.append(f"{path}:{lineno}: `{key}` is not a key any cloud-init module reads")
    return findings


def extract_cloud_init_scripts(path, outdir):
    import os

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    os.makedirs(outdir, exist_ok=True)
    for entry in doc.get("write_files", []):
        content = entry.get("content", "")
        if not isinstance(content, str) or not content.startswith("#!"):
            continue
        name = entry["path"].strip("/").replace("/", "_")
        out = os.path.join(outdir, name)
        with open(out, "w", encoding="utf-8") as f:
            f.write(content)
        print(f"{out}\t{path}: write_files {entry['path']}")
    return []


def check_deploy_rehearsal(workflow, script):
    findings = []
    with open(workflow, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    steps = {s.get("name"): s for s in doc.get("jobs", {}).get("deploy", {}).get("steps", [])}
    wanted = {}
    for name in REHEARSED_STEPS:
        if name not in steps:
            findings.append(f"{workflow}:1: the deploy job has no step named {name!r}, which {script} runs")
            continue
        for var in steps[name].get("env", {}):
            wanted.setdefault(var, name)
    with open(script, encoding="utf-8") as f:
        lines = f.read().splitlines()
    given, inside, begin = {}, False, 0
    for lineno, line in enumerate(lines, 1):
        if "VALUES-BEGIN" in line:
            inside, begin = True, lineno
        elif "VALUES-END" in line:
            inside = False
        elif inside:
            m = re.match(r"^\s*\[([A-Z_][A-Z0-9_]*)\]=", line)
            if m:
                given[m.group(1)] = lineno
    if not begin:
        findings.append(f"{script}:1: no VALUES-BEGIN/VALUES-END block")
    for var, step in sorted(wanted.items()):
        if var not in given:
            findings.append(f"{script}:{begin}: {workflow} step {step!r} reads {var}, which the rehearsal does not give")
    for var, lineno in sorted(given.items()):
        if var not in wanted:
            findings.append(f"{script}:{lineno}: {var} is given, but no rehearsed step of {workflow} reads it")
    return findings


def check_deploy_workflow(path):
    """deploy.yml's provenance rules, as structure (docs/delivery.md#provenance-rules)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    doc = yaml.safe_load(text) or {}
    # PyYAML reads the key `on:` as the boolean True.
    on = doc.get("on", doc.get(True)) or {}
    jobs = doc.get("jobs") or {}
    findings = []

    def line_of(needle, default=1):
        return next((i for i, l in enumerate(lines, 1) if needle in l), default)

    def bad(needle, msg):
        findings.append(f"{path}:{line_of(needle)}: {msg}")

    def runs(job):
        return "\n".join(str(s.get("run", "")) for s in (jobs.get(job) or {}).get("steps", []))

    def needs(job):
        n = (jobs.get(job) or {}).get("needs", [])
        return {n} if isinstance(n, str) else set(n)

    def cond(job):
        return " ".join(str((jobs.get(job) or {}).get("if", "")).split())

    if set(on) - {"push", "workflow_dispatch"}:
        bad("on:", f"triggers {sorted(set(on) - {'push', 'workflow_dispatch'})}: only push and workflow_dispatch")
    branches = set(((on.get("push") or {}).get("branches")) or [])
    if branches != {"develop", "main"}:
        bad("branches:", f"push.branches is {sorted(branches)}: images are built only from develop and main")
    for job in ("provenance", "gate", "build", "deploy", "release"):
        if job not in jobs:
            bad("jobs:", f"no job `{job}`")
    if findings:
        return findings

    if "ci/provenance.sh" not in runs("provenance") or '--ref "$GITHUB_REF"' not in runs("provenance"):
        bad("ci/provenance.sh", "the provenance job does not run ci/provenance.sh with --ref \"$GITHUB_REF\"")
    checkouts = [s for s in jobs["provenance"].get("steps", []) if "actions/checkout" in str(s.get("uses", ""))]
    if not checkouts or (checkouts[0].get("with") or {}).get("fetch-depth") != 0:
        bad("provenance:", "the provenance job's checkout needs fetch-depth: 0 (origin/main, origin/develop)")
    if "provenance" not in needs("build") or "needs.provenance.outputs.build == 'true'" not in cond("build"):
        bad("  build:", "the build job must need provenance and run only `if: needs.provenance.outputs.build == 'true'`")
    if "ci/github-gate.sh checks" not in runs("gate"):
        bad("  gate:", "the gate job does not run `ci/github-gate.sh checks` (ci.yml passed on the commit)")
    staged = [s for s in jobs["gate"].get("steps", []) if "ci/github-gate.sh staged" in str(s.get("run", ""))]
    if not staged or "needs.provenance.outputs.staged == 'true'" not in str(staged[0].get("if", "")):
        bad("  gate:", "the gate job must run `ci/github-gate.sh staged` when provenance says staged")
    if not {"provenance", "gate", "build"} <= needs("deploy"):
        bad("  deploy:", "the deploy job must need provenance, gate and build")
    for want in ("needs.provenance.result == 'success'", "needs.gate.result == 'success'"):
        if want not in cond("deploy"):
            bad("  deploy:", f"the deploy job's `if:` lacks {want}")
    env_name = str(((jobs["deploy"].get("environment") or {}).get("name", "")))
    if "needs.provenance.outputs.environment" not in env_name:
        bad("  deploy:", "the deploy job's environment must be provenance's output")
    for job, var, out in (("build", "TAG", "tag"), ("gate", "TAG", "tag"), ("deploy", "TAG", "tag"),
                          ("deploy", "ENVIRONMENT", "environment"), ("release", "TAG", "tag")):
        value = str((jobs[job].get("env") or {}).get(var, ""))
        if value.replace(" ", "") != "${{needs.provenance.outputs.%s}}" % out:
            bad(f"  {job}:", f"{job}'s env {var} must be ${{{{ needs.provenance.outputs.{out} }}}}, not {value!r}")
    for job, spec in jobs.items():
        if job != "provenance" and re.search(r"\binputs\.", yaml.safe_dump(spec)):
            bad(f"  {job}:", f"job {job} reads `inputs.` itself: only provenance decides from the inputs")
    if not {"provenance", "deploy"} <= needs("release"):
        bad("  release:", "the release job must need provenance and deploy")
    for want in ("needs.deploy.result == 'success'", "needs.provenance.outputs.environment == 'production'"):
        if want not in cond("release"):
            bad("  release:", f"the release job's `if:` lacks {want}")
    if "ci/release.sh" not in runs("release") or "ci/github-release.sh" not in runs("release"):
        bad("  release:", "the release job must run ci/release.sh (version from the image's label) and ci/github-release.sh")
    if "CMakeLists.txt" in yaml.safe_dump(jobs["release"]):
        bad("  release:", "the release job reads CMakeLists.txt: the version comes from the deployed image's label")
    for job, spec in jobs.items():
        perms = spec.get("permissions") or {}
        if perms.get("packages") == "write" and job not in ("build", "release"):
            bad(f"  {job}:", f"job {job} may write packages: only build and release may")
        if perms.get("contents") == "write" and job != "release":
            bad(f"  {job}:", f"job {job} may write contents: only release may (tags, the GitHub release)")
    if doc.get("permissions") != {"contents": "read"}:
        bad("permissions:", "the workflow's own permissions must be `contents: read` only")
    if (doc.get("concurrency") or {}).get("cancel-in-progress") is not False:
        bad("concurrency:", "a deploy is never cancelled half-way: cancel-in-progress: false")
    return findings


# The deploy job's steps that test/delivery/vm-rehearsal.sh runs as written.
REHEARSED_STEPS = ("deploy/pier-deploy deploy", "ci/public-smoke.sh")

# .ci/run stages that only prepare a fresh machine: a hosted runner has Docker running,
# pulls debian:bookworm-slim, and each job installs what it uses (vm-images waits for the
# rehearsal's images, which ci.yml's vm-rehearsal job builds in its own run).
STAGES_NOT_IN_CI = {"deps", "dockerd", "base-image", "vm-images"}


def check_ci_stages(run_script, ci_yml):
    """Every .ci/run stage's command (its first two words: `make tsan`, `ci/smoke.sh ...`)
    is run by some step of ci.yml, unless the stage only prepares a machine."""
    findings = []
    logical = []  # (first line number, the line with its continuations joined)
    with open(run_script, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if logical and logical[-1][1].endswith("\\"):
                logical[-1] = (logical[-1][0], logical[-1][1][:-1] + " " + line)
            else:
                logical.append((lineno, line))
    with open(ci_yml, encoding="utf-8") as f:
        jobs = (yaml.safe_load(f) or {}).get("jobs", {})
    runs = " \n".join(str(s.get("run", "")) for j in jobs.values() for s in j.get("steps", []))
    for lineno, line in logical:
        m = re.match(r"^\s*stage\s+(\S+)\s+(.*)$", line)  # also inside .ci/run's lane functions
        if not m or m.group(1) in STAGES_NOT_IN_CI:
            continue
        words = m.group(2).split()
        command = " ".join(words[:2]) if words[0] in ("make", "bash") else words[0]
        if not re.search(r"(^|[\s'\"/])" + re.escape(command) + r"($|[\s'\"])", runs, re.M):
            findings.append(f"{run_script}:{lineno}: stage {m.group(1)} ({command}) is run by no job of {ci_yml}")
    return findings


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "pins":
        findings = check_pins(args)
    elif cmd == "ci-stages" and len(args) == 2:
        findings = check_ci_stages(args[0], args[1])
    elif cmd == "required-checks" and len(args) >= 2:
        findings = check_required_checks(args[0], args[1:])
    elif cmd == "deploy-workflow" and len(args) == 1:
        findings = check_deploy_workflow(args[0])
    elif cmd == "deploy-rehearsal" and len(args) == 2:
        findings = check_deploy_rehearsal(*args)
    elif cmd == "cloud-init-keys" and len(args) == 1:
        findings = check_cloud_init_keys(args[0])
    elif cmd == "cloud-init-scripts" and len(args) == 2:
        findings = extract_cloud_init_scripts(args[0], args[1])
    elif cmd in ("docs-names", "docs-facts", "getting-started") and len(args) == 1:
        import docs_checks

        findings = {"docs-names": docs_checks.names, "docs-facts": docs_checks.facts,
                     "getting-started": docs_checks.getting_started}[cmd](args[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
