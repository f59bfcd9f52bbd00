"""Integration test: a real Prometheus server scrapes the real pier binary.

What a monitoring user would see is checked end to end:
  * pier's {prefix}/metrics output is accepted by `promtool check metrics`,
    carries the metric families the alerts are built on, and counts the
    requests it served;
  * Prometheus, configured from the shipped config/prometheus/prometheus.yml
    (only the target ports, the intervals and the rule file path changed),
    scrapes the eight targets (prod and staging, blue and green slots,
    replicas a and b) with pier running as replica a of the blue slots only:
    those targets up and the idle ones down, with job/env/slot/replica labels,
    the per-environment metrics path, and request counters above zero;
  * the shipped alerts.yml loads, every rule evaluates without error on real
    pier series, and none of pier's alerts (group "pier"; the public, nginx
    and host groups need exporters, see the VM rehearsal) is pending or
    firing while all is well, even though the idle
    slots are down; a rejected SIGHUP reload fires PierConfigReloadFailed
    for the environment, and stopping staging's only running slot makes
    PierDown pending for staging;
  * a deploy (prod started in the green slot, then blue stopped) makes
    neither PierDown nor PierRestarted active, while a process replaced in
    place in the same slot fires PierRestarted for prod.

pier is started on 127.0.0.1 with a temporary YAML config, on port 0 (the
port is read from the JSON "listening" log line) or, for a slot that must be
known before Prometheus starts, on a port that was free a moment before. An
idle slot is such a port with nothing listening. Prometheus
(/usr/bin/prometheus, Debian package "prometheus") listens on a free loopback
port with its TSDB in a temporary directory. Every wait is bounded; every
process is stopped by PID (SIGTERM, then SIGKILL after a timeout), at the
latest in tearDown.

Run:  python3 test/integration/test_prometheus.py -v
  or  python3 -m unittest discover -v -s test/integration -p 'test_prometheus.py'
(not `python3 -m unittest test/integration/...`: the module path would start
with `test.`, which is Python's own regression-test package). PIER_BIN,
PROMETHEUS_BIN and PROMTOOL_BIN override the binaries' paths. The tests skip
only when the prometheus binary is absent.
"""

import collections
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIER_BIN = os.environ.get("PIER_BIN", os.path.join(REPO, "build", "default", "pier"))
PROMETHEUS_BIN = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")
PROMTOOL_BIN = os.environ.get(
    "PROMTOOL_BIN", shutil.which("promtool") or "/usr/bin/promtool"
)
PROM_CONFIG_DIR = os.path.join(REPO, "config", "prometheus")

START_TIMEOUT_S = 10  # pier's "listening" line, Prometheus' /-/ready
SCRAPE_TIMEOUT_S = 30  # targets up, rules evaluated, alerts changing state
STOP_TIMEOUT_S = 10  # SIGTERM -> exit, before SIGKILL

# The targets of the shipped prometheus.yml: (env, slot, replica) -> host:port. Each slot
# runs two replicas (a, b); this test runs pier as replica a, and leaves replica b's target
# idle like a slot that is not running (what the alerts make of an environment does not
# depend on how many of its targets are up).
SLOTS = {
    ("prod", "blue", "a"): "127.0.0.1:8000",
    ("prod", "blue", "b"): "127.0.0.1:8002",
    ("prod", "green", "a"): "127.0.0.1:8010",
    ("prod", "green", "b"): "127.0.0.1:8012",
    ("staging", "blue", "a"): "127.0.0.1:8001",
    ("staging", "blue", "b"): "127.0.0.1:8003",
    ("staging", "green", "a"): "127.0.0.1:8011",
    ("staging", "green", "b"): "127.0.0.1:8013",
}
PREFIX = {"prod": "/prod", "staging": "/staging"}


free_port = harness.free_port


def http_request(port, method, path, body=None, timeout=5):
    """One request to 127.0.0.1:port; returns (status, headers, body bytes).
    http.client does not consult proxy environment variables."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")


def parse_exposition(text):
    """Prometheus text format -> ({family: type}, [(name, {labels}, value)])."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if m:
            labels = dict(LABEL_RE.findall(m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def sample_sum(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`; None when
    there is no such sample."""
    values = [
        v
        for n, lbl, v in samples
        if n == name and all(lbl.get(k) == want for k, want in labels.items())
    ]
    return sum(values) if values else None


class Process:
    """A child process whose stdout and stderr are drained by a thread into a
    bounded buffer (so a chatty access log never blocks it), stopped by PID."""

    def __init__(self, name, argv, env=None, cwd=None):
        self.name = name
        self.lines = collections.deque(maxlen=400)
        self.new_lines = collections.deque()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self.new_lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_line(self, predicate, timeout):
        """First new output line for which predicate(line) returns a true
        value; returns that value, or None on timeout or process exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self.new_lines:
                    result = predicate(self.new_lines.popleft())
                    if result:
                        return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.proc.poll() is not None and not self._reader.is_alive()
                ):
                    return None
                self._cond.wait(min(remaining, 0.2))

    def output(self, last=40):
        return "\n".join(list(self.lines)[-last:])

    def stop(self):
        """SIGTERM, wait, then SIGKILL: only this process, by its PID."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._reader.join(timeout=STOP_TIMEOUT_S)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


@unittest.skipUnless(
    os.path.isfile(PROMETHEUS_BIN) and os.access(PROMETHEUS_BIN, os.X_OK),
    f"prometheus binary not found at {PROMETHEUS_BIN} "
    "(apt-get install prometheus, or set PROMETHEUS_BIN)",
)
class PrometheusScrapesPier(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.assertTrue(
            os.path.isfile(PIER_BIN) and os.access(PIER_BIN, os.X_OK),
            f"pier binary not found at {PIER_BIN}: build it with "
            "`cmake --preset default && cmake --build --preset default` "
            "or point PIER_BIN at it",
        )
        self.tmp = tempfile.mkdtemp(prefix="pier-prometheus-test-")
        self.processes = []
        self.pier_starts = 0

    def tearDown(self):
        # Prometheus first (it holds connections to pier), then the piers.
        for process in reversed(self.processes):
            process.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ helpers

    def pier_config_text(self, environment, prefix, port=0):
        return (
            f"environment: {environment}\n"
            "listen:\n"
            "  host: 127.0.0.1\n"
            f"  port: {port}\n"
            f"prefix: {prefix}\n"
            "log:\n"
            "  level: info\n"
            "  format: json\n"
            "metrics:\n"
            "  enabled: true\n"
            "shutdown:\n"
            "  grace_ms: 0\n"
            "  drain_ms: 1000\n"
        )

    def start_pier(self, environment, prefix, port=0, slot="blue"):
        """Start pier with a temporary config, on `port` (0: any); returns
        (process, port, config path)."""
        self.pier_starts += 1
        name = f"pier-{environment}-{slot}-{self.pier_starts}"
        config = os.path.join(self.tmp, f"{name}.yaml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(self.pier_config_text(environment, prefix, port))
        # The environment outranks the config file: keep PIER_* out of it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIER_")}
        process = Process(name, [PIER_BIN, "--config", config], env=env)
        self.processes.append(process)

        def listening(line):
            try:
                record = json.loads(line)
            except ValueError:
                return None
            if isinstance(record, dict) and record.get("msg") == "listening":
                return record
            return None

        record = process.wait_for_line(listening, START_TIMEOUT_S)
        self.assertIsNotNone(
            record,
            f"pier ({environment}) printed no JSON 'listening' line within "
            f"{START_TIMEOUT_S}s (exit code {process.proc.poll()}); output:\n"
            + process.output(),
        )
        listen_port = record.get("port")
        self.assertIsInstance(listen_port, int, f"'port' in the listening line: {record}")
        self.assertGreater(listen_port, 0, f"ephemeral port not reported: {record}")
        if port:
            self.assertEqual(listen_port, port, f"listening line: {record}")
        self.assertEqual(record.get("prefix"), prefix, f"listening line: {record}")
        return process, listen_port, config

    def send_traffic(self, port, prefix, health_requests):
        """Requests a user would send; returns nothing, asserts the statuses."""
        for _ in range(health_requests):
            status, _, body = http_request(port, "GET", f"{prefix}/health")
            self.assertEqual(status, 200, body)
        status, _, body = http_request(port, "GET", f"{prefix}/no-such-page")
        self.assertEqual(status, 404, body)
        status, _, body = http_request(port, "POST", f"{prefix}/echo", body=b'{"a":1}')
        self.assertEqual(status, 200, body)

    def fetch_metrics(self, port, prefix):
        status, headers, body = http_request(port, "GET", f"{prefix}/metrics")
        self.assertEqual(status, 200, body[:500])
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        self.assertTrue(
            content_type.startswith("text/plain") and "version=0.0.4" in content_type,
            f"Content-Type of {prefix}/metrics is {content_type!r}, "
            "expected text/plain; version=0.0.4",
        )
        return body.decode("utf-8")

    def prometheus_config_text(self, targets):
        """The shipped prometheus.yml with the targets moved to the test's
        ephemeral ports, 1s intervals and an absolute rule file path. Each
        edit must apply exactly once, so a reshaped shipped file fails here
        with a clear message instead of silently testing something else."""
        with open(os.path.join(PROM_CONFIG_DIR, "prometheus.yml"), encoding="utf-8") as f:
            text = f.read()
        edits = [
            ("scrape_interval: 15s", "scrape_interval: 1s"),
            ("scrape_timeout: 5s", "scrape_timeout: 1s"),
            ("evaluation_interval: 15s", "evaluation_interval: 1s"),
            ("- alerts.yml", "- " + json.dumps(os.path.join(PROM_CONFIG_DIR, "alerts.yml"))),
        ]
        for shipped, port in targets.items():
            edits.append((f'"{shipped}"', f'"127.0.0.1:{port}"'))
        for old, new in edits:
            self.assertEqual(
                text.count(old),
                1,
                f"config/prometheus/prometheus.yml should contain {old!r} exactly "
                "once (the test rewrites it); update the test if the file changed",
            )
            text = text.replace(old, new)
        return text

    def start_prometheus(self, targets):
        config = os.path.join(self.tmp, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(self.prometheus_config_text(targets))
        port = free_port()
        process = Process(
            "prometheus",
            [
                PROMETHEUS_BIN,
                f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(self.tmp, 'tsdb')}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=self.tmp,
        )
        self.processes.append(process)
        self.prometheus = process
        self.prom_port = port
        self.wait_until(
            "Prometheus reports ready",
            self._ready,
            START_TIMEOUT_S,
        )
        return port

    def _ready(self):
        if self.prometheus.proc.poll() is not None:
            self.fail(
                f"prometheus exited with {self.prometheus.proc.returncode}:\n"
                + self.prometheus.output()
            )
        try:
            status, _, _ = http_request(self.prom_port, "GET", "/-/ready", timeout=2)
        except OSError:
            return False
        return status == 200

    def api(self, path, **params):
        query = "?" + urllib.parse.urlencode(params) if params else ""
        status, _, body = http_request(self.prom_port, "GET", f"/api/v1/{path}{query}")
        self.assertEqual(status, 200, f"/api/v1/{path}{query}: {body[:500]!r}")
        doc = json.loads(body)
        self.assertEqual(doc.get("status"), "success", doc)
        return doc["data"]

    def query(self, promql):
        """Instant query -> list of (labels, float value)."""
        data = self.api("query", query=promql)
        self.assertEqual(data["resultType"], "vector", data)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def wait_until(self, what, probe, timeout, ok=bool):
        """Call probe() every 0.25s until ok(result) holds, and return that
        result; fail after `timeout` seconds, showing the last result."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = probe()
            if ok(last):
                return last
            time.sleep(0.25)
        logs = "\n\n".join(f"--- {p.name} ---\n{p.output(20)}" for p in self.processes)
        self.fail(f"timed out after {timeout}s waiting until {what}; last: {last!r}\n{logs}")

    def alert_names(self):
        with open(os.path.join(PROM_CONFIG_DIR, "alerts.yml"), encoding="utf-8") as f:
            return set(re.findall(r"^\s*- alert:\s*(\S+)\s*$", f.read(), re.MULTILINE))

    def active_alerts(self):
        """Pending and firing alerts of pier's own rule group ("pier"). The
        other groups (public URL, nginx, host) need exporters this test does
        not run: their absent() terms are pending here by design; the VM
        rehearsal checks them with the real exporters."""
        pier = {
            r["name"]
            for g in self.api("rules")["groups"]
            if g["name"] == "pier"
            for r in g["rules"]
        }
        return [
            (a["labels"], a["annotations"], a["state"])
            for a in self.api("alerts")["alerts"]
            if a["labels"].get("alertname") in pier
        ]

    def start_blue_slots(self):
        """pier prod and staging in their blue slots (any free port), their
        green slots idle (a port nobody listens on), a little traffic, and
        Prometheus scraping all four slots. Returns ({(env, slot): port},
        {env: (blue process, its config path)})."""
        ports, piers = {}, {}
        for env in ("prod", "staging"):
            process, port, config = self.start_pier(env, PREFIX[env])
            ports[(env, "blue", "a")] = port
            piers[env] = (process, config)
        for key in SLOTS:
            if key not in ports:
                port = free_port()
                while port in ports.values():
                    port = free_port()
                ports[key] = port
        self.send_traffic(ports[("prod", "blue", "a")], "/prod", health_requests=3)
        self.send_traffic(ports[("staging", "blue", "a")], "/staging", health_requests=2)
        self.start_prometheus({SLOTS[slot]: ports[slot] for slot in SLOTS})
        return ports, piers

    def up_by_slot(self):
        """{(env, slot, replica): (instance, up)} from Prometheus."""
        return {
            (m.get("env"), m.get("slot"), m.get("replica")): (m.get("instance"), v)
            for m, v in self.query('up{job="pier"}')
        }

    def wait_slots(self, ports, running, what):
        """Wait until Prometheus has exactly the eight replica targets, at the
        test's ports, up exactly for the (env, slot, replica) in `running`."""
        want = {
            slot: (f"127.0.0.1:{ports[slot]}", 1.0 if slot in running else 0.0)
            for slot in SLOTS
        }
        return self.wait_until(what, self.up_by_slot, SCRAPE_TIMEOUT_S, ok=lambda up: up == want)

    def alerts_named(self, *names, state=None):
        return [
            (labels, annotations, st)
            for labels, annotations, st in self.active_alerts()
            if labels.get("alertname") in names and (state is None or st == state)
        ]

    # -------------------------------------------------------------- tests

    def test_metrics_output_passes_promtool_and_counts_requests(self):
        _, port, _ = self.start_pier("prod", "/prod")
        self.send_traffic(port, "/prod", health_requests=3)
        text = self.fetch_metrics(port, "/prod")

        self.assertTrue(
            os.access(PROMTOOL_BIN, os.X_OK), f"promtool not found at {PROMTOOL_BIN}"
        )
        check = subprocess.run(
            [PROMTOOL_BIN, "check", "metrics"],
            input=text.encode("utf-8"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=30,
        )
        self.assertEqual(
            check.returncode,
            0,
            "promtool check metrics rejected /prod/metrics:\n"
            + check.stdout.decode("utf-8", "replace")
            + "\n--- metrics ---\n"
            + text[:3000],
        )

        types, samples = parse_exposition(text)
        # The families the alerts are built on, with the types the PromQL
        # functions in alerts.yml need (rate/increase: counter; quantile:
        # histogram buckets; changes: a gauge holding the start time).
        for family, kind in [
            ("pier_http_requests_total", "counter"),
            ("pier_http_request_duration_seconds", "histogram"),
            ("pier_config_reloads_total", "counter"),
            ("process_start_time_seconds", "gauge"),
        ]:
            self.assertEqual(types.get(family), kind, f"# TYPE of {family}")

        self.assertEqual(
            sample_sum(
                samples, "pier_http_requests_total", route="/health", method="GET", code="200"
            ),
            3,
            "pier_http_requests_total for the 3 GET /prod/health requests",
        )
        self.assertEqual(
            sample_sum(samples, "pier_http_requests_total", route="unmatched", code="404"),
            1,
            "pier_http_requests_total for the 1 request to an unknown path",
        )
        self.assertEqual(
            sample_sum(samples, "pier_http_request_duration_seconds_count", route="/health"),
            3,
            "histogram count for /health",
        )
        self.assertEqual(
            sample_sum(
                samples, "pier_http_request_duration_seconds_bucket", route="/health", le="+Inf"
            ),
            3,
            "+Inf bucket for /health",
        )
        start = sample_sum(samples, "process_start_time_seconds")
        self.assertIsNotNone(start, "process_start_time_seconds sample")
        self.assertLess(
            abs(time.time() - start), 600, "process_start_time_seconds is a Unix time of about now"
        )

    def test_prometheus_scrapes_the_slots_and_rules_evaluate(self):
        ports, _ = self.start_blue_slots()
        self.wait_slots(
            ports,
            {("prod", "blue", "a"), ("staging", "blue", "a")},
            "the blue slots are up and the idle green slots down",
        )

        # Each environment is up as a whole (what PierDown looks at).
        self.assertEqual(
            {m.get("env"): v for m, v in self.query('max by (env) (up{job="pier"})')},
            {"prod": 1.0, "staging": 1.0},
        )

        # Request counters reached Prometheus, with the env and slot labels,
        # from the right metrics path of each environment.
        totals = {
            (m.get("env"), m.get("slot")): v
            for m, v in self.query(
                'sum by (env, slot) (pier_http_requests_total{job="pier"}) > 0'
            )
        }
        self.assertEqual(set(totals), {("prod", "blue"), ("staging", "blue")}, totals)
        health = {
            m.get("env"): v
            for m, v in self.query(
                'sum by (env) (pier_http_requests_total{job="pier", route="/health", code="200"})'
            )
        }
        self.assertEqual(health, {"prod": 3.0, "staging": 2.0})

        # Let a few scrapes and evaluations accumulate, so range functions
        # (changes, increase, rate, subqueries) in the rules have something
        # to chew on, and the green slots have been down for several scrapes.
        self.wait_until(
            "5 scrapes of each of the 8 targets are stored",
            lambda: len(self.query('count_over_time(up{job="pier"}[1m]) >= 5')) == 8,
            SCRAPE_TIMEOUT_S,
        )

        expected = self.alert_names()
        self.assertGreaterEqual(len(expected), 5, expected)

        def rules_evaluated():
            rules = [
                r
                for g in self.api("rules")["groups"]
                for r in g["rules"]
                if r.get("type") == "alerting"
            ]
            if any(r.get("health") == "unknown" for r in rules):
                return None
            return rules

        rules = self.wait_until(
            "every alerting rule was evaluated", rules_evaluated, SCRAPE_TIMEOUT_S
        )
        self.assertEqual({r["name"] for r in rules}, expected)
        for rule in rules:
            self.assertEqual(rule["health"], "ok", f"{rule['name']}: {rule.get('lastError')}")

        # All is well: nothing pending or firing. The idle green slots have
        # been down for 5+ evaluations (per target, PierDown would be pending
        # for both), and a start time that jitters between scrapes would
        # fire PierRestarted here.
        self.assertEqual(self.active_alerts(), [])

    def test_alerts_fire_on_a_real_pier(self):
        ports, piers = self.start_blue_slots()
        prod, prod_config = piers["prod"]
        staging, _ = piers["staging"]
        prod_port = ports[("prod", "blue", "a")]
        self.wait_slots(
            ports,
            {("prod", "blue", "a"), ("staging", "blue", "a")},
            "the blue slots are up and the idle green slots down",
        )

        # A broken config file + SIGHUP: pier keeps serving with the old
        # config and counts the failure; the alert fires at once (no `for`).
        with open(prod_config, "a", encoding="utf-8") as f:
            f.write("limits: [unterminated\n")
        prod.proc.send_signal(signal.SIGHUP)

        def reload_failure_counted():
            _, samples = parse_exposition(self.fetch_metrics(prod_port, "/prod"))
            return sample_sum(samples, "pier_config_reloads_total", result="failure")

        self.wait_until("pier counts the failed reload", reload_failure_counted, START_TIMEOUT_S)
        status, _, body = http_request(prod_port, "GET", "/prod/health")
        self.assertEqual(status, 200, f"pier stopped serving after a bad reload: {body!r}")

        firing = self.wait_until(
            "PierConfigReloadFailed fires",
            lambda: self.alerts_named("PierConfigReloadFailed", state="firing"),
            SCRAPE_TIMEOUT_S,
        )
        self.assertEqual(len(firing), 1, firing)
        labels, annotations, _ = firing[0]
        self.assertEqual(labels.get("env"), "prod", labels)
        self.assertEqual(labels.get("severity"), "warning", labels)
        # An environment's alert, not a slot's.
        self.assertNotIn("slot", labels)
        self.assertNotIn("instance", labels)
        self.assertTrue(
            annotations.get("runbook_url", "").endswith("#runbook-pierconfigreloadfailed"),
            annotations,
        )

        # Staging's only running slot stops: now no slot of staging is up,
        # and PierDown goes pending for staging (it would fire after its 1m
        # `for`). prod, with its green slot down all along, stays quiet.
        staging.stop()
        pending = self.wait_until(
            "PierDown is pending for staging",
            lambda: self.alerts_named("PierDown", state="pending"),
            SCRAPE_TIMEOUT_S,
        )
        self.assertEqual(len(pending), 1, pending)
        labels = pending[0][0]
        self.assertEqual(labels.get("env"), "staging", labels)
        self.assertEqual(labels.get("severity"), "critical", labels)
        self.assertNotIn("instance", labels)
        self.assertEqual(
            {slot: up for slot, (_, up) in self.up_by_slot().items()},
            {key: 1.0 if key == ("prod", "blue", "a") else 0.0 for key in SLOTS},
        )

    def test_deploy_switch_is_no_outage_and_in_place_restart_is(self):
        ports, piers = self.start_blue_slots()
        blue, _ = piers["prod"]
        green_port = ports[("prod", "green", "a")]
        self.wait_slots(
            ports,
            {("prod", "blue", "a"), ("staging", "blue", "a")},
            "the blue slots are up and the idle green slots down",
        )

        # The deploy, as pier-deploy does it: start the idle slot, wait
        # until it is healthy (here: scraped), move traffic, stop the old one.
        green, _, _ = self.start_pier("prod", "/prod", port=green_port, slot="green")
        self.send_traffic(green_port, "/prod", health_requests=1)
        self.wait_slots(
            ports,
            {("prod", "blue", "a"), ("prod", "green", "a"), ("staging", "blue", "a")},
            "both prod slots are up (mid-deploy)",
        )
        blue.stop()
        self.wait_slots(
            ports,
            {("prod", "green", "a"), ("staging", "blue", "a")},
            "prod runs in green only, blue is down",
        )

        # Watch 5 evaluations (1s apart) with the old slot down: per target,
        # PierDown would be pending at once; a new slot coming up is no
        # restart.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self.assertEqual(
                self.alerts_named("PierDown", "PierRestarted", "PierCrashLooping"), []
            )
            time.sleep(0.5)
        self.assertEqual(
            {m.get("env"): v for m, v in self.query('max by (env) (up{job="pier"})')},
            {"prod": 1.0, "staging": 1.0},
        )

        # The restart rule compares a slot's start time with the one seen
        # 15s-75s earlier: let green's process be scraped for over 15s.
        self.wait_until(
            "prod green's start time was scraped for 17s",
            lambda: self.query(
                'count_over_time(process_start_time_seconds{job="pier", env="prod", '
                'slot="green"}[1m]) >= 17'
            ),
            SCRAPE_TIMEOUT_S,
        )

        # The process in the green slot is replaced in place (a crash that
        # the restart policy undid): that is a restart.
        green.stop()
        self.start_pier("prod", "/prod", port=green_port, slot="green")
        firing = self.wait_until(
            "PierRestarted fires for prod",
            lambda: self.alerts_named("PierRestarted", state="firing"),
            SCRAPE_TIMEOUT_S,
        )
        self.assertEqual(len(firing), 1, firing)
        labels, annotations, _ = firing[0]
        self.assertEqual(labels.get("env"), "prod", labels)
        self.assertEqual(labels.get("severity"), "info", labels)
        self.assertNotIn("slot", labels)
        self.assertIn("restarted 1 time(s)", annotations.get("description", ""), annotations)
        self.assertEqual(self.alerts_named("PierCrashLooping"), [])
        self.assertEqual(self.alerts_named("PierDown", state="firing"), [])

if __name__ == "__main__":
    harness.main()
