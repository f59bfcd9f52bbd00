"""Debian's slowhttptest against pier: slow headers (Slowloris) and slow body (R-U-Dead-Yet).

Each mode opens CONNECTIONS connections at RATE per second and feeds them a little more
every second for LENGTH_S seconds. While it runs, this test asks for /health every 100 ms
on fresh connections. Checked, for each mode:
  * pier stays available throughout: every /health is 200 within PROBE_LIMIT_S, and
    slowhttptest's own probe never reports "service available: NO";
  * pier cuts the slow connections itself (timeouts.header_ms, timeouts.request_ms), so
    slowhttptest ends with "No open connections left" before its time limit.
Bounded: each run is wrapped in a hard timeout. Takes about 25 s. Labelled `slow`.
Skips when slowhttptest is not installed (apt-get install slowhttptest).

Run:  python3 test/integration/test_slowhttptest.py -v      (PIER_BIN picks the binary)
"""
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BASE_CONFIG, Pier  # noqa: E402

SLOWHTTPTEST = shutil.which("slowhttptest")
CONNECTIONS, RATE, LENGTH_S = 400, 200, 14
HEADER_MS, REQUEST_MS = 6000, 6000
PROBE_LIMIT_S = 0.5
CONFIG = BASE_CONFIG + "timeouts:\n  header_ms: %d\n  request_ms: %d\n" % (HEADER_MS, REQUEST_MS)
ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


class Prober(threading.Thread):
    """GET /health every 100 ms on a fresh connection until stopped."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.results = []  # (status, seconds)
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            t0 = time.perf_counter()
            status = 0
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                try:
                    s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if data.startswith(b"HTTP/1.1 "):
                        status = int(data.split(b" ", 2)[1])
                finally:
                    s.close()
            except OSError:
                status = -1
            self.results.append((status, time.perf_counter() - t0))
            self.stopping.wait(0.1)


@unittest.skipIf(SLOWHTTPTEST is None, "slowhttptest is not installed")
class SlowHttpTest(unittest.TestCase):
    def run_mode(self, mode, path, extra):
        with Pier(CONFIG) as p:
            prober = Prober(p.port)
            prober.start()
            cmd = [SLOWHTTPTEST, mode, "-c", str(CONNECTIONS), "-r", str(RATE), "-i", "1",
                   "-l", str(LENGTH_S), "-p", "2", "-u", "http://127.0.0.1:%d%s" % (p.port, path)] + extra
            t0 = time.time()
            try:
                run = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, timeout=LENGTH_S + 20)
            finally:
                prober.stopping.set()
                prober.join(5)
            took = time.time() - t0
            final = p.get("/prod/health").status
        out = ANSI.sub(b"", run.stdout).decode("utf-8", "replace")
        lat = sorted(t for _, t in prober.results)
        print("\nslowhttptest %s: %d connections, ran %.1f s, exit %r; /health x%d: median %.1f ms, "
              "max %.1f ms"
              % (mode, CONNECTIONS, took, out.strip().splitlines()[-1].strip() if out.strip() else "",
                 len(lat), statistics.median(lat) * 1000, lat[-1] * 1000),
              file=sys.stderr)
        self.assertEqual(run.returncode, 0, out[-2000:])
        self.assertEqual(final, 200)
        self.assertNotRegex(out, r"service available:\s+NO")
        self.assertIn("No open connections left", out)  # pier closed them all itself
        self.assertGreater(len(prober.results), 20)
        bad = [r for r in prober.results if r[0] != 200 or r[1] > PROBE_LIMIT_S]
        self.assertEqual(bad, [], "health probes failed or slow during the attack")

    def test_slow_headers(self):
        self.run_mode("-H", "/prod/health", ["-x", "24"])

    def test_slow_body(self):
        self.run_mode("-B", "/prod/echo", ["-s", "8192", "-t", "POST", "-f", "application/json", "-x", "24"])


if __name__ == "__main__":
    harness.main()
