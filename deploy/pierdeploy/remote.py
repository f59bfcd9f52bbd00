"""The client side over SSH: an operator's machine or a CI runner driving the VM.

Nothing is uploaded and no shell script is sent: the remote command is `pier-deploy VERB
ARGS`, every argument already checked (ENV a known environment, TAG an image tag), and on
the VM the root-owned pier-deploy that `setup` installed does the work with its own deploy
file. The host key is checked strictly against DEPLOY_KNOWN_HOSTS (the text) or the
environment's ssh.known_hosts file alone; an unknown or changed key stops everything.
DEPLOY_SSH_KEY (the private key's text) is written to a private temporary directory,
removed on exit; without it ssh uses the caller's own keys. Registry credentials
(REGISTRY_USER, REGISTRY_TOKEN) go on stdin as one JSON line, never on a command line.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile


def private(path):
    """A new file only this user may read (ssh refuses a key others can read)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w")


class Remote:
    def __init__(self, cfg, env, host, user, port, known_hosts_file):
        self.cfg, self.env, self.host, self.user, self.port = cfg, env, host, user, port
        self.known_hosts_file = known_hosts_file

    def _ssh(self, tmp, user=None):
        kh = os.path.join(tmp, "known_hosts")
        if os.environ.get("DEPLOY_KNOWN_HOSTS"):
            with private(kh) as f:
                f.write(os.environ["DEPLOY_KNOWN_HOSTS"].replace("\r", "").rstrip("\n") + "\n")
        elif self.known_hosts_file:
            shutil.copyfile(self.known_hosts_file, kh)
        else:
            raise SystemExit("pier-deploy: no host key to check the VM against: set DEPLOY_KNOWN_HOSTS "
                             f"(ssh-keyscan output, checked out of band) or environments.{self.env}.ssh.known_hosts")
        lookup = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        if subprocess.run(["ssh-keygen", "-F", lookup, "-f", kh], stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"pier-deploy: the known hosts have no key for {lookup} (get it with ssh-keyscan -p {self.port} "
                             f"{self.host}, and check its fingerprint on the VM's console)")
        args = ["ssh", "-o", f"UserKnownHostsFile={kh}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "CheckHostIP=no", "-o", "UpdateHostKeys=no",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR", "-p", str(self.port)]
        if os.environ.get("DEPLOY_SSH_KEY"):
            key = os.path.join(tmp, "key")
            with private(key) as f:
                f.write(os.environ["DEPLOY_SSH_KEY"].replace("\r", "").rstrip("\n") + "\n")
            args += ["-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
        return args + [f"{user or self.user}@{self.host}"]

    def run(self, verb, args, opts):
        words = ["pier-deploy", verb, *args]
        if opts.get("no_watch"):
            words.append("--no-watch")
        if verb == "logs":
            words += ["--lines", str(opts["lines"])]
        stdin = ""
        if verb in ("deploy", "rollback") and os.environ.get("REGISTRY_TOKEN"):
            user = os.environ.get("REGISTRY_USER", "")
            if not user:
                sys.stderr.write("pier-deploy: REGISTRY_TOKEN needs REGISTRY_USER\n")
                return 2
            stdin = json.dumps({"registry": {"user": user, "password": os.environ["REGISTRY_TOKEN"],
                                             "server": self.cfg.env(self.env)["image"].split("/", 1)[0]}}) + "\n"
        old = os.umask(0o077)
        tmp = tempfile.mkdtemp(prefix="pier-deploy-ssh-")
        os.umask(old)
        try:
            cmd = self._ssh(tmp) + [" ".join(words)]
            sys.stderr.write(f"pier-deploy: {self.user}@{self.host}:{self.port}: {' '.join(words)}\n")
            sys.stderr.flush()
            p = subprocess.run(cmd, input=stdin, text=True)
            return p.returncode if p.returncode >= 0 else 255  # ssh killed: the session is gone
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def target(cfg, env):
    """A Remote for ENV, or None when it runs on this machine."""
    e = cfg.env(env)
    host = e["ssh.host"]
    if host in ("", "local"):
        return None
    kh = e["ssh.known_hosts"]
    if kh and not os.path.isabs(kh):
        kh = os.path.join(os.path.dirname(os.path.abspath(cfg.path)), kh)
    return Remote(cfg, env, host, e["ssh.user"], e["ssh.port"], kh or None)
