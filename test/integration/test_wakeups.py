"""Wake-ups, counted with strace from outside the real binary.

  100 keep-alive connections left idle,  -> no epoll_wait return in 10 s (strace -c -f): the
  idle_ms longer than the window            deadlines come from one timer set to the nearest
                                            one, not a periodic tick
  a new connection (TCP, Unix socket),   -> one worker wakes for it (EPOLLEXCLUSIVE), seen as
  4 workers on one listening socket         under 3 accept4 calls per connection (its accept,
                                            then EAGAIN), not one per worker

Needs strace (`make test` installs it: Makefile TEST_TOOLS); without it the test is skipped
(exit 77), never passed.

Run:  python3 test/integration/test_wakeups.py -v      (PIER_BIN picks the binary)
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BASE_CONFIG, Pier, Reader, build_request  # noqa: E402

STRACE = shutil.which("strace")
WINDOW_S = 10
CONNECTIONS = 40


def traced_calls(pid, syscalls, action):
    """Trace every thread of `pid` (strace -c -f) while action() runs: {syscall: calls}, and
    strace's summary."""
    cmd = [STRACE, "-f", "-c", "-e", "trace=" + ",".join(syscalls), "-p", str(pid)]
    st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    head = []
    while True:  # strace says when it has attached; nothing before that is counted
        line = st.stderr.readline()
        if not line:
            raise RuntimeError("strace could not trace pier:\n" + "".join(head))
        head.append(line)
        if "attached" in line:
            break
    try:
        action()
    finally:
        st.send_signal(signal.SIGINT)
        try:
            err = st.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            st.kill()
            err = st.communicate()[1]
    calls = {}
    for line in err.splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[-1] in syscalls and cols[3].isdigit():
            calls[cols[-1]] = int(cols[3])
    return calls, "".join(head) + err


class IdleWakeups(unittest.TestCase):
    @unittest.skipIf(STRACE is None, "strace is not installed")
    def test_idle_keepalive_connections_do_not_wake_pier(self):
        cfg = BASE_CONFIG + "timeouts:\n  idle_ms: 60000\n"
        with Pier(cfg) as p:
            conns = []
            for _ in range(100):
                s = p.connect()
                s.sendall(build_request("GET", "/prod/health"))
                self.assertEqual(Reader(s).next().status, 200)
                conns.append(s)
            time.sleep(0.5)  # the access-log batch is written (100 ms after its first line)
            threads = len(os.listdir("/proc/%d/task" % p.proc.pid))
            counts, summary = traced_calls(p.proc.pid, ("epoll_wait", "epoll_pwait", "epoll_pwait2"),
                                           lambda: time.sleep(WINDOW_S))
            calls = sum(counts.values())
            print("idle pier, 100 keep-alive connections, %d s: %d epoll_wait calls in %d threads"
                  % (WINDOW_S, calls, threads))
            # attaching interrupts each thread's wait once (it is restarted): at most one each
            self.assertLessEqual(calls, threads, summary)
            for s in conns[:3]:  # the connections are still open and served
                s.sendall(build_request("GET", "/prod/health"))
                self.assertEqual(Reader(s).next().status, 200)
            for s in conns:
                s.close()



class OneWorkerPerConnection(unittest.TestCase):
    """Four workers wait on one listening socket: a new connection wakes one of them (each
    worker woken calls accept4 until EAGAIN, so every worker woken for nothing shows as an
    extra accept4 call)."""

    def accepts_per_connection(self, connect, unix=None):
        cfg = BASE_CONFIG + "workers: 4\ntimeouts:\n  header_ms: 60000\n"
        if unix:
            cfg = cfg.replace("  port: 0\n", "  port: 0\n  unix: %s\n" % unix)
        with Pier(cfg) as p:
            held = []

            def connect_one_by_one():
                for _ in range(CONNECTIONS):
                    held.append(connect(p))
                    time.sleep(0.02)  # each one its own wake-up
                time.sleep(0.3)

            counts, summary = traced_calls(p.proc.pid, ("accept4",), connect_one_by_one)
            for s in held:
                s.close()
            return counts.get("accept4", 0) / CONNECTIONS, summary

    @unittest.skipIf(STRACE is None, "strace is not installed")
    def test_a_tcp_connection_wakes_one_worker(self):
        per, summary = self.accepts_per_connection(lambda p: p.connect())
        print("TCP, 4 workers: %.2f accept4 calls per connection" % per)
        self.assertGreaterEqual(per, 1.0, summary)  # every connection was accepted, and seen
        self.assertLess(per, 3.0, summary)  # one worker woken: its accept, then EAGAIN

    @unittest.skipIf(STRACE is None, "strace is not installed")
    def test_a_unix_socket_connection_wakes_one_worker(self):
        tmp = tempfile.mkdtemp(prefix="pier-wake-")
        path = os.path.join(tmp, "pier.sock")

        def connect(_):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        try:
            per, summary = self.accepts_per_connection(connect, unix=path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print("Unix socket, 4 workers: %.2f accept4 calls per connection" % per)
        self.assertGreaterEqual(per, 1.0, summary)
        self.assertLess(per, 3.0, summary)


if __name__ == "__main__":
    harness.main()
