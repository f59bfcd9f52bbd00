"""The command line: config validation, precedence, refusing to start, the probe, the docs."""
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness  # noqa: E402
from harness import INSTRUMENTED, PIER_BIN, ROOT, Pier, waiting


def run(args, env=None, timeout=10):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PIER_") or k in ("PIER_BIN",)}
    e.update(env or {})
    return subprocess.run([PIER_BIN] + args, capture_output=True, text=True, env=e, timeout=waiting(timeout))


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


free_port = harness.free_port


class ConfigErrors(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def check_fails(self, text, *needles):
        path = write(self.tmp.name, "c.yaml", text)
        r = run(["--check-config", path])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        for n in needles:
            self.assertIn(n.replace("FILE", path), r.stderr)
        return r.stderr

    def test_shipped_configs_pass(self):
        for env, port, prefix in (("prod", 8000, "/prod"), ("staging", 8001, "/staging")):
            r = run(["--check-config", os.path.join(ROOT, "config", "pier", env + ".yaml")])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("is valid", r.stdout)
            self.assertIn("environment %s" % env, r.stdout)
            self.assertIn(":%d" % port, r.stdout)
            self.assertIn('prefix "%s"' % prefix, r.stdout)

    def test_unknown_key_suggests(self):
        self.check_fails("listen:\n  prot: 8000\n", 'FILE:2:3: unknown key "listen.prot" (did you mean "listen.port"?)')
        self.check_fails("prefx: /a\n", 'unknown key "prefx" (did you mean "prefix"?)')

    def test_wrong_type(self):
        self.check_fails("listen:\n  port: eighty\n", 'FILE:2:9: listen.port: expected an integer from 0 to 65535, found "eighty"')
        self.check_fails("log:\n  access: maybe\n", "log.access: expected true or false", '"maybe"')
        self.check_fails("listen: 8000\n", "listen: expected a mapping of its keys, found a scalar")
        self.check_fails("listen:\n  port: [1, 2]\n", "listen.port: expected an integer from 0 to 65535, found a list")
        self.check_fails('listen:\n  port: "8000"\n', 'listen.port: expected an integer', 'found "8000"')

    def test_port_out_of_range(self):
        self.check_fails("listen:\n  port: 80000\n", 'FILE:2:9: listen.port: expected an integer from 0 to 65535, found "80000"')
        self.check_fails("listen:\n  port: -1\n", "listen.port: expected an integer from 0 to 65535")

    def test_prefix_rules(self):
        self.check_fails("prefix: prod\n", 'FILE:1:9: prefix: expected a path prefix starting with "/"', 'found "prod"')
        self.check_fails("prefix: /prod/\n", 'prefix: expected a path prefix not ending with "/"')
        self.check_fails("prefix: /\n", 'prefix: expected a path prefix not ending with "/"')

    def test_enum(self):
        self.check_fails("log:\n  level: verbose\n", 'log.level: expected one of debug, info, warn, error, found "verbose"')

    def test_yaml_syntax_error(self):
        err = self.check_fails("listen:\n  port: 8000\n   host: [oops\n", "YAML syntax error")
        self.assertRegex(err, r"c\.yaml:\d+:\d+: YAML syntax error")

    def test_empty_file(self):
        self.check_fails("", "the file is empty")
        self.check_fails("# only a comment\n", "the file is empty")

    def test_not_a_mapping(self):
        self.check_fails("- a\n- b\n", "expected a mapping of settings, found a list")

    def test_duplicate_key(self):
        self.check_fails("prefix: /a\nprefix: /b\n", "FILE:2:1: prefix: set twice (first at line 1)")

    def test_all_errors_listed(self):
        err = self.check_fails("listen:\n  port: x\nprefix: y\nlog:\n  level: z\n", "listen.port", "prefix:", "log.level")
        self.assertIn("3 errors", err)

    def test_missing_file(self):
        r = run(["--check-config", "/nonexistent/pier.yaml"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/pier.yaml: cannot open: No such file or directory", r.stderr)

    def test_invalid_config_refuses_to_start(self):
        port = free_port()
        path = write(self.tmp.name, "bad.yaml", "listen:\n  host: 127.0.0.1\n  port: %d\nprefix: nope\n" % port)
        r = run(["--config", path])
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.yaml:4:9: prefix:", r.stderr)
        self.assertIn("not started", r.stderr)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    def test_port_in_use_refuses_to_start(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        path = write(self.tmp.name, "c.yaml", "listen:\n  host: 127.0.0.1\n  port: %d\n" % port)
        r = run(["--config", path])
        s.close()
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot listen on 127.0.0.1:%d: Address already in use" % port, r.stderr)

    def test_second_pier_on_a_port_in_use_refuses_to_start_whatever_its_workers(self):
        # a second instance must never silently share the port and take part of its traffic
        port = free_port()
        conf = "environment: test\nlisten:\n  host: 127.0.0.1\n  port: %d\nprefix: /prod\n" % port
        with Pier(conf + "workers: 2\n", port=port) as first:
            outcome = {}
            for workers in (1, 2, 4):
                path = write(self.tmp.name, "second.yaml", conf + "workers: %d\n" % workers)
                try:
                    r = run(["--config", path], timeout=3)
                    outcome[workers] = (r.returncode, r.stderr.strip().splitlines()[-1:])
                except subprocess.TimeoutExpired:  # still running: it started on the same port
                    outcome[workers] = ("started", [])
            print("second pier on port %d: %s" % (port, outcome))
            started = [w for w, (code, _) in outcome.items() if code != 1]
            self.assertEqual(started, [], "a second pier started on a port in use (workers: %s)" % started)
            for workers, (code, err) in outcome.items():
                self.assertIn("cannot listen on 127.0.0.1:%d: Address already in use (another process "
                              "listens on this port)" % port, "".join(err))
            # every request still reaches the first one
            for _ in range(20):
                self.assertEqual(first.get("/prod/health").status, 200)

    def test_env_and_cli_errors_named(self):
        path = write(self.tmp.name, "c.yaml", "prefix: /a\n")
        r = run(["--check-config", path], env={"PIER_LISTEN_PORT": "abc"})
        self.assertEqual(r.returncode, 1)
        self.assertIn('environment PIER_LISTEN_PORT: listen.port: expected an integer from 0 to 65535, found "abc"', r.stderr)
        r = run(["--check-config", path, "--set", "listen.prto=1"])
        self.assertIn('--set: unknown key "listen.prto" (did you mean "listen.port"?)', r.stderr)


class Precedence(unittest.TestCase):
    def test_env_overrides_file_and_cli_overrides_env(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = write(tmp, "c.yaml", "listen:\n  port: 1111\nprefix: /file\nenvironment: filed\n")
            r = run(["--check-config", path], env={"PIER_LISTEN_PORT": "2222", "PIER_PREFIX": "/env"})
            self.assertIn(":2222", r.stdout)
            self.assertIn('prefix "/env"', r.stdout)
            self.assertIn("environment filed", r.stdout)
            r = run(["--check-config", path, "--set", "listen.port=3333"], env={"PIER_LISTEN_PORT": "2222"})
            self.assertIn(":3333", r.stdout)

    def test_env_var_sets_the_listening_port(self):
        port = free_port()
        with Pier(env={"PIER_LISTEN_PORT": str(port)}) as p:
            self.assertEqual(p.port, port)
            self.assertEqual(p.get("/prod/health").status, 200)

    def test_pier_env_selects_shipped_file(self):
        r = run(["--check-config", os.path.join(ROOT, "config", "pier", "staging.yaml")])
        self.assertEqual(r.returncode, 0)
        # --probe loads the config the same way the server does: PIER_ENV in PIER_CONFIG_DIR
        with Pier(config="listen: {host: 127.0.0.1, port: 0}\nprefix: /staging\n") as p:
            with tempfile.TemporaryDirectory() as tmp:
                write(tmp, "staging.yaml", "listen:\n  host: 127.0.0.1\n  port: %d\nprefix: /staging\n" % p.port)
                r = run(["--probe"], env={"PIER_ENV": "staging", "PIER_CONFIG_DIR": tmp})
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("/staging/health/ready -> 200", r.stdout)


class Probe(unittest.TestCase):
    def test_probe_2xx_is_0(self):
        with Pier() as p:
            r = run(["--probe", "http://127.0.0.1:%d/prod/health" % p.port])
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_probe_404_and_503_are_1(self):
        # The grace period must outlast starting the second probe: seconds under valgrind.
        grace_ms = int(waiting(5000))
        with Pier(config="listen: {host: 127.0.0.1, port: 0}\nprefix: /prod\nshutdown: {grace_ms: %d}\n" % grace_ms) as p:
            r = run(["--probe", "http://127.0.0.1:%d/prod/missing" % p.port])
            self.assertEqual(r.returncode, 1)
            self.assertIn("-> 404", r.stderr)
            p.signal(signal.SIGTERM)  # grace period: ready says 503
            p.wait_log(lambda j: j.get("msg", "").startswith("shutting down"), 3)
            r = run(["--probe", "http://127.0.0.1:%d/prod/health/ready" % p.port])
            self.assertEqual(r.returncode, 1)
            self.assertIn("-> 503", r.stderr)

    def test_probe_refused_is_1(self):
        r = run(["--probe", "http://127.0.0.1:%d/" % free_port()])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Connection refused", r.stderr)

    def test_probe_timeout_is_1(self):
        s = socket.socket()  # accepts but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.settimeout(waiting(10))
        seen = {}  # when the probe's request arrived, and when the probe closed the connection

        def peer():
            try:
                c, _ = s.accept()
                with c:
                    while True:
                        d = c.recv(4096)
                        if d and "request" not in seen:
                            seen["request"] = time.time()
                        if not d:
                            seen["closed"] = time.time()
                            return
            except OSError:
                pass
        t = threading.Thread(target=peer, daemon=True)
        t.start()
        t0 = time.time()
        r = run(["--probe", "http://127.0.0.1:%d/" % s.getsockname()[1], "--timeout-ms", "500"])
        took = time.time() - t0
        t.join(waiting(5))
        s.close()
        self.assertEqual(r.returncode, 1)
        self.assertIn("no answer", r.stderr)
        # The probe gives up 500 ms after its request, measured on the connection: this holds
        # under valgrind too, where starting and leaving the process take seconds.
        self.assertIn("closed", seen, "the probe never closed its connection")
        waited = seen["closed"] - seen["request"]
        self.assertGreaterEqual(waited, 0.45)
        self.assertLess(waited, 2.0)
        if not INSTRUMENTED:
            self.assertLess(took, 3)


class Docs(unittest.TestCase):
    def test_version_and_help(self):
        r = run(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^pier \S+ \(commit \S+, built \S+\)")
        r = run(["--help"])
        self.assertEqual(r.returncode, 0)
        for key in ("listen.port", "timeouts.idle_ms", "PIER_LOG_LEVEL", "shutdown.drain_ms"):
            self.assertIn(key, r.stdout)

    def test_unknown_argument(self):
        r = run(["--bogus"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown argument --bogus", r.stderr)

    def test_docs_config_table_matches_the_option_table(self):
        table = run(["--config-table"]).stdout.strip()
        with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
            doc = f.read()
        self.assertIn(table, doc, "docs/configuration.md's key table is out of date: paste `pier --config-table`")


if __name__ == "__main__":
    harness.main()
