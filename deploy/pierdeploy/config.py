"""The deploy file: one table of keys, and everything that follows from it.

KEYS below is the only place a key is defined (like pier's own option table, src/config.c):
its section (`host` for the VM, `env` for each environment under `environments:`), name,
type, default, bounds and help. The loader, the environment-variable overrides, the
generated reference (docs/deploy-file.md, `pier-deploy reference`) and the unit tests all
walk it. A bad key or value is refused with FILE:LINE:COLUMN and, for a misspelt key, the
closest known one ("did you mean ...?").

Overrides for a one-off run: PIER_DEPLOY_<KEY> (dots and dashes as `_`, upper case) sets a
host key, or an environment key of whichever environment the command acts on;
PIER_DEPLOY_<ENV>_<KEY> sets it for that environment only and wins. Every override in
effect is reported (`override: prod watch.window_s = 20 (PIER_DEPLOY_WATCH_WINDOW_S)`).
The installed copy on the VM never takes overrides (see engine.py).
"""

import difflib
import os
import re

import yaml

ENVIRONMENTS = ("prod", "staging")
SLOTS = ("blue", "green")
REPLICA_NAMES = ("a", "b", "c", "d")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9]$")
SECRET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
HOST_RE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:]+)$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MEMORY_RE = re.compile(r"^[1-9][0-9]*[kmg]$")


class ConfigError(Exception):
    """A deploy file (or override) that cannot be used; str() is the message for people."""


class Key:
    def __init__(self, section, name, kind, default, help, lo=None, hi=None, choices=None, required=False):
        self.section, self.name, self.kind, self.default = section, name, kind, default
        self.help, self.lo, self.hi, self.choices, self.required = help, lo, hi, choices, required

    def env_var(self, env=None):
        base = self.name.replace(".", "_").replace("-", "_").upper()
        return f"PIER_DEPLOY_{env.upper()}_{base}" if env else f"PIER_DEPLOY_{base}"

    def expected(self):
        if self.kind == "int":
            return f"an integer from {self.lo} to {self.hi}"
        if self.kind == "float":
            return f"a number from {self.lo} to {self.hi}"
        if self.kind == "enum":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "ports":
            return f"a list of ports (1-65535), one per replica"
        if self.kind == "list":
            return "a list of secret names (lower case, digits, -)"
        if self.kind == "path":
            return "an absolute path"
        if self.kind == "memory":
            return "a size like 64m (k, m or g)"
        return {"image": "an image repository (lower case)", "prefix": "a path like /prod",
                "host": "a host name or address (empty: set it with PIER_DEPLOY_SSH_HOST)",
                "user": "a user name", "group": "a group name",
                "url": "an https://, git://, ssh:// or file:// URL (empty: none)", "branch": "a branch name",
                "pubkey": "an OpenSSH public key line: ssh-ed25519 AAAA... [comment] (empty: none)", "name": "a name (letters, digits, -)",
                "file": "a file path (empty: none)", "str": "a string"}.get(self.kind, "a value")


H, E = "host", "env"
KEYS = [
    # ---- the VM, shared by both environments
    Key(H, "state_dir", "path", "/var/lib/pier-deploy",
        "Root-owned state: the audit history, locks, the deploy log, releases' host files."),
    Key(H, "socket_dir", "path", "/srv/pier/run",
        "The slots' socket directories ENV/{blue,green} and the `current` links nginx connects through."),
    Key(H, "secrets_dir", "path", "/etc/pier/secrets",
        "Secrets by environment, ENV/NAME (root-owned; mounted read-only into the replicas)."),
    Key(H, "prometheus_dir", "path", "/etc/prometheus",
        "Where setup and a prod deploy write Prometheus' and Alertmanager's config, and the metrics tokens Prometheus sends."),
    Key(H, "nginx_group", "group", "www-data",
        "nginx's workers' group: the group every replica socket must have (mode 0660)."),
    Key(H, "nginx_access_log", "file", "/var/log/nginx/pier.access.log",
        "nginx's access log in the pier_json format: the watch counts nginx's own 5xx from it (empty: not counted)."),
    Key(H, "name_prefix", "name", "pier", "Containers are named PREFIX-ENV-SLOT-REPLICA."),
    Key(H, "keep_releases", "int", 3, "Images kept per environment: the live release and the ones its rollback chain names.", 1, 50),
    Key(H, "lock_timeout_s", "int", 600, "Seconds a deploy waits for another deploy of the same environment.", 1, 86400),
    Key(H, "repo_url", "url", "",
        "The repository a prod deploy's commit must be on (its main branch), fetched into a root-owned bare clone; "
        "empty: no such check (said on every prod deploy)."),
    Key(H, "main_branch", "branch", "main", "The branch of repo_url whose history a prod release must be in."),
    Key(H, "manage_host_config", "bool", True,
        "A prod deploy applies the release's nginx and Prometheus config (checked first); staging checks only. Off in the test stand."),
    # ---- each environment (environments.prod, environments.staging)
    Key(E, "image", "image", None, "Image repository; the deploy runs IMAGE:TAG.", required=True),
    Key(E, "ssh.host", "host", "", "The VM the environment runs on; empty or `local`: this machine."),
    Key(E, "ssh.user", "user", "deploy", "The SSH user of deploys (its key may run only pier-deploy's verbs)."),
    Key(E, "ssh.port", "int", 22, "SSH port.", 1, 65535),
    Key(E, "ssh.public_key", "pubkey", "",
        "The environment's deploy key (public half): setup lets it run only pier-deploy's verbs for this environment "
        "(authorized_keys restrict,command=...); empty: no deploy key for it."),
    Key(E, "ssh.known_hosts", "file", "",
        "known_hosts file with the VM's host key (relative to this file); DEPLOY_KNOWN_HOSTS (the text) wins."),
    Key(E, "prefix", "prefix", None, "pier's route prefix (PIER_PREFIX in the replicas); nginx routes it here.", required=True),
    Key(E, "container_port", "int", None, "pier's TCP port inside the container (PIER_LISTEN_PORT).", 1, 65535, required=True),
    Key(E, "ports.blue", "ports", None, "Host ports (127.0.0.1) of the blue slot's replicas, in order a, b, ...", required=True),
    Key(E, "ports.green", "ports", None, "Host ports (127.0.0.1) of the green slot's replicas.", required=True),
    Key(E, "replicas", "int", 2, "pier containers per slot (named a, b, ...; nginx's upstream lists their sockets).", 1, 4),
    Key(E, "pull_timeout_s", "int", 300, "Seconds for `docker pull`.", 1, 3600),
    Key(E, "health.timeout_s", "int", 60, "Seconds for the new replicas to become healthy before the deploy gives up.", 1, 3600),
    Key(E, "shutdown.grace_ms", "int", 1000, "shutdown.grace_ms given to every replica.", 0, 600000),
    Key(E, "shutdown.drain_ms", "int", 10000, "shutdown.drain_ms given to every replica.", 0, 600000),
    Key(E, "watch.window_s", "int", 60, "The watch after the switch, seconds; 0: no watch.", 0, 3600),
    Key(E, "watch.interval_s", "int", 5, "Seconds between two looks at the new replicas.", 1, 600),
    Key(E, "watch.min_requests", "int", 50, "Fewer requests than this: the ratio and p99 rules do not judge.", 1, 1000000),
    Key(E, "watch.max_5xx_ratio", "float", 0.01, "Switch back above this ratio of 5xx (pier's and nginx's own).", 0, 1),
    Key(E, "watch.max_errors", "int", 5,
        "Switch back at this many 5xx even below min_requests (low traffic).", 1, 1000000),
    Key(E, "watch.max_restarts", "int", 0, "Switch back when the new replicas restarted more often than this.", 0, 100),
    Key(E, "watch.p99_factor", "float", 2.0, "Switch back when p99 > this times the old slot's recent p99 ...", 1, 100),
    Key(E, "watch.p99_min_ms", "float", 50.0, "... and > this many milliseconds.", 0, 60000),
    Key(E, "watch.on_unreadable", "enum", "fail",
        "A replica's /metrics cannot be read: `fail` switches back; `keep` goes on and calls the release not judged.",
        choices=("fail", "keep")),
    Key(E, "limits.memory", "memory", "64m", "docker run --memory (and --memory-swap: no swap)."),
    Key(E, "limits.pids", "int", 64, "docker run --pids-limit.", 8, 100000),
    Key(E, "limits.cpus", "float", 0.5, "docker run --cpus.", 0.01, 64),
    Key(E, "secrets", "list", ["metrics-token"],
        "Secrets the environment needs, by name: SECRETS_DIR/ENV/NAME, mounted read-only at /run/secrets; "
        "`metrics-token` is made by setup and also turns on /metrics' bearer token."),
]
KEY_BY_ID = {(k.section, k.name): k for k in KEYS}


def keys_of(section):
    return [k for k in KEYS if k.section == section]


# ------------------------------------------------------------------ values
def _convert(key, value, where):
    """The value of KEY from YAML (or an override string already parsed as YAML)."""
    def bad(found=None):
        shown = found if found is not None else repr(value)
        return ConfigError(f"{where}: {key.name}: expected {key.expected()}, found {shown}")

    k = key.kind
    if k == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not key.lo <= value <= key.hi:
            raise bad()
        return value
    if k == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not key.lo <= value <= key.hi:
            raise bad()
        return float(value)
    if k == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if k == "enum":
        if value not in key.choices:
            raise bad()
        return value
    if k == "ports":
        if not isinstance(value, list) or not value or not all(
                isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in value):
            raise bad()
        return list(value)
    if k == "list":
        if not isinstance(value, list) or not all(isinstance(s, str) and SECRET_RE.match(s) for s in value):
            raise bad()
        return list(value)
    if value is None:
        value = ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise bad()
    value = str(value)
    checks = {
        "path": lambda v: v.startswith("/") and ".." not in v.split("/") and "\n" not in v,
        "file": lambda v: v == "" or ("\n" not in v and ".." not in v.split("/")),
        "image": lambda v: bool(IMAGE_RE.match(v)),
        "prefix": lambda v: bool(re.match(r"^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$", v)),
        "host": lambda v: v in ("", "local") or bool(HOST_RE.match(v)),
        "user": lambda v: bool(USER_RE.match(v)),
        "group": lambda v: bool(USER_RE.match(v)),
        "name": lambda v: bool(re.match(r"^[a-z0-9][a-z0-9-]{0,30}$", v)),
        "memory": lambda v: bool(MEMORY_RE.match(v)),
        "url": lambda v: v == "" or bool(re.match(r"^(https|git|ssh|file)://[A-Za-z0-9._~:/@%+-]+$", v)),
        "branch": lambda v: bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,100}$", v)) and ".." not in v,
        "pubkey": lambda v: v == "" or bool(re.match(r"^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]{40,}( [A-Za-z0-9@._-]{0,64})?$", v)),
    }
    if not checks.get(k, lambda v: True)(value):
        raise bad(repr(value))
    return value


def did_you_mean(name, candidates):
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close and "." not in name:  # `window_s` for `watch.window_s`
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates if "." in c}
        hit = difflib.get_close_matches(name, list(tails), n=1, cutoff=0.75)
        close = [tails[hit[0]]] if hit else []
    return f" (did you mean {close[0]}?)" if close else ""


def _mark(node, path):
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _flatten(node, path, prefix=""):
    """A mapping node as {dotted key: (value node, key node)}: `watch: {window_s: 5}` gives
    watch.window_s. Lists and scalars are leaves."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_mark(node, path)}: expected a mapping of keys")
    out = {}
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode):
            raise ConfigError(f"{_mark(knode, path)}: a key must be a plain word")
        name = prefix + str(knode.value)
        if name in out:
            raise ConfigError(f"{_mark(knode, path)}: {name} is given twice")
        if isinstance(vnode, yaml.MappingNode) and name in SECTIONS_WITH_SUBKEYS:
            out.update(_flatten(vnode, path, name + "."))
        else:
            out[name] = (vnode, knode)
    return out


SECTIONS_WITH_SUBKEYS = {k.name.split(".")[0] for k in KEYS if "." in k.name}


def _value_of(vnode):
    return yaml.safe_load(yaml.serialize(vnode))


class Config:
    """A loaded deploy file: .host[key], .env[ENV][key], .path, .overrides (messages)."""

    def __init__(self, path, host, envs, overrides):
        self.path, self.host, self.envs, self.overrides = path, host, envs, overrides

    def env(self, name):
        return self.envs[name]

    def slot_ports(self, env, slot):
        return self.envs[env]["ports." + slot]

    def replicas(self, env):
        return list(REPLICA_NAMES[: self.envs[env]["replicas"]])


def load(path, environ=None, overrides_allowed=True):
    """Read and check the deploy file at PATH; apply overrides from ENVIRON (os.environ)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the deploy file: {e.strerror}")
    return loads(text, path, environ, overrides_allowed)


def loads(text, path="<deploy file>", environ=None, overrides_allowed=True):
    environ = os.environ if environ is None else environ
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}")
    if root is None:
        raise ConfigError(f"{path}: the deploy file is empty")
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{_mark(root, path)}: expected the sections host: and environments:")
    top = {}
    for knode, vnode in root.value:
        name = str(knode.value)
        if name not in ("host", "environments"):
            raise ConfigError(f"{_mark(knode, path)}: unknown section {name}{did_you_mean(name, ['host', 'environments'])}")
        top[name] = vnode
    if "environments" not in top:
        raise ConfigError(f"{path}:1:1: no environments: section")

    host_names = [k.name for k in keys_of(H)]
    host = {k.name: k.default for k in keys_of(H)}
    if "host" in top:
        for name, (vnode, knode) in _flatten(top["host"], path).items():
            key = KEY_BY_ID.get((H, name))
            if key is None:
                raise ConfigError(f"{_mark(knode, path)}: unknown key host.{name}{did_you_mean(name, host_names)}")
            host[name] = _convert(key, _value_of(vnode), _mark(vnode, path))

    env_names = [k.name for k in keys_of(E)]
    envs = {}
    enode = top["environments"]
    if not isinstance(enode, yaml.MappingNode):
        raise ConfigError(f"{_mark(enode, path)}: environments: expected prod: and staging:")
    for knode, vnode in enode.value:
        env = str(knode.value)
        if env not in ENVIRONMENTS:
            raise ConfigError(f"{_mark(knode, path)}: unknown environment {env}{did_you_mean(env, list(ENVIRONMENTS))}")
        values = {k.name: k.default for k in keys_of(E)}
        given = set()
        for name, (v, kn) in _flatten(vnode, path).items():
            key = KEY_BY_ID.get((E, name))
            if key is None:
                raise ConfigError(f"{_mark(kn, path)}: unknown key environments.{env}.{name}{did_you_mean(name, env_names)}")
            values[name] = _convert(key, _value_of(v), _mark(v, path))
            given.add(name)
        values["_line"] = knode.start_mark.line + 1
        values["_given"] = given
        envs[env] = values

    overrides = []
    if overrides_allowed:
        for key in KEYS:
            for env in (ENVIRONMENTS if key.section == E else (None,)):
                for var in ([key.env_var(), key.env_var(env)] if env else [key.env_var()]):
                    if var not in environ:
                        continue
                    if env and env not in envs:
                        continue
                    raw = environ[var]
                    try:
                        value = yaml.safe_load(raw) if key.kind not in ("str", "host", "file", "path", "image", "prefix", "user", "group", "name", "memory", "url", "branch", "pubkey") else raw
                    except yaml.YAMLError:
                        value = raw
                    value = _convert(key, value, var)
                    (envs[env] if env else host)[key.name] = value
                    shown = "(set)" if "key" in key.name else value
                    overrides.append(f"override: {(env + ' ') if env else ''}{key.name} = {shown} ({var})")
    else:
        stray = sorted(v for v in environ if v.startswith("PIER_DEPLOY_"))
        if stray:
            overrides.append("ignored (the installed deploy file takes no overrides): " + ", ".join(stray))

    for env, values in envs.items():
        where = f"{path}:{values['_line']}"
        for key in keys_of(E):
            if key.required and values[key.name] is None:
                raise ConfigError(f"{where}: environments.{env}: {key.name} is required ({key.help})")
        n = values["replicas"]
        for slot in SLOTS:
            if len(values["ports." + slot]) != n:
                raise ConfigError(f"{where}: environments.{env}: ports.{slot} has {len(values['ports.' + slot])} ports for {n} replicas")
    seen = {}
    for env, values in envs.items():
        for slot in SLOTS:
            for p in values["ports." + slot]:
                if p in seen:
                    raise ConfigError(f"{path}:{values['_line']}: port {p} is used twice ({seen[p]} and {env} {slot})")
                seen[p] = f"{env} {slot}"
    prefixes = [v["prefix"] for v in envs.values()]
    if len(set(prefixes)) != len(prefixes):
        raise ConfigError(f"{path}: two environments have the prefix {prefixes[0]}")
    return Config(path, host, envs, overrides)


def env_name(arg):
    """prod (or GitHub's `production`) or staging; None otherwise."""
    return {"prod": "prod", "production": "prod", "staging": "staging"}.get(arg)


def valid_tag(tag):
    return bool(TAG_RE.match(tag or ""))


# ------------------------------------------------------------------ the reference
def reference_table():
    """Markdown: every key, its default, its override and what it does (docs/deploy-file.md)."""
    rows = ["| key | default | override | what |", "|---|---|---|---|"]
    for key in KEYS:
        full = ("host." if key.section == H else "environments.ENV.") + key.name
        if key.required:
            default = "required"
        elif isinstance(key.default, bool):
            default = "`true`" if key.default else "`false`"
        elif isinstance(key.default, list):
            default = "`[" + ", ".join(key.default) + "]`"
        elif key.default == "":
            default = "empty"
        else:
            default = f"`{key.default}`"
        var = key.env_var() if key.section == H else f"`{key.env_var()}`, `{key.env_var('ENV')}`"
        if key.section == H:
            var = f"`{var}`"
        rows.append(f"| `{full}` | {default} | {var} | {key.help} Expects {key.expected()}. |")
    return "\n".join(rows) + "\n"
