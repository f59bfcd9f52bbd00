"""Reload (SIGHUP) as the running process sees it: timeouts, restart-only keys, memory.

  a reload shortens timeouts.idle_ms   -> applies at once to idle connections already waiting
                                          and to new ones (no connection waits behind another)
  a reload shortens timeouts.header_ms -> the same for requests whose headers are still coming
  a reload changes workers             -> kept (the log says "needs_restart": "workers"); the
                                          other changes apply; --check-config names such keys
  many reloads                         -> old configs are freed: RSS stays flat

Run:  python3 test/integration/test_reload.py -v   (PIER_TEST_RELOADS=10000 for the long count)
"""
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BASE_CONFIG, PIER_BIN, Pier, Reader  # noqa: E402

INSTRUMENTED = os.environ.get("PIER_TEST_INSTRUMENTED") == "1" or (
    os.path.exists(PIER_BIN) and b"__asan_init" in open(PIER_BIN, "rb").read())
TIMER_S = 0.01  # pier's deadline timer is due at the deadline itself; this is its ms rounding
SLACK_S = 0.6  # scheduling slack on a loaded 2-core machine


def reload_to(p, config):
    n = len([j for j in p.logs() if j.get("msg") == "config reloaded"])
    with open(p.config_path, "w") as f:
        f.write(config)
    p.signal(signal.SIGHUP)
    deadline = time.time() + 5
    while time.time() < deadline:
        lines = [j for j in p.logs() if j.get("msg") == "config reloaded"]
        if len(lines) > n:
            return lines[-1]
        time.sleep(0.01)
    raise AssertionError("reload not logged")


def closed_after(sock, timeout):
    """Seconds until the server closes `sock` (EOF or reset), or None after `timeout`."""
    t0 = time.time()
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return time.time() - t0
    except ConnectionResetError:
        return time.time() - t0
    except socket.timeout:
        return None


def read_until_close(sock, timeout):
    t0 = time.time()
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data, time.time() - t0


def keepalive_request(p):
    s = p.connect()
    s.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n\r\n")
    r = Reader(s).next()
    assert r.status == 200, r
    return s


class ReloadTimeouts(unittest.TestCase):
    def test_idle_timeout_shortened_by_reload_applies_to_waiting_and_new_connections(self):
        long_cfg = BASE_CONFIG + "timeouts:\n  idle_ms: 60000\n"
        with Pier(long_cfg) as p:
            old = keepalive_request(p)  # idle, due in 60 s under the old config
            time.sleep(0.4)
            reload_to(p, BASE_CONFIG + "timeouts:\n  idle_ms: 300\n")
            new = keepalive_request(p)  # idle from now, due in 300 ms
            t_new = closed_after(new, 5)
            t_old = closed_after(old, 1)
            print("after a reload to idle_ms 300: new idle connection closed after %s s, "
                  "the one idle since before the reload %s s later" % (
                      t_new and round(t_new, 3), t_old and round(t_old, 3)))
            self.assertIsNotNone(t_new, "the new idle connection stayed open (waits behind the old one?)")
            self.assertGreaterEqual(t_new, 0.3 - 0.05)
            self.assertLess(t_new, 0.3 + TIMER_S + SLACK_S)
            self.assertIsNotNone(t_old, "the connection idle since before the reload kept its 60 s")
            old.close()
            new.close()

    def test_header_timeout_shortened_by_reload_applies_to_waiting_and_new_requests(self):
        cfg = BASE_CONFIG + "timeouts:\n  header_ms: 60000\n  request_ms: 60000\n"
        with Pier(cfg) as p:
            old = p.connect()
            old.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n")  # headers never finish
            time.sleep(0.7)
            reload_to(p, BASE_CONFIG + "timeouts:\n  header_ms: 500\n  request_ms: 60000\n")
            new = p.connect()
            new.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n")
            data_new, t_new = read_until_close(new, 5)
            data_old, t_old = read_until_close(old, 1)
            print("after a reload to header_ms 500: new slow request answered after %.3f s" % t_new)
            self.assertTrue(data_new.startswith(b"HTTP/1.1 408"), data_new[:100])
            self.assertTrue(data_old.startswith(b"HTTP/1.1 408"), data_old[:100])
            self.assertGreaterEqual(t_new, 0.5 - 0.05)
            self.assertLess(t_new, 0.5 + TIMER_S + SLACK_S)
            old.close()
            new.close()


class ReloadKeys(unittest.TestCase):
    def test_restart_only_key_is_kept_and_named(self):
        with Pier(BASE_CONFIG + "workers: 1\n") as p:
            line = reload_to(p, BASE_CONFIG.replace("prefix: /prod", "prefix: /next") + "workers: 3\n")
            self.assertEqual(line.get("needs_restart"), "workers")
            self.assertIn("prefix: /prod -> /next", line["changed"])
            self.assertNotIn("workers", line["changed"])
            warn = p.wait_log(lambda j: j.get("msg") == "workers changes need a restart; keeping the running value", 2)
            self.assertIsNotNone(warn)
            self.assertEqual((warn["running"], warn["configured"]), ("1", "3"))
            self.assertEqual(p.get("/next/health").status, 200)
            self.assertEqual(len(p.listening_ports()), 1)  # still one worker, one listener

    def test_check_config_names_the_restart_keys(self):
        with Pier(BASE_CONFIG) as p:
            out = subprocess.run([PIER_BIN, "--check-config", p.config_path], capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("a reload applies every key but: listen.unix, workers (needs a restart)", out.stdout)


class ReloadMemory(unittest.TestCase):
    def test_rss_flat_across_many_reloads(self):
        n = int(os.environ.get("PIER_TEST_RELOADS", "3000"))
        cfg = BASE_CONFIG + "  access: false\nworkers: 2\n"
        with Pier(cfg) as p:
            keep = p.connect()  # traffic while configs come and go (ASan sees a stale read)

            def burst(k):
                for _ in range(k):
                    keep.sendall(b"GET /prod/health HTTP/1.1\r\nHost: a\r\n\r\n")
                    Reader(keep).next()

            # a request whose body is still arriving while its config is retired and freed
            slow = p.connect()
            body = b'{"during":"reloads"}'
            slow.sendall(b"POST /prod/echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body[:4])
            for _ in range(200):  # warm up: allocator arenas, log buffers
                p.signal(signal.SIGHUP)
                time.sleep(0.001)
            burst(5)
            time.sleep(0.3)
            before = p.rss_kib()
            t0 = time.time()
            for i in range(n):
                p.signal(signal.SIGHUP)
                time.sleep(0.001)
                if i % 200 == 0:
                    burst(2)
            time.sleep(0.5)
            burst(5)
            after = p.rss_kib()
            slow.sendall(body[4:])
            self.assertEqual(Reader(slow).next().status, 200)
            slow.close()
            m = p.get("/prod/metrics").body.decode()
            done = [ln for ln in m.splitlines() if ln.startswith('pier_config_reloads_total{result="success"}')]
            reloads = int(float(done[0].split()[-1]))
            print("%d reloads (%d signals in %.1f s): RSS %d KiB -> %d KiB (%+d KiB)"
                  % (reloads, n + 200, time.time() - t0, before, after, after - before))
            self.assertGreater(reloads, n // 2, "signals coalesced: too few reloads to measure")
            if not INSTRUMENTED:
                # a leaked config is ~1 KiB: n reloads would add n KiB
                self.assertLess(after - before, max(256, reloads // 8))
            keep.close()


if __name__ == "__main__":
    harness.main()
