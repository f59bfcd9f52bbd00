"""harness — start the real pier binary and talk to it over real sockets.

Every integration test uses this: a Pier is started on 127.0.0.1 with port 0 (the kernel
picks a free port; pier's "listening" log line says which), a temporary YAML config, and is
stopped by its PID. Requests are written as raw bytes so tests control every byte on the wire.
"""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.environ.get("PIER_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIER_BIN = os.environ.get("PIER_BIN") or os.path.join(ROOT, "build", "default", "pier")

# PIER_TEST_INSTRUMENTED=1 (valgrind in `make memcheck`, the tsan preset): every pier process
# is many times slower, and one under valgrind spends seconds of CPU before main() (tens of
# seconds on a loaded machine). Every *wait* for pier (to start, log, exit, answer a CLI
# command) is multiplied by WAIT_SCALE; a wait returns as soon as its event happens, so this
# costs nothing when the test passes. Bounds on pier's own timing are not scaled here.
INSTRUMENTED = os.environ.get("PIER_TEST_INSTRUMENTED") == "1"
WAIT_SCALE = float(os.environ.get("PIER_TEST_WAIT_SCALE") or (10 if INSTRUMENTED else 1))


def waiting(seconds):
    """A timeout for waiting on pier, scaled under instrumentation (WAIT_SCALE)."""
    return seconds * WAIT_SCALE

# Ports a test must name before the server starts (a second listener, a port a reload moves to,
# Prometheus, which cannot report a port it picked) come from below Linux's ephemeral range
# (32768-60999): a port there is never handed to some client socket between the check and the
# bind, which a port the kernel picked with bind(0) can be.
_taken_ports = set()


def free_port():
    """A loopback TCP port in 20000-32767 that nothing listens on and this process has not
    handed out before."""
    for _ in range(1000):
        port = random.randint(20000, 32767)
        if port in _taken_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken_ports.add(port)
        return port
    raise RuntimeError("no free port in 20000-32767")


BASE_CONFIG = """environment: test
listen:
  host: 127.0.0.1
  port: 0
prefix: /prod
log:
  level: info
"""


class Pier:
    """A running pier. Use as a context manager, or call start()/stop()."""

    def __init__(self, config=BASE_CONFIG, env=None, args=(), config_path=None, port=None, nofile=None,
                 user=None):
        # port: when the config names a fixed port and the "listening" line may be filtered
        # out by log.level, wait for the port to accept instead of reading the log.
        self.fixed_port = port
        # PIER_TEST_WORKERS=N (the tsan test preset sets 2) runs every pier whose config
        # does not choose its workers with N of them, so races between workers can show.
        workers = os.environ.get("PIER_TEST_WORKERS")
        if workers and config is not None and not re.search(r"^workers:", config, re.M):
            config = config.rstrip("\n") + "\nworkers: %d\n" % int(workers)
        self.tmp = tempfile.TemporaryDirectory(prefix="pier-test-")
        self.config_path = config_path or os.path.join(self.tmp.name, "pier.yaml")
        if config is not None and config_path is None:
            with open(self.config_path, "w") as f:
                f.write(config)
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("PIER_") and k not in ("PIER_BIN", "PIER_SOURCE_DIR"):
                del self.env[k]
        self.env.update(env or {})
        self.args = list(args)
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) to start pier under, like prlimit
        self.user = user  # a uid to run pier as (with setpriv; the caller must be root)
        self.proc = None
        self.port = None
        self.lines = []
        self.lock = threading.Lock()
        self.reader = None

    # -- lifecycle --------------------------------------------------------------
    def start(self, timeout=10.0):
        cmd = [PIER_BIN, "--config", self.config_path] + self.args
        if self.user is not None:
            cmd = ["setpriv", "--reuid=%d" % self.user, "--regid=%d" % self.user, "--clear-groups"] + cmd
        preexec = None
        if self.nofile:
            import resource
            n = self.nofile

            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
                                     preexec_fn=preexec)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        timeout = waiting(timeout)
        if self.fixed_port:
            deadline = time.time() + timeout
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.fixed_port), timeout=0.5).close()
                    self.port = self.fixed_port
                    return self
                except OSError:
                    time.sleep(0.02)
            self.stop()
            raise RuntimeError("pier did not start on port %d" % self.fixed_port)
        line = self.wait_log(lambda j: j.get("msg") == "listening", timeout)
        if line is None:
            self.stop()
            raise RuntimeError("pier did not start; output:\n" + "\n".join(self.lines))
        self.port = line["port"]
        return self

    def _read(self):
        for raw in self.proc.stdout:
            with self.lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def logs(self):
        """Parsed JSON log lines so far (non-JSON lines are skipped)."""
        out = []
        with self.lock:
            lines = list(self.lines)
        for l in lines:
            try:
                out.append(json.loads(l))
            except ValueError:
                pass
        return out

    def wait_log(self, pred, timeout=5.0):
        deadline = time.time() + waiting(timeout)
        while time.time() < deadline:
            for j in self.logs():
                if pred(j):
                    return j
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.02)
        for j in self.logs():
            if pred(j):
                return j
        return None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(waiting(timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:  # SIGKILL is the last resort: valgrind cannot write its summary then
                self.proc.wait(waiting(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.reader:
            self.reader.join(waiting(2))
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        self.tmp.cleanup()
        # a sanitizer's report (ThreadSanitizer under the tsan preset) fails the test
        with self.lock:
            report = [i for i, l in enumerate(self.lines) if "WARNING: ThreadSanitizer" in l or
                      "ERROR: ThreadSanitizer" in l]
            if report:
                text = "\n".join(self.lines[report[0]:report[0] + 60])
                self.lines = []
                raise AssertionError("pier: ThreadSanitizer reported:\n" + text)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def open_fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def listening_ports(self):
        """TCP ports pier holds a listening socket on (from /proc/net/tcp{,6})."""
        pid = self.proc.pid
        inodes = set()
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        ports = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as t:
                for row in t.readlines()[1:]:
                    cols = row.split()
                    if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                        ports.append(int(cols[1].split(":")[1], 16))
        return sorted(ports)

    def cpu_seconds(self):
        """User + system CPU time pier has used so far."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None

    # -- clients ----------------------------------------------------------------
    def connect(self, timeout=5.0):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def request(self, method, path, headers=None, body=b"", timeout=5.0):
        """One request on a fresh connection (Connection: close); returns a Response."""
        s = self.connect(timeout)
        try:
            s.sendall(build_request(method, path, headers, body, close=True))
            return read_response(s, head=(method == "HEAD"))
        finally:
            s.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def raw(self, data, timeout=5.0):
        """Send raw bytes, then read everything until the server closes (or timeout)."""
        s = self.connect(timeout)
        try:
            s.sendall(data)
            return read_until_close(s, timeout)
        finally:
            s.close()


def build_request(method, path, headers=None, body=b"", close=False, version="HTTP/1.1"):
    if isinstance(body, str):
        body = body.encode()
    h = {"Host": "127.0.0.1"}
    if body:
        h["Content-Length"] = str(len(body))
    if close:
        h["Connection"] = "close"
    h.update(headers or {})
    lines = ["%s %s %s" % (method, path, version)] + ["%s: %s" % (k, v) for k, v in h.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> value (last wins)
        self.body = body
        self.raw_head = raw_head

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


class Reader:
    """Reads HTTP/1.1 responses one by one from a socket (keep-alive, pipelining)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        self.buf += chunk

    def next(self, head=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head_raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head_raw.decode("latin-1").split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        status = int(status)
        n = 0 if head or status in (204, 304) or status < 200 else int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        if status == 100:
            return self.next(head)
        return Response(status, reason, headers, body, head_raw)


def read_response(sock, head=False):
    return Reader(sock).next(head)


def read_until_close(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def parse_responses(data):
    """Split raw bytes into Responses (for pipelining / hostile tests)."""
    class FakeSock:
        def __init__(self, d):
            self.d = d

        def recv(self, n):
            d, self.d = self.d[:n], self.d[n:]
            return d
    r = Reader(FakeSock(data))
    out = []
    while True:
        try:
            out.append(r.next())
        except (ConnectionError, ValueError, IndexError):
            return out


def closed_by_peer(sock, timeout=3.0):
    """True if the server closes the connection (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# ctest's SKIP_RETURN_CODE for the integration tests (test/CMakeLists.txt): a script whose
# tool is missing is reported Skipped, never Passed.
SKIP_RETURN_CODE = 77


def main():
    """unittest.main() for a test script: exit 0 when every test ran and passed, 1 when one
    failed (or none ran), SKIP_RETURN_CODE when any was skipped (a tool is missing)."""
    result = unittest.main(exit=False).result
    if not result.wasSuccessful() or result.testsRun == 0:
        sys.exit(1)
    if result.skipped:
        print("skipped: " + "; ".join("%s (%s)" % (t.id(), why) for t, why in result.skipped),
              file=sys.stderr)
        sys.exit(SKIP_RETURN_CODE)
    sys.exit(0)
