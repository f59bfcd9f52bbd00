"""Connection flood: 10,000 concurrent idle keep-alive connections.

The test raises its own RLIMIT_NOFILE (pier raises its soft limit to the hard one itself),
opens IDLE_CONNECTIONS connections in batches, makes one keep-alive request on each so each
is a real idle keep-alive connection (not a half-open one waiting for headers), and holds
them all. Checked and reported:
  * /health still answers (200, latency printed) with all of them open;
  * pier's resident memory per idle connection: the slope of RSS between 1,000 and 9,000
    idle connections. Reference, measured on this kind of machine: nginx about 530 bytes of
    worker RSS per idle keep-alive connection, Node.js `http` about 9 KB. pier keeps no
    per-connection read buffer while idle, so the slope must stay under PER_CONN_LIMIT.
Takes about 15 s. Labelled `slow` (test/CMakeLists.txt).

Run:  python3 test/integration/test_flood.py -v      (PIER_BIN picks the binary)
"""
import os
import resource
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BASE_CONFIG, PIER_BIN, Pier  # noqa: E402

SANITIZED = os.environ.get("PIER_TEST_INSTRUMENTED") == "1" or (
    os.path.exists(PIER_BIN) and b"__asan_init" in open(PIER_BIN, "rb").read())

IDLE_CONNECTIONS = 10000
BATCH = 250
LOW, HIGH = 1000, 9000  # the slope is measured between these counts
PER_CONN_LIMIT = 560  # bytes of RSS per idle connection: nginx ~530 plus a little noise margin
NGINX_BYTES = 530
CONFIG = BASE_CONFIG.replace("  level: info\n", "  level: info\n  access: false\n") + """limits:
  max_connections: 12000
timeouts:
  idle_ms: 120000
"""
REQUEST = b"GET /prod/health/live HTTP/1.1\r\nHost: flood\r\n\r\n"


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, want)) if hard != resource.RLIM_INFINITY else max(soft, want)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def read_one_response(s):
    """Read one small keep-alive response (Content-Length framed) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return int(head.split(b" ", 2)[1])


class FloodTest(unittest.TestCase):
    def test_ten_thousand_idle_keepalive(self):
        limit = raise_nofile(IDLE_CONNECTIONS + 500)
        if limit < IDLE_CONNECTIONS + 200:
            self.skipTest("RLIMIT_NOFILE hard limit %d is too low for %d connections" % (limit, IDLE_CONNECTIONS))
        with Pier(CONFIG) as p:
            held = []
            rss = {}
            t0 = time.time()
            try:
                while len(held) < IDLE_CONNECTIONS:
                    batch = [p.connect(timeout=10) for _ in range(min(BATCH, IDLE_CONNECTIONS - len(held)))]
                    for s in batch:
                        s.sendall(REQUEST)
                    for s in batch:
                        self.assertEqual(read_one_response(s), 200)
                    held.extend(batch)
                    if len(held) in (LOW, HIGH):
                        time.sleep(0.3)  # let the loop settle
                        rss[len(held)] = p.rss_kib()
                opened = time.time() - t0
                time.sleep(0.5)
                rss_all = p.rss_kib()
                lat = []
                for _ in range(20):
                    t1 = time.perf_counter()
                    r = p.get("/prod/health")
                    lat.append(time.perf_counter() - t1)
                    self.assertEqual(r.status, 200)
                # the held connections are alive: a few of them ask again
                for s in held[:: IDLE_CONNECTIONS // 20]:
                    s.sendall(REQUEST)
                    self.assertEqual(read_one_response(s), 200)
                metrics = p.get("/prod/metrics").body.decode()
            finally:
                for s in held:
                    s.close()
        slope = (rss[HIGH] - rss[LOW]) * 1024 / (HIGH - LOW)
        active = [l for l in metrics.splitlines() if l.startswith("pier_http_connections_active")]
        print("\nflood: %d idle keep-alive connections opened in %.1f s; RSS %d KiB at %d, %d KiB at %d, "
              "%d KiB at %d; slope %.0f bytes per idle connection (nginx ~%d, Node.js ~9000); "
              "/health with all open: median %.2f ms, max %.2f ms; %s"
              % (IDLE_CONNECTIONS, opened, rss[LOW], LOW, rss[HIGH], HIGH, rss_all, IDLE_CONNECTIONS,
                 slope, NGINX_BYTES, sorted(lat)[len(lat) // 2] * 1000, max(lat) * 1000,
                 active[0] if active else ""), file=sys.stderr)
        self.assertLess(max(lat), 0.5)
        if not SANITIZED:
            self.assertLess(slope, PER_CONN_LIMIT)


if __name__ == "__main__":
    harness.main()
