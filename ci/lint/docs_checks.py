"""What the operator docs say, checked against what the system reads (ci/lint/checks.py runs
these; ci/lint/selftest.sh breaks each on a copy of the repository and expects a finding).

  names(root)            GitHub secret and variable names, and the delivery tool's environment
                         variables: the docs name none that no workflow or tool reads; every
                         secret and variable a workflow reads is in the docs, and those of a job
                         that runs in an environment are set by docs/getting-started.md for
                         every environment (`gh secret set NAME ... --env ENV`).
  facts(root)            the few facts that can be checked mechanically: the slots' ports
                         (deploy/pier-deploy.yml), nginx's upstream and client keepalive_timeout
                         (config/nginx/pier.conf), the replicas' shutdown grace and drain (the
                         deploy file; config/pier for pier's own default), the image's
                         HEALTHCHECK interval (docker/Dockerfile; the compose file's for
                         sentences about compose). Only statements of a known shape are read:
                         prose that says nothing checkable is never a finding.
  getting_started(root)  runs the blocks of docs/getting-started.md marked
                         `<!-- lint: getting-started runs this block -->` in bash, in a scratch
                         git copy of the repository with its own HOME, and checks what they made;
                         and that its `deploy/pier-deploy setup` command passes the variables
                         test/delivery/vm-rehearsal.sh's setup passes.

Each returns findings as `FILE:LINE: message`.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

# Pages that record runs (which command, which machine, which settings then): the facts check
# does not read them, a figure measured with another setting is not a contradiction.
RECORD_PAGES = {"docs/verification.md", "docs/performance.md"}
# Pages about the VM, where grace and drain are the deploy file's.
VM_PAGES = {"docs/deploys.md", "docs/vm.md", "docs/operations.md", "docs/monitoring.md", "docs/runbooks.md",
            "docs/troubleshooting.md", "docs/getting-started.md", "docs/delivery.md"}
BUILTIN_SECRETS = {"GITHUB_TOKEN"}
MARKER = "<!-- lint: getting-started runs this block -->"


def doc_files(root):
    files = ["README.md"] + sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "docs", "*.md")))
    return [f for f in files if os.path.exists(os.path.join(root, f))]


def read(root, rel):
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        return f.read()


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


# ------------------------------------------------------------------ what the system reads
def workflow_names(root):
    """{name: {"kind": "secret"|"var", "jobs": {job: has_environment}, "optional": bool,
    "where": "file:line"}} for every secrets.X / vars.X a workflow reads; and the environments
    deploy.yml can deploy to (its dispatch input's options)."""
    names, envs = {}, set()
    for path in sorted(glob.glob(os.path.join(root, ".github", "workflows", "*.y*ml"))):
        rel = os.path.relpath(path, root)
        text = open(path, encoding="utf-8").read()
        doc = yaml.safe_load(text) or {}
        on = doc.get("on", doc.get(True)) or {}
        inputs = ((on.get("workflow_dispatch") or {}) if isinstance(on, dict) else {}).get("inputs") or {}
        for spec in inputs.values():
            if isinstance(spec, dict) and spec.get("type") == "choice" and "environment" in str(spec.get("description", "")).lower():
                envs |= set(spec.get("options") or [])
        jobs = doc.get("jobs") or {}
        for job, spec in jobs.items():
            dumped = yaml.safe_dump(spec, width=10000)
            for m in re.finditer(r"\b(secrets|vars)\.([A-Za-z_][A-Za-z0-9_]*)(\s*\|\|)?", dumped):
                kind = "secret" if m.group(1) == "secrets" else "var"
                name = m.group(2)
                if kind == "secret" and name in BUILTIN_SECRETS:
                    continue
                e = names.setdefault(name, {"kind": kind, "jobs": {}, "optional": True, "where": None})
                e["jobs"][job] = bool(spec.get("environment"))
                if not m.group(3):
                    e["optional"] = False
                if e["where"] is None:
                    pos = text.find(f"{m.group(1)}.{name}")
                    e["where"] = f"{rel}:{line_of(text, pos) if pos >= 0 else 1}"
    return names, envs


def workflow_env_names(root):
    """Every environment variable a workflow step sets (`env:` of a job or step)."""
    out = set()
    for path in glob.glob(os.path.join(root, ".github", "workflows", "*.y*ml")):
        doc = yaml.safe_load(open(path, encoding="utf-8")) or {}
        out |= set(doc.get("env") or {})
        for spec in (doc.get("jobs") or {}).values():
            out |= set(spec.get("env") or {})
            for step in spec.get("steps") or []:
                out |= set(step.get("env") or {})
    return out


def tool_env_names(root):
    """The environment variables deploy/ reads, and every override its key table allows."""
    out = set()
    files = [os.path.join(root, "deploy", "pier-deploy")] + glob.glob(os.path.join(root, "deploy", "pierdeploy", "*.py")) \
        + glob.glob(os.path.join(root, "deploy", "host", "*"))
    for path in files:
        try:
            text = open(path, encoding="utf-8").read()
        except (OSError, UnicodeDecodeError):
            continue
        out |= set(re.findall(r"os\.environ(?:\.get)?[\[(]\s*[\"']([A-Z0-9_]+)[\"']", text))
    config = load_config_module(root)
    for key in config.KEYS:
        out.add(key.env_var())
        if key.section == "env":
            for env in list(config.ENVIRONMENTS) + ["env"]:
                out.add(key.env_var(env))
    return out


def load_config_module(root):
    sys.path.insert(0, os.path.join(root, "deploy"))
    try:
        for mod in [m for m in sys.modules if m == "pierdeploy" or m.startswith("pierdeploy.")]:
            del sys.modules[mod]
        from pierdeploy import config  # noqa: E402
        return config
    finally:
        sys.path.pop(0)


# ------------------------------------------------------------------ names
GH_SET = re.compile(r"gh (secret|variable) (?:set|delete) ([A-Za-z_][A-Za-z0-9_]*)([^\n]*)")
EXPR = re.compile(r"\b(secrets|vars)\.([A-Za-z_][A-Za-z0-9_]*)")
# "the secret `X`", "`X` secret": a GitHub secret ("variable" is said of pier's own settings too).
PROSE = re.compile(r"\b(secrets?)\W{1,3}`([A-Z][A-Z0-9_]+)`|`([A-Z][A-Z0-9_]+)`\s(secrets?)\b")
TOOLISH = re.compile(r"\b(PIER_DEPLOY_[A-Z0-9_]*[A-Z0-9]|DEPLOY_[A-Z0-9_]*[A-Z0-9]|REGISTRY_[A-Z0-9_]*[A-Z0-9])\b")
ENV_FLAG = re.compile(r"--env\s+(\S+)")


def names(root):
    findings = []
    wf, environments = workflow_names(root)
    secrets = {n for n, e in wf.items() if e["kind"] == "secret"}
    variables = {n for n, e in wf.items() if e["kind"] == "var"}
    env_vars = workflow_env_names(root) | tool_env_names(root)
    known = secrets | variables | env_vars
    mentioned = set()
    set_for = {}  # (kind, name) -> environments the getting-started page sets it for
    for rel in doc_files(root):
        text = read(root, rel)
        for m in GH_SET.finditer(text):
            kind = "secret" if m.group(1) == "secret" else "var"
            name = m.group(2)
            mentioned.add(name)
            pool = secrets if kind == "secret" else variables
            if name not in pool:
                findings.append(f"{rel}:{line_of(text, m.start())}: `gh {m.group(1)}` names {name}, which no workflow reads "
                                f"as a {m.group(1)} (.github/workflows/)")
            e = ENV_FLAG.search(m.group(3))
            if rel == "docs/getting-started.md" and "gh secret delete" not in m.group(0) and "gh variable delete" not in m.group(0):
                set_for.setdefault((kind, name), set()).add(e.group(1).strip("\"'") if e else "")
        for m in EXPR.finditer(text):
            kind = "secret" if m.group(1) == "secrets" else "var"
            name = m.group(2)
            mentioned.add(name)
            if name not in (secrets if kind == "secret" else variables) and name not in BUILTIN_SECRETS:
                findings.append(f"{rel}:{line_of(text, m.start())}: {m.group(0)}: no workflow reads it")
        for m in PROSE.finditer(text):
            word, name = (m.group(1), m.group(2)) if m.group(2) else (m.group(4), m.group(3))
            mentioned.add(name)
            if name not in secrets:
                findings.append(f"{rel}:{line_of(text, m.start())}: the secret `{name}`: no workflow reads it")
        for m in TOOLISH.finditer(text):
            name = m.group(1)
            mentioned.add(name)
            if name not in known:
                findings.append(f"{rel}:{line_of(text, m.start())}: {name}: neither a workflow nor deploy/pier-deploy reads it")
    alltext = "\n".join(read(root, rel) for rel in doc_files(root))
    for name, e in sorted(wf.items()):
        what = "secret" if e["kind"] == "secret" else "variable"
        if name not in mentioned and not re.search(r"\b" + re.escape(name) + r"\b", alltext):
            findings.append(f"{e['where']}: the {what} {name} is read here but no page of docs/ or README.md names it")
            continue
        if any(e["jobs"].values()) and not e["optional"]:
            have = set_for.get((e["kind"], name), set())
            for env in sorted(environments - have):
                findings.append(f"docs/getting-started.md:1: {e['where']} reads the {what} {name} in environment "
                                f"{env}, but the page never sets it there (gh {'secret' if what == 'secret' else 'variable'} "
                                f"set {name} --env {env})")
    return findings


# ------------------------------------------------------------------ facts
def sentences(text):
    """(line, sentence) of the text: each line of a code block on its own; prose joined per
    paragraph (and per table row), then split at sentence ends and table cells."""
    out, para, start, fence = [], [], 0, None
    lines = text.splitlines()

    def flush():
        if para:
            joined = " ".join(x.strip() for x in para)
            for part in re.split(r"(?<=[.!?])\s+(?=[A-Z`(])|\s\|\s|;\s", joined):
                out.append((start, part))
            para.clear()

    for n, line in enumerate(lines, 1):
        if re.match(r"^\s{0,3}(```|~~~)", line):
            flush()
            fence = None if fence else line.strip()[:3]
            continue
        if fence:
            out.append((n, line))
            continue
        if not line.strip() or line.lstrip().startswith("|") or re.match(r"^\s*([-*]|\d+\.)\s", line) or line.startswith("#"):
            flush()
            if line.strip():
                if line.lstrip().startswith("|") or line.startswith("#"):
                    out.append((n, line))
                    continue
                para.append(line)
                start = n
            continue
        if not para:
            start = n
        para.append(line)
    flush()
    return out


def tables(text):
    """(line, header cells, rows as (line, cells)) of every Markdown table."""
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
            head = cells(lines[i])
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append((j + 1, cells(lines[j])))
                j += 1
            out.append((i + 1, head, rows))
            i = j
        else:
            i += 1
    return out


def cells(line):
    return [c.strip().strip("`").strip().lower() for c in line.strip().strip("|").split("|")]


def nginx_keepalive(root):
    """(upstream keepalive_timeout in s, the server's client keepalive_timeout in s)."""
    text = read(root, "config/nginx/pier.conf")
    ups = set()
    for m in re.finditer(r"(?ms)^upstream\s+\S+\s*\{(.*?)^\}", text):
        ups |= {int(v) for v in re.findall(r"keepalive_timeout\s+(\d+)s;", m.group(1))}
    body = re.sub(r"(?ms)^upstream\s+\S+\s*\{.*?^\}", "", text)
    client = {int(v) for v in re.findall(r"keepalive_timeout\s+(\d+)s;", body)}
    return ups, client


def healthcheck_intervals(root):
    image = re.search(r"HEALTHCHECK\s+[^\n]*--interval=(\d+)s", read(root, "docker/Dockerfile"))
    compose = yaml.safe_load(read(root, "docker/compose.yaml")) or {}
    ci = None
    for svc in (compose.get("services") or {}).values():
        iv = ((svc or {}).get("healthcheck") or {}).get("interval")
        if iv and str(iv).endswith("s") and str(iv)[:-1].isdigit() and "pier" in str(svc.get("image", "")):
            ci = int(str(iv)[:-1])
    return (int(image.group(1)) if image else None), ci


def ms(value, unit):
    v = float(value)
    return v * 1000 if unit == "s" else v


def facts(root):
    findings = []
    config = load_config_module(root)
    cfg = config.load(os.path.join(root, "deploy", "pier-deploy.yml"), {}, overrides_allowed=False)
    ports = {env: {slot: list(cfg.env(env)["ports." + slot]) for slot in config.SLOTS} for env in cfg.envs}
    grace = {cfg.env(e)["shutdown.grace_ms"] for e in cfg.envs}
    drain = {cfg.env(e)["shutdown.drain_ms"] for e in cfg.envs}
    pier_yaml = yaml.safe_load(read(root, "config/pier/prod.yaml")) or {}
    pier_drain = ((pier_yaml.get("shutdown") or {}).get("drain_ms"))
    ups, client = nginx_keepalive(root)
    image_iv, compose_iv = healthcheck_intervals(root)
    replicas = list(config.REPLICA_NAMES)

    def port_of(env, slot, replica):
        p = ports.get(env, {}).get(slot, [])
        i = replicas.index(replica)
        return p[i] if i < len(p) else None

    def order(env):
        return ports[env]["blue"] + ports[env]["green"]

    for rel in doc_files(root):
        if rel in RECORD_PAGES:
            continue
        text = read(root, rel)

        def bad(line, msg):
            findings.append(f"{rel}:{line}: {msg}")

        # --- slot ports: tables
        for _, head, rows in tables(text):
            cols = {}
            for i, h in enumerate(head):
                m = re.fullmatch(r"(blue|green) ([a-d])", h)
                if m:
                    cols[i] = (m.group(1), m.group(2))
            rcols = {i: re.fullmatch(r"replica ([a-d])", h).group(1) for i, h in enumerate(head)
                     if re.fullmatch(r"replica ([a-d])", h)}
            slot_col = head.index("slot") if "slot" in head else None
            env_col = next((i for i, h in enumerate(head) if h in ("env", "environment")), 0)
            for line, row in rows:
                env = row[env_col] if env_col < len(row) else ""
                if env not in ports:
                    continue
                checks = [(i, slot, r) for i, (slot, r) in cols.items()]
                if rcols and slot_col is not None and slot_col < len(row) and row[slot_col] in ("blue", "green"):
                    checks += [(i, row[slot_col], r) for i, r in rcols.items()]
                for i, slot, r in checks:
                    if i >= len(row):
                        continue
                    m = re.fullmatch(r"(?:127\.0\.0\.1:)?(\d+)", row[i])
                    want = port_of(env, slot, r)
                    if m and int(m.group(1)) != want:
                        bad(line, f"{env} {slot} {r} is port {m.group(1)} here, {want} in deploy/pier-deploy.yml")
        # --- slot ports, grace, drain, keepalive, health interval: statements
        for line, s in sentences(text):
            for m in re.finditer(r"pier-(prod|staging)-(blue|green)-([a-d])\b(?:(?!pier-(?:prod|staging)-).)*?127\.0\.0\.1:(\d+)", s):
                want = port_of(*m.group(1, 2, 3))
                if int(m.group(4)) != want:
                    bad(line, f"pier-{m.group(1)}-{m.group(2)}-{m.group(3)} on 127.0.0.1:{m.group(4)} here, "
                              f"{want} in deploy/pier-deploy.yml")
            for m in re.finditer(r"\b(prod|staging) runs \S+ on (blue|green) \(127\.0\.0\.1:([\d,]+)\)", s):
                got = [int(x) for x in m.group(3).split(",") if x]
                if got != ports[m.group(1)][m.group(2)]:
                    bad(line, f"{m.group(1)} {m.group(2)} on {m.group(3)} here, "
                              f"{','.join(map(str, ports[m.group(1)][m.group(2)]))} in deploy/pier-deploy.yml")
            for m in re.finditer(r"\b(prod|staging):?\s+`?(\d{4,5})`?,\s*`?(\d{4,5})`?,\s*`?(\d{4,5})`?,?\s*(?:and\s+)?`?(\d{4,5})\b", s):
                got = [int(x) for x in m.group(2, 3, 4, 5)]
                if got != order(m.group(1)):
                    bad(line, f"{m.group(1)}'s ports {', '.join(m.group(2, 3, 4, 5))} here; deploy/pier-deploy.yml: "
                              f"blue {ports[m.group(1)]['blue']}, green {ports[m.group(1)]['green']}")
            low = s.lower()
            # nginx keepalive_timeout: upstream (nginx to pier) or client (clients to nginx)
            if "keepalive" in low:
                for m in re.finditer(r"keepalive(?:_timeout)?`?\W{0,3}(?:of\s+)?`?(\d+)\s?s\b", s):
                    v = int(m.group(1))
                    if "upstream" in low and ups and v not in ups:
                        bad(line, f"nginx's upstream keepalive_timeout is {v} s here, {'/'.join(map(str, sorted(ups)))} s in config/nginx/pier.conf")
                    elif "upstream" not in low and "client" in low and client and v not in client:
                        bad(line, f"nginx's client keepalive_timeout is {v} s here, {'/'.join(map(str, sorted(client)))} s in config/nginx/pier.conf")
            # grace and drain of the VM's replicas (the deploy file)
            if rel in VM_PAGES:
                for m in re.finditer(r"PIER_SHUTDOWN_(GRACE|DRAIN)_MS=(\d+)", s):
                    pool = grace if m.group(1) == "GRACE" else drain
                    if pool != {int(m.group(2))}:
                        bad(line, f"PIER_SHUTDOWN_{m.group(1)}_MS={m.group(2)} here; the deploy file gives the replicas "
                                  f"{'/'.join(map(str, sorted(pool)))}")
                for m in re.finditer(r"\bgrace(?: period)?(?: of)? (\d+(?:\.\d+)?) ?(ms|s)\b|\b(\d+(?:\.\d+)?) ?(ms|s) grace\b", s):
                    v = ms(m.group(1) or m.group(3), m.group(2) or m.group(4))
                    if grace != {v}:
                        bad(line, f"grace {v:g} ms here ({m.group(0)!r}); the deploy file gives the replicas shutdown.grace_ms "
                                  f"{'/'.join(map(str, sorted(grace)))}")
            for m in re.finditer(r"\b(\d+) for VM slots\b", s):
                if grace != {int(m.group(1))}:
                    bad(line, f"grace {m.group(1)} for VM slots here, {'/'.join(map(str, sorted(grace)))} in deploy/pier-deploy.yml")
            for m in re.finditer(r"shutdown\.drain_ms`?\s*\((\d+(?:\.\d+)?) ?(ms|s)\)", s):
                v = ms(m.group(1), m.group(2))
                pool = drain if rel in VM_PAGES else {pier_drain}
                if pool != {v}:
                    bad(line, f"drain {m.group(1)} {m.group(2)} here, {'/'.join(str(int(p)) for p in sorted(pool))} ms in "
                              + ("deploy/pier-deploy.yml" if rel in VM_PAGES else "config/pier/prod.yaml"))
            # the image's HEALTHCHECK interval (the compose file's in a sentence about compose)
            iv = compose_iv if "compose" in low else image_iv
            src = "docker/compose.yaml" if "compose" in low else "docker/Dockerfile"
            for m in re.finditer(r"HEALTHCHECK --interval=(\d+)s", s):
                if image_iv and int(m.group(1)) != image_iv:
                    bad(line, f"HEALTHCHECK --interval={m.group(1)}s here, {image_iv}s in docker/Dockerfile")
            if iv and ("image" in low or "healthcheck" in low or "compose" in low):
                for m in re.finditer(r"\b(?:probes?|probed|runs `?/pier --probe`?)\s+every (\d+) ?s\b", s):
                    if int(m.group(1)) != iv:
                        bad(line, f"probes every {m.group(1)} s here, every {iv} s in {src}")
            if iv:
                for m in re.finditer(r"\bhealthy\)?`?\W{0,3}(?:within|after|in) (?:about |~)?(\d+(?:\.\d+)?) ?s\b|"
                                     r"\bhealthy`?\W{0,3}(?:about |~)(\d+(?:\.\d+)?) ?s after\b", s):
                    v = float(m.group(1) or m.group(2))
                    if v < iv:
                        bad(line, f"Docker's `healthy` within {m.group(1) or m.group(2)} s here; Docker runs the first "
                                  f"check one interval after the start, and the interval is {iv} s ({src})")
    return findings


# ------------------------------------------------------------------ getting started
def getting_started(root):
    page = "docs/getting-started.md"
    findings = []
    try:
        text = read(root, page)
    except OSError:
        return [f"{page}:1: missing"]
    blocks = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == MARKER:
            if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
                findings.append(f"{page}:{i + 1}: the marker is not followed by a code block")
                continue
            body = []
            for j in range(i + 2, len(lines)):
                if lines[j].startswith("```"):
                    break
                body.append(lines[j])
            blocks.append((i + 1, "\n".join(body)))
    if len(blocks) < 4:
        findings.append(f"{page}:1: {len(blocks)} blocks marked to run; the names, keys, custom data and deploy file "
                        "steps must all be")
        return findings
    # The setup command: the rehearsal's variables, no others.
    setup_cmd = re.search(r"```sh\n((?:[^`]|`(?!``))*?deploy/pier-deploy setup[^\n]*)\n```", text)
    rehearsal = read(root, "test/delivery/vm-rehearsal.sh")
    rfunc = re.search(r"(?ms)^setup\(\) \{.*?^\}", rehearsal)
    if not setup_cmd or not rfunc:
        findings.append(f"{page}:1: no `deploy/pier-deploy setup` block here, or no setup() in test/delivery/vm-rehearsal.sh")
    else:
        mine = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", setup_cmd.group(1)))
        theirs = set(re.findall(r"-e ([A-Z][A-Z0-9_]+)=", rfunc.group(0)))
        if mine != theirs:
            findings.append(f"{page}:{line_of(text, setup_cmd.start())}: the setup command passes {sorted(mine)}; "
                            f"test/delivery/vm-rehearsal.sh's setup passes {sorted(theirs)}")
    tmp = tempfile.mkdtemp(prefix="pier-getting-started.")
    try:
        return findings + run_blocks(root, page, blocks, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_blocks(root, page, blocks, tmp):
    findings = []
    checkout, home = os.path.join(tmp, "pier"), os.path.join(tmp, "home")
    os.makedirs(home)
    if os.path.isdir(os.path.join(root, ".git")) or os.path.isfile(os.path.join(root, ".git")):
        files = subprocess.run(["git", "-C", root, "ls-files", "-z"], stdout=subprocess.PIPE, check=True).stdout.split(b"\0")
        files = [f.decode() for f in files if f]
    else:
        files = [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs]
    for rel in files:
        src = os.path.join(root, rel)
        if rel.startswith(("deploy/", "config/", "docs/")) or rel in ("README.md",):
            if os.path.isfile(src):
                os.makedirs(os.path.dirname(os.path.join(checkout, rel)), exist_ok=True)
                shutil.copy2(src, os.path.join(checkout, rel))
    git = ["git", "-C", checkout, "-c", "user.name=lint", "-c", "user.email=lint@localhost", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + args, check=True, stdout=subprocess.DEVNULL)
    script = "set -euo pipefail\n" + "\n".join(f"# {page}:{n}\n{b}" for n, b in blocks) + \
        '\nprintf "%s\\n" "$R" "$DOMAIN" "$S" >"$HOME/.names"\n'
    env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "GIT_CONFIG_GLOBAL": "/dev/null"}
    p = subprocess.run(["bash", "-c", script], cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=120)
    out = p.stdout
    if p.returncode != 0:
        tail = " | ".join(out.strip().splitlines()[-5:])
        return [f"{page}:{blocks[0][0]}: the marked blocks failed (status {p.returncode}): {tail}"]
    try:
        r, domain, s = open(os.path.join(home, ".names")).read().split("\n")[:3]
    except (OSError, ValueError):
        return [f"{page}:{blocks[0][0]}: the blocks do not set R, DOMAIN and S"]

    def need(ok, line, msg):
        if not ok:
            findings.append(f"{page}:{line}: {msg}")

    first = blocks[0][0]
    for want in ("no placeholder left", "deploy/pier-deploy.yml: OK (prod, staging)",
                 "1 file changed, 5 insertions(+), 5 deletions(-)"):
        need(want in out, first, f"the blocks' output has no {want!r}")
    keys = {}
    for name in ("admin_key", "deploy_key_prod", "deploy_key_staging"):
        path = os.path.join(s, name + ".pub")
        need(os.path.exists(path) and os.path.exists(os.path.join(s, name)), first, f"no key pair $S/{name}")
        if os.path.exists(path):
            keys[name] = " ".join(open(path).read().split()[:2])
    ci = os.path.join(s, "cloud-init.yaml")
    if not os.path.exists(ci):
        findings.append(f"{page}:{first}: no $S/cloud-init.yaml")
    else:
        body = open(ci).read()
        left = [l for l in body.splitlines() if "REPLACE-ME" in l and not l.lstrip().startswith("#")]
        need(not left, first, f"$S/cloud-init.yaml still has a placeholder: {left[:1]}")
        need(keys.get("admin_key", "?") in body, first, "$S/cloud-init.yaml does not have the admin key")
        need(f"PIER_DOMAIN={domain}\n" in body, first, "$S/cloud-init.yaml does not name the domain")
        if shutil.which("cloud-init"):
            c = subprocess.run(["cloud-init", "schema", "--config-file", ci], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            need(c.returncode == 0, first, f"cloud-init schema rejects $S/cloud-init.yaml: {c.stdout.strip()[-200:]}")
        else:
            findings.append(f"{page}:{first}: cloud-init is not installed: the custom data cannot be checked")
    config = load_config_module(checkout)
    try:
        cfg = config.load(os.path.join(checkout, "deploy", "pier-deploy.yml"), {}, overrides_allowed=False)
    except config.ConfigError as e:
        return findings + [f"{page}:{first}: the edited deploy file does not load: {e}"]
    for env, key in (("prod", "deploy_key_prod"), ("staging", "deploy_key_staging")):
        need(cfg.env(env)["ssh.public_key"] == keys.get(key), first, f"the deploy file's {env} ssh.public_key is not $S/{key}.pub")
        need(cfg.env(env)["image"] == "ghcr.io/" + r.lower(), first, f"the deploy file's {env} image is not ghcr.io/{r.lower()}")
    need(cfg.host["repo_url"] == f"https://github.com/{r}.git", first, f"the deploy file's repo_url is not https://github.com/{r}.git")
    return findings
