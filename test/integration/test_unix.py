"""listen.unix: pier on a Unix socket beside its TCP port — against the real binary, with curl.

What a proxy on the same host sees: requests over the socket (curl --unix-socket and raw
keep-alive), the socket's mode and group, TCP still answering at the same time; and each way
the socket can fail to come up, with the message an operator gets: a missing or unwritable
directory, a path that is not a socket, a socket another process serves, a stale socket left
by a killed process (removed and reused), an unknown group or one pier is not a member of.
Then reload (mode applied, path change refused with a warning) and the drain (the file is
removed, in-flight requests finish).
"""
import grp
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import unittest

import harness  # noqa: E402
from harness import PIER_BIN, Pier, Reader, build_request, parse_responses, read_until_close

CURL = shutil.which("curl")
SETPRIV = shutil.which("setpriv")


def cfg(path, extra=""):
    return ("environment: test\nlisten:\n  host: 127.0.0.1\n  port: 0\n  unix: %s\n%sprefix: /prod\n"
            % (path, extra))


def unix_connect(path, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def unix_request(path, method, target, body=b"", headers=None):
    s = unix_connect(path)
    try:
        s.sendall(build_request(method, target, headers, body, close=True))
        rs = parse_responses(read_until_close(s, 5))
        return rs[0]
    finally:
        s.close()


def run_pier(config_text, tmp, timeout=10, user=None):
    """Start pier expecting it to refuse: returns (exit code, stderr)."""
    path = os.path.join(tmp, "bad.yaml")
    with open(path, "w") as f:
        f.write(config_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIER_")}
    cmd = [PIER_BIN, "--config", path]
    if user is not None:
        cmd = [SETPRIV, "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    return r.returncode, r.stderr


class Serving(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pier-unix-")
        self.sock = os.path.join(self.tmp, "pier.sock")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    @unittest.skipIf(CURL is None, "curl is not installed")
    def test_curl_over_the_socket_and_tcp_at_once(self):
        with Pier(cfg(self.sock)) as p:
            line = p.wait_log(lambda j: j.get("msg") == "listening")
            self.assertEqual(line["unix"], self.sock)
            st = os.stat(self.sock)
            self.assertTrue(stat.S_ISSOCK(st.st_mode))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o660, "default listen.unix_mode is 0660")
            r = subprocess.run([CURL, "-sS", "--unix-socket", self.sock, "-w", "\n%{http_code}",
                                "http://pier/prod/health"], capture_output=True, text=True, timeout=10)
            body, code = r.stdout.rsplit("\n", 1)
            self.assertEqual(code, "200", r.stderr)
            self.assertEqual(json.loads(body)["status"], "pass")
            r = subprocess.run([CURL, "-sS", "--unix-socket", self.sock, "-H", "Content-Type: application/json",
                                "--data", '{"n":1}', "http://pier/prod/echo"],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(json.loads(r.stdout)["received"], {"n": 1}, r.stderr)
            # TCP answers at the same time (probes, Prometheus scrapes)
            self.assertEqual(p.get("/prod/health").status, 200)
            access = p.wait_log(lambda j: j.get("msg") == "request" and j.get("path") == "/prod/echo")
            self.assertEqual(access["remote"], "unix")

    def test_keepalive_and_pipelining_over_the_socket(self):
        with Pier(cfg(self.sock, "  unix_mode: \"0600\"\n")) as p:
            self.assertEqual(stat.S_IMODE(os.stat(self.sock).st_mode), 0o600)
            s = unix_connect(self.sock)
            rd = Reader(s)
            for i in range(5):
                s.sendall(build_request("GET", "/prod/health"))
                self.assertEqual(rd.next().status, 200)
            s.sendall(build_request("GET", "/prod/health") * 3)
            for _ in range(3):
                self.assertEqual(rd.next().status, 200)
            s.close()
            self.assertIsNone(p.proc.poll())

    def test_group_is_applied(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to give the socket to another group")
        g = grp.getgrgid(65534) if 65534 in [x.gr_gid for x in grp.getgrall()] else None
        if g is None:
            self.skipTest("no group 65534 here")
        with Pier(cfg(self.sock, "  unix_group: %s\n" % g.gr_name)):
            self.assertEqual(os.stat(self.sock).st_gid, 65534)

    def test_two_workers_share_the_socket(self):
        with Pier(cfg(self.sock, "") + "workers: 2\n") as p:
            for _ in range(20):
                self.assertEqual(unix_request(self.sock, "GET", "/prod/health").status, 200)
            p.signal(signal.SIGTERM)
            self.assertEqual(p.wait_exit(5), 0)
            self.assertFalse(os.path.exists(self.sock), "the socket file is removed at shutdown")


class Refusals(unittest.TestCase):
    """Each one exits 1 before serving, with a message naming the path and the reason."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pier-unix-")
        os.chmod(self.tmp, 0o755)
        self.sock = os.path.join(self.tmp, "pier.sock")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_missing_directory(self):
        path = os.path.join(self.tmp, "no", "such", "dir", "pier.sock")
        code, err = run_pier(cfg(path), self.tmp)
        self.assertEqual(code, 1)
        self.assertIn("cannot listen on unix:%s: No such file or directory" % path, err)

    def test_config_check_rejects_bad_values(self):
        for value, needle in (("relative.sock", "listen.unix: expected an absolute path"),
                              ("/run/pier/", "listen.unix: expected a socket path, not a directory"),
                              ("/" + "x" * 120, "listen.unix: expected a string of at most 107 characters")):
            code, err = run_pier(cfg(value), self.tmp)
            self.assertEqual(code, 1, value)
            self.assertIn(needle, err)
        code, err = run_pier(cfg(self.sock, "  unix_mode: \"0999\"\n"), self.tmp)
        self.assertEqual(code, 1)
        self.assertIn("listen.unix_mode: expected an octal permission mode like 0660", err)
        code, err = run_pier(cfg(self.sock, "  unix_group: \"a b\"\n"), self.tmp)
        self.assertEqual(code, 1)
        self.assertIn("listen.unix_group: expected a group name or number", err)

    def test_unknown_group(self):
        code, err = run_pier(cfg(self.sock, "  unix_group: no-such-group-here\n"), self.tmp)
        self.assertEqual(code, 1)
        self.assertIn('listen.unix_group: no group "no-such-group-here" on this system', err)
        self.assertFalse(os.path.exists(self.sock), "a socket that could not be set up is removed")

    def test_not_a_socket_is_left_alone(self):
        with open(self.sock, "w") as f:
            f.write("precious\n")
        code, err = run_pier(cfg(self.sock), self.tmp)
        self.assertEqual(code, 1)
        self.assertIn("cannot listen on unix:%s: it exists and is not a socket" % self.sock, err)
        with open(self.sock) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_socket_in_use_by_another_process(self):
        with Pier(cfg(self.sock)) as first:
            code, err = run_pier(cfg(self.sock), self.tmp)
            self.assertEqual(code, 1)
            self.assertIn("cannot listen on unix:%s: another process accepts connections on it" % self.sock, err)
            # the first one still serves on its socket
            self.assertEqual(unix_request(self.sock, "GET", "/prod/health").status, 200)
            self.assertIsNone(first.proc.poll())

    def test_owner_with_a_full_queue_is_refused_at_once(self):
        # the path's owner is alive but accepts nothing and its queue is full: a blocking
        # probe would wait for it forever (with pier's TCP port already bound)
        owner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        owner.bind(self.sock)
        owner.listen(0)
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        waiting.setblocking(False)
        waiting.connect(self.sock)  # fills the queue of a backlog-0 listener
        try:
            t0 = time.time()
            try:
                code, err = run_pier(cfg(self.sock), self.tmp, timeout=harness.waiting(5))
            except subprocess.TimeoutExpired:
                code, err = None, "(still starting after %.0f s: killed)" % (time.time() - t0)
            took = time.time() - t0
            print("owner with a full queue: exit %s after %.2f s: %s" % (code, took, err.strip()))
            self.assertEqual(code, 1, "pier hung on the socket's owner")
            self.assertIn("cannot listen on unix:%s: another process listens on it (its connection queue is full)"
                          % self.sock, err)
        finally:
            waiting.close()
            owner.close()

    def test_stale_socket_of_a_killed_process_is_reused(self):
        p = Pier(cfg(self.sock)).start()
        p.proc.kill()  # kill -9: nothing unlinks the file
        p.proc.wait(5)
        p.stop()
        self.assertTrue(stat.S_ISSOCK(os.stat(self.sock).st_mode), "kill -9 leaves the file")
        with Pier(cfg(self.sock)) as q:
            warn = q.wait_log(lambda j: j.get("msg", "").startswith("removed a stale socket"))
            self.assertIsNotNone(warn)
            self.assertEqual(warn["path"], self.sock)
            self.assertEqual(unix_request(self.sock, "GET", "/prod/health").status, 200)

    def _as_nobody(self):
        if os.geteuid() != 0 or SETPRIV is None:
            self.skipTest("needs root and setpriv to run pier as another user")

    def test_directory_not_writable(self):
        self._as_nobody()
        locked = os.path.join(self.tmp, "locked")
        os.mkdir(locked, 0o755)  # root's: nobody may not create files in it
        path = os.path.join(locked, "pier.sock")
        code, err = run_pier(cfg(path), self.tmp, user=65534)
        self.assertEqual(code, 1)
        self.assertIn("cannot listen on unix:%s: Permission denied" % path, err)

    def test_group_pier_is_not_a_member_of(self):
        self._as_nobody()
        mine = os.path.join(self.tmp, "mine")
        os.mkdir(mine, 0o755)
        os.chown(mine, 65534, 65534)
        path = os.path.join(mine, "pier.sock")
        code, err = run_pier(cfg(path, "  unix_group: \"0\"\n"), self.tmp, user=65534)
        self.assertEqual(code, 1)
        self.assertIn("cannot give %s to group 0: Operation not permitted (pier must be a member of it)" % path, err)
        self.assertFalse(os.path.exists(path))


class ReloadAndDrain(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pier-unix-")
        self.sock = os.path.join(self.tmp, "pier.sock")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def reload(self, p, text, msg):
        with open(p.config_path, "w") as f:
            f.write(text)
        n = len([j for j in p.logs() if j.get("msg", "").startswith(msg)])
        p.signal(signal.SIGHUP)
        deadline = time.time() + 5
        while time.time() < deadline:
            hits = [j for j in p.logs() if j.get("msg", "").startswith(msg)]
            if len(hits) > n:
                return hits[-1]
            time.sleep(0.02)
        self.fail("no %r log line after SIGHUP" % msg)

    def test_reload_keeps_the_socket_applies_mode_and_refuses_a_new_path(self):
        with Pier(cfg(self.sock)) as p:
            ino = os.stat(self.sock).st_ino
            keep = unix_connect(self.sock)
            rd = Reader(keep)
            keep.sendall(build_request("GET", "/prod/health"))
            self.assertEqual(rd.next().status, 200)
            # same socket, new mode: applied in place
            self.reload(p, cfg(self.sock, "  unix_mode: \"0666\"\n"), "config reloaded")
            st = os.stat(self.sock)
            self.assertEqual((st.st_ino, stat.S_IMODE(st.st_mode)), (ino, 0o666))
            # a new path needs a restart: warned, the running socket kept, nothing made at the new path
            other = os.path.join(self.tmp, "other.sock")
            warn = self.reload(p, cfg(other, "  unix_mode: \"0666\"\n"), "listen.unix changes need a restart")
            self.assertEqual((warn["running"], warn["configured"]), (self.sock, other))
            self.assertFalse(os.path.exists(other))
            self.assertEqual(os.stat(self.sock).st_ino, ino)
            self.assertEqual(unix_request(self.sock, "GET", "/prod/health").status, 200)
            keep.sendall(build_request("GET", "/prod/health"))
            self.assertEqual(rd.next().status, 200, "an open connection survives both reloads")
            keep.close()

    def test_refused_reload_leaves_mode_and_group_as_they_were(self):
        # pier as nobody, not a member of group 0: the new group fails after the new mode
        # could have been set; the reload is refused and the socket keeps 0660 and its group
        if os.geteuid() != 0 or SETPRIV is None:
            self.skipTest("needs root and setpriv to run pier as another user")
        os.chmod(self.tmp, 0o755)
        mine = os.path.join(self.tmp, "mine")
        os.mkdir(mine, 0o755)
        os.chown(mine, 65534, 65534)
        sock = os.path.join(mine, "pier.sock")
        conf = os.path.join(mine, "pier.yaml")
        with open(conf, "w") as f:
            f.write(cfg(sock, "  unix_mode: \"0660\"\n"))
        p = Pier(None, config_path=conf, user=65534).start()
        try:
            before = os.stat(sock)
            self.assertEqual((stat.S_IMODE(before.st_mode), before.st_gid), (0o660, 65534))
            line = self.reload(p, cfg(sock, "  unix_mode: \"0666\"\n  unix_group: \"0\"\n"),
                               "config reload failed")
            after = os.stat(sock)
            print("refused reload: %s; socket now %04o group %d" % (line.get("error"), stat.S_IMODE(after.st_mode), after.st_gid))
            self.assertIn("cannot give %s to group 0" % sock, line.get("error", ""))
            self.assertEqual((stat.S_IMODE(after.st_mode), after.st_gid, after.st_ino),
                             (0o660, 65534, before.st_ino), "a refused reload changed the socket")
            self.assertEqual(unix_request(sock, "GET", "/prod/health").status, 200)
        finally:
            p.stop()

    def test_reload_never_touches_a_file_put_in_place_of_the_socket(self):
        with Pier(cfg(self.sock)) as p:
            os.unlink(self.sock)  # someone else's socket now lives at the path
            other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            other.bind(self.sock)
            os.chmod(self.sock, 0o600)
            try:
                line = self.reload(p, cfg(self.sock, "  unix_mode: \"0666\"\n"), "config reload")
                mode = stat.S_IMODE(os.stat(self.sock).st_mode)
                print("reload after the path was replaced: %r; the other file is %04o" % (line.get("msg"), mode))
                self.assertEqual(mode, 0o600, "pier changed a socket file that is not its own")
                self.assertEqual(line.get("msg"), "config reload failed; keeping the running config")
                self.assertIn("is no longer the socket pier made", line.get("error", ""))
            finally:
                other.close()

    def test_drain_removes_the_file_and_finishes_in_flight_requests(self):
        with Pier(cfg(self.sock, "") + "shutdown:\n  grace_ms: 0\n  drain_ms: 5000\n") as p:
            a = unix_connect(self.sock)
            body = b'{"in":"flight"}'
            a.sendall(("POST /prod/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: %d\r\n\r\n" % len(body)).encode() + body[:5])
            time.sleep(0.1)
            p.signal(signal.SIGTERM)
            self.assertIsNotNone(p.wait_log(lambda j: j.get("msg", "").startswith("draining"), 3))
            deadline = time.time() + 2
            while os.path.exists(self.sock) and time.time() < deadline:
                time.sleep(0.02)
            self.assertFalse(os.path.exists(self.sock), "the socket file is removed when the drain starts")
            a.sendall(body[5:])
            rs = parse_responses(read_until_close(a, 3))
            self.assertEqual([r.status for r in rs], [200])
            self.assertEqual(rs[0].json()["received"], {"in": "flight"})
            self.assertEqual(rs[0].headers["connection"], "close")
            a.close()
            self.assertEqual(p.wait_exit(5), 0)

    def test_file_replaced_by_a_successor_is_not_removed(self):
        p = Pier(cfg(self.sock)).start()
        try:
            os.unlink(self.sock)  # someone else's socket now lives at the path
            other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            other.bind(self.sock)
            other.listen(1)
            p.signal(signal.SIGTERM)
            self.assertEqual(p.wait_exit(5), 0)
            self.assertTrue(os.path.exists(self.sock), "pier removed a socket file that was not its own")
            other.close()
        finally:
            p.stop()


if __name__ == "__main__":
    harness.main()
