"""pier behind the shipped nginx config: what nginx forwards, pier accepts; the HTTP rules.

A real nginx (Debian's package) runs config/nginx unchanged except its listen port and the
upstream's address, in front of a real pier with its default limits. Checked:
  * the longest request target nginx passes (its request line fills one 16k buffer of
    large_client_header_buffers) gets pier's answer, not a refusal; one byte more gets
    nginx's own 414;
  * the largest head nginx forwards (1k + 4 x 16k of client headers, plus what nginx adds)
    gets pier's answer: limits.max_header_bytes (default 68 KiB) is above it, and the figures
    in config/nginx/pier.conf, config/pier/*.yaml and the default say so;
  * the rules of RFC 9110/9112 that pier enforces (Host, unknown method, request line too
    long, fragment, 100 Continue, strict JSON on /echo) are answered as nginx answers them,
    or, where nginx passes the request on, by pier; both are printed side by side.
nginx listens on a loopback port outside the ephemeral range, picked at random and retried.
Skipped (exit 77) when nginx is not installed.

Run:  python3 test/integration/test_nginx.py -v      (PIER_BIN picks the binary)
"""
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BASE_CONFIG, PIER_BIN, ROOT, Pier, parse_responses  # noqa: E402

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
NGINX_ADDS = 512  # bytes nginx may add to a head: X-Request-Id (<= 146), X-Forwarded-* (<= 90)


def read(path):
    with open(path) as f:
        return f.read()


def nginx_buffers():
    """(client_header_buffer_size, number, size) from the shipped pier.conf, in bytes."""
    text = read(os.path.join(ROOT, "config", "nginx", "pier.conf"))

    def size(v):
        return int(v[:-1]) * 1024 if v.lower().endswith("k") else int(v)
    first = re.search(r"^\s*client_header_buffer_size\s+(\S+);", text, re.M)
    large = re.search(r"^\s*large_client_header_buffers\s+(\d+)\s+(\S+);", text, re.M)
    return size(first.group(1)) if first else 1024, int(large.group(1)), size(large.group(2))


def send(port, data, timeout=5.0):
    """Send data on a fresh connection, read until close; the final responses' statuses."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        s.settimeout(timeout)
        while True:
            try:
                chunk = s.recv(1 << 20)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    return out


def status(out):
    rs = [r for r in parse_responses(out) if r.status >= 200]
    return rs[0].status if rs else None


def request(target, headers=b"", method=b"GET", host=b"Host: a\r\n"):
    return method + b" " + target + b" HTTP/1.1\r\n" + host + headers + b"Connection: close\r\n\r\n"


def target_of(n):
    """A request target of exactly n bytes that pier routes to /prod/health."""
    return b"/prod/health?" + b"a" * (n - len(b"/prod/health?"))


@unittest.skipIf(NGINX is None, "nginx is not installed (apt-get install nginx)")
class BehindNginx(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pier = Pier(BASE_CONFIG.replace("  level: info\n", "  level: info\n  access: false\n")).start()
        cls.tmp = tempfile.TemporaryDirectory(prefix="pier-nginx-")
        cls.nginx = None
        for _ in range(20):  # a random port outside the ephemeral range; retry if taken
            port = random.randint(20000, 32000)
            conf = os.path.join(cls.tmp.name, "conf")
            shutil.rmtree(conf, ignore_errors=True)
            shutil.copytree(os.path.join(ROOT, "config", "nginx"), conf)
            pier_conf = os.path.join(conf, "pier.conf")
            text = re.sub(r"^(\s*listen ).*;", r"\g<1>127.0.0.1:%d;" % port,
                          read(pier_conf), flags=re.M)
            with open(pier_conf, "w") as f:
                f.write(text)
            for env in ("prod", "staging"):
                up = os.path.join(conf, "upstreams", env + ".conf")
                with open(up, "w") as f:
                    f.write("server 127.0.0.1:%d;\n" % cls.pier.port)
            log = os.path.join(cls.tmp.name, "nginx.log")
            with open(log, "w") as err:
                proc = subprocess.Popen([NGINX, "-e", "stderr", "-p", cls.tmp.name + "/", "-c",
                                         os.path.join(conf, "nginx.conf"), "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.time() + 5
            while time.time() < deadline and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    cls.nginx, cls.port = proc, port
                    break
                except OSError:
                    time.sleep(0.05)
            if cls.nginx:
                break
            if proc.poll() is None:
                proc.terminate()
                proc.wait(5)
        if cls.nginx is None:
            cls.pier.stop()
            raise RuntimeError("nginx did not start: " + read(log)[-2000:])

    @classmethod
    def tearDownClass(cls):
        if cls.nginx:
            cls.nginx.terminate()
            try:
                cls.nginx.wait(10)
            except subprocess.TimeoutExpired:
                cls.nginx.kill()
        cls.pier.stop()
        cls.tmp.cleanup()

    def test_longest_target_nginx_passes_is_answered_by_pier(self):
        first, number, size = nginx_buffers()
        line = len(b"GET  HTTP/1.1\r\n")
        longest = size - line  # the request line fills one large buffer exactly
        out = send(self.port, request(target_of(longest)))
        self.assertEqual(status(out), 200, out[:300])
        self.assertIn(b'"status":"pass"', out)  # pier's answer, passed through
        self.assertEqual(status(send(self.port, request(target_of(longest + 1)))), 414)  # nginx's
        # the same target straight to pier
        self.assertEqual(status(send(self.pier.port, request(target_of(longest)))), 200)

    def test_largest_head_nginx_forwards_is_answered_by_pier(self):
        first, number, size = nginx_buffers()
        # a short request line in the first buffer, then one header filling each large buffer
        value = size - len(b"X-00: \r\n") - 32
        headers = b"".join(b"X-%02d: " % i + b"v" * value + b"\r\n" for i in range(number))
        req = request(b"/prod/health", headers)
        self.assertGreater(len(req), (number - 1) * size + first)
        out = send(self.port, req)
        self.assertEqual(status(out), 200, out[:300])
        self.assertIn(b'"status":"pass"', out)
        # one more such header is refused by nginx itself (no buffer left)
        more = headers + b"X-99: " + b"v" * value + b"\r\n"
        self.assertEqual(status(send(self.port, request(b"/prod/health", more))), 400)

    def test_max_header_bytes_covers_nginx_buffers(self):
        first, number, size = nginx_buffers()
        need = first + number * size + NGINX_ADDS
        table = subprocess.run([PIER_BIN, "--config-table"], stdout=subprocess.PIPE, check=True,
                               timeout=10).stdout.decode()
        default = int(re.search(r"`limits\.max_header_bytes` \| `(\d+)`", table).group(1))
        self.assertGreaterEqual(default, need)
        for env in ("prod", "staging"):
            text = read(os.path.join(ROOT, "config", "pier", env + ".yaml"))
            value = int(re.search(r"^\s*max_header_bytes:\s*(\d+)", text, re.M).group(1))
            self.assertGreaterEqual(value, need, env)

    def test_http_rules_pier_and_nginx(self):
        h = b"Host: a\r\n"
        j = b"Content-Type: application/json\r\n"

        def echo(body):
            return (b"POST /prod/echo HTTP/1.1\r\n" + h + j + b"Content-Length: %d\r\n" % len(body) +
                    b"Connection: close\r\n\r\n" + body)

        def expect(path, ctype):
            return (b"POST " + path + b" HTTP/1.1\r\n" + h + ctype +
                    b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        # (rule, bytes, pier's answer, what the client of nginx gets: a status of nginx's own,
        # or "pier" where nginx passes the request on)
        rules = [
            ("HTTP/1.1 without Host", b"GET /prod/health HTTP/1.1\r\nConnection: close\r\n\r\n", 400, 400),
            ("two Host headers", request(b"/prod/health", h), 400, 400),
            ("HTTP/1.0 without Host", b"GET /prod/health HTTP/1.0\r\n\r\n", 200, "pier"),
            ("unknown method", request(b"/prod/health", method=b"FROB"), 501, "pier"),
            ("request line over the limit", request(target_of(70000)), 414, 414),
            ("fragment in the target", request(b"/prod/health#top"), 400, 400),
            # nginx answers Expect itself: it reads every body it proxies, so it sends its own 100
            ("Expect, no such route", expect(b"/prod/nowhere", j), 404, 100),
            ("Expect, wrong method", expect(b"/prod/health", j), 405, 100),
            ("Expect, wrong media type", expect(b"/prod/echo", b"Content-Type: text/plain\r\n"), 415, 100),
            ("JSON with trailing data", echo(b'{"a":1} trailing garbage'), 400, "pier"),
            ("two JSON values", echo(b"{}{}"), 400, "pier"),
            ("invalid UTF-8 in JSON", echo(b'"\xff"'), 400, "pier"),
        ]
        print("\n%-28s %6s %6s" % ("rule", "pier", "nginx"), file=sys.stderr)
        for name, data, want_pier, want_nginx in rules:
            with self.subTest(name):
                direct = send(self.pier.port, data, timeout=3)
                proxied = send(self.port, data, timeout=3)
                got_pier, got_nginx = status(direct), status(proxied)
                if got_nginx is None and proxied.startswith(b"HTTP/1.1 100 "):
                    got_nginx = 100
                print("%-28s %6s %6s" % (name, got_pier, got_nginx), file=sys.stderr)
                self.assertEqual(got_pier, want_pier, direct[:200])
                self.assertNotIn(b" 100 Continue", direct if want_pier >= 400 else b"")
                self.assertEqual(got_nginx, want_pier if want_nginx == "pier" else want_nginx,
                                 proxied[:200])


if __name__ == "__main__":
    harness.main()
