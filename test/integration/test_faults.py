"""Faults injected into the real binary with test/fault/pier_fault.c (LD_PRELOAD).

  a connection's allocation fails   -> that client is closed at once (logged: connection shed);
                                       the listener keeps accepting, the next clients are answered
  two port-changing reloads before  -> the port of the first reload is closed (refuses
  the workers wake up                  connections), the last one answers; nothing leaks
  SIGHUP while pier starts (a slow  -> held, not fatal: pier starts and then reloads
  bind)
  three clients shed in a row       -> every one counted in the log ("connection shed", then
                                       "accepting again" with the rest)
  accept4 fails with a network      -> retried at once: the client is served, no pause
  error (EHOSTUNREACH)
  a request body or an answer whose -> 503 Retry-After: 1, never a cut body to the handler or
  buffer cannot grow (realloc)         the client; the next request is served

Run:  python3 test/integration/test_faults.py -v
      (PIER_BIN picks the binary, PIER_FAULT_LIB the library; ctest sets both)
"""
import errno
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BASE_CONFIG, PIER_BIN, ROOT, Pier  # noqa: E402

FAULT_LIB = os.environ.get("PIER_FAULT_LIB") or os.path.join(ROOT, "build", "default", "test", "libpier_fault.so")
ASAN = os.path.exists(PIER_BIN) and b"__asan_init" in open(PIER_BIN, "rb").read()


def fault_env(**kw):
    env = {"LD_PRELOAD": FAULT_LIB}
    if ASAN:  # the shim comes before libasan in the preload order
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    env.update({k: str(v) for k, v in kw.items()})
    return env


def one_request(port, timeout=3.0):
    """GET /prod/health on a new connection, never retried: the status, or what went wrong."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    try:
        s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return "reset" if not data else data.split(b"\r\n")[0].decode()
    except socket.timeout:
        return "hang"
    finally:
        s.close()
    return data.split(b"\r\n")[0].decode() if data else "eof"


free_port = harness.free_port


class Faults(unittest.TestCase):
    def setUp(self):
        self.assertTrue(os.path.exists(FAULT_LIB), "fault library not built: " + FAULT_LIB)

    def test_failed_connection_allocation_sheds_one_client_and_keeps_listening(self):
        # the 3rd connection's calloc fails; on a listener that stopped after it, 3-10 would hang
        with Pier(BASE_CONFIG, env=fault_env(PIER_FAULT_CALLOC=os.environ.get("PIER_FAULT_CONN_SIZE", "conn"), PIER_FAULT_NTH=3)) as p:
            results = [one_request(p.port) for _ in range(10)]
            print("calloc #3 fails: %s" % results)
            self.assertEqual(results[:2], ["HTTP/1.1 200 OK"] * 2)
            self.assertIn(results[2], ("reset", "eof"))
            self.assertEqual(results[3:], ["HTTP/1.1 200 OK"] * 7)
            shed = p.wait_log(lambda j: j.get("msg") == "connection shed: cannot set it up", 2)
            self.assertIsNotNone(shed)
            self.assertEqual(shed["error"], "not enough memory")

    def test_allocation_failures_in_a_row_with_two_workers(self):
        # both workers wait on the one listening socket; each must keep accepting after a shed
        with Pier(BASE_CONFIG + "workers: 2\n",
                  env=fault_env(PIER_FAULT_CALLOC="conn", PIER_FAULT_NTH=2, PIER_FAULT_TIMES=4)) as p:
            results = [one_request(p.port) for _ in range(30)]
            ok = results.count("HTTP/1.1 200 OK")
            print("calloc #2-#5 fail, 2 workers: %d of 30 answered, %s" % (ok, sorted(set(results))))
            self.assertEqual(ok, 26, results)
            self.assertEqual(results[-10:], ["HTTP/1.1 200 OK"] * 10)
            self.assertTrue(all(r in ("HTTP/1.1 200 OK", "reset", "eof") for r in results), results)

    def test_two_fast_port_changing_reloads_leave_no_listener_behind(self):
        # workers notice a wake-up 400 ms late, so the second reload lands before they took
        # the first reload's listeners
        with Pier(BASE_CONFIG + "workers: 2\n", env=fault_env(PIER_FAULT_WAKE_DELAY_MS=400)) as p:
            first = p.port
            b, c = free_port(), free_port()
            while c == b:
                c = free_port()
            for n, port in enumerate((b, c)):
                with open(p.config_path, "w") as f:
                    f.write(BASE_CONFIG.replace("port: 0", "port: %d" % port))
                p.signal(__import__("signal").SIGHUP)
                line = p.wait_log(lambda j: j.get("msg") == "config reloaded" and j.get("port") == port, 5)
                self.assertIsNotNone(line, "reload %d to port %d not logged" % (n + 1, port))
            time.sleep(1.2)  # the workers have woken and taken what they were handed
            got = {"first": one_request(first), "abandoned": one_request(b), "final": one_request(c)}
            print("ports after two fast reloads: %s" % got)
            self.assertEqual(got, {"first": "refused", "abandoned": "refused", "final": "HTTP/1.1 200 OK"})
            # and pier holds no listening socket on the abandoned port: one on c, which both
            # workers share
            self.assertEqual(p.listening_ports(), [c])

    def test_shed_clients_of_an_episode_are_all_counted_in_the_log(self):
        # three allocations fail in a row, within a second: one "connection shed" line (the
        # log is rate-limited), and the other two are counted when a client is served again.
        # One worker: each worker counts its own episode, and with two (the tsan preset's
        # PIER_TEST_WORKERS) a worker that shed a client may never serve another in this test.
        with Pier(BASE_CONFIG + "workers: 1\n", env=fault_env(PIER_FAULT_CALLOC=os.environ.get("PIER_FAULT_CONN_SIZE", "conn"),
                                             PIER_FAULT_NTH=1, PIER_FAULT_TIMES=3)) as p:
            results = [one_request(p.port) for _ in range(4)]
            self.assertEqual(results[3], "HTTP/1.1 200 OK", results)
            again = p.wait_log(lambda j: j.get("msg") == "accepting again", 2)
            lines = [j for j in p.logs() if j.get("msg") in ("connection shed: cannot set it up", "accepting again")]
            counted = sum(j.get("shed", 0) for j in lines)
            print("3 clients shed: %s; the log counts %d" % (results[:3], counted))
            self.assertEqual(counted, 3, lines)
            self.assertIsNotNone(again, "the end of the episode was not logged")
            self.assertEqual(again["shed"], 2)

    def test_a_request_body_that_cannot_be_kept_gets_503_never_a_cut_body(self):
        # 200,000 body bytes need a 256 KiB buffer; that one realloc fails: the handler must not
        # see the first 128 KiB as if they were the body
        body = b'"' + b"x" * 199998 + b'"'
        req = (b"POST /prod/echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
        with Pier(BASE_CONFIG, env=fault_env(PIER_FAULT_REALLOC_MIN=262144, PIER_FAULT_REALLOC_NTH=1)) as p:
            r = harness.parse_responses(p.raw(req))
            print("request body buffer cannot grow: %s" % [(x.status, x.body[:60]) for x in r])
            self.assertEqual([x.status for x in r], [503])
            self.assertEqual(r[0].headers.get("retry-after"), "1")
            self.assertEqual(harness.parse_responses(p.raw(req))[0].status, 200)  # the next one works

    def test_an_answer_that_cannot_be_built_gets_503_never_a_cut_body(self):
        # the request buffer grows (1st realloc of 256 KiB); the answer's does not (2nd)
        body = b'"' + b"x" * 199998 + b'"'
        req = (b"POST /prod/echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
        with Pier(BASE_CONFIG, env=fault_env(PIER_FAULT_REALLOC_MIN=262144, PIER_FAULT_REALLOC_NTH=2)) as p:
            r = harness.parse_responses(p.raw(req))
            print("answer buffer cannot grow: %s" % [(x.status, len(x.body), x.body[:40]) for x in r])
            self.assertEqual([x.status for x in r], [503])
            self.assertEqual(harness.parse_responses(p.raw(req))[0].status, 200)

    def test_a_network_error_from_accept_is_skipped_without_a_pause(self):
        # accept(2): Linux passes a new connection's network errors through accept; the next
        # client may be fine, so pier retries at once instead of pausing accepting for 500 ms
        with Pier(BASE_CONFIG, env=fault_env(PIER_FAULT_ACCEPT_ERRNO=errno.EHOSTUNREACH)) as p:
            t0 = time.time()
            status = one_request(p.port)
            took = time.time() - t0
            paused = p.wait_log(lambda j: j.get("msg") == "cannot accept: accepting paused", 0.5)
            print("accept4 fails once with EHOSTUNREACH: %s after %.3f s; paused: %s" % (status, took, paused is not None))
            self.assertEqual(status, "HTTP/1.1 200 OK")
            self.assertIsNone(paused, "accepting paused for one client's network error")
            self.assertLess(took, 0.4)

    def test_sighup_while_starting_is_held_then_reloads(self):
        # bind() takes a second (fault library), so SIGHUP lands while pier starts, before its
        # handlers exist: by default it would end the process. pier holds it and reloads once up.
        p = Pier(BASE_CONFIG, env=fault_env(PIER_FAULT_BIND_DELAY_MS=1000))
        sent = []

        def hup_while_binding():
            deadline = time.time() + harness.waiting(10)
            while time.time() < deadline and not sent:
                with p.lock:
                    binding = any("pier_fault: bind delayed" in line for line in p.lines)
                if binding:
                    p.signal(signal.SIGHUP)
                    sent.append(time.time())
                time.sleep(0.01)

        t = threading.Thread(target=hup_while_binding)
        t.start()
        try:
            try:
                p.start()
            except RuntimeError:
                pass
            t.join()
            code = p.proc.poll()
            print("SIGHUP during start-up: %s" % ("pier is running" if code is None else "pier exited with %s" % code))
            self.assertTrue(sent, "pier never reached bind()")
            self.assertIsNone(code, "SIGHUP during start-up ended pier (exit %s)" % code)
            self.assertIsNotNone(p.wait_log(lambda j: j.get("msg") == "config reloaded", 5),
                                 "the held SIGHUP was not handled once pier ran")
            self.assertEqual(one_request(p.port), "HTTP/1.1 200 OK")
        finally:
            p.stop()


if __name__ == "__main__":
    harness.main()
