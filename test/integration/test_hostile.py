"""Hostile input: malformed and adversarial requests against the real pier binary.

pier sits behind nginx and load balancers and must stay up whatever a client sends. Each
row of CASES is the bytes one client sends on a fresh connection and what that client must
see: the status of the first response (one of a set, where the RFCs allow either) and
whether pier closes the connection afterwards. Every refused request is answered and the
connection closed (request smuggling needs a connection that stays open after a framing
dispute). After the table pier must still answer /health, and its resident memory must not
have grown by more than RSS_GROWTH_LIMIT_KIB over ROUNDS more passes of the whole table.

Run:  python3 test/integration/test_hostile.py -v      (PIER_BIN picks the binary)
"""
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BASE_CONFIG, PIER_BIN, Pier, parse_responses  # noqa: E402

# Under AddressSanitizer or valgrind (PIER_TEST_INSTRUMENTED=1) RSS means little and pier
# runs slower: the memory bound is then reported, not asserted, over fewer rounds.
SANITIZED = os.environ.get("PIER_TEST_INSTRUMENTED") == "1" or (
    os.path.exists(PIER_BIN) and b"__asan_init" in open(PIER_BIN, "rb").read())

MAX_BODY = 1024
CONFIG = BASE_CONFIG + """limits:
  max_body_bytes: %d
  max_header_bytes: 16384
""" % MAX_BODY

ROUNDS = 3 if SANITIZED else 50  # extra passes over the table for the memory check
RSS_GROWTH_LIMIT_KIB = 1024  # stated bound: < 1 MiB after ROUNDS * len(CASES) hostile connections

CLOSE = "close"  # expected: pier closes without answering (nothing to answer yet)
H = b"Host: a\r\n"
JSON = b"Content-Type: application/json\r\n"
CHUNKED = b"POST /prod/echo HTTP/1.1\r\n" + H + JSON + b"Transfer-Encoding: chunked\r\n\r\n"


def get(extra=b"", target=b"/prod/health", version=b"HTTP/1.1", method=b"GET"):
    return method + b" " + target + b" " + version + b"\r\n" + H + extra + b"\r\n"


# (name, bytes sent, expected statuses, connection must close)
CASES = [
    # -- limits -------------------------------------------------------------------------
    ("header over max_header_bytes", get(b"X-Big: " + b"a" * 17000 + b"\r\n"), {431}, True),
    ("request target over max_header_bytes", get(target=b"/prod/" + b"a" * 17000), {414}, True),
    ("request line over max_header_bytes, no header yet", b"GET /prod/" + b"a" * 17000, {414}, True),
    ("whitespace padding over max_header_bytes", get(b"X-Pad:" + b" " * 17000 + b"a\r\n"), {431}, True),
    ("too many header fields", get(b"".join(b"X-%d: v\r\n" % i for i in range(80))), {431}, True),
    ("Content-Length over max_body_bytes, no body sent",
     b"POST /prod/echo HTTP/1.1\r\n" + H + JSON + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1), {413}, True),
    ("huge Content-Length", b"POST /prod/echo HTTP/1.1\r\n" + H + b"Content-Length: 1099511627776\r\n\r\n", {413}, True),
    ("chunked body growing past max_body_bytes",
     CHUNKED + b"".join(b"100\r\n" + b" " * 256 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n", {413}, True),
    ("Expect 100-continue with a body over the limit",
     b"POST /prod/echo HTTP/1.1\r\n" + H + JSON + b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n", {413}, True),
    ("unknown expectation", b"POST /prod/echo HTTP/1.1\r\n" + H + JSON + b"Content-Length: 2\r\nExpect: 200-ok\r\n\r\n{}",
     {417}, True),
    ("trailers over max_header_bytes", CHUNKED + b"0\r\nX: " + b"t" * 17000 + b"\r\n\r\n", {431}, True),
    ("chunk extension over max_header_bytes", CHUNKED + b"2;" + b"e" * 17000 + b"\r\n{}\r\n0\r\n\r\n", {400}, True),
    # -- request smuggling: framing disputes ---------------------------------------------
    ("Content-Length with Transfer-Encoding",
     b"POST /prod/echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}, True),
    ("Transfer-Encoding with Content-Length",
     b"POST /prod/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", {400}, True),
    ("two different Content-Length values", get(b"Content-Length: 1\r\nContent-Length: 2\r\n") + b"ab", {400}, True),
    ("two equal Content-Length headers", get(b"Content-Length: 2\r\nContent-Length: 2\r\n") + b"ab", {400}, True),
    ("Content-Length list", get(b"Content-Length: 2, 2\r\n") + b"ab", {400}, True),
    ("Content-Length with sign", get(b"Content-Length: +2\r\n") + b"ab", {400}, True),
    ("Content-Length negative", get(b"Content-Length: -1\r\n"), {400}, True),
    ("Content-Length overflow", get(b"Content-Length: 99999999999999999999999\r\n"), {400}, True),
    ("Transfer-Encoding gzip", b"POST /prod/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", {501}, True),
    ("Transfer-Encoding identity", b"POST /prod/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", {501}, True),
    ("Transfer-Encoding gzip, chunked",
     b"POST /prod/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {501}, True),
    ("Transfer-Encoding chunked, gzip",
     b"POST /prod/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n", {400, 501}, True),
    ("Transfer-Encoding chunked twice",
     b"POST /prod/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     {400}, True),
    ("Transfer-Encoding xchunked", b"POST /prod/echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n", {501}, True),
    ("Transfer-Encoding in HTTP/1.0 keep-alive",
     get(b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n", version=b"HTTP/1.0") + b"0\r\n\r\n" + get(),
     {400}, True),
    ("chunk size not hex", CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n", {400}, True),
    ("chunk size overflow", CHUNKED + b"1ffffffffffffffff\r\n{}\r\n0\r\n\r\n", {400}, True),
    ("chunk size negative", CHUNKED + b"-2\r\n{}\r\n0\r\n\r\n", {400}, True),
    ("chunk size with trailing space", CHUNKED + b"2 \r\n{}\r\n0\r\n\r\n", {400}, True),
    ("chunk size 0x prefix", CHUNKED + b"0x2\r\n{}\r\n0\r\n\r\n", {400}, True),
    ("chunk data not followed by CRLF", CHUNKED + b"2\r\n{}XX0\r\n\r\n", {400}, True),
    ("chunk size line ended by bare LF", CHUNKED + b"2\n{}\r\n0\r\n\r\n", {400}, True),
    ("chunk size line ended by CR CR", CHUNKED + b"2\r\r{}\r\n0\r\n\r\n", {400}, True),
    ("last chunk ended by bare LF", CHUNKED + b"2\r\n{}\r\n0\r\n\n", {400}, True),
    ("chunk extension with a control byte", CHUNKED + b"2;a=\x01\r\n{}\r\n0\r\n\r\n", {400}, True),
    ("trailer with an invalid name", CHUNKED + b"2\r\n{}\r\n0\r\nBad Name: x\r\n\r\n", {400}, True),
    # llhttp (which walks chunked bodies) accepts these; pier's callbacks refuse them (src/chunked.c)
    ("chunk announcing more than max_body_bytes, no data yet", CHUNKED + b"100000\r\n", {413}, True),
    ("trailer section ended by bare LF", CHUNKED + b"2\r\n{}\r\n0\r\nX: a\r\n\n", {400}, True),
    ("obs-fold in a trailer", CHUNKED + b"2\r\n{}\r\n0\r\nX: a\r\n b\r\n\r\n", {400}, True),
    ("empty trailer name", CHUNKED + b"2\r\n{}\r\n0\r\n: y\r\n\r\n", {400}, True),
    ("whitespace padding in trailers over max_header_bytes",
     CHUNKED + b"2\r\n{}\r\n0\r\nX:" + b" " * 17000 + b"a\r\n\r\n", {431}, True),
    # llhttp refuses these only when built strict (third_party/llhttp)
    ("space before a trailer's colon", CHUNKED + b"2\r\n{}\r\n0\r\nX : y\r\n\r\n", {400}, True),
    ("Transfer-Encoding as a trailer", CHUNKED + b"2\r\n{}\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
     {400}, True),
    # -- line structure -----------------------------------------------------------------
    ("obs-fold with SP", get(b"X-A: a\r\n b\r\n"), {400}, True),
    ("obs-fold with HTAB", get(b"X-A: a\r\n\tb\r\n"), {400}, True),
    ("whitespace before the first header", b"GET /prod/health HTTP/1.1\r\n Host: a\r\n\r\n", {400}, True),
    ("bare LF after the request line", b"GET /prod/health HTTP/1.1\nHost: a\r\n\r\n", {400}, True),
    ("bare LF line ends everywhere", b"GET /prod/health HTTP/1.1\nHost: a\n\n", {400}, True),
    ("bare LF ending the head", b"GET /prod/health HTTP/1.1\r\nHost: a\r\n\n", {400}, True),
    ("bare CR in a header value", get(b"X-A: a\rb\r\n"), {400}, True),
    ("bare CR ending the request line", b"GET /prod/health HTTP/1.1\rHost: a\r\n\r\n", {400}, True),
    ("bare CR in the request target", b"GET /prod/he\ralth HTTP/1.1\r\n" + H + b"\r\n", {400}, True),
    # -- bytes that have no place in a head ------------------------------------------------
    ("NUL in the request target", get(target=b"/prod/he\x00alth"), {400}, True),
    ("NUL in a header value", get(b"X-A: a\x00b\r\n"), {400}, True),
    ("NUL in a header name", get(b"X-\x00A: b\r\n"), {400}, True),
    ("control byte in a header value", get(b"X-A: a\x01b\r\n"), {400}, True),
    ("ESC in the request target", get(target=b"/prod/\x1bhealth"), {400}, True),
    ("DEL in a header value", get(b"X-A: a\x7fb\r\n"), {400}, True),
    ("space in a header name", get(b"X A: b\r\n"), {400}, True),
    ("space before the colon", get(b"X-A : b\r\n"), {400}, True),
    ("empty header name", get(b": b\r\n"), {400}, True),
    ("non-ASCII header name", get(b"X-\xc3\xa9: b\r\n"), {400}, True),
    ("header line without a colon", get(b"X-A b\r\n"), {400}, True),
    ("invalid method character", get(method=b"G(T"), {400}, True),
    ("lower-case method (methods are case-sensitive)", get(method=b"get"), {501}, True),
    ("unknown method", get(method=b"FROB"), {501}, True),
    ("unknown method sharing a prefix with a known one", get(method=b"GETS"), {501}, True),
    ("RTSP method in HTTP", get(method=b"PLAY"), {501}, True),
    ("RTSP method, then no protocol", b"PLAY /prod/health XTTP/1.1\r\nHost: a\r\n\r\n", {501}, True),
    ("an RTSP request line", b"SETUP /prod/health RTSP/1.0\r\nHost: a\r\n\r\n", {501}, True),
    ("empty method", get(method=b""), {400}, True),
    ("method too long", get(method=b"GETGETGETGET"), {501}, True),
    ("relative target without slash", get(target=b"prod/health"), {400}, True),
    ("fragment in the target", get(target=b"/prod/health#top"), {400}, True),
    ("fragment in an absolute-form target", get(target=b"http://a/prod/health#x"), {400}, True),
    ("TLS ClientHello on the plain port", bytes.fromhex("160301020001000001fc0303") + os.urandom(64), {400}, True),
    ("binary garbage", b"\xff\xfe\x00\x01" * 64, {400}, True),
    # -- Host (RFC 9112 3.2) ---------------------------------------------------------------
    ("HTTP/1.1 without Host", b"GET /prod/health HTTP/1.1\r\nConnection: close\r\n\r\n", {400}, True),
    ("two Host headers", get(b"Host: b\r\n"), {400}, True),
    ("two equal Host headers", get(H), {400}, True),
    ("two Host headers in HTTP/1.0", get(b"Host: b\r\n", version=b"HTTP/1.0"), {400}, True),
    ("Host with a space", b"GET /prod/health HTTP/1.1\r\nHost: a b\r\n\r\n", {400}, True),
    ("Host with a path", b"GET /prod/health HTTP/1.1\r\nHost: a/b\r\n\r\n", {400}, True),
    ("Host with userinfo", b"GET /prod/health HTTP/1.1\r\nHost: u@a\r\n\r\n", {400}, True),
    # -- versions and what is not implemented ----------------------------------------------
    ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", {501}, True),
    ("CONNECT to a path", get(method=b"CONNECT"), {400, 501}, True),
    ("HTTP/2.0 request line", get(version=b"HTTP/2.0"), {505}, True),
    ("HTTP/2 connection preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {505}, True),
    ("HTTP/1.2", get(version=b"HTTP/1.2"), {400, 505}, True),
    ("HTTP/0.9 request line", b"GET /prod/health\r\n\r\n", {400, 505}, True),
    ("pipelined request after a refused one is not answered",
     get(b"X-A: a\r\n b\r\n") + get(b"Connection: close\r\n"), {400}, True),
    # -- accepted as the RFCs require ------------------------------------------------------
    ("absolute-form target: path routed, authority ignored",
     get(b"Connection: close\r\n", target=b"http://evil.example:8080/prod/health?x=1"), {200}, True),
    ("absolute-form https target", get(b"Connection: close\r\n", target=b"https://a/prod/version"), {200}, True),
    ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", {204}, True),
    ("Upgrade: websocket answered as HTTP/1.1, then closed",
     get(b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         b"Sec-WebSocket-Version: 13\r\n") + get(), {200}, True),
    ("Upgrade: h2c answered as HTTP/1.1, then closed",
     get(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"),
     {200}, True),
    ("HTTP/1.0 without Host", b"GET /prod/health HTTP/1.0\r\n\r\n", {200}, True),
    ("empty Host", b"GET /prod/health HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n", {200}, True),
    ("IPv6 Host with port", b"GET /prod/health HTTP/1.1\r\nHost: [::1]:8000\r\nConnection: close\r\n\r\n",
     {200}, True),
    ("leading empty lines before the request", b"\r\n\r\n" + get(b"Connection: close\r\n"), {200}, True),
    ("obs-text in a header value", get(b"X-A: caf\xc3\xa9\tok\r\nConnection: close\r\n"), {200}, True),
    ("invalid X-Request-Id is replaced", get(b"X-Request-Id: " + b"r" * 200 + b"\r\nConnection: close\r\n"), {200}, True),
    ("nothing but empty lines", b"\r\n\r\n\r\n", CLOSE, True),
    ("chunk extensions and trailer fields",
     b"POST /prod/echo HTTP/1.1\r\n" + H + JSON + b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
     b'2;a="x y";b\r\n{}\r\n0;c=d\r\nX-T: v\r\n\r\n', {200}, True),
]


def first_status(data):
    """Status of the first final response in `data` (skipping 1xx), or None."""
    for r in parse_responses(data):
        if r.status >= 200:
            return r
    return None


class HostileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pier = Pier(CONFIG).start()

    @classmethod
    def tearDownClass(cls):
        cls.pier.stop()

    def send(self, data, shut_write=False, timeout=3.0):
        """Send `data` on a fresh connection; return (bytes received, closed by pier)."""
        s = self.pier.connect(timeout)
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # pier answered and closed while we were still sending
            if shut_write:
                s.shutdown(socket.SHUT_WR)
            out = b""
            deadline = time.time() + timeout
            closed = False
            s.settimeout(0.2)
            while time.time() < deadline:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                out += chunk
            return out, closed
        finally:
            s.close()

    def run_case(self, name, data, expect, must_close):
        out, closed = self.send(data, shut_write=(expect == CLOSE))
        if expect == CLOSE:
            self.assertEqual(out, b"", "%s: expected no answer, got %r" % (name, out[:200]))
            self.assertTrue(closed, "%s: connection not closed" % name)
            return
        r = first_status(out)
        self.assertIsNotNone(r, "%s: no response; got %r" % (name, out[:300]))
        self.assertIn(r.status, expect, "%s: got %d, expected %s; %r" % (name, r.status, sorted(expect), out[:400]))
        if must_close:
            self.assertTrue(closed, "%s: connection still open after %d" % (name, r.status))
        if r.status >= 400:
            self.assertEqual(r.headers.get("connection"), "close", "%s: error without Connection: close" % name)
            self.assertEqual(r.json()["error"]["status"], r.status, name)
        # a refused request is answered once: nothing after it is processed
        finals = [x for x in parse_responses(out) if x.status >= 200]
        if r.status >= 400 or "upgrade" in name.lower():
            self.assertEqual(len(finals), 1, "%s: %d responses" % (name, len(finals)))
        self.assertNotEqual(r.status, 101, name)
        return r

    def test_every_refusal_is_counted_once(self):
        # each refused case moves pier_http_bad_requests_total by exactly one, under a reason
        # that fits its status; accepted cases move nothing
        reason_of = {400: {"malformed"}, 413: {"body_too_large"}, 414: {"header_too_large"},
                     417: {"expectation"}, 431: {"header_too_large"}, 501: {"not_implemented"},
                     505: {"not_implemented"}}

        def counts():
            text = self.pier.get("/prod/metrics").body.decode()
            return {m.group(1): int(m.group(2))
                    for m in re.finditer(r'pier_http_bad_requests_total\{reason="(\w+)"\} (\d+)', text)}
        for name, data, expect, _ in CASES:
            with self.subTest(name):
                before = counts()
                out, _ = self.send(data, shut_write=(expect == CLOSE))
                after = counts()
                moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
                r = first_status(out) if expect != CLOSE else None
                if r is None or r.status < 400:
                    self.assertEqual(moved, {}, name)
                else:
                    self.assertEqual(sum(moved.values()), 1, "%s: %r" % (name, moved))
                    self.assertLessEqual(set(moved), reason_of[r.status], name)

    def test_cases(self):
        for name, data, expect, must_close in CASES:
            with self.subTest(name):
                self.run_case(name, data, expect, must_close)
        self.assertEqual(self.pier.get("/prod/health").status, 200)

    def test_absolute_form_routes_the_path(self):
        out, _ = self.send(get(b"Connection: close\r\n", target=b"http://other.example/prod/version/llhttp"))
        r = first_status(out)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["name"], "llhttp")

    def test_options_star_allow(self):
        out, _ = self.send(b"OPTIONS * HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
        r = first_status(out)
        self.assertEqual(r.status, 204)
        self.assertIn("GET", r.headers.get("allow", ""))

    def test_upgrade_never_101_and_closes(self):
        out, closed = self.send(get(b"Connection: Upgrade\r\nUpgrade: websocket\r\n"))
        self.assertNotIn(b" 101 ", out)
        r = first_status(out)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get("connection"), "close")
        self.assertTrue(closed)

    def test_expect_100_continue(self):
        # honoured: 100, then the body is read and answered
        s = self.pier.connect()
        try:
            s.sendall(b"POST /prod/echo HTTP/1.1\r\n" + H + JSON + b"Content-Length: 7\r\nExpect: 100-continue\r\n\r\n")
            s.settimeout(3)
            first = s.recv(65536)
            self.assertTrue(first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), first)
            s.sendall(b"[1,2,3]")
            rest = first[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
            while b"\r\n\r\n" not in rest or not rest.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            r = first_status(rest)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["received"], [1, 2, 3])
        finally:
            s.close()
        # a request pier will not read gets its answer instead of a 100, and is closed
        for path, ctype, status in (("/prod/nowhere", JSON, 404), ("/prod/health", JSON, 405),
                                    ("/prod/echo", b"Content-Type: text/plain\r\n", 415)):
            out, closed = self.send(b"POST " + path.encode() + b" HTTP/1.1\r\n" + H + ctype +
                                    b"Content-Length: 7\r\nExpect: 100-continue\r\n\r\n")
            self.assertNotIn(b" 100 Continue", out, path)
            self.assertEqual(first_status(out).status, status, path)
            self.assertTrue(closed, path)
        # refused before any body: 413 without a 100
        out, closed = self.send(b"POST /prod/echo HTTP/1.1\r\n" + H + JSON +
                                b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        self.assertFalse(out.startswith(b"HTTP/1.1 100"), out[:60])
        self.assertEqual(first_status(out).status, 413)
        self.assertTrue(closed)

    def test_refusals_are_counted(self):
        self.send(get(b"X-A: a\r\n b\r\n"))
        self.send(b"POST /prod/echo HTTP/1.1\r\n" + H + b"Content-Length: 999999\r\n\r\n")
        text = self.pier.get("/prod/metrics").body.decode()
        for reason in ("malformed", "body_too_large"):
            m = re.search(r'pier_http_bad_requests_total\{reason="%s"\} (\d+)' % reason, text)
            self.assertIsNotNone(m, reason)
            self.assertGreater(int(m.group(1)), 0, reason)

    def test_memory_bounded_after_hostile_rounds(self):
        # warm up: one pass, so pools and buffers reach their working size
        for _, data, _, _ in CASES:
            self.send(data, timeout=2)
        time.sleep(0.3)
        before = self.pier.rss_kib()
        t0 = time.time()
        for _ in range(ROUNDS):
            self.assertLess(time.time() - t0, 60, "hostile rounds too slow: connections left open?")
            for _, data, expect, _ in CASES:
                self.send(data, shut_write=(expect == CLOSE), timeout=2)
        time.sleep(0.3)
        after = self.pier.rss_kib()
        r = self.pier.get("/prod/health")
        self.assertEqual(r.status, 200)
        growth = after - before
        print("\nhostile: %d connections in %.1f s; RSS %d KiB -> %d KiB (growth %+d KiB, bound %d KiB)"
              % (ROUNDS * len(CASES), time.time() - t0, before, after, growth, RSS_GROWTH_LIMIT_KIB),
              file=sys.stderr)
        if not SANITIZED:
            self.assertLessEqual(growth, RSS_GROWTH_LIMIT_KIB)


if __name__ == "__main__":
    harness.main()
