"""tsan.planted_race — the tsan preset reports a data race planted in pier's own callbacks.

A sanitizer build is trusted only once it has caught a planted fault. This test builds a
second tree from the tsan tree's own settings plus -DPIER_TSAN_PLANT_RACE=ON (src/tsan_plant.h:
every worker's wake-up callback, run by uv_run on its loop, bumps one shared counter with no
atomic and no lock), reusing the parent's instrumented libuv, then checks, under the
TSAN_OPTIONS (suppressions included) that ctest gives every test of the preset:

  the planted pier, workers: 2, one SIGHUP  -> ThreadSanitizer prints a data race naming
                                               pier__tsan_planted_race under worker_on_wake; the
                                               harness's stop() fails on it; pier exits 66
  the real pier, the same steps             -> no report, exit 0
  integration.reload against the planted pier -> fails, naming the planted function (a race in
                                               a callback fails `make tsan`, not only this test)

Run by ctest (tsan preset only):
  planted_race.py --build-dir DIR -- CMAKE_ARGS…
"""
import os
import signal
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402
from harness import BASE_CONFIG, ROOT, Pier, waiting  # noqa: E402

PLANTED_FUNCTION = "pier__tsan_planted_race"
CONFIG = BASE_CONFIG + "workers: 2\n"


def parse_args(argv):
    build_dir, cmake_args = None, []
    i = 1
    while i < len(argv):
        if argv[i] == "--build-dir":
            build_dir = argv[i + 1]
            i += 2
        elif argv[i] == "--":
            cmake_args = argv[i + 1:]
            break
        else:
            raise SystemExit("planted_race.py: unknown argument " + argv[i])
    if not build_dir:
        raise SystemExit("usage: planted_race.py --build-dir DIR -- CMAKE_ARGS…")
    return build_dir, cmake_args


BUILD_DIR, CMAKE_ARGS = parse_args(sys.argv)
REAL_PIER = harness.PIER_BIN
PLANTED_PIER = os.path.join(BUILD_DIR, "pier")


def run(cmd, timeout):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=timeout)
    return out.returncode, out.stdout


def reload_and_stop(binary):
    """workers: 2, one SIGHUP (every worker's wake-up callback runs), SIGTERM. Returns the
    report the harness raised on (None if none) and pier's exit status."""
    harness.PIER_BIN = binary
    p = Pier(CONFIG)
    report = None
    try:
        p.start()
        p.signal(signal.SIGHUP)
        if p.wait_log(lambda j: j.get("msg") == "config reloaded", 10) is None:
            raise AssertionError("pier did not log the reload:\n" + "\n".join(p.lines))
    finally:
        try:
            p.stop()
        except AssertionError as e:
            report = str(e)
        harness.PIER_BIN = REAL_PIER
    return report, p.proc.returncode


class PlantedRace(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The tsan tree's compiler, flags and libuv, plus the option; configured once, then
        # built incrementally (nothing to do on a warm run).
        rc, out = run(["cmake", "-S", ROOT, "-B", BUILD_DIR] + CMAKE_ARGS +
                      ["-DPIER_TSAN_PLANT_RACE=ON", "-DPIER_BUILD_TESTS=OFF"], 300)
        if rc != 0:
            raise AssertionError("configuring the planted tree failed:\n" + out)
        rc, out = run(["cmake", "--build", BUILD_DIR, "--target", "pier", "-j",
                       str(os.cpu_count() or 2)], 600)
        if rc != 0:
            raise AssertionError("building the planted pier failed:\n" + out)

    def test_options_are_the_presets(self):
        # The proof holds for the TSAN_OPTIONS every test of the preset runs under.
        self.assertIn("suppressions=", os.environ.get("TSAN_OPTIONS", ""),
                      "run this through ctest --preset tsan (TSAN_OPTIONS is not set)")

    def test_planted_race_is_reported(self):
        report, status = reload_and_stop(PLANTED_PIER)
        self.assertIsNotNone(report, "ThreadSanitizer did not report the planted race")
        self.assertIn("WARNING: ThreadSanitizer: data race", report)
        self.assertIn(PLANTED_FUNCTION, report)
        self.assertIn("worker_on_wake", report)
        # TSan's exitcode (66 unless TSAN_OPTIONS says otherwise): a report also fails a
        # process whose output nobody reads, such as a unit test.
        self.assertNotEqual(status, 0, "pier exited 0 after a ThreadSanitizer report")
        print("\nthe report, as the harness saw it:\n" + report[:2000], file=sys.stderr)

    def test_real_pier_is_clean(self):
        report, status = reload_and_stop(REAL_PIER)
        self.assertIsNone(report)
        self.assertEqual(status, 0)

    def test_integration_suite_fails_on_it(self):
        env = dict(os.environ, PIER_BIN=PLANTED_PIER)
        script = os.path.join(ROOT, "test", "integration", "test_reload.py")
        out = subprocess.run([sys.executable, script], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env, timeout=waiting(60))
        self.assertNotEqual(out.returncode, 0, "integration.reload passed on the racy build")
        self.assertIn(PLANTED_FUNCTION, out.stdout)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "-v"]
    harness.main()
