"""`pier-deploy setup`: provision the VM from a checkout, as root, under one host-wide lock.

Steps (STEPS below, in order; `setup --only a,b` runs some of them):
  tool      the tool itself: /usr/local/lib/pier-deploy (this checkout's deploy/pier-deploy,
            deploy/pierdeploy and the gate, deploy/host/pier-deploy-gate) and the root entry
            point /usr/local/sbin/pier-deploy, all root-owned
  file      the deploy file, checked, to /etc/pier/pier-deploy.yml (root-owned)
  dirs      state_dir (root, 0755)
  sockets   SOCKET_DIR/ENV/{blue,green}: uid 65532, group nginx_group, setgid 2750
  sudoers   the deploy user may run /usr/local/sbin/pier-deploy as root, nothing else
  keys      one deploy key per environment, bound to the gate with its environment
  secrets   SECRETS_DIR/ENV/NAME for every secret the deploy file names: root:65532 0640;
            metrics-token is made here (random) when missing, and copied for Prometheus
  files     HOST_FILES below: root-owned, checked, a unit reloaded only when a file changed
  nginx     /etc/nginx/pier from config/nginx (nginx -t before use; the old config put back
            when it is refused), the certificate (certbot --webroot) when there is none
  prometheus  config/prometheus -> /etc/prometheus (promtool before use), Alertmanager from
            /etc/pier/bootstrap.env (amtool); the exporters' configs (blackbox.yml, nginx.mtail:
            each checked by its program) and the public probe targets from PIER_DOMAIN
A prod deploy applies the nginx and prometheus steps again, from the files the release
ships in its image (/usr/share/pier/release/), extracted into a root-owned directory;
a staging deploy only checks them (apply_release).
"""

import fcntl
import filecmp
import grp
import os
import pwd
import secrets as pysecrets
import shutil
import subprocess
import sys
import tempfile

from . import config, engine

LIB = "/usr/local/lib/pier-deploy"
HOST_LOCK = "/run/lock/pier-host-setup.lock"


def say(msg):
    sys.stderr.write(f"pier-deploy setup: {msg}\n")
    sys.stderr.flush()


def run(args, **kw):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


class HostLock:
    """The one host-wide lock around everything that changes the host's config."""

    def __enter__(self):
        os.makedirs(os.path.dirname(HOST_LOCK), exist_ok=True)
        self.fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for the host lock ({HOST_LOCK}): another setup or prod deploy is changing the host's config")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def install_file(src, dst, mode=0o644, text=None):
    """Install SRC (or TEXT) at DST root-owned with MODE; True when it changed."""
    os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix=".pier-new.")
    with os.fdopen(fd, "w" if text is not None else "wb") as f:
        if text is not None:
            f.write(text)
        else:
            with open(src, "rb") as s:
                shutil.copyfileobj(s, f)
    os.chown(tmp, 0, 0)
    os.chmod(tmp, mode)
    if os.path.exists(dst) and filecmp.cmp(tmp, dst, shallow=False) and (os.stat(dst).st_mode & 0o7777) == mode:
        os.unlink(tmp)
        return False
    os.rename(tmp, dst)
    return True


# ------------------------------------------------------------------ steps
def step_sockets(cfg, checkout, deploy_file):
    engine.socket_dirs(cfg, None, owner="root")
    say(f"{cfg.host['socket_dir']}/{{{','.join(cfg.envs)}}}/{{blue,green}}: sockets of uid 65532, group {cfg.host['nginx_group']}")
    return 0


def step_dirs(cfg, checkout, deploy_file):
    os.makedirs(cfg.host["state_dir"], mode=0o755, exist_ok=True)
    os.chown(cfg.host["state_dir"], 0, 0)
    os.chmod(cfg.host["state_dir"], 0o755)
    return 0


def step_secrets(cfg, checkout, deploy_file):
    base = cfg.host["secrets_dir"]
    os.makedirs(base, mode=0o755, exist_ok=True)
    os.chown(base, 0, 0)
    rc = 0
    for env, e in cfg.envs.items():
        d = os.path.join(base, env)
        os.makedirs(d, mode=0o755, exist_ok=True)
        os.chown(d, 0, 0)
        os.chmod(d, 0o755)
        for name in e["secrets"]:
            path = os.path.join(d, name)
            if not os.path.exists(path):
                if name != "metrics-token":
                    say(f"{env} {name}: missing; put it in {path} (root:65532 0640)")
                    rc = 1
                    continue
                install_file(None, path, 0o640, text=pysecrets.token_hex(32) + "\n")
                say(f"{env} metrics-token: made a new one in {path}")
            os.chown(path, 0, engine.PIER_UID)
            os.chmod(path, 0o640)
            if name == "metrics-token":
                try:
                    gid = grp.getgrnam("prometheus").gr_gid
                except KeyError:
                    continue
                pdir = os.path.join(cfg.host["prometheus_dir"], "secrets")
                os.makedirs(pdir, exist_ok=True)
                os.chown(pdir, 0, gid)
                os.chmod(pdir, 0o750)
                copy = os.path.join(pdir, f"pier-{env}-metrics-token")
                install_file(path, copy, 0o640)
                os.chown(copy, 0, gid)
    return rc



# ------------------------------------------------------------------ the tool itself
TOOL_FILES = ["pier-deploy"]  # plus deploy/pierdeploy/*.py


def step_tool(cfg, checkout, deploy_file):
    src = os.path.join(checkout, "deploy")
    new = LIB + ".new"
    shutil.rmtree(new, ignore_errors=True)
    os.makedirs(os.path.join(new, "pierdeploy"), mode=0o755)
    install_file(os.path.join(src, "pier-deploy"), os.path.join(new, "pier-deploy"), 0o755)
    install_file(os.path.join(src, "host", "pier-deploy-gate"), os.path.join(new, "gate"), 0o755)
    for name in sorted(os.listdir(os.path.join(src, "pierdeploy"))):
        if name.endswith(".py"):
            install_file(os.path.join(src, "pierdeploy", name), os.path.join(new, "pierdeploy", name), 0o644)
    for d, _, _ in os.walk(new):
        os.chown(d, 0, 0)
        os.chmod(d, 0o755)
    same = os.path.isdir(LIB) and not filecmp.dircmp(new, LIB).diff_files and \
        set(os.listdir(new)) == set(os.listdir(LIB)) and \
        not filecmp.dircmp(os.path.join(new, "pierdeploy"), os.path.join(LIB, "pierdeploy")).diff_files and \
        set(os.listdir(os.path.join(new, "pierdeploy"))) == set(os.listdir(os.path.join(LIB, "pierdeploy")))
    if same:
        shutil.rmtree(new)
        say(f"tool: {LIB} unchanged")
    else:
        old = LIB + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.isdir(LIB):
            os.rename(LIB, old)
        os.rename(new, LIB)
        shutil.rmtree(old, ignore_errors=True)
        say(f"tool: installed in {LIB} (root-owned)")
    host = os.path.join(src, "host")
    install_file(os.path.join(host, "pier-deploy-root"), "/usr/local/sbin/pier-deploy", 0o755)
    if os.path.exists("/usr/local/bin/pier-deploy"):  # the deploy user's front before the gate
        os.unlink("/usr/local/bin/pier-deploy")
    return 0


def step_file(cfg, checkout, deploy_file):
    config.load(deploy_file, {}, overrides_allowed=False)  # checked (again) before it is installed
    os.makedirs("/etc/pier", mode=0o755, exist_ok=True)
    if install_file(deploy_file, "/etc/pier/pier-deploy.yml", 0o644):
        say("deploy file: installed /etc/pier/pier-deploy.yml")
    return 0


def step_sudoers(cfg, checkout, deploy_file):
    users = sorted({e["ssh.user"] for e in cfg.envs.values()})
    with open(os.path.join(checkout, "deploy", "host", "sudoers")) as f:
        template = f.read()
    text = template.split("DEPLOY_USER ALL")[0] + "".join(
        template[template.index("DEPLOY_USER ALL"):].replace("DEPLOY_USER", u) for u in users if _user_exists(u))
    fd, tmp = tempfile.mkstemp(prefix="pier-sudoers.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    p = run(["visudo", "-c", "-q", "-f", tmp])
    if p.returncode != 0:
        os.unlink(tmp)
        say(f"sudoers: visudo rejects it: {p.stdout.strip()}")
        return 1
    changed = install_file(tmp, "/etc/sudoers.d/pier-deploy", 0o440, )
    os.unlink(tmp)
    say(f"sudoers: {', '.join(users)} may run /usr/local/sbin/pier-deploy as root, nothing else"
        + ("" if changed else " (unchanged)"))
    return 0


def _user_exists(u):
    try:
        pwd.getpwnam(u)
        return True
    except KeyError:
        return False


# ------------------------------------------------------------------ deploy keys
KEYS_DIR = "/etc/ssh/pier-deploy"
KEYS_FILE = KEYS_DIR + "/authorized_keys"
SSHD_CONF = "/etc/ssh/sshd_config.d/60-pier-deploy.conf"


def step_keys(cfg, checkout, deploy_file):
    """One key per environment, each bound to the gate with its environment, in a root-owned
    authorized_keys that sshd reads for the deploy user instead of ~/.ssh (which that user
    could edit): restrict (no pty, no forwarding, no ~/.ssh/rc) and command= (whatever the
    client asks, the gate runs, with the request in SSH_ORIGINAL_COMMAND)."""
    users = sorted({e["ssh.user"] for e in cfg.envs.values() if _user_exists(e["ssh.user"])})
    lines = ["# Written by `pier-deploy setup` from the deploy file's ssh.public_key; do not edit here.",
             "# One key per environment; each may run only the gate, with its own environment."]
    for env, e in cfg.envs.items():
        if e["ssh.public_key"]:
            key = " ".join(e["ssh.public_key"].split()[:2])
            lines.append(f'restrict,command="{LIB}/gate {env}" {key} pier-deploy {env}')
    os.makedirs(KEYS_DIR, mode=0o755, exist_ok=True)
    os.chown(KEYS_DIR, 0, 0)
    os.chmod(KEYS_DIR, 0o755)
    keys_changed = install_file(None, KEYS_FILE, 0o644, text="\n".join(lines) + "\n")
    conf = ["# Written by `pier-deploy setup`: the deploy user's keys are root's to give", ""]
    for u in users:
        conf += [f"Match User {u}", f"    AuthorizedKeysFile {KEYS_FILE}", "    AuthorizedPrincipalsFile none",
                 "    PermitTTY no", "    X11Forwarding no", "    AllowTcpForwarding no", "    AllowAgentForwarding no",
                 "    AllowStreamLocalForwarding no", "    PermitTunnel no", "    PermitUserRC no", ""]
    old = open(SSHD_CONF).read() if os.path.exists(SSHD_CONF) else None
    conf_changed = install_file(None, SSHD_CONF, 0o644, text="\n".join(conf))
    p = run(["sshd", "-t"])
    if p.returncode != 0:
        if old is None:
            os.unlink(SSHD_CONF)
        else:
            install_file(None, SSHD_CONF, 0o644, text=old)
        say(f"keys: sshd -t rejects {SSHD_CONF}: put back: {p.stdout.strip()[-300:]}")
        return 1
    if conf_changed:
        run(["systemctl", "reload", "ssh"])
    envs = [env for env, e in cfg.envs.items() if e["ssh.public_key"]]
    say(f"keys: {KEYS_FILE}: a key for {', '.join(envs) or 'no environment'}, each bound to its environment"
        + ("" if keys_changed or conf_changed else " (unchanged)"))
    return 0


# ------------------------------------------------------------------ host files
# (source in deploy/host, destination, mode, check command or None, systemd unit to restart
# when it changed, or None). A row per file: host-alerts and others add theirs here.
HOST_FILES = [
    ("nginx-edge.conf", "/etc/nginx/conf.d/pier-edge.conf", 0o644, None, None),
    ("pier-tls.conf", "/etc/nginx/snippets/pier-tls.conf", 0o644, None, None),
    ("certbot-reload-nginx", "/etc/letsencrypt/renewal-hooks/deploy/50-pier-reload-nginx", 0o755, None, None),
    ("prometheus.default", "/etc/default/prometheus", 0o644, None, "prometheus"),
    ("alertmanager.default", "/etc/default/prometheus-alertmanager", 0o644, None, "prometheus-alertmanager"),
    # The exporters of the public/nginx/host alerts (docs/monitoring.md): systemd drop-ins
    # that keep them on 127.0.0.1; their configs come with the prometheus step.
    ("node-exporter.service.conf", "/etc/systemd/system/prometheus-node-exporter.service.d/pier.conf",
     0o644, None, "prometheus-node-exporter"),
    ("blackbox-exporter.service.conf", "/etc/systemd/system/prometheus-blackbox-exporter.service.d/pier.conf",
     0o644, None, "prometheus-blackbox-exporter"),
    ("mtail.service.conf", "/etc/systemd/system/mtail.service.d/pier.conf", 0o644, None, "mtail"),
]


NGINX_FILES_CHANGED = [False]


def step_files(cfg, checkout, deploy_file):
    rc = 0
    restart = []
    for src, dst, mode, check, unit in HOST_FILES:
        if install_file(os.path.join(checkout, "deploy", "host", src), dst, mode):
            say(f"files: {dst}")
            if dst.startswith("/etc/nginx/"):
                NGINX_FILES_CHANGED[0] = True  # step nginx reloads it
            if check and run(check + [dst]).returncode != 0:
                say(f"files: {dst} fails {' '.join(check)}")
                rc = 1
            if unit and unit not in restart:
                restart.append(unit)
    if any(dst.startswith("/etc/systemd/") for _, dst, _, _, unit in HOST_FILES if unit in restart):
        run(["systemctl", "daemon-reload"])
    if not os.path.exists("/etc/nginx/ffdhe2048.pem"):
        # RFC 7919's group, not generated: genpkey only writes the named parameters.
        run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
             "-out", "/etc/nginx/ffdhe2048.pem"])
    for unit in restart:
        run(["systemctl", "enable", unit])  # mtail's package leaves it disabled
        if run(["systemctl", "restart", unit]).returncode == 0:
            say(f"files: {unit} restarted")
        else:
            say(f"files: {unit} does not start: systemctl status {unit}")
            rc = 1
    return rc


# ------------------------------------------------------------------ nginx
def bootstrap():
    env = {}
    try:
        with open("/etc/pier/bootstrap.env") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    env[k.strip()] = v.strip()
    except OSError:
        pass
    if env.get("PIER_DOMAIN", "").startswith("REPLACE-ME"):
        env["PIER_DOMAIN"] = ""
    return env


CERT = "/etc/letsencrypt/live/pier/fullchain.pem"


def build_nginx(release, dst, base="/etc/nginx/pier"):
    """/etc/nginx/pier's files from a release's nginx/ directory, into DST (naming BASE):
    pier.conf with `listen 8080;` turned into the 443 server (or 127.0.0.1:8080 without a
    certificate yet), edge.conf, probes.conf, upstreams/ and main.conf."""
    import re
    os.makedirs(os.path.join(dst, "upstreams"), exist_ok=True)
    for name in sorted(os.listdir(os.path.join(release, "upstreams"))):
        if name.endswith(".conf"):
            shutil.copyfile(os.path.join(release, "upstreams", name), os.path.join(dst, "upstreams", name))
    if os.path.exists(CERT):
        listen = f"listen 443 ssl http2 default_server; include {base}/edge.conf;"
    else:
        listen = "listen 127.0.0.1:8080;"  # no certificate yet: the routes stay local
    with open(os.path.join(release, "pier.conf")) as f:
        text = f.read()
    text = re.sub(r"(?m)^([ \t]*)listen[ \t]+8080;", lambda m: m.group(1) + listen, text)
    text = re.sub(r"(?m)^([ \t]*include[ \t]+)upstreams/", lambda m: m.group(1) + base + "/upstreams/", text)
    with open(os.path.join(dst, "pier.conf"), "w") as f:
        f.write(text)
    shutil.copyfile(os.path.join(release, "edge.conf"), os.path.join(dst, "edge.conf"))
    # Load-balancer probes on port 80: pier-edge.conf includes {base}/probes*.conf.
    if os.path.exists(os.path.join(release, "probes.conf")):
        shutil.copyfile(os.path.join(release, "probes.conf"), os.path.join(dst, "probes.conf"))
    with open(os.path.join(dst, "main.conf"), "w") as f:
        f.write(f"include {base}/pier.conf;\naccess_log /var/log/nginx/pier.access.log pier_json;\n")
    for d, _, files in os.walk(dst):
        os.chmod(d, 0o755)
        for n in files:
            os.chmod(os.path.join(d, n), 0o644)


def _same_tree(a, b):
    if not os.path.isdir(a) or not os.path.isdir(b):
        return False
    c = filecmp.dircmp(a, b)
    if c.left_only or c.right_only or c.diff_files or c.funny_files:
        return False
    return all(_same_tree(os.path.join(a, s), os.path.join(b, s)) for s in c.common_dirs)


def apply_nginx(release, what):
    """Install a release's nginx config as /etc/nginx/pier; nginx -t first; reload on change."""
    live = "/etc/nginx/pier"
    new = tempfile.mkdtemp(prefix=".pier-new.", dir="/etc/nginx")
    build_nginx(release, new)
    if _same_tree(new, live) and os.path.exists("/etc/nginx/conf.d/pier.conf") \
            and not os.path.exists("/etc/nginx/sites-enabled/default"):
        shutil.rmtree(new)
        if not NGINX_FILES_CHANGED[0]:
            say("nginx: config unchanged, not reloaded")
            return 0
        NGINX_FILES_CHANGED[0] = False
        p = run(["nginx", "-t"])
        if p.returncode != 0:
            say(f"nginx: nginx -t rejects the new host files (conf.d, snippets): not reloaded: {p.stdout.strip()[-300:]}")
            return 1
        run(["systemctl", "reload-or-restart", "nginx"])
        say("nginx: its host files changed: checked (nginx -t) and reloaded")
        return 0
    old = tempfile.mkdtemp(prefix=".pier-old.", dir="/etc/nginx")
    if os.path.isdir(live):
        shutil.rmtree(old)
        os.rename(live, old)
    os.rename(new, live)
    with open("/etc/nginx/conf.d/pier.conf", "w") as f:
        f.write("include /etc/nginx/pier/main.conf; # pier-deploy setup\n")
    try:
        os.unlink("/etc/nginx/sites-enabled/default")
    except FileNotFoundError:
        pass
    p = run(["nginx", "-t"])
    if p.returncode == 0:
        shutil.rmtree(old, ignore_errors=True)
        NGINX_FILES_CHANGED[0] = False
        run(["systemctl", "reload-or-restart", "nginx"])
        say(f"nginx: new config from {what} checked (nginx -t) and reloaded")
        return 0
    for line in p.stdout.strip().splitlines():
        say(f"  nginx -t| {line}")
    shutil.rmtree(live)
    if os.path.isdir(old) and os.listdir(old):
        os.rename(old, live)
    else:
        shutil.rmtree(old, ignore_errors=True)
        os.unlink("/etc/nginx/conf.d/pier.conf")
    say("nginx: nginx -t rejects the new config: the running one is kept")
    return 1


def preview_nginx(release, what):
    """Check a release's nginx config against this host without applying it (staging)."""
    tmp = tempfile.mkdtemp(prefix="pier-nginx-preview.")
    try:
        build_nginx(release, os.path.join(tmp, "pier"), base=os.path.join(tmp, "pier"))
        with open("/etc/nginx/nginx.conf") as f:
            main = f.read()
        main = main.replace("include /etc/nginx/conf.d/*.conf;",
                            f"include /etc/nginx/conf.d/pier-edge.conf; include {tmp}/pier/main.conf;")
        main = main.replace("include /etc/nginx/sites-enabled/*;", "")
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(main)
        p = run(["nginx", "-t", "-c", os.path.join(tmp, "nginx.conf")])
        build_nginx(release, os.path.join(tmp, "as-live"))  # as it would be installed, to compare
        same = _same_tree(os.path.join(tmp, "as-live"), "/etc/nginx/pier")
        return p.returncode == 0, p.stdout.strip(), same
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def step_nginx(cfg, checkout, deploy_file):
    rc = apply_nginx(os.path.join(checkout, "config", "nginx"), "this checkout")
    if not os.path.exists(CERT):
        b = bootstrap()
        domain = b.get("PIER_DOMAIN", "")
        if not domain:
            say("PIER_DOMAIN is not set in /etc/pier/bootstrap.env: no certificate, no HTTPS")
            return rc
        os.makedirs("/var/www/acme", mode=0o755, exist_ok=True)
        args = ["certbot", "certonly", "--non-interactive", "--agree-tos", "--webroot", "-w", "/var/www/acme",
                "--cert-name", "pier", "-d", domain, "--server",
                b.get("ACME_SERVER") or "https://acme-v02.api.letsencrypt.org/directory"]
        args += ["-m", b["ACME_EMAIL"]] if b.get("ACME_EMAIL") else ["--register-unsafely-without-email"]
        p = run(args)
        if p.returncode == 0:
            say(f"certificate for {domain} from {b.get('ACME_SERVER')}")
            rc = apply_nginx(os.path.join(checkout, "config", "nginx"), "this checkout") or rc
        else:
            say(f"certbot failed for {domain}: no HTTPS yet; the next setup tries again: {p.stdout.strip()[-300:]}")
    return rc


# ------------------------------------------------------------------ Prometheus, Alertmanager
def build_prometheus(cfg, release, dst):
    """prometheus.yml for the VM: one job per environment with its token file, the job label
    kept "pier" for the alerts; rules as pier-alerts.yml; alerting to the local Alertmanager."""
    import yaml
    with open(os.path.join(release, "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    jobs = []
    secrets_dir = os.path.join(cfg.host["prometheus_dir"], "secrets")
    for sc in prom.get("scrape_configs", []):
        if sc.get("job_name") != "pier":
            jobs.append(sc)
            continue
        envs = {}
        for tg in sc.get("static_configs", []):
            envs.setdefault(tg.get("labels", {}).get("env", "none"), []).append(tg)
        for env, groups in envs.items():
            job = dict(sc, job_name="pier-" + env, static_configs=groups)
            job["authorization"] = {"type": "Bearer", "credentials_file": os.path.join(secrets_dir, f"pier-{env}-metrics-token")}
            job["relabel_configs"] = [{"target_label": "job", "replacement": "pier"}] + sc.get("relabel_configs", [])
            jobs.append(job)
    prom["scrape_configs"] = jobs
    prom["rule_files"] = ["pier-alerts.yml"]
    prom["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]}
    with open(os.path.join(dst, "prometheus.yml"), "w") as f:
        f.write("# Written by pier-deploy from a release's config/prometheus/prometheus.yml; do not edit here.\n")
        yaml.safe_dump(prom, f, sort_keys=False)
    shutil.copyfile(os.path.join(release, "alerts.yml"), os.path.join(dst, "pier-alerts.yml"))


def apply_prometheus(cfg, release, what):
    pdir = cfg.host["prometheus_dir"]
    if not os.path.isdir(pdir):
        say(f"prometheus: no {pdir}: skipped")
        return 0
    new = tempfile.mkdtemp(prefix=".pier-new.", dir=pdir)
    try:
        build_prometheus(cfg, release, new)
        live_cfg, live_rules = os.path.join(pdir, "prometheus.yml"), os.path.join(pdir, "pier-alerts.yml")
        if os.path.exists(live_cfg) and os.path.exists(live_rules) and \
                filecmp.cmp(os.path.join(new, "prometheus.yml"), live_cfg, shallow=False) and \
                filecmp.cmp(os.path.join(new, "pier-alerts.yml"), live_rules, shallow=False):
            say("prometheus: config unchanged, not reloaded")
            return 0
        p = run(["promtool", "check", "config", os.path.join(new, "prometheus.yml")])
        if p.returncode != 0:
            for line in p.stdout.strip().splitlines():
                say(f"  promtool| {line}")
            say("prometheus: promtool rejects the new config: the running one is kept")
            return 1
        install_file(os.path.join(new, "pier-alerts.yml"), live_rules, 0o644)
        install_file(os.path.join(new, "prometheus.yml"), live_cfg, 0o644)
        run(["systemctl", "reload-or-restart", "prometheus"])
        say(f"prometheus: new config from {what} checked (promtool) and reloaded")
        return 0
    finally:
        shutil.rmtree(new, ignore_errors=True)


def apply_alertmanager(cfg):
    pdir = cfg.host["prometheus_dir"]
    url = bootstrap().get("PIER_ALERT_WEBHOOK_URL", "")
    lines = ["# Written by pier-deploy setup from /etc/pier/bootstrap.env; do not edit here.", "route:",
             "  receiver: pier", "  group_by: [alertname, env]", "  group_wait: 10s", "  group_interval: 30s",
             "  repeat_interval: 4h", "receivers:", "  - name: pier"]
    if url:
        lines += ["    webhook_configs:", f"      - url: '{url}'", "        send_resolved: true"]
    fd, tmp = tempfile.mkstemp(prefix=".alertmanager.", dir=pdir)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    live = os.path.join(pdir, "alertmanager.yml")
    if os.path.exists(live) and filecmp.cmp(tmp, live, shallow=False):
        os.unlink(tmp)
        say("alertmanager: config unchanged, not reloaded")
        return 0
    p = run(["amtool", "check-config", tmp])
    if p.returncode != 0:
        os.unlink(tmp)
        say(f"alertmanager: amtool rejects the new config: the running one is kept: {p.stdout.strip()[-200:]}")
        return 1
    os.rename(tmp, live)
    run(["systemctl", "reload-or-restart", "prometheus-alertmanager"])
    say("alertmanager: new config checked (amtool) and reloaded" + (f" (alerts go to {url})" if url else ""))
    return 0


# ------------------------------------------------------------------ exporters
# A release's exporter configs (config/prometheus/blackbox.yml, nginx.mtail): checked by the
# program that reads them, installed, the service reloaded only when one changed. And the
# probe targets, which name the domain: prometheus.yml reads them through file_sd (Prometheus
# notices a changed file by itself).
EXPORTERS = [
    # (release file, installed as, check command (the file's directory or path appended), unit)
    ("blackbox.yml", "/etc/prometheus/pier-blackbox.yml",
     ["prometheus-blackbox-exporter", "--config.check", "--config.file"], "prometheus-blackbox-exporter"),
    ("nginx.mtail", "/etc/mtail/pier-nginx.mtail",
     ["mtail", "--compile_only", "--address", "127.0.0.1", "--port", "0", "--progs"], "mtail"),
]
EXPORTER_PACKAGES = ["prometheus-node-exporter", "prometheus-blackbox-exporter", "mtail"]


def public_targets(cfg, domain):
    """The file_sd files of the jobs public (the health URL of each environment, label env)
    and public-tls/public-cert (DOMAIN:443)."""
    health = "".join(f"- targets: ['https://{domain}{cfg.env(e)['prefix']}/health']\n  labels: {{env: {e}}}\n"
                     for e in sorted(cfg.envs))
    head = "# Written by pier-deploy setup from PIER_DOMAIN in /etc/pier/bootstrap.env; do not edit here.\n"
    return {"pier-public-health.yml": head + health, "pier-public-tls.yml": head + f"- targets: ['{domain}:443']\n"}


def apply_exporters(cfg, release, what):
    missing = [p for p in EXPORTER_PACKAGES
               if run(["dpkg-query", "-W", "-f=${Status}", p]).stdout.strip() != "install ok installed"]
    if missing:
        say(f"exporters: {', '.join(missing)} not installed (config/cloud-init.yaml installs them; "
            f"on an older VM: sudo apt-get install {' '.join(missing)}): the public, nginx and host alerts are blind")
        return 1
    rc = 0
    for name, dst, check, unit in EXPORTERS:
        src = os.path.join(release, name)
        if not os.path.exists(src):
            continue
        tmp = tempfile.mkdtemp(prefix="pier-exporter-check.")
        try:
            shutil.copyfile(src, os.path.join(tmp, os.path.basename(dst)))
            target = tmp if check[-1] == "--progs" else os.path.join(tmp, os.path.basename(dst))
            p = run(check + [target])
            if p.returncode != 0:
                for line in p.stdout.strip().splitlines()[-5:]:
                    say(f"  {check[0]}| {line}")
                say(f"exporters: {name} from {what} is refused: {dst} is kept")
                rc = 1
                continue
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if install_file(src, dst, 0o644):
            run(["systemctl", "reload-or-restart", unit])
            say(f"exporters: {dst} from {what} checked and {unit} reloaded")
    domain = bootstrap().get("PIER_DOMAIN", "")
    if domain:
        for name, text in public_targets(cfg, domain).items():
            if install_file(None, os.path.join(cfg.host["prometheus_dir"], name), 0o644, text=text):
                say(f"exporters: {name}: the public URL https://{domain}/ probed from here")
    else:
        say("exporters: PIER_DOMAIN is not set in /etc/pier/bootstrap.env: nothing probes the public URL")
    return rc


def step_prometheus(cfg, checkout, deploy_file):
    rc = apply_prometheus(cfg, os.path.join(checkout, "config", "prometheus"), "this checkout")
    rc = apply_exporters(cfg, os.path.join(checkout, "config", "prometheus"), "this checkout") or rc
    return apply_alertmanager(cfg) or rc


STEPS = [("tool", step_tool), ("file", step_file), ("dirs", step_dirs), ("sockets", step_sockets),
         ("secrets", step_secrets), ("sudoers", step_sudoers), ("keys", step_keys), ("files", step_files),
         ("nginx", step_nginx),
         ("prometheus", step_prometheus)]


def remote_host(cfg):
    hosts = {e["ssh.host"] for e in cfg.envs.values()} - {"", "local"}
    return sorted(hosts)[0] if hosts else None


def setup(cfg, checkout, deploy_file, only=None):
    if os.geteuid() != 0:
        say("run it as root on the VM")
        return engine.EXIT_FAILED
    names = [n for n, _ in STEPS]
    for n in only or []:
        if n not in names:
            say(f"unknown step {n}{config.did_you_mean(n, names)}; steps: {', '.join(names)}")
            return engine.EXIT_USAGE
    rc = 0
    with HostLock():
        for name, fn in STEPS:
            if only and name not in only:
                continue
            try:
                r = fn(cfg, checkout, deploy_file)
            except (OSError, config.ConfigError, subprocess.SubprocessError) as e:
                say(f"step {name}: {e}")
                r = 1
            if r:
                say(f"step {name}: failed")
                rc = engine.EXIT_FAILED
    say("done" if rc == 0 else "done, with failures (above)")
    return rc


# What `setup` over SSH sends: the tool, its host files, and the host-wide config.
SHIPPED = ["deploy", "config/nginx", "config/prometheus"]


def setup_remote(cfg, checkout, deploy_file):
    """Run setup on the VM from this checkout, over SSH as an administrator (PIER_DEPLOY_ADMIN,
    a user with sudo; PIER_DEPLOY_ADMIN_KEY: its key's text, else ssh's own): the files go as
    a tar on stdin into a root-owned temporary directory, which setup installs from."""
    from . import remote
    admin = os.environ.get("PIER_DEPLOY_ADMIN", "")
    if not config.USER_RE.match(admin):
        say("setup over SSH needs PIER_DEPLOY_ADMIN: your administrator login on the VM (with sudo)")
        return engine.EXIT_USAGE
    env = next(e for e in cfg.envs if cfg.env(e)["ssh.host"] not in ("", "local"))
    r = remote.target(cfg, env)
    rel = os.path.relpath(os.path.abspath(deploy_file), checkout)
    files = SHIPPED + ([rel] if not rel.startswith("..") and not rel.startswith("deploy/") else [])
    if rel.startswith(".."):
        say(f"{deploy_file} is not inside the checkout {checkout}")
        return engine.EXIT_USAGE
    script = ("set -eu; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; tar -x -C \"$d\" -f -; "
              f"/usr/bin/python3 -I \"$d/deploy/pier-deploy\" --here --file \"$d/{rel}\" setup")
    tar = subprocess.Popen(["tar", "-C", checkout, "--owner=0", "--group=0", "-cf", "-", *files], stdout=subprocess.PIPE)
    old = os.umask(0o077)
    tmp = tempfile.mkdtemp(prefix="pier-deploy-ssh-")
    os.umask(old)
    try:
        key = os.environ.get("PIER_DEPLOY_ADMIN_KEY")
        saved = os.environ.get("DEPLOY_SSH_KEY")
        if key:
            os.environ["DEPLOY_SSH_KEY"] = key
        elif saved is not None:
            del os.environ["DEPLOY_SSH_KEY"]
        try:
            cmd = r._ssh(tmp, user=admin)
        finally:
            if saved is not None:
                os.environ["DEPLOY_SSH_KEY"] = saved
        say(f"{admin}@{r.host}: setup from {checkout}")
        ssh = subprocess.Popen(cmd + ["sudo -n sh -c " + shlex_quote(script)], stdin=tar.stdout)
        tar.stdout.close()  # ssh holds the pipe now: if it dies, tar gets EPIPE instead of blocking
        rc = ssh.wait()
        if tar.wait() != 0 and rc == 0:
            rc = engine.EXIT_FAILED
        return rc if rc >= 0 else 255
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def shlex_quote(s):
    import shlex
    return shlex.quote(s)


# ------------------------------------------------------------------ a release's host files
RELEASE_DIR = "/usr/share/pier/release"


def extract_release(cfg, image, tag, out):
    """The files a release ships for the host (RELEASE_DIR in its image: nginx/, prometheus/,
    pier-deploy.yml), copied out of the image without running it, into a root-owned
    STATE_DIR/releases/TAG; None when the image has none."""
    dst = os.path.join(cfg.host["state_dir"], "releases", tag)
    os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)  # the copy is made beside it: one rename
    p = run(["docker", "create", image])
    if p.returncode != 0:
        out.say(f"host config: docker create {image} failed: {p.stdout.strip()[-200:]}")
        return None
    cid = p.stdout.strip().splitlines()[-1]
    try:
        tmp = tempfile.mkdtemp(prefix=".new.", dir=os.path.dirname(dst))
        c = subprocess.run(["docker", "cp", f"{cid}:{RELEASE_DIR}/.", tmp], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if c.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            out.say(f"host config: {image} ships no {RELEASE_DIR}: nothing to apply")
            return None
        for d, dirs, files in os.walk(tmp):
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
            for n in files:
                fp = os.path.join(d, n)
                if os.path.islink(fp):
                    os.unlink(fp)
                    continue
                os.chown(fp, 0, 0)
                os.chmod(fp, 0o644)
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        shutil.rmtree(dst, ignore_errors=True)
        os.rename(tmp, dst)
        return dst
    finally:
        run(["docker", "rm", "-f", cid])


def deploy_file_drift(release_text, installed_text):
    """The dotted keys whose values differ between the deploy file a release ships and the one
    this host runs with (comments and layout ignored); [] when they agree. A file that does not
    parse is reported as the key "(the whole file)"."""
    import yaml

    try:
        a, b = yaml.safe_load(release_text), yaml.safe_load(installed_text)
    except yaml.YAMLError:
        return ["(the whole file)"]
    diffs = []

    def walk(x, y, prefix):
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k), y.get(k), f"{prefix}.{k}" if prefix else str(k))
        elif x != y:
            diffs.append(prefix or "(the whole file)")

    walk(a, b, "")
    return diffs


def report_deploy_file_drift(cfg, rel, tag, out):
    """Say when the release's deploy file is not the one this host runs with: the installed
    copy governs (setup installs it), so a change in the repository reaches the host only
    with `pier-deploy setup`."""
    shipped = os.path.join(rel, "pier-deploy.yml")
    if not os.path.isfile(shipped) or not cfg.path or not os.path.isfile(cfg.path):
        return
    try:
        with open(shipped) as f, open(cfg.path) as g:
            drift = deploy_file_drift(f.read(), g.read())
    except OSError:
        return
    if drift:
        shown = ", ".join(drift[:8]) + (f" and {len(drift) - 8} more" if len(drift) > 8 else "")
        out.say(f"deploy file: {tag} ships one that differs from {cfg.path} in {shown}; "
                f"this deploy uses {cfg.path} (run `pier-deploy setup` to install the new one)")


def apply_release(cfg, env, image, out):
    """A deploy's host-wide config from the release: applied by a prod deploy (nginx -t,
    promtool first, under the host lock), only checked by a staging one."""
    tag = image.rsplit(":", 1)[1]
    rel = extract_release(cfg, image, tag, out)
    if rel is None:
        return
    report_deploy_file_drift(cfg, rel, tag, out)
    global say
    saved = say
    say = lambda m: out.say("host config: " + m)  # noqa: E731
    try:
        if env == "prod":
            with HostLock():
                rc = apply_nginx(os.path.join(rel, "nginx"), f"{tag}'s image")
                rc = apply_prometheus(cfg, os.path.join(rel, "prometheus"), f"{tag}'s image") or rc
                rc = apply_exporters(cfg, os.path.join(rel, "prometheus"), f"{tag}'s image") or rc
            if rc:
                raise engine.DeployFailed(f"the host-wide config {tag} ships was refused (above); nothing changed")
        else:
            ok, msg, same = preview_nginx(os.path.join(rel, "nginx"), tag)
            if not ok:
                for line in msg.splitlines():
                    out.say(f"  nginx -t| {line}")
                raise engine.DeployFailed(f"the nginx config {tag} ships fails nginx -t on this host; a prod deploy would refuse it")
            out.say("host config: staging does not apply host-wide config; " +
                    ("the release's nginx config is the running one" if same else
                     "the release's nginx config differs from the running one: it passes nginx -t here (preview) and a prod deploy applies it"))
    finally:
        say = saved
