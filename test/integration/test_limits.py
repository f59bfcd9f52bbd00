"""Limits and timeouts, as a client sees them, against the real pier binary.

Each limit has one right answer (see docs/limits-and-hardening.md):
  request line + headers > limits.max_header_bytes  -> 431, close
  Content-Length > limits.max_body_bytes           -> 413 before any body byte is read, close
  chunked body growing past limits.max_body_bytes  -> 413, close
  headers not in within timeouts.header_ms          -> 408, close (however slowly they drip)
  whole request not in within timeouts.request_ms   -> 408, close
  idle keep-alive connection after timeouts.idle_ms -> closed, no response
  limits.max_connections reached                    -> 503 + Retry-After: 1, close; the open
                                                       connections keep working
  RLIMIT_NOFILE lower than max_connections          -> max_connections lowered (logged): pier
                                                       never runs out of descriptors
Timeouts are set short (hundreds of ms) so the whole file runs in about 15 s.

Run:  python3 test/integration/test_limits.py -v      (PIER_BIN picks the binary)
"""
import os
import resource
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BASE_CONFIG, PIER_BIN, Pier, Reader, parse_responses  # noqa: E402

# Under AddressSanitizer or valgrind (PIER_TEST_INSTRUMENTED=1) RSS means little: not asserted.
SANITIZED = os.environ.get("PIER_TEST_INSTRUMENTED") == "1" or (
    os.path.exists(PIER_BIN) and b"__asan_init" in open(PIER_BIN, "rb").read())

HEADER_MS, REQUEST_MS, IDLE_MS = 800, 1600, 1200
TIMER_S = 0.01  # pier's deadline timer is due at the deadline itself; this is its ms rounding
SLACK_S = 0.6  # scheduling slack on a loaded 2-core CI machine

CONFIG = BASE_CONFIG + """limits:
  max_body_bytes: 1000
  max_header_bytes: 4096
timeouts:
  header_ms: %d
  request_ms: %d
  idle_ms: %d
""" % (HEADER_MS, REQUEST_MS, IDLE_MS)


def recv_all(sock, timeout):
    """Read until EOF/reset or timeout; returns (data, closed, seconds)."""
    sock.settimeout(0.05)
    data, t0 = bytearray(), time.time()
    while time.time() - t0 < timeout:
        try:
            chunk = sock.recv(262144)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return bytes(data), True, time.time() - t0
        if not chunk:
            return bytes(data), True, time.time() - t0
        data += chunk
    return bytes(data), False, time.time() - t0


class LimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pier = Pier(CONFIG).start()

    @classmethod
    def tearDownClass(cls):
        cls.pier.stop()

    def status_and_close(self, data, timeout=3.0):
        s = self.pier.connect()
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            out, closed, _ = recv_all(s, timeout)
        finally:
            s.close()
        rs = [r for r in parse_responses(out) if r.status >= 200]
        return (rs[0] if rs else None), closed

    # -- sizes --------------------------------------------------------------------------
    def test_headers_under_the_limit_are_served(self):
        r, _ = self.status_and_close(b"GET /prod/health HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 3800 +
                                     b"\r\nConnection: close\r\n\r\n")
        self.assertEqual(r.status, 200)

    def test_headers_over_the_limit_get_431(self):
        r, closed = self.status_and_close(b"GET /prod/health HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 4100 + b"\r\n\r\n")
        self.assertEqual(r.status, 431)
        self.assertIn("max_header_bytes", r.json()["error"]["message"])
        self.assertTrue(closed)

    def test_exactly_64_header_fields_are_served_65_get_431(self):
        # the documented limit is "more than 64 header fields"; Host counts as one
        def head(fields):
            return (b"GET /prod/health HTTP/1.1\r\nHost: a\r\n" +
                    b"".join(b"X-%d: v\r\n" % i for i in range(1, fields - 1)) +
                    b"Connection: close\r\n\r\n")
        got = {}
        for fields in (63, 64, 65):
            r, _ = self.status_and_close(head(fields))
            got[fields] = r.status if r else None
        print("header fields -> status: %s" % got)
        self.assertEqual(got, {63: 200, 64: 200, 65: 431})

    def test_content_length_over_the_limit_gets_413_before_the_body(self):
        s = self.pier.connect()
        try:
            s.sendall(b"POST /prod/echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 1001\r\n\r\n")
            out, closed, took = recv_all(s, 3)  # no body byte sent: the answer must not wait for it
        finally:
            s.close()
        r = parse_responses(out)[0]
        self.assertEqual(r.status, 413)
        self.assertLess(took, 1.0)
        self.assertTrue(closed)

    def test_body_at_the_limit_is_served(self):
        body = b'"' + b"x" * 998 + b'"'
        r, _ = self.status_and_close(b"POST /prod/echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                                     b"Connection: close\r\nContent-Length: 1000\r\n\r\n" + body)
        self.assertEqual(r.status, 200)

    def test_chunked_body_growing_past_the_limit_gets_413(self):
        head = b"POST /prod/echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        r, closed = self.status_and_close(head + b"200\r\n" + b" " * 512 + b"\r\n" + b"200\r\n" + b" " * 512 + b"\r\n")
        self.assertEqual(r.status, 413)
        self.assertTrue(closed)

    def test_refused_body_is_read_not_reset(self):
        # lingering close: a client still sending the body it was refused reads the 413
        s = self.pier.connect()
        try:
            s.sendall(b"POST /prod/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n")
            try:
                s.sendall(b"x" * 300000)
            except (BrokenPipeError, ConnectionResetError):
                pass
            out, _, _ = recv_all(s, 3)
        finally:
            s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 413 "), out[:80])

    # -- timeouts -----------------------------------------------------------------------
    def test_header_timeout_408_and_close(self):
        s = self.pier.connect()
        try:
            t0 = time.time()
            s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n")
            out, closed, _ = recv_all(s, HEADER_MS / 1000 + 2)
            took = time.time() - t0
        finally:
            s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 408 "), out[:80])
        self.assertIn(b"header_ms", out)
        self.assertTrue(closed)
        self.assertGreaterEqual(took, HEADER_MS / 1000 - 0.05)
        self.assertLess(took, HEADER_MS / 1000 + TIMER_S + SLACK_S)

    def test_header_timeout_is_not_reset_by_dripping(self):
        # slowloris: one byte every 100 ms must not buy more than header_ms
        s = self.pier.connect()
        try:
            t0 = time.time()
            req = b"GET /prod/health HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 100
            closed = False
            for b in req:
                try:
                    s.sendall(bytes([b]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                out, closed, _ = recv_all(s, 0.1)
                if out or closed:
                    break
            took = time.time() - t0
            if not closed:
                rest, closed, _ = recv_all(s, 2)
                out += rest
        finally:
            s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 408 "), out[:80])
        self.assertLess(took, HEADER_MS / 1000 + TIMER_S + SLACK_S)

    def test_silent_connection_is_closed_at_header_ms(self):
        s = self.pier.connect()
        try:
            out, closed, took = recv_all(s, HEADER_MS / 1000 + 2)
        finally:
            s.close()
        self.assertTrue(closed)
        self.assertGreaterEqual(took, HEADER_MS / 1000 - 0.05)
        self.assertLess(took, HEADER_MS / 1000 + TIMER_S + SLACK_S)
        # no request, no answer: closed without an unsolicited 408, as nginx does
        self.assertEqual(out, b"")

    def test_request_timeout_408_when_the_body_is_slow(self):
        s = self.pier.connect()
        try:
            t0 = time.time()
            s.sendall(b"POST /prod/echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n")
            out, closed = b"", False
            for _ in range(int(REQUEST_MS / 100) + 20):  # one body byte every 100 ms
                try:
                    s.sendall(b" ")
                except (BrokenPipeError, ConnectionResetError):
                    break
                chunk, closed, _ = recv_all(s, 0.1)
                out += chunk
                if out or closed:
                    break
            took = time.time() - t0
            if not closed:
                rest, closed, _ = recv_all(s, 2)
                out += rest
        finally:
            s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 408 "), out[:80])
        self.assertIn(b"request_ms", out)
        self.assertGreaterEqual(took, REQUEST_MS / 1000 - 0.05)
        self.assertLess(took, REQUEST_MS / 1000 + TIMER_S + SLACK_S)

    def test_idle_keepalive_closed_at_idle_ms(self):
        s = self.pier.connect()
        try:
            s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n\r\n")
            r = Reader(s).next()
            self.assertEqual(r.status, 200)
            self.assertNotEqual(r.headers.get("connection"), "close")
            t0 = time.time()
            out, closed, _ = recv_all(s, IDLE_MS / 1000 + 2)
            took = time.time() - t0
        finally:
            s.close()
        self.assertEqual(out, b"")  # idle: closed without a response
        self.assertTrue(closed)
        self.assertGreaterEqual(took, IDLE_MS / 1000 - 0.05)
        self.assertLess(took, IDLE_MS / 1000 + TIMER_S + SLACK_S)

    def test_keepalive_survives_below_idle_ms(self):
        s = self.pier.connect()
        try:
            rd = Reader(s)
            for _ in range(3):
                s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n\r\n")
                self.assertEqual(rd.next().status, 200)
                time.sleep(IDLE_MS / 1000 * 0.6)
        finally:
            s.close()

    # -- pipelining ---------------------------------------------------------------------
    def test_pipelined_flood_answered_in_order(self):
        n = 1000
        reqs = b"".join(b"GET /prod/health/live HTTP/1.1\r\nHost: a\r\nX-Request-Id: p%d\r\n\r\n" % i for i in range(n))
        s = self.pier.connect(timeout=10)
        try:
            s.sendall(reqs + b"GET /prod/health/live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            out, closed, _ = recv_all(s, 10)
        finally:
            s.close()
        rs = parse_responses(out)
        self.assertEqual(len(rs), n + 1)
        self.assertEqual([r.headers["x-request-id"] for r in rs[:n]], ["p%d" % i for i in range(n)])
        self.assertTrue(all(r.status == 200 for r in rs))
        self.assertTrue(closed)

    def test_pipelined_big_answers_in_order(self):
        # 3,000 pipelined /metrics answers are megabytes: pier answers them in turns as the
        # client reads (it stops at 256 KiB of queued responses), all of them, in order
        n = 400 if SANITIZED else 3000  # still megabytes; /metrics is ~8x slower under TSan
        reqs = b"".join(b"GET /prod/metrics HTTP/1.1\r\nHost: a\r\nX-Request-Id: m%d\r\n\r\n" % i for i in range(n))
        s = self.pier.connect(timeout=20)
        try:
            s.sendall(reqs + b"GET /prod/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            out, closed, _ = recv_all(s, 20)
        finally:
            s.close()
        rs = parse_responses(out)
        self.assertEqual(len(rs), n + 1)
        self.assertEqual([r.headers["x-request-id"] for r in rs[:n]], ["m%d" % i for i in range(n)])
        self.assertTrue(all(r.status == 200 for r in rs))
        self.assertTrue(closed)

    def test_pipelining_amplification_is_bounded(self):
        # 20 clients each pipeline 1,500 /metrics requests (58 KB) and read nothing: the
        # answers would be megabytes per client; pier queues at most ~256 KiB per client
        rss0 = self.pier.rss_kib()
        req = b"GET /prod/metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 1500
        socks = []
        try:
            for _ in range(3 if SANITIZED else 20):  # valgrind renders /metrics ~30x slower
                s = self.pier.connect()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(req)
                socks.append(s)
            time.sleep(1.0)
            rss1 = self.pier.rss_kib()
            # still answers; on a loaded 2-core machine the worker may first spend seconds
            # rendering the megabytes these sockets' kernel buffers take (both presets, main too)
            self.assertEqual(self.pier.get("/prod/health", timeout=30).status, 200)
        finally:
            for s in socks:
                s.close()
        print("\npipelining amplification: 20 clients x 1,500 pipelined /metrics, none reading: "
              "RSS %d KiB -> %d KiB" % (rss0, rss1), file=sys.stderr)
        if not SANITIZED:
            self.assertLess(rss1 - rss0, 16 * 1024)

    def test_client_that_never_reads_is_cut_off(self):
        # pipelined requests whose answers the client never reads: pier stops reading
        # (backpressure) and closes the connection after request_ms; memory stays bounded
        rss0 = self.pier.rss_kib()
        s = self.pier.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            s.settimeout(0.2)
            sent, t0 = 0, time.time()
            req = b"GET /prod/version HTTP/1.1\r\nHost: a\r\n\r\n" * 100
            limit = REQUEST_MS / 1000 + (15 if SANITIZED else 3)
            while time.time() - t0 < limit:
                try:
                    sent += s.send(req)
                except socket.timeout:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            rss1 = self.pier.rss_kib()
        finally:
            s.close()
        self.assertLess(time.time() - t0, limit)  # cut before our own deadline
        self.assertEqual(self.pier.get("/prod/health").status, 200)
        if not SANITIZED:
            self.assertLess(rss1 - rss0, 8 * 1024)


class PipelinedDeadlineTest(unittest.TestCase):
    """A pipelined request's headers get their own timeouts.header_ms, from when it began."""

    def test_pipelined_request_gets_a_fresh_header_deadline(self):
        # request 1 drips for 0.9 s; its last bytes and the start of request 2 go in one write;
        # the rest of request 2 follows 1.0 s later: 1.9 s after the connection's first byte,
        # but only 1.0 s after request 2 began. Both are inside header_ms 1500 of their own.
        cfg = BASE_CONFIG + "timeouts:\n  header_ms: 1500\n  request_ms: 60000\n"
        with Pier(cfg) as p:
            s = p.connect()
            try:
                req1 = b"GET /prod/health HTTP/1.1\r\nHost: a\r\nX-Drip: 123456789\r\n\r\n"
                req2 = b"GET /prod/version HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                t0 = time.time()
                for i in range(9):  # the first 9 bytes of request 1, one every 100 ms
                    s.sendall(req1[i:i + 1])
                    time.sleep(0.1)
                s.sendall(req1[9:] + req2[:20])
                time.sleep(1.0)
                s.sendall(req2[20:])
                out, closed, _ = recv_all(s, 5)
                took = time.time() - t0
            finally:
                s.close()
            statuses = [r.status for r in parse_responses(out)]
            print("pipelined across request 1's deadline: %s after %.2f s" % (statuses, took))
            self.assertEqual(statuses, [200, 200])
            self.assertTrue(closed)


class MaxConnectionsTest(unittest.TestCase):
    def test_over_max_connections_503_and_existing_keep_working(self):
        cfg = BASE_CONFIG + "limits:\n  max_connections: 5\ntimeouts:\n  header_ms: 30000\n  idle_ms: 30000\n"
        with Pier(cfg) as p:
            held = [p.connect() for _ in range(5)]
            try:
                time.sleep(0.2)
                for _ in range(3):  # each extra connection: fast 503, Retry-After, closed
                    s = p.connect()
                    t0 = time.time()
                    out, closed, _ = recv_all(s, 3)
                    s.close()
                    r = parse_responses(out)[0]
                    self.assertEqual(r.status, 503)
                    self.assertEqual(r.headers.get("retry-after"), "1")
                    self.assertEqual(r.headers.get("connection"), "close")
                    self.assertTrue(closed)
                    self.assertLess(time.time() - t0, 1.0)
                for s in held:  # the connections already open keep working
                    s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n\r\n")
                    self.assertEqual(Reader(s).next().status, 200)
                held.pop().close()  # one leaves: a new client gets in
                time.sleep(0.3)
                s = p.connect()
                s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                self.assertEqual(Reader(s).next().status, 200)
                s.close()
            finally:
                for s in held:
                    s.close()
            time.sleep(0.3)  # let pier see those closes
            text = p.get("/prod/metrics").body.decode()
            self.assertRegex(text, r'pier_http_bad_requests_total\{reason="overload"\} [1-9]')

    def test_descriptor_limit_bounds_max_connections(self):
        def low_nofile():
            resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

        p = Pier(BASE_CONFIG + "limits:\n  max_connections: 10000\ntimeouts:\n  header_ms: 30000\n")
        import subprocess
        real_popen = subprocess.Popen

        def popen(*a, **kw):
            kw["preexec_fn"] = low_nofile
            return real_popen(*a, **kw)

        subprocess.Popen = popen
        try:
            p.start()
        finally:
            subprocess.Popen = real_popen
        try:
            line = p.wait_log(lambda j: "descriptor limit" in j.get("msg", ""), 2)
            self.assertIsNotNone(line, "no 'lowered' warning logged")
            effective = line["effective"]
            self.assertLess(effective, 100)
            extra = 300  # three times the descriptor limit: refusals must not use them up
            held, seen = [], {}
            try:
                for _ in range(effective + extra):
                    s = p.connect()
                    s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n\r\n")
                    held.append(s)
                time.sleep(0.3)
                for s in held:
                    s.settimeout(2)
                    try:
                        d = s.recv(4096)
                        kind = d[:12].decode("latin-1") if d else "eof"
                    except ConnectionResetError:
                        kind = "reset"
                    except socket.timeout:
                        kind = "timeout"
                    seen[kind] = seen.get(kind, 0) + 1
            finally:
                for s in held:
                    s.close()
            # the first `effective` are served, every other one gets the documented 503
            self.assertEqual(seen, {"HTTP/1.1 200": effective, "HTTP/1.1 503": extra})
            time.sleep(0.3)
            self.assertEqual(p.get("/prod/health").status, 200)  # alive, no EMFILE spin
            self.assertIsNone(p.proc.poll())
        finally:
            p.stop()


if __name__ == "__main__":
    harness.main()
