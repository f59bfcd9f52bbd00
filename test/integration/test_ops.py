"""Operations: graceful drain, hot reload, metrics — against the real binary."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import harness  # noqa: E402
from harness import (PIER_BIN, Pier, Reader, build_request, closed_by_peer, parse_responses,
                     read_until_close, waiting)


def cfg(port=0, prefix="/prod", extra=""):
    return "environment: test\nlisten:\n  host: 127.0.0.1\n  port: %d\nprefix: %s\n%s" % (port, prefix, extra)


def metric(text, name, **labels):
    """Value of one sample, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()) and len(got) == len(labels):
            return float(m.group(4))
    return None


free_port = harness.free_port


class Drain(unittest.TestCase):
    def test_in_flight_request_completes_and_new_connections_are_refused(self):
        p = Pier(cfg(extra="shutdown:\n  grace_ms: 1000\n  drain_ms: 5000\n")).start()
        try:
            a = p.connect()
            body = b'{"drain":"ok","n":12345}'
            head = ("POST /prod/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\n\r\n" % len(body)).encode()
            a.sendall(head + body[:10])
            time.sleep(0.1)
            t0 = time.time()
            p.signal(signal.SIGTERM)
            self.assertIsNotNone(p.wait_log(lambda j: j.get("msg", "").startswith("shutting down"), 3))
            # grace period: still accepting, but health says fail
            r = p.get("/prod/health/ready")
            self.assertEqual(r.status, 503)
            self.assertEqual(r.json()["status"], "fail")
            r = p.get("/prod/health")
            self.assertEqual(r.status, 503)
            self.assertEqual(r.json()["status"], "fail")
            self.assertEqual(p.get("/prod/health/live").status, 200)
            self.assertLess(time.time() - t0, 0.9, "grace checks took too long to be meaningful")
            # after grace: the listener closes
            self.assertIsNotNone(p.wait_log(lambda j: j.get("msg", "").startswith("draining"), 3))
            refused = False
            deadline = time.time() + 2
            while time.time() < deadline and not refused:
                try:
                    socket.create_connection(("127.0.0.1", p.port), timeout=0.5).close()
                    time.sleep(0.05)
                except ConnectionRefusedError:
                    refused = True
            self.assertTrue(refused, "new connections still accepted after the grace period")
            self.assertIsNone(p.proc.poll(), "pier exited with a request in flight")
            # the in-flight request finishes, with Connection: close
            a.sendall(body[10:])
            rs = parse_responses(read_until_close(a, 3))
            self.assertEqual(len(rs), 1)
            self.assertEqual(rs[0].status, 200)
            self.assertEqual(rs[0].json()["received"], {"drain": "ok", "n": 12345})
            self.assertEqual(rs[0].headers["connection"], "close")
            a.close()
            code = p.wait_exit(6)
            self.assertEqual(code, 0)
            self.assertLess(time.time() - t0, 1.0 + 5.0)
        finally:
            p.stop()

    def test_idle_keepalive_is_left_to_the_client_during_the_drain(self):
        # Closing an idle keep-alive connection races with a proxy writing its next request
        # on it; the drain leaves it open: the next request is answered with Connection:
        # close, and pier exits as soon as the client has closed it.
        p = Pier(cfg(extra="shutdown:\n  grace_ms: 0\n  drain_ms: 8000\n")).start()
        try:
            s = p.connect()
            rd = Reader(s)
            s.sendall(build_request("GET", "/prod/health"))
            self.assertEqual(rd.next().status, 200)
            p.signal(signal.SIGTERM)
            self.assertIsNotNone(p.wait_log(lambda j: j.get("msg", "").startswith("draining"), 3))
            time.sleep(0.5)
            self.assertFalse(closed_by_peer(s, 0.2), "the drain closed an idle keep-alive connection")
            s.settimeout(5)
            s.sendall(build_request("GET", "/prod/version"))
            r = rd.next()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers["connection"], "close")
            self.assertTrue(closed_by_peer(s, 3))
            t0 = time.time()
            s.close()
            self.assertEqual(p.wait_exit(5), 0)
            self.assertLess(time.time() - t0, 1.5)
        finally:
            p.stop()

    def test_idle_keepalive_the_client_closes_ends_the_drain_at_once(self):
        p = Pier(cfg(extra="shutdown:\n  grace_ms: 0\n  drain_ms: 8000\n")).start()
        try:
            s = p.connect()
            s.sendall(build_request("GET", "/prod/health"))
            Reader(s).next()
            p.signal(signal.SIGTERM)
            self.assertIsNotNone(p.wait_log(lambda j: j.get("msg", "").startswith("draining"), 3))
            time.sleep(0.3)
            t0 = time.time()
            s.close()  # what nginx does after its upstream keepalive_timeout
            self.assertEqual(p.wait_exit(5), 0)
            self.assertLess(time.time() - t0, 1.5)
        finally:
            p.stop()

    def test_drain_timeout_cuts_and_exits_0(self):
        p = Pier(cfg(extra="shutdown:\n  grace_ms: 0\n  drain_ms: 500\n")).start()
        try:
            s = p.connect()
            s.sendall(b"POST /prod/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.1)
            t0 = time.time()
            p.signal(signal.SIGTERM)
            self.assertEqual(p.wait_exit(5), 0)
            took = time.time() - t0
            self.assertGreaterEqual(took, 0.45)
            self.assertLess(took, 2.5)
            line = p.wait_log(lambda j: "cut" in j.get("msg", ""), 2)
            self.assertIsNotNone(line)
            self.assertEqual(line["connections"], 1)
            s.close()
        finally:
            p.stop()

    def test_second_signal_exits_at_once(self):
        p = Pier(cfg(extra="shutdown:\n  grace_ms: 10000\n")).start()
        try:
            p.signal(signal.SIGTERM)
            p.wait_log(lambda j: j.get("msg", "").startswith("shutting down"), 3)
            t0 = time.time()
            p.signal(signal.SIGINT)
            code = p.wait_exit(3)
            self.assertIsNotNone(code)
            self.assertLess(time.time() - t0, 1.5)
        finally:
            p.stop()

    def test_second_signal_writes_the_workers_access_lines(self):
        # the lines each worker batched are flushed by that worker (the control thread used to
        # flush batches a worker may be appending to: a data race the tsan preset reports)
        p = Pier(cfg(extra="workers: 2\nshutdown:\n  grace_ms: 10000\n")).start()
        try:
            socks = [p.connect() for _ in range(4)]
            n = 0
            for _ in range(15):
                for s in socks:
                    s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n\r\n")
                    self.assertEqual(Reader(s).next().status, 200)
                    n += 1
            p.signal(signal.SIGTERM)
            p.wait_log(lambda j: j.get("msg", "").startswith("shutting down"), 3)
            p.signal(signal.SIGINT)
            self.assertEqual(p.wait_exit(3), 1)
            p.reader.join(2)
            lines = [j for j in p.logs() if j.get("msg") == "request" and j.get("path") == "/prod/health"]
            self.assertEqual(len(lines), n)
            for s in socks:
                s.close()
        finally:
            p.stop()


class KeepAliveSignals(unittest.TestCase):
    def test_usr1_stops_keepalive_and_usr2_resumes_it(self):
        # What the blue/green deploy sends the old slot after a switch: the proxy's cached
        # connections close after their next answer, and the process keeps serving.
        p = Pier(cfg()).start()
        try:
            s = p.connect()
            rd = Reader(s)
            s.sendall(build_request("GET", "/prod/health"))
            r = rd.next()
            self.assertNotEqual(r.headers.get("connection"), "close")
            p.signal(signal.SIGUSR1)
            self.assertIsNotNone(p.wait_log(lambda j: j.get("msg", "").startswith("keep-alive off"), 3))
            s.sendall(build_request("GET", "/prod/health"))
            r = rd.next()
            self.assertEqual((r.status, r.headers.get("connection")), (200, "close"))
            self.assertTrue(closed_by_peer(s, 3))
            s.close()
            s = p.connect()  # still listening; new connections are answered and closed too
            s.sendall(build_request("GET", "/prod/version"))
            r = Reader(s).next()
            self.assertEqual((r.status, r.headers.get("connection")), (200, "close"))
            s.close()
            p.signal(signal.SIGUSR2)
            self.assertIsNotNone(p.wait_log(lambda j: j.get("msg", "") == "keep-alive on again", 3))
            s = p.connect()
            rd = Reader(s)
            for _ in range(3):
                s.sendall(build_request("GET", "/prod/health"))
                r = rd.next()
                self.assertEqual(r.status, 200)
                self.assertNotEqual(r.headers.get("connection"), "close")
            s.close()
            self.assertEqual(p.get("/prod/health").status, 200)
            self.assertIsNone(p.proc.poll())
        finally:
            p.stop()


class Reload(unittest.TestCase):
    def write(self, p, text):
        with open(p.config_path, "w") as f:
            f.write(text)

    def reload_and_wait(self, p, msg, pred=lambda j: True):
        """SIGHUP, then the first new line starting with msg that pred accepts. A failed
        reload logs one line per error: wait for the one the test checks, not just the
        first (under valgrind the others come a while later)."""
        n = len([j for j in p.logs() if j.get("msg", "").startswith(msg)])
        p.signal(signal.SIGHUP)
        deadline = time.time() + waiting(5)
        while time.time() < deadline:
            hits = [j for j in p.logs() if j.get("msg", "").startswith(msg)][n:]
            hits = [j for j in hits if pred(j)]
            if hits:
                return hits[0]
            time.sleep(0.02)
        self.fail("no %r log line after SIGHUP" % msg)

    def test_prefix_and_level_change_then_broken_yaml(self):
        port = free_port()
        p = Pier(cfg(port, "/a", "log:\n  level: info\n")).start()
        try:
            keep = p.connect()
            keep.sendall(build_request("GET", "/a/health"))
            rd = Reader(keep)
            self.assertEqual(rd.next().status, 200)
            self.write(p, cfg(port, "/b", "log:\n  level: debug\n"))
            line = self.reload_and_wait(p, "config reloaded")
            self.assertIn("prefix: /a -> /b", line["changed"])
            self.assertIn("log.level: info -> debug", line["changed"])
            self.assertEqual(p.get("/b/health").status, 200)
            self.assertEqual(p.get("/a/health").status, 404)
            # the kept-alive connection survived and sees the new config
            keep.sendall(build_request("GET", "/b/health/live"))
            self.assertEqual(rd.next().status, 200)
            # broken YAML: error with its line, old config stays, still serving
            self.write(p, cfg(port, "/c") + "limits:\n  max_body_bytes: [oops\n")
            line = self.reload_and_wait(p, "config reload failed",
                                        lambda j: "YAML syntax error" in j.get("error", ""))
            self.assertEqual(line["level"], "error")
            self.assertRegex(line["error"], r"pier\.yaml:\d+:\d+: YAML syntax error")
            self.assertIsNone(p.proc.poll())
            self.assertEqual(p.get("/b/health").status, 200)
            self.assertEqual(p.get("/c/health").status, 404)
            # an invalid value: named with file:line:column and key
            self.write(p, cfg(port, "/c", "timeouts:\n  idle_ms: soon\n"))
            line = self.reload_and_wait(p, "config reload failed")
            self.assertIn("pier.yaml:7:12: timeouts.idle_ms: expected an integer", line["error"])
            m = p.get("/b/metrics").body.decode()
            self.assertEqual(metric(m, "pier_config_reloads_total", result="success"), 1)
            self.assertEqual(metric(m, "pier_config_reloads_total", result="failure"), 2)
            keep.close()
        finally:
            p.stop()

    def test_listen_port_change_keeps_open_connections(self):
        old, new = free_port(), free_port()
        p = Pier(cfg(old)).start()
        try:
            keep = p.connect()
            rd = Reader(keep)
            keep.sendall(build_request("GET", "/prod/health"))
            self.assertEqual(rd.next().status, 200)
            self.write(p, cfg(new))
            line = self.reload_and_wait(p, "config reloaded")
            self.assertEqual(line["port"], new)
            s = socket.create_connection(("127.0.0.1", new), timeout=3)
            s.sendall(build_request("GET", "/prod/health", close=True))
            self.assertIn(b"200 OK", read_until_close(s, 3))
            s.close()
            # the old keep-alive connection still works
            for _ in range(3):
                keep.sendall(build_request("GET", "/prod/health"))
                self.assertEqual(rd.next().status, 200)
            keep.close()
            # the old port no longer accepts
            refused = False
            deadline = time.time() + 2
            while time.time() < deadline and not refused:
                try:
                    socket.create_connection(("127.0.0.1", old), timeout=0.5).close()
                    time.sleep(0.05)
                except ConnectionRefusedError:
                    refused = True
            self.assertTrue(refused)
        finally:
            p.stop()

    def test_port_taken_reload_fails_cleanly(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        p = Pier(cfg()).start()
        try:
            self.write(p, cfg(blocker.getsockname()[1]))
            line = self.reload_and_wait(p, "config reload failed")
            self.assertIn("Address already in use", line["error"])
            self.assertEqual(p.get("/prod/health").status, 200)
        finally:
            p.stop()
            blocker.close()


class Metrics(unittest.TestCase):
    def test_counters_histogram_and_format(self):
        with Pier(cfg()) as p:
            before = p.get("/prod/metrics").body.decode()
            b0 = metric(before, "pier_http_requests_total", route="/health", method="GET", code="200") or 0
            for _ in range(7):
                self.assertEqual(p.get("/prod/health").status, 200)
            for _ in range(3):
                self.assertEqual(p.get("/prod/does-not-exist").status, 404)
            p.raw(b"GARBAGE\r\n\r\n")
            text = p.get("/prod/metrics").body.decode()
            self.assertEqual(metric(text, "pier_http_requests_total", route="/health", method="GET", code="200") - b0, 7)
            self.assertEqual(metric(text, "pier_http_requests_total", route="unmatched", method="GET", code="404"), 3)
            self.assertEqual(metric(text, "pier_http_bad_requests_total", reason="malformed"), 1)
            self.assertEqual(metric(text, "pier_http_request_duration_seconds_count", route="/health"),
                             metric(text, "pier_http_requests_total", route="/health", method="GET", code="200"))
            self.assertEqual(metric(text, "pier_http_request_duration_seconds_bucket", route="/health", le="+Inf"), 7)
            self.assertEqual(metric(text, "pier_build_info", version=p.get("/prod/version").json()["version"],
                                    commit=p.get("/prod/version").json()["commit"], environment="test"), 1)
            self.assertGreaterEqual(metric(text, "pier_http_connections_total"), 12)
            # the scrape itself, once the server has seen the earlier clients close (with
            # workers: 2 another worker may still be closing one when this scrape is answered)
            active = metric(text, "pier_http_connections_active")
            deadline = time.time() + waiting(2)
            while active != 1 and time.time() < deadline:
                time.sleep(0.05)
                active = metric(p.get("/prod/metrics").body.decode(), "pier_http_connections_active")
            self.assertEqual(active, 1)
            for name in ("process_start_time_seconds", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                         "process_cpu_seconds_total", "process_open_fds", "process_max_fds"):
                self.assertIsNotNone(metric(text, name), name)
            self.assertGreater(metric(text, "process_resident_memory_bytes"), 100000)
            self.assertAlmostEqual(metric(text, "process_start_time_seconds"), time.time(), delta=60)
            r = p.get("/prod/metrics")
            self.assertEqual(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")

    @unittest.skipUnless(shutil.which("promtool"), "promtool is not installed")
    def test_promtool_accepts_the_output(self):
        with Pier(cfg()) as p:
            for path in ("/prod/health", "/prod/nope", "/prod/version/libuv"):
                p.get(path)
            text = p.get("/prod/metrics").body
            out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=20)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_metrics_summed_across_workers(self):
        with Pier(cfg(extra="workers: 2\n")) as p:
            for _ in range(60):
                self.assertEqual(p.get("/prod/health/live").status, 200)
            text = p.get("/prod/metrics").body.decode()
            self.assertEqual(metric(text, "pier_http_requests_total", route="/health/live", method="GET", code="200"), 60)

    def test_metrics_can_be_disabled(self):
        with Pier(cfg(extra="metrics:\n  enabled: false\n")) as p:
            self.assertEqual(p.get("/prod/metrics").status, 404)
            self.assertEqual(p.get("/prod/health").status, 200)


class MetricsToken(unittest.TestCase):
    """metrics.token_file: /metrics needs "Authorization: Bearer <token>" read from a file."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="pier-token-")
        self.token_file = os.path.join(self.dir.name, "metrics-token")
        with open(self.token_file, "w") as f:
            f.write("s3cret-Token_1\n")  # the trailing newline echo adds is not part of it

    def tearDown(self):
        self.dir.cleanup()

    def conf(self, path=None):
        return cfg(extra="metrics:\n  token_file: %s\n" % (path or self.token_file))

    def test_scrape_needs_the_token(self):
        with Pier(self.conf()) as p:
            r = p.get("/prod/metrics")
            self.assertEqual(r.status, 401)
            self.assertEqual(r.json(), {"error": {"status": 401, "message": "metrics need Authorization: Bearer <token>"}})
            for bad in ("Bearer s3cret-Token_", "Bearer s3cret-Token_12", "Bearer S3cret-Token_1",
                        "Basic s3cret-Token_1", "Bearer", "s3cret-Token_1", "Bearer  s3cret-Token_1"):
                r = p.get("/prod/metrics", headers={"Authorization": bad})
                self.assertEqual(r.status, 401, bad)
                self.assertIn("error", r.json())
                self.assertNotIn(b"s3cret", r.body)
            r = p.get("/prod/metrics", headers={"Authorization": "Bearer s3cret-Token_1"})
            self.assertEqual(r.status, 200)
            self.assertIn("pier_http_requests_total", r.body.decode())
            self.assertEqual(metric(r.body.decode(), "pier_http_requests_total", route="/metrics", method="GET", code="401"), 8)
            r = p.get("/prod/metrics", headers={"Authorization": "bearer s3cret-Token_1"})  # scheme is case-insensitive
            self.assertEqual(r.status, 200)
            self.assertEqual(p.get("/prod/health").status, 200)  # nothing else needs it
            self.assertFalse(any("s3cret" in l for l in p.lines), "the token is in pier's log")

    def test_reload_reads_a_rotated_token(self):
        with Pier(self.conf()) as p:
            with open(self.token_file, "w") as f:
                f.write("rotated")
            n = len([j for j in p.logs() if j.get("msg") == "config reloaded"])
            p.signal(signal.SIGHUP)
            deadline = time.time() + 5
            while time.time() < deadline and len([j for j in p.logs() if j.get("msg") == "config reloaded"]) == n:
                time.sleep(0.02)
            self.assertEqual(p.get("/prod/metrics", headers={"Authorization": "Bearer rotated"}).status, 200)
            self.assertEqual(p.get("/prod/metrics", headers={"Authorization": "Bearer s3cret-Token_1"}).status, 401)
            # the file disappears: the reload fails with the reason, the last token stays in force
            os.unlink(self.token_file)
            p.signal(signal.SIGHUP)
            line = p.wait_log(lambda j: j.get("msg", "").startswith("config reload failed"))
            self.assertIsNotNone(line)
            self.assertIn("metrics.token_file: cannot read %s: No such file or directory" % self.token_file, line["error"])
            self.assertEqual(p.get("/prod/metrics", headers={"Authorization": "Bearer rotated"}).status, 200)

    def check_refused(self, path, message):
        out = subprocess.run([PIER_BIN, "--check-config", os.path.join(self.dir.name, "pier.yaml")],
                             capture_output=True, timeout=waiting(20))
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(message, out.stderr.decode())
        p = Pier(self.conf(path))
        with self.assertRaises(RuntimeError) as e:
            p.start(timeout=5)
        self.assertIn(message, str(e.exception))

    def test_unusable_token_files_are_clear_errors(self):
        cases = [
            (os.path.join(self.dir.name, "missing"), "cannot read %s: No such file or directory"),
            (self.dir.name, "%s is not a regular file"),
            (os.path.join(self.dir.name, "empty"), "%s is empty: expected a token"),
            (os.path.join(self.dir.name, "spaces"), "%s holds a space or control character"),
            (os.path.join(self.dir.name, "long"), "%s holds more than 255 bytes"),
        ]
        with open(cases[2][0], "w") as f:
            f.write("\n")
        with open(cases[3][0], "w") as f:
            f.write("two words\n")
        with open(cases[4][0], "w") as f:
            f.write("x" * 256)
        for path, message in cases:
            with open(os.path.join(self.dir.name, "pier.yaml"), "w") as f:
                f.write(self.conf(path))
            self.check_refused(path, "metrics.token_file: " + message % path)


class Workers(unittest.TestCase):
    def test_two_workers_drain_and_reload(self):
        port = free_port()
        p = Pier(cfg(port, extra="workers: 2\n")).start()
        try:
            self.assertEqual(p.logs()[0]["workers"], 2)
            with open(p.config_path, "w") as f:
                f.write(cfg(port, "/z", "workers: 2\n"))
            p.signal(signal.SIGHUP)
            self.assertIsNotNone(p.wait_log(lambda j: j.get("msg") == "config reloaded", 5))
            for _ in range(20):  # both workers' listeners answer with the new prefix
                self.assertEqual(p.get("/z/health").status, 200)
            p.signal(signal.SIGTERM)
            self.assertEqual(p.wait_exit(5), 0)
        finally:
            p.stop()


if __name__ == "__main__":
    harness.main()
