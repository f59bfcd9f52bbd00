"""What pier-deploy does on the VM: deploy, rollback, status, history, logs (docs/deploys.md).

Each environment has two slots, blue and green; a slot is `replicas` pier containers (a, b).
nginx reaches the live slot through SOCKET_DIR/ENV/current/{a,b}.sock, `current` being a
symlink to the slot's directory; a deploy starts the idle slot, checks it, renames a new link
over `current` (nginx is never reloaded), watches it, and retires the old slot.

State is the live system: the `current` link and the containers' labels (state.py). The
history file records every attempt and decides nothing. A deploy that was killed at any
point is found out and finished by the next one (`reconcile`): stray containers in the idle
slot removed, keep-alive restored on the live slot, a watch that never ended reported.

Signals during a deploy: SIGHUP and a closed output (SIGPIPE/EPIPE: the SSH session
dropped, the CI job cancelled) are ignored: the deploy goes on to its verdict, writing to
its log (STATE_DIR/deploy.log); SIGUSR1 ends the watch early and keeps the release;
SIGINT/SIGTERM switch back during the watch, and before the switch remove the new slot.
"""

import fcntl
import grp
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from . import provenance, state, watch
from .config import SLOTS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ROLLED_BACK = 0, 1, 2, 3
PIER_UID = 65532


class DeployFailed(Exception):
    pass


class Interrupted(Exception):
    pass


class Out:
    """Messages for people: to stderr while it is there, always to the deploy log."""

    def __init__(self, log_path=None, prog="pier-deploy"):
        self.prog = prog
        self.stderr_ok = True
        self.log = None
        if log_path:
            try:
                os.makedirs(os.path.dirname(log_path), mode=0o755, exist_ok=True)
                self.log = open(log_path, "a", encoding="utf-8")
            except OSError:
                self.log = None

    def say(self, msg):
        line = f"{self.prog}: {msg}\n"
        if self.stderr_ok:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                self.stderr_ok = False  # the session went away: the deploy goes on
        if self.log:
            try:
                self.log.write(time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + line)
                self.log.flush()
            except OSError:
                pass


def iso_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run(args, check=False, timeout=None, input=None):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                       input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise DeployFailed(f"{' '.join(args[:3])} ... failed: {p.stderr.strip()[-300:]}")
    return p


def docker(*args, timeout=120, input=None):
    return run(["docker", *args], timeout=timeout, input=input)


# ------------------------------------------------------------------ locks
class Lock:
    """An flock on STATE_DIR/locks/NAME.lock, with who holds it in NAME.owner."""

    def __init__(self, cfg, name):
        self.dir = os.path.join(cfg.host["state_dir"], "locks")
        self.name = name
        self.fd = None

    def acquire(self, out, wait_s, what, say_every=None):
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        self.fd = os.open(os.path.join(self.dir, self.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        next_say = 0.0
        say_every = say_every or float(os.environ.get("PIER_DEPLOY_LOCK_SAY", "5"))
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= wait_s:
                    os.close(self.fd)
                    self.fd = None
                    raise DeployFailed(f"another deploy holds the {self.name} lock (waited {wait_s} s): {self.owner()}")
                if waited >= next_say:
                    out.say(f"waiting for the {self.name} lock, held by {self.owner() or 'another deploy'} ({int(waited)} s of {wait_s} s)")
                    next_say = waited + say_every
                time.sleep(0.2)
        with open(os.path.join(self.dir, self.name + ".owner"), "w") as f:
            f.write(f"pid {os.getpid()}, {what} since {iso_now()}\n")
        return self

    def owner(self):
        try:
            with open(os.path.join(self.dir, self.name + ".owner")) as f:
                return f.read().strip()
        except OSError:
            return ""

    def held_by_someone(self):
        """True when another process holds it now (for `status`)."""
        path = os.path.join(self.dir, self.name + ".lock")
        if not os.path.exists(path):
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ------------------------------------------------------------------ the history (audit only)
HISTORY_COLUMNS = ("time", "env", "action", "tag", "result", "slot", "ports", "image", "message")


def history_path(cfg):
    return os.path.join(cfg.host["state_dir"], "history.tsv")


def history_add(cfg, env, action, tag, result, slot, ports, image, message):
    msg = " ".join(str(message).split())
    os.makedirs(cfg.host["state_dir"], mode=0o755, exist_ok=True)
    with open(history_path(cfg), "a", encoding="utf-8") as f:
        f.write("\t".join([iso_now(), env, action, tag, result, slot, ports, image, msg]) + "\n")


def history_lines(cfg, env=None):
    try:
        with open(history_path(cfg), encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        return []
    return [r for r in rows if env is None or (len(r) > 1 and r[1] == env)]


# ------------------------------------------------------------------ reading the live system
def container_name(cfg, env, slot, replica):
    return f"{cfg.host['name_prefix']}-{env}-{slot}-{replica}"


def env_dir(cfg, env):
    return os.path.join(cfg.host["socket_dir"], env)


def read_link(cfg, env):
    try:
        t = os.readlink(os.path.join(env_dir(cfg, env), "current"))
    except OSError:
        return None
    return t if t in SLOTS else None


def inspect(names):
    if not names:
        return []
    p = docker("inspect", *names)
    try:
        docs = json.loads(p.stdout or "[]")
    except ValueError:
        docs = []
    out = []
    for d in docs:
        st = d.get("State", {})
        out.append({
            "name": d.get("Name", "").lstrip("/"), "id": d.get("Id", ""),
            "labels": d.get("Config", {}).get("Labels") or {},
            "running": bool(st.get("Running")), "status": st.get("Status", "?"),
            "health": (st.get("Health") or {}).get("Status", "none"), "exit": st.get("ExitCode"),
            "restarts": d.get("RestartCount", 0), "pid": st.get("Pid", 0),
            "started": st.get("StartedAt", ""), "image_id": d.get("Image", ""),
            "config_image": d.get("Config", {}).get("Image", ""),
            "health_test": (d.get("Config", {}).get("Healthcheck") or {}).get("Test"),
        })
    return out


def read_state(cfg, env):
    names = [container_name(cfg, env, s, r) for s in SLOTS for r in ("a", "b", "c", "d")]
    p = docker("ps", "-a", "--format", "{{.Names}}")
    existing = set(p.stdout.split())
    found = inspect([n for n in names if n in existing])
    slots = {s: state.Slot(s, [c for c in found if c["labels"].get("pier.slot") == s
                               and c["labels"].get("pier.env") == env]) for s in SLOTS}
    return state.EnvState(env, read_link(cfg, env), slots)


# ------------------------------------------------------------------ metrics, restarts, nginx's log
def metrics_token(cfg, env):
    if "metrics-token" not in cfg.env(env)["secrets"]:
        return None
    try:
        with open(os.path.join(cfg.host["secrets_dir"], env, "metrics-token"), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def read_metrics(cfg, env, port, token):
    """(Sample, None) or (None, why)."""
    url = f"http://127.0.0.1:{port}{cfg.env(env)['prefix']}/metrics"
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            text = r.read(4 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return None, f"{url}: HTTP {e.code}" + (" (the metrics token is missing or wrong)" if e.code == 401 else "")
    except (OSError, urllib.error.URLError) as e:
        return None, f"{url}: {getattr(e, 'reason', e)}"
    s = watch.parse_metrics(text)
    return (s, None) if s else (None, f"{url}: not pier's metrics")


class NginxLog:
    """New lines of nginx's access log since start() (a rotation starts it over)."""

    def __init__(self, path):
        self.path, self.pos = path, None

    def start(self):
        try:
            self.pos = os.path.getsize(self.path) if self.path else None
        except OSError:
            self.pos = 0 if self.path else None

    def read(self):
        if self.pos is None:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(0, 2)
                if f.tell() < self.pos:
                    self.pos = 0
                f.seek(self.pos)
                data = f.read(64 << 20)
        except OSError:
            return []
        cut = data.rfind(b"\n") + 1
        self.pos += cut
        return data[:cut].decode("utf-8", "replace").splitlines()


# ------------------------------------------------------------------ socket directories
def socket_dirs(cfg, out, owner="root"):
    """SOCKET_DIR/ENV/{blue,green}: uid 65532, group nginx_group, setgid 2750 (root only)."""
    gid = grp.getgrnam(cfg.host["nginx_group"]).gr_gid
    base = cfg.host["socket_dir"]
    os.makedirs(base, mode=0o755, exist_ok=True)
    try:
        import pwd
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        uid = 0
    for env in cfg.envs:
        d = os.path.join(base, env)
        os.makedirs(d, exist_ok=True)
        os.chown(d, uid, gid)
        os.chmod(d, 0o750)
        for slot in SLOTS:
            s = os.path.join(d, slot)
            os.makedirs(s, exist_ok=True)
            os.chown(s, PIER_UID, gid)
            os.chmod(s, 0o2750)


def slot_dir_ok(cfg, env, slot):
    d = os.path.join(env_dir(cfg, env), slot)
    try:
        st = os.stat(d)
        group = grp.getgrgid(st.st_gid).gr_name
    except (OSError, KeyError):
        return False
    return st.st_uid == PIER_UID and group == cfg.host["nginx_group"] and stat.S_IMODE(st.st_mode) == 0o2750


def switch_link(cfg, env, slot):
    """Point ENV/current at SLOT in one rename(2): a connect() sees the old slot or the new."""
    d = env_dir(cfg, env)
    tmp = os.path.join(d, f".current.{os.getpid()}")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(slot, tmp)
    os.rename(tmp, os.path.join(d, "current"))


def port_taken(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def version_matches(tag, body):
    """A TAG that is a commit SHA must match the reported commit (the shorter, >= 7 hex
    digits, starts the longer); any other TAG must equal the version (a leading v aside)."""
    try:
        j = json.loads(body)
    except ValueError:
        return False, "", ""
    v, c = str(j.get("version", "")), str(j.get("commit", ""))
    import re
    if re.match(r"^[0-9a-fA-F]{7,40}$", tag):
        a, b = c.lower(), tag.lower()
        if len(a) > len(b):
            a, b = b, a
        return len(a) >= 7 and re.match(r"^[0-9a-f]+$", a) is not None and b.startswith(a), v, c
    return bool(v) and v.lstrip("v") == tag.lstrip("v"), v, c


def http_get(url, timeout=3):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read(1 << 20).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return None


# ------------------------------------------------------------------ the deploy
class Deploy:
    def __init__(self, cfg, env, out, action="deploy", tag=None, no_watch=False, registry=None, host_config=None):
        self.cfg, self.env, self.out, self.action = cfg, env, out, action
        self.e = cfg.env(env)
        self.tag, self.no_watch, self.registry = tag, no_watch, registry
        self.host_config = host_config  # callable(cfg, env, image, out) for the release's host files
        self.replicas = cfg.replicas(env)
        self.phase = "init"
        self.sig = None

    # -- signals
    def _on_signal(self, signum, _frame):
        self.sig = signum
        if self.phase in ("init", "starting") and signum in (signal.SIGINT, signal.SIGTERM):
            raise Interrupted(signal.Signals(signum).name)

    def run(self):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_signal)
        cfg, env = self.cfg, self.env
        self.t_start = time.monotonic()
        lock = Lock(cfg, env)
        try:
            lock.acquire(self.out, cfg.host["lock_timeout_s"], f"{self.action} {self.tag or '(rollback)'}")
        except DeployFailed as e:
            self.out.say(f"FAILED: {env} {self.tag or ''}: {e}")
            return EXIT_FAILED
        try:
            return self._locked()
        finally:
            lock.release()

    def _locked(self):
        cfg, env, out = self.cfg, self.env, self.out
        self.reconcile()
        st = read_state(cfg, env)
        live = st.live()
        self.old_slot = st.link if live is not None and live.running() else None
        self.old_tag = live.tag() if self.old_slot else None
        live_chain = state.parse_chain(live.label("pier.previous")) if self.old_slot else []
        try:
            tag, self.chain = state.next_chain(self.action, self.old_tag, live_chain, self.tag)
        except ValueError as e:
            out.say(f"FAILED: {env} rollback: {e}")
            return EXIT_FAILED
        if self.action == "rollback" and self.tag is None:
            out.say(f"{env}: live release {self.old_tag}, rolling back to {tag} (the release live before it)")
        self.tag = tag
        self.image = f"{self.e['image']}:{tag}"
        self.new_slot = st.idle_name() if self.old_slot else "blue"
        self.new_names = {r: container_name(cfg, env, self.new_slot, r) for r in self.replicas}
        self.new_ports = dict(zip(self.replicas, cfg.slot_ports(env, self.new_slot)))
        self.old_names = [container_name(cfg, env, self.old_slot, r) for r in self.replicas] if self.old_slot else []
        self.old_ports = cfg.slot_ports(env, self.old_slot) if self.old_slot else []
        self.port_list = ",".join(str(p) for p in self.new_ports.values())
        self.watch_s = self.e["watch.window_s"]
        if self.no_watch or self.action == "rollback":
            self.watch_s = 0
        if self.old_slot:
            out.say(f"{self.action} {env} {tag}: live slot {self.old_slot} ({self.old_tag}), new slot {self.new_slot} (127.0.0.1:{self.port_list})")
        else:
            out.say(f"{self.action} {env} {tag}: first deploy of {env} (no live slot yet), new slot {self.new_slot} (127.0.0.1:{self.port_list})")
        self.token = metrics_token(cfg, env)
        # The old slot's recent traffic, for the p99 baseline: from now to the switch.
        self.old_track = watch.Tracker()
        if self.old_slot and self.watch_s:
            for r, p in zip(self.replicas, self.old_ports):
                s, _ = read_metrics(cfg, env, p, self.token)
                if s:
                    self.old_track.start(r, s)
        self.fail_msg = None
        try:
            self._prepare()
        except (DeployFailed, Interrupted) as e:
            msg = str(e) if isinstance(e, DeployFailed) else f"interrupted ({e})"
            out.say(f"FAILED: {env} {tag}: {msg}")
            if self.phase == "starting":
                docker("rm", "-f", *self.new_names.values())
                out.say(f"removed {', '.join(self.new_names.values())}; {self.old_slot or 'nothing'} keeps serving{(' ' + self.old_tag) if self.old_tag else ''}")
            history_add(cfg, env, self.action, tag, "failed", self.new_slot, self.port_list, self.image, msg)
            return EXIT_FAILED
        return self._switch_and_watch()

    # -- 1-3: image, new slot, health, checks
    def _prepare(self):
        cfg, env, out, e = self.cfg, self.env, self.out, self.e
        img_lock = Lock(cfg, "images")
        img_lock.acquire(out, 300, f"{self.action} {self.tag}")
        try:
            self._image()
            if self.env == "prod":
                self._on_main()
            if self.host_config:
                self.host_config(cfg, env, self.image, out)
            self._start()
        finally:
            img_lock.release()
        self._health()

    def _image(self):
        out, image = self.out, self.image
        if docker("image", "inspect", image).returncode == 0:
            out.say(f"image {image} is here")
        else:
            out.say(f"pulling {image}")
            env = dict(os.environ)
            tmp = None
            try:
                if self.registry:
                    tmp = tempfile.mkdtemp(prefix="pier-deploy-docker-")
                    env["DOCKER_CONFIG"] = tmp
                    server = self.registry.get("server") or image.split("/", 1)[0]
                    p = subprocess.run(["docker", "login", server, "-u", self.registry["user"], "--password-stdin"],
                                       input=self.registry["password"], text=True, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    if p.returncode != 0:
                        raise DeployFailed(f"docker login {server} failed: {p.stderr.strip()[-200:]}")
                    out.say(f"logged in to {server} for this pull (a throwaway DOCKER_CONFIG)")
                try:
                    p = subprocess.run(["docker", "pull", "-q", image], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, timeout=self.e["pull_timeout_s"])
                except subprocess.TimeoutExpired:
                    raise DeployFailed(f"docker pull {image} took more than {self.e['pull_timeout_s']} s")
                if p.returncode != 0:
                    raise DeployFailed(f"cannot pull {image}: {p.stderr.strip()[-200:]} (is the tag pushed? is the VM allowed to pull?)")
            finally:
                if tmp:
                    subprocess.run(["rm", "-rf", tmp])
        p = docker("image", "inspect", "-f", "{{range .RepoDigests}}{{println .}}{{end}}", image)
        repo = self.e["image"]
        self.digest = next((l.split("@", 1)[1] for l in p.stdout.split() if l.startswith(repo + "@")), "")

    def _on_main(self):
        """Only main's commits reach production (provenance.py)."""
        url, branch = self.cfg.host["repo_url"], self.cfg.host["main_branch"]
        if not url:
            self.out.say(f"WARNING: host.repo_url is empty: {self.tag} is not checked against {branch}")
            return
        p = docker("image", "inspect", "-f", '{{index .Config.Labels "org.opencontainers.image.revision"}}', self.image)
        try:
            commit = provenance.commit_of(self.tag, p.stdout.strip() if p.returncode == 0 else "")
            full = provenance.check(os.path.join(self.cfg.host["state_dir"], "repo.git"), url, branch, commit)
        except (provenance.NotOnMain, subprocess.TimeoutExpired, OSError) as e:
            raise DeployFailed(f"not deployed to prod: {e}")
        self.out.say(f"commit {full[:12]} is on {branch} of {url}")

    def _start(self):
        cfg, env, out, e = self.cfg, self.env, self.out, self.e
        new_dir = os.path.join(env_dir(cfg, env), self.new_slot)
        if not slot_dir_ok(cfg, env, self.new_slot):
            if os.geteuid() == 0:
                socket_dirs(cfg, out, owner="root")
            if not slot_dir_ok(cfg, env, self.new_slot):
                raise DeployFailed(f"{new_dir} is not a socket directory for uid {PIER_UID} and group {cfg.host['nginx_group']} (mode 2750): run pier-deploy setup")
        for n in self.new_names.values():
            if docker("inspect", n).returncode == 0:
                out.say(f"removing the idle slot's old container {n}")
                docker("rm", "-f", n)
        for r, p in self.new_ports.items():
            if port_taken(p):
                raise DeployFailed(f"port {p} ({env} {self.new_slot} {r}) is taken by something that is not {self.new_names[r]}")
        args = []
        if e["secrets"]:
            sdir = os.path.join(cfg.host["secrets_dir"], env)
            if os.path.isdir(sdir):
                args += ["-v", f"{sdir}:/run/secrets:ro"]
                if self.token:
                    args += ["-e", "PIER_METRICS_TOKEN_FILE=/run/secrets/metrics-token"]
                out.say(f"secrets: {sdir} mounted read-only at /run/secrets ({', '.join(e['secrets'])})")
            else:
                out.say(f"WARNING: no {sdir}: the secrets {', '.join(e['secrets'])} are not there (pier-deploy setup makes them)")
        self.stop_timeout = (e["shutdown.grace_ms"] + e["shutdown.drain_ms"] + 999) // 1000 + 5
        self.phase = "starting"
        self.t_run = time.monotonic()
        self.cids = {}
        mem = e["limits.memory"]
        for r in self.replicas:
            p = docker("run", "-d", "--name", self.new_names[r],
                       "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                       "--user", f"{PIER_UID}:{PIER_UID}", "--restart", "no",
                       "--memory", mem, "--memory-swap", mem, "--pids-limit", str(e["limits.pids"]),
                       "--cpus", f"{e['limits.cpus']:g}", *args,
                       "-v", f"{new_dir}:/run/pier",
                       "-e", f"PIER_ENV={env}", "-e", f"PIER_PREFIX={e['prefix']}",
                       "-e", f"PIER_LISTEN_PORT={e['container_port']}",
                       "-e", f"PIER_SHUTDOWN_GRACE_MS={e['shutdown.grace_ms']}",
                       "-e", f"PIER_SHUTDOWN_DRAIN_MS={e['shutdown.drain_ms']}",
                       "-e", f"PIER_LISTEN_UNIX=/run/pier/{r}.sock", "-e", "PIER_LISTEN_UNIX_MODE=0660",
                       "-p", f"127.0.0.1:{self.new_ports[r]}:{e['container_port']}",
                       "--label", f"pier.env={env}", "--label", f"pier.slot={self.new_slot}",
                       "--label", f"pier.replica={r}", "--label", f"pier.tag={self.tag}",
                       "--label", f"pier.image={self.e['image']}", "--label", f"pier.previous={state.format_chain(self.chain)}",
                       "--label", f"pier.action={self.action}", "--label", f"pier.stop-timeout={self.stop_timeout}",
                       "--label", f"pier.deployed={iso_now()}", self.image)
            if p.returncode != 0:
                raise DeployFailed(f"docker run {self.image} ({self.new_names[r]}) failed: {p.stderr.strip()[-300:]}")
            self.cids[r] = p.stdout.strip()
        out.say(f"started {' and '.join(f'{self.new_names[r]} ({self.cids[r][:12]})' for r in self.replicas)} from {self.image} "
                f"(memory {mem}, pids {e['limits.pids']}, cpus {e['limits.cpus']:g})")

    def _show(self, r):
        n = self.new_names[r]
        p = docker("logs", "--tail", "20", self.cids[r])
        for line in (p.stdout + p.stderr).splitlines()[-20:]:
            self.out.say(f"  {n}| {line}")

    def _health(self):
        cfg, env, out, e = self.cfg, self.env, self.out, self.e
        info = inspect([self.cids[self.replicas[0]]])
        test = info[0]["health_test"] if info else None
        probe = []
        if isinstance(test, list) and test and test[0] == "CMD":
            probe = test[1:]
        elif isinstance(test, list) and test and test[0] == "CMD-SHELL":
            probe = ["/bin/sh", "-c", test[1]]
        deadline = time.monotonic() + e["health.timeout_s"]
        healthy = set()
        while len(healthy) < len(self.replicas):
            for r in self.replicas:
                if r in healthy:
                    continue
                c = inspect([self.cids[r]])
                if not c:
                    raise DeployFailed(f"container {self.new_names[r]} disappeared")
                c = c[0]
                took = time.monotonic() - self.t_run
                if c["running"] and c["health"] == "healthy":
                    healthy.add(r)
                    out.say(f"{self.new_names[r]} healthy after {took:.1f} s")
                    continue
                if c["running"] and c["health"] == "starting" and probe and \
                        docker("exec", self.cids[r], *probe, timeout=10).returncode == 0:
                    healthy.add(r)
                    out.say(f"{self.new_names[r]} healthy (its health command, run by the deploy) after {took:.1f} s")
                    continue
                if c["health"] == "none":
                    raise DeployFailed(f"{self.image} has no HEALTHCHECK: cannot tell when it is ready")
                if c["status"] not in ("running", "created"):
                    self._show(r)
                    raise DeployFailed(f"{self.new_names[r]} exited with status {c['exit']} before it was healthy (its last log lines are above)")
                if c["health"] == "unhealthy":
                    self._show(r)
                    raise DeployFailed(f"{self.new_names[r]} is unhealthy")
                if time.monotonic() >= deadline:
                    self._show(r)
                    raise DeployFailed(f"{self.new_names[r]} not healthy after {e['health.timeout_s']}s (health: {c['health']})")
            if len(healthy) < len(self.replicas):
                time.sleep(0.2)
        new_dir = os.path.join(env_dir(cfg, env), self.new_slot)
        for r in self.replicas:
            s = os.path.join(new_dir, f"{r}.sock")
            try:
                st = os.stat(s)
            except OSError:
                raise DeployFailed(f"{self.new_names[r]} is healthy but {s} is not a socket")
            got = f"{grp.getgrgid(st.st_gid).gr_name} {stat.S_IMODE(st.st_mode):o}"
            if not stat.S_ISSOCK(st.st_mode) or got != f"{cfg.host['nginx_group']} 660":
                raise DeployFailed(f"{s} has group and mode '{got}', not '{cfg.host['nginx_group']} 660': nginx's workers could not connect")
        for r in self.replicas:
            url = f"http://127.0.0.1:{self.new_ports[r]}{e['prefix']}/version"
            body = None
            for _ in range(5):
                body = http_get(url)
                if body:
                    break
                time.sleep(0.5)
            if not body:
                raise DeployFailed(f"GET {url} failed")
            ok, v, c = version_matches(self.tag, body)
            if not ok:
                raise DeployFailed(f"{url} reports version '{v}' commit '{c}', not {self.tag}")
        out.say(f"both replicas report version {v}, commit {c}; sockets {new_dir}/{{{','.join(self.replicas)}}}.sock")
        if docker("update", "--restart", "unless-stopped", *self.cids.values()).returncode != 0:
            raise DeployFailed("docker update --restart unless-stopped failed")

    # -- 4-7: switch, watch, retire, record
    def _switch_and_watch(self):
        cfg, env, out = self.cfg, self.env, self.out
        if self.watch_s and not self.old_slot:
            out.say(f"first deploy of {env}: no watch (there is no old slot to switch back to)")
            self.watch_s = 0
        if self.watch_s:
            self.new_track = watch.Tracker()
            bad = []
            for r in self.replicas:
                s, why = read_metrics(cfg, env, self.new_ports[r], self.token)
                if s:
                    self.new_track.start(r, s)
                else:
                    bad.append(f"{self.new_names[r]}: {why}")
            old_fig = watch.Tracker()
            for r, p in zip(self.replicas, self.old_ports):
                s, _ = read_metrics(cfg, env, p, self.token)
                if s and r in self.old_track.last:
                    self.old_track.add(r, s)
            self.old_n = self.old_track.requests
            self.old_p99 = self.old_track.p99() if self.old_n else None
            if bad and self.e["watch.on_unreadable"] == "fail":
                self.phase = "starting"
                msg = "cannot read the new replicas' metrics, so the watch could not judge them: " + "; ".join(bad)
                out.say(f"FAILED: {env} {self.tag}: {msg}")
                docker("rm", "-f", *self.new_names.values())
                out.say(f"removed {', '.join(self.new_names.values())}; {self.old_slot} keeps serving {self.old_tag}")
                history_add(cfg, env, self.action, self.tag, "failed", self.new_slot, self.port_list, self.image, msg)
                return EXIT_FAILED
            self.restarts0 = {c["name"]: c["restarts"] for c in inspect(list(self.new_names.values()))}
            self.nginx = NginxLog(cfg.host["nginx_access_log"])
            self.nginx.start()
        switch_link(cfg, env, self.new_slot)
        self.phase = "switched"
        t_switch = time.monotonic()
        out.say(f"switched: {env_dir(cfg, env)}/current -> {self.new_slot} after {time.monotonic() - self.t_start:.1f} s (nginx not reloaded)")
        note = f"previous: {self.old_tag or 'none'}{(' on ' + self.old_slot) if self.old_slot else ''}; digest: {self.digest or 'none (not from a registry)'}"
        verdict = None
        if self.watch_s:
            decision, verdict, fig = self._watch(t_switch)
            if decision == "back":
                switch_link(cfg, env, self.old_slot)
                out.say(f"switched back: {env_dir(cfg, env)}/current -> {self.old_slot} after {time.monotonic() - t_switch:.1f} s (nginx not reloaded)")
                docker("kill", "-s", "USR2", *self.old_names)
                out.say(f"VERDICT: {env} {self.tag} rolled back: {verdict}; {fig.line()}; {self.old_slot} ({self.old_tag}) serves again")
                history_add(cfg, env, self.action, self.tag, "rolled-back", self.new_slot, self.port_list, self.image,
                            f"rolled back: {verdict}; {fig.line()}; {note}")
                self._clear_marker()
                self._stop(self.new_slot, self.tag, list(self.new_names.values()))
                return EXIT_ROLLED_BACK
            out.say(f"VERDICT: {env} {self.tag} {verdict}: {fig.line()}")
            note = f"{verdict}: {fig.line()}; {note}"
        history_add(cfg, env, self.action, self.tag, "success", self.new_slot, self.port_list, self.image, note)
        self._clear_marker()
        if self.old_slot:
            self._stop(f"old {self.old_slot}", self.old_tag, self.old_names)
        if self.action == "deploy":
            self.prune()  # a rollback never prunes: the releases it leaves may be gone back to by TAG
        out.say(f"OK: {env} runs {self.tag} on {self.new_slot} (127.0.0.1:{self.port_list}) after {time.monotonic() - self.t_start:.1f} s; "
                f"rollback: pier-deploy rollback {env}")
        return EXIT_OK

    def _marker(self):
        return os.path.join(self.cfg.host["state_dir"], f"{self.env}.watch")

    def _clear_marker(self):
        try:
            os.unlink(self._marker())
        except FileNotFoundError:
            pass

    def _watch(self, t_switch):
        cfg, env, out, e = self.cfg, self.env, self.out, self.e
        with open(self._marker(), "w") as f:
            f.write(json.dumps({"pid": os.getpid(), "tag": self.tag, "slot": self.new_slot, "old_slot": self.old_slot,
                                "old_tag": self.old_tag, "since": iso_now()}) + "\n")
        # nginx caches upstream connections by socket path, which did not change: SIGUSR1
        # makes the old replicas answer with Connection: close, so those connections end after
        # their next request and all traffic reaches the new slot, while the old slot stays
        # ready to take it back.
        if docker("kill", "-s", "USR1", *self.old_names).returncode != 0:
            out.say("WARNING: could not send SIGUSR1 to the old slot's replicas")
        old = "-" if self.old_p99 is None else f"{self.old_p99:.1f} ms over {self.old_n} requests before the switch"
        out.say(f"watching {self.tag} for {self.watch_s}s (every {e['watch.interval_s']}s): switch back on a restart, unreadable metrics "
                f"({e['watch.on_unreadable']}), 5xx > {e['watch.max_5xx_ratio'] * 100:g}% over >= {e['watch.min_requests']} requests or "
                f">= {e['watch.max_errors']} 5xx below that, p99 > {e['watch.p99_factor']:g}x the old slot's ({old}) and > "
                f"{e['watch.p99_min_ms']:g} ms; end early: kill -USR1 {os.getpid()}")
        edge = 0
        deadline = t_switch + self.watch_s
        while True:
            end = min(time.monotonic() + e["watch.interval_s"], deadline)
            while time.monotonic() < end and self.sig is None:
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))
            unreadable = []
            for r in self.replicas:
                s, why = read_metrics(cfg, env, self.new_ports[r], self.token)
                if s:
                    self.new_track.add(r, s)
                else:
                    unreadable.append(f"{self.new_names[r]}: {why}")
            now = inspect(list(self.new_names.values()))
            # A replica that restarted, or died and was not restarted (Docker restarts only
            # one that ran 10 s), counts; so does one that is gone.
            restarts = sum(max(0, c["restarts"] - self.restarts0.get(c["name"], 0)) + (0 if c["running"] else 1)
                           for c in now) + len(self.new_names) - len(now)
            edge += watch.nginx_errors(self.nginx.read(), e["prefix"])
            elapsed = time.monotonic() - t_switch
            fig = watch.Figures(self.new_track.requests, self.new_track.errors, edge, restarts, unreadable,
                                self.new_track.p99(), self.old_n, self.old_p99, elapsed)
            out.say(f"watch {elapsed:.1f}/{self.watch_s} s: {fig.line()}" + (f"; unreadable: {'; '.join(unreadable)}" if unreadable else ""))
            final = time.monotonic() >= deadline
            decision, reason = watch.judge(e, fig, final)
            if decision:
                return decision, reason, fig
            if self.sig in (signal.SIGINT, signal.SIGTERM):
                return "back", f"interrupted during the watch ({signal.Signals(self.sig).name})", fig
            if self.sig == signal.SIGUSR1:
                return "keep", "kept: the watch was ended early (SIGUSR1)", fig

    def _stop(self, what, tag, names):
        names = [n for n in names if docker("inspect", n).returncode == 0]
        if not names:
            return
        t = time.monotonic()
        info = inspect(names)
        timeout = info[0]["labels"].get("pier.stop-timeout", "") if info else ""
        timeout = timeout if timeout.isdigit() else str(self.stop_timeout)
        if docker("stop", "--time", timeout, *names, timeout=int(timeout) + 60).returncode != 0:
            self.out.say(f"WARNING: docker stop {' '.join(names)} failed")
        codes = ", ".join(f"{c['name']} {c['exit']}" for c in inspect(names))
        self.out.say(f"stopped the {what} slot ({tag}) after {time.monotonic() - t:.1f} s, exit status: {codes}")

    def reconcile(self):
        """Finish what an interrupted deploy of this environment left (we hold its lock)."""
        cfg, env, out = self.cfg, self.env, self.out
        d = env_dir(cfg, env)
        if os.path.isdir(d):
            for n in os.listdir(d):
                if n.startswith(".current."):
                    os.unlink(os.path.join(d, n))
        try:
            with open(self._marker()) as f:
                m = json.loads(f.read() or "{}")
        except (OSError, ValueError):
            m = None
        st = read_state(cfg, env)
        if m:
            out.say(f"reconcile: a deploy of {m.get('tag')} (pid {m.get('pid')}) was interrupted during its watch (since {m.get('since')}); "
                    f"the link says {st.link} is live")
            history_add(cfg, env, "reconcile", m.get("tag", "?"), "interrupted", m.get("slot", ""), "", "",
                        f"the deploy's watch never ended (killed?); live: {st.link} ({st.live().tag() if st.live() else 'none'})")
            self._clear_marker()
        live = st.live()
        if live is not None and live.containers:
            stopped = [c["name"] for c in live.containers if not c["running"]]
            if stopped:
                out.say(f"reconcile: live slot {st.link} has stopped replicas {', '.join(stopped)}: starting them")
                docker("start", *stopped)
            docker("kill", "-s", "USR2", *[c["name"] for c in live.running()])  # keep-alive on (it may have been left off)
        idle = st.slots.get(st.idle_name()) if st.link else None
        if idle and idle.running():
            names = [c["name"] for c in idle.running()]
            out.say(f"reconcile: the idle slot {idle.name} runs {', '.join(names)} ({idle.tag()}), left by an interrupted deploy: stopping them")
            docker("stop", "--time", "15", *names, timeout=120)

    def prune(self):
        cfg, out = self.cfg, self.out
        lock = Lock(cfg, "images")
        try:
            lock.acquire(out, 300, "prune")
        except DeployFailed:
            return
        try:
            states = [read_state(cfg, e) for e in cfg.envs]
            keep = state.images_to_keep(states, cfg.host["keep_releases"]) | {self.tag}
            known = {(r[7].rsplit(":", 1)[0], r[3]) for r in history_lines(cfg) if len(r) > 7 and ":" in r[7]}
            repo = self.e["image"]
            p = docker("image", "ls", repo, "--format", "{{.Repository}}:{{.Tag}}")
            for ref in p.stdout.split():
                t = ref.rsplit(":", 1)[1]
                if t == "<none>" or t in keep or (repo, t) not in known:
                    continue
                if docker("rmi", ref).returncode == 0:
                    out.say(f"pruned {ref}")
        finally:
            lock.release()


# ------------------------------------------------------------------ status, history, logs
def status(cfg, envs, out_stream=sys.stdout):
    rc = 0
    for env in envs:
        st = read_state(cfg, env)
        live = st.live()
        w = out_stream.write
        if live is None or not live.containers:
            w(f"{env}: nothing live" + (f" (current -> {st.link})" if st.link else "") + "\n")
        else:
            chain = state.parse_chain(live.label("pier.previous"))
            w(f"{env}: {live.tag()} live on {st.link} since {live.label('pier.deployed')} ({live.label('pier.action') or 'deploy'}); "
              f"rollback goes to {chain[0] if chain else '(nothing: give a TAG)'}\n")
            for c in live.containers:
                w(f"  {c['name']}: {c['status']}, health {c['health']}, restarts {c['restarts']}, image {c['config_image']}\n")
            if chain:
                w(f"  live before it: {' '.join(chain)}\n")
        idle = st.slots.get(st.idle_name()) if st.link else None
        if idle and idle.containers:
            w(f"  idle {idle.name}: {idle.tag() or '?'} ({', '.join(c['name'] + ' ' + c['status'] for c in idle.containers)})\n")
        lock = Lock(cfg, env)
        marker = os.path.join(cfg.host["state_dir"], f"{env}.watch")
        if lock.held_by_someone():
            w(f"  a deploy is running: {lock.owner()}\n")
        elif os.path.exists(marker):
            try:
                m = json.load(open(marker))
            except ValueError:
                m = {}
            w(f"  the deploy of {m.get('tag')} was interrupted during its watch (started {m.get('since')}): "
              f"{st.link} is live and was not judged; the next deploy reconciles\n")
        for p in st.problems(cfg.replicas(env), deploying=lock.held_by_someone()):
            w(f"  problem: {p}\n")
            rc = 1
        last = history_lines(cfg, env)[-1:]
        if last:
            w(f"  last attempt (history): {' '.join(last[0][:6])}\n")
    return rc


def history(cfg, env, n=20, out_stream=sys.stdout):
    for r in history_lines(cfg, env)[-n:]:
        out_stream.write("  ".join(r) + "\n")
    return 0


def logs(cfg, env, n=100, out_stream=sys.stdout):
    st = read_state(cfg, env)
    live = st.live()
    if live is None:
        out_stream.write(f"{env}: nothing live\n")
        return 1
    for c in live.containers:
        p = docker("logs", "--tail", str(n), c["name"])
        for line in (p.stdout + p.stderr).splitlines():
            out_stream.write(f"{c['name']}| {line}\n")
    return 0
