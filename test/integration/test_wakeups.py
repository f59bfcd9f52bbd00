"""Wake-ups, counted from outside the real binary: pier sleeps until something is due.

  100 keep-alive connections left idle, idle_ms longer than the window -> no epoll_wait return in
                                                                          10 s (strace -c -f):
                                                                          deadlines come from one
                                                                          timer set to the nearest
                                                                          one, not a periodic tick

Needs strace (`make test` installs it: Makefile TEST_TOOLS); without it the test is skipped
(exit 77), never passed.

Run:  python3 test/integration/test_wakeups.py -v      (PIER_BIN picks the binary)
"""
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BASE_CONFIG, Pier, Reader, build_request  # noqa: E402

STRACE = shutil.which("strace")
WINDOW_S = 10


def epoll_waits(pid, seconds):
    """Trace every thread of `pid` for `seconds`: the number of epoll_wait/epoll_pwait calls
    (strace -c), and strace's summary."""
    cmd = [STRACE, "-f", "-c", "-e", "trace=epoll_wait,epoll_pwait,epoll_pwait2", "-p", str(pid)]
    st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    st.send_signal(signal.SIGINT)
    try:
        _, err = st.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        st.kill()
        _, err = st.communicate()
    calls = 0
    attached = "attached" in err or "% time" in err
    for line in err.splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[-1].startswith("epoll_") and cols[3].isdigit():
            calls += int(cols[3])
    if not attached:
        raise RuntimeError("strace could not trace pier:\n" + err)
    return calls, err


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
            calls, summary = epoll_waits(p.proc.pid, WINDOW_S)
            print("idle pier, 100 keep-alive connections, %d s: %d epoll_wait calls in %d threads"
                  % (WINDOW_S, calls, threads))
            # attaching interrupts each thread's wait once (it is restarted): at most one each
            self.assertLessEqual(calls, threads, summary)
            for s in conns[:3]:  # the connections are still open and served
                s.sendall(build_request("GET", "/prod/health"))
                self.assertEqual(Reader(s).next().status, 200)
            for s in conns:
                s.close()


if __name__ == "__main__":
    harness.main()
