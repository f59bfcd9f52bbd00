"""Core HTTP behaviour of the real pier binary, over real sockets."""
import json
import re
import shutil
import socket
import subprocess
import time
import unittest

import harness  # noqa: E402
from harness import Pier, Reader, build_request, closed_by_peer, parse_responses, read_until_close

DATE_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$")


class CoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pier = Pier().start()

    @classmethod
    def tearDownClass(cls):
        cls.pier.stop()

    def assertCommonHeaders(self, r):
        self.assertRegex(r.headers.get("date", ""), DATE_RE)
        if r.status != 204:
            self.assertIn("content-length", r.headers)
            self.assertEqual(int(r.headers["content-length"]), len(r.body))
        self.assertRegex(r.headers.get("x-request-id", ""), r"^\S+$")

    def test_health(self):
        r = self.pier.get("/prod/health")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["content-type"], "application/health+json")
        self.assertCommonHeaders(r)
        j = r.json()
        self.assertEqual(j["status"], "pass")
        self.assertEqual(j["serviceId"], "pier")
        self.assertEqual(j["environment"], "test")
        for k in ("version", "releaseId", "description"):
            self.assertIsInstance(j[k], str)
            self.assertTrue(j[k])
        self.assertIsInstance(j["uptime_s"], int)

    def test_live_and_ready(self):
        for path in ("/prod/health/live", "/prod/health/ready"):
            r = self.pier.get(path)
            self.assertEqual(r.status, 200, path)
            self.assertEqual(r.json()["status"], "pass")
            self.assertCommonHeaders(r)

    def test_version(self):
        r = self.pier.get("/prod/version")
        self.assertEqual(r.status, 200)
        j = r.json()
        for k in ("version", "commit", "build_time", "compiler"):
            self.assertTrue(j[k], k)
        self.assertEqual(set(j["libraries"]), {"libuv", "llhttp", "cjson", "libyaml"})
        self.assertRegex(j["libraries"]["libuv"], r"^\d+\.\d+\.\d+")
        r = self.pier.get("/prod/version/libuv")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"name": "libuv", "version": j["libraries"]["libuv"]})
        r = self.pier.get("/prod/version/openssl")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"]["status"], 404)

    def test_index(self):
        for path in ("/prod/", "/prod"):
            r = self.pier.get(path)
            self.assertEqual(r.status, 200, path)
            j = r.json()
            self.assertEqual(j["environment"], "test")
            paths = {(x["method"], x["path"]) for x in j["routes"]}
            self.assertIn(("GET", "/prod/health"), paths)
            self.assertIn(("POST", "/prod/echo"), paths)

    def test_unknown_path_404_json(self):
        r = self.pier.get("/prod/nope")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.headers["content-type"], "application/json")
        self.assertCommonHeaders(r)
        j = r.json()
        self.assertEqual(j["error"]["status"], 404)
        self.assertTrue(j["error"]["message"])

    def test_prefix_isolation(self):
        self.assertEqual(self.pier.get("/staging/health").status, 404)
        self.assertEqual(self.pier.get("/health").status, 404)
        self.assertEqual(self.pier.get("/prodx/health").status, 404)
        self.assertEqual(self.pier.get("/prod/prod/health").status, 404)

    def test_wrong_method_405_with_allow(self):
        r = self.pier.request("DELETE", "/prod/health")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.headers["allow"], "GET, HEAD, OPTIONS")
        self.assertEqual(r.json()["error"]["status"], 405)
        r = self.pier.request("GET", "/prod/echo")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.headers["allow"], "POST, OPTIONS")

    def test_options(self):
        r = self.pier.request("OPTIONS", "/prod/health")
        self.assertEqual(r.status, 204)
        self.assertEqual(r.headers["allow"], "GET, HEAD, OPTIONS")
        self.assertNotIn("content-length", r.headers)
        self.assertRegex(r.headers["date"], DATE_RE)
        self.assertEqual(self.pier.request("OPTIONS", "/prod/nope").status, 404)

    def test_head_has_no_body(self):
        s = self.pier.connect()
        s.sendall(build_request("HEAD", "/prod/health") + build_request("GET", "/prod/health/live"))
        rd = Reader(s)
        head = rd.next(head=True)
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b"")
        self.assertGreater(int(head.headers["content-length"]), 0)
        # the next response starts right after the head: nothing was sent as HEAD's body
        live = rd.next()
        self.assertEqual(live.status, 200)
        self.assertEqual(live.json()["status"], "pass")
        s.close()

    def test_keep_alive_100_requests(self):
        s = self.pier.connect()
        rd = Reader(s)
        for i in range(100):
            s.sendall(build_request("GET", "/prod/health/live"))
            r = rd.next()
            self.assertEqual(r.status, 200)
            self.assertNotEqual(r.headers.get("connection"), "close")
        s.close()

    def test_pipelining_in_order(self):
        s = self.pier.connect()
        data = (build_request("GET", "/prod/version/libuv") + build_request("GET", "/prod/nope")
                + build_request("POST", "/prod/echo", {"Content-Type": "application/json"}, b'{"n":3}'))
        s.sendall(data)
        rd = Reader(s)
        a, b, c = rd.next(), rd.next(), rd.next()
        self.assertEqual((a.status, b.status, c.status), (200, 404, 200))
        self.assertEqual(a.json()["name"], "libuv")
        self.assertEqual(c.json(), {"received": {"n": 3}, "bytes": 7})
        s.close()

    def test_connection_close_honoured(self):
        s = self.pier.connect()
        s.sendall(build_request("GET", "/prod/health", close=True))
        data = read_until_close(s, 3)
        rs = parse_responses(data)
        self.assertEqual(len(rs), 1)
        self.assertEqual(rs[0].headers["connection"], "close")
        s.close()

    def test_http10(self):
        s = self.pier.connect()
        s.sendall(b"GET /prod/health/live HTTP/1.0\r\n\r\n")
        data = read_until_close(s, 3)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        self.assertIn(b"Connection: close", data)
        s.close()
        # HTTP/1.0 with keep-alive stays open
        s = self.pier.connect()
        s.sendall(b"GET /prod/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        rd = Reader(s)
        r = rd.next()
        self.assertEqual(r.headers["connection"], "keep-alive")
        s.sendall(b"GET /prod/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.assertEqual(rd.next().status, 200)
        s.close()

    def test_echo(self):
        r = self.pier.request("POST", "/prod/echo", {"Content-Type": "application/json"}, b'{"a":[1,2,{"b":null}]}')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"received": {"a": [1, 2, {"b": None}]}, "bytes": 22})

    def test_echo_chunked(self):
        s = self.pier.connect()
        s.sendall(b"POST /prod/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"k\":\r\n4\r\n[1]}\r\n0\r\n\r\n")
        r = Reader(s).next()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"received": {"k": [1]}, "bytes": 9})
        s.close()

    def test_echo_invalid_json(self):
        r = self.pier.request("POST", "/prod/echo", {"Content-Type": "application/json"}, b'{"a":\n  [1,,2]}')
        self.assertEqual(r.status, 400)
        msg = r.json()["error"]["message"]
        self.assertIn("line 2", msg)
        self.assertIn("column", msg)

    def test_echo_is_strict(self):
        # exactly one JSON value in UTF-8; each refusal says where and what
        for body, what in ((b'{"a":1} trailing garbage', "trailing data"), (b"{}{}", "trailing data"),
                           (b'"\xff"', "invalid UTF-8"), (b'"a\x01b"', "control character"),
                           (b"[01]", "expected ','"), (b'"\\ud800"', "surrogate")):
            r = self.pier.request("POST", "/prod/echo", {"Content-Type": "application/json"}, body)
            self.assertEqual(r.status, 400, body)
            self.assertIn(what, r.json()["error"]["message"], body)
        self.assertEqual(self.pier.get("/prod/health").status, 200)

    def test_echo_answer_is_the_value_as_sent(self):
        # no re-serialization: the answer is the body plus a few dozen bytes, whatever it holds
        with Pier(config="listen: {host: 127.0.0.1, port: 0}\nprefix: /prod\n"
                         "limits: {max_body_bytes: 2000000}\nlog: {access: false}\n") as p:
            bodies = [b'"' + b"\x01" * 999998 + b'"',  # raw control bytes: refused, not re-escaped
                      b'"' + b"\\u0001" * 166666 + b'"', b"[" + b",".join([b"1e14"] * 199999) + b"]",
                      b' {"n": 12345678901234567890, "s": "caf\xc3\xa9"} ']
            for body in bodies:
                r = p.request("POST", "/prod/echo", {"Content-Type": "application/json"}, body)
                self.assertLessEqual(len(r.body), len(body) + 64, (r.status, len(r.body), len(body)))
                if r.status == 200:
                    self.assertEqual(r.body, b'{"received":' + body.strip() + b',"bytes":%d}\n' % len(body))
            self.assertEqual(r.json()["received"]["n"], 12345678901234567890)  # every digit kept

    def test_echo_needs_json_type(self):
        r = self.pier.request("POST", "/prod/echo", {"Content-Type": "text/plain"}, b'{"a":1}')
        self.assertEqual(r.status, 415)
        r = self.pier.request("POST", "/prod/echo", {"Content-Type": "application/json; charset=utf-8"}, b'[]')
        self.assertEqual(r.status, 200)

    def test_echo_too_large(self):
        with Pier(config="listen: {host: 127.0.0.1, port: 0}\nprefix: /prod\nlimits: {max_body_bytes: 1024}\n") as p:
            s = p.connect()
            s.sendall(build_request("POST", "/prod/echo", {"Content-Type": "application/json"}, b"[" + b"1," * 600 + b"1]"))
            rs = parse_responses(read_until_close(s, 3))
            self.assertEqual(rs[0].status, 413)
            self.assertEqual(rs[0].headers["connection"], "close")
            s.close()

    def test_malformed_400_and_close(self):
        s = self.pier.connect()
        s.sendall(b"GET /prod/health HTTP/1.1\r\nBad Header\r\n\r\n")
        data = read_until_close(s, 3)
        rs = parse_responses(data)
        self.assertEqual(rs[0].status, 400)
        self.assertEqual(rs[0].headers["connection"], "close")
        self.assertIn("malformed", rs[0].json()["error"]["message"])
        s.close()
        # and the service is still fine
        self.assertEqual(self.pier.get("/prod/health").status, 200)

    def test_request_id(self):
        r = self.pier.get("/prod/health", headers={"X-Request-Id": "abc-123"})
        self.assertEqual(r.headers["x-request-id"], "abc-123")
        r = self.pier.get("/prod/health", headers={"X-Request-Id": "x" * 129})
        self.assertRegex(r.headers["x-request-id"], r"^[0-9a-f]{32}$")
        ids = {self.pier.get("/prod/health").headers["x-request-id"] for _ in range(20)}
        self.assertEqual(len(ids), 20)
        for i in ids:
            self.assertRegex(i, r"^[0-9a-f]{32}$")

    def test_access_log(self):
        self.pier.get("/prod/version", headers={"X-Request-Id": "log-check-1"})
        line = self.pier.wait_log(lambda j: j.get("request_id") == "log-check-1", 3)
        self.assertIsNotNone(line, "no access-log line within 3 s")
        self.assertEqual(line["msg"], "request")
        self.assertEqual(line["method"], "GET")
        self.assertEqual(line["path"], "/prod/version")
        self.assertEqual(line["status"], 200)
        self.assertGreater(line["bytes"], 0)
        self.assertIsInstance(line["duration_us"], int)
        self.assertRegex(line["remote"], r"^127\.0\.0\.1:\d+$")
        self.assertEqual(line["level"], "info")
        self.assertRegex(line["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_with_curl(self):
        base = "http://127.0.0.1:%d" % self.pier.port
        out = subprocess.run(["curl", "-sS", "-i", base + "/prod/health"], capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(b"HTTP/1.1 200 OK", out.stdout)
        self.assertIn(b'"status":"pass"', out.stdout)
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                              "-H", "Content-Type: application/json", "--data", '{"x":1}', base + "/prod/echo"],
                             capture_output=True, timeout=10)
        self.assertEqual(out.stdout, b"200")
        # curl's own keep-alive reuse across two URLs on one connection
        out = subprocess.run(["curl", "-sS", "-v", base + "/prod/health/live", base + "/prod/health/ready"],
                             capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        self.assertIn(b"Re-using existing connection", out.stderr)
        self.assertEqual(out.stdout.count(b'"status":"pass"'), 2)



class LogLevel(unittest.TestCase):
    def test_level_filters_access_lines(self):
        cfgtext = "listen: {host: 127.0.0.1, port: %d}\nprefix: /prod\nlog:\n  level: %s\n  format: %s\n"
        port = harness.free_port()
        with Pier(config=cfgtext % (port, "warn", "json"), port=port) as p:
            p.get("/prod/health", headers={"X-Request-Id": "hidden-1"})
            p.get("/prod/health", headers={"X-Request-Id": "hidden-2"})
            time.sleep(0.4)  # longer than the 100 ms access-log flush
            self.assertFalse([j for j in p.logs() if j.get("msg") == "request"])
        with Pier(config=cfgtext % (port, "info", "text"), port=port) as p:
            p.get("/prod/health", headers={"X-Request-Id": "text-1"})
            deadline = time.time() + 3
            while time.time() < deadline and not any("text-1" in l for l in p.lines):
                time.sleep(0.05)
            line = [l for l in p.lines if "text-1" in l]
            self.assertTrue(line, p.lines)
            self.assertRegex(line[0], r"^\d{4}-\d\d-\d\dT[\d:.]+Z INFO  request method=GET path=/prod/health status=200 ")


if __name__ == "__main__":
    harness.main()
