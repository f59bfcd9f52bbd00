"""Unit tests of the watch's figures and verdict (deploy/pierdeploy/watch.py).

    python3 -m unittest discover -s test/delivery/unit      (ci/lint.sh check delivery-unit)
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "deploy"))

from pierdeploy import watch  # noqa: E402

WATCH = {"watch.max_restarts": 0, "watch.on_unreadable": "fail", "watch.min_requests": 50,
         "watch.max_5xx_ratio": 0.01, "watch.max_errors": 5, "watch.p99_factor": 2.0, "watch.p99_min_ms": 50.0}


def metrics(start, ok=0, err=0, slow=0, health=7):
    """pier's /metrics text: OK fast 200s, ERR 500s, SLOW 200s taking ~0.2 s, HEALTH probes."""
    fast = ok + err
    return "\n".join([
        "# TYPE pier_http_requests_total counter",
        f'pier_http_requests_total{{route="/version",method="GET",code="200"}} {ok + slow}',
        f'pier_http_requests_total{{route="/echo",method="POST",code="500"}} {err}',
        f'pier_http_requests_total{{route="/health",method="GET",code="200"}} {health}',
        f'pier_http_request_duration_seconds_bucket{{route="/version",le="0.005"}} {fast}',
        f'pier_http_request_duration_seconds_bucket{{route="/version",le="0.1"}} {fast}',
        f'pier_http_request_duration_seconds_bucket{{route="/version",le="0.25"}} {fast + slow}',
        f'pier_http_request_duration_seconds_bucket{{route="/version",le="+Inf"}} {fast + slow}',
        f'pier_http_request_duration_seconds_bucket{{route="/health",le="+Inf"}} {health}',
        f"process_start_time_seconds {start}",
    ]) + "\n"


class ParseTest(unittest.TestCase):
    def test_health_and_metrics_routes_are_not_traffic(self):
        s = watch.parse_metrics(metrics(100, ok=10, err=3))
        self.assertEqual((s.requests, s.errors, s.start), (13, 3, 100))
        self.assertEqual(s.buckets["+Inf"], 13)

    def test_not_pier(self):
        self.assertIsNone(watch.parse_metrics("<html>login</html>"))

    def test_p99(self):
        self.assertAlmostEqual(watch.p99_ms({"0.005": 100, "0.1": 100, "+Inf": 100}), 4.95)
        self.assertIsNone(watch.p99_ms({"+Inf": 0}))
        # 100 requests, 10 of them slow: p99 in the 0.1-0.25 bucket
        self.assertGreater(watch.p99_ms({"0.005": 90, "0.1": 90, "0.25": 100, "+Inf": 100}), 100)


class TrackerTest(unittest.TestCase):
    def test_since_start(self):
        t = watch.Tracker()
        t.start("a", watch.parse_metrics(metrics(100, ok=1000, err=5)))
        t.add("a", watch.parse_metrics(metrics(100, ok=1100, err=6)))
        self.assertEqual((t.requests, t.errors, t.resets), (101, 1, 0))

    def test_counter_reset_after_a_restart(self):
        # 50 errors in 100 requests, then the process restarts and serves 10 more: the
        # errors are not lost and nothing goes negative (issue 18: it showed 0 %, then n < 0).
        t = watch.Tracker()
        t.start("a", watch.parse_metrics(metrics(100)))
        t.add("a", watch.parse_metrics(metrics(100, ok=50, err=50)))
        t.add("a", watch.parse_metrics(metrics(200, ok=10)))
        self.assertEqual((t.requests, t.errors, t.resets), (110, 50, 1))

    def test_reset_seen_by_counters_going_down_without_a_start_time(self):
        t = watch.Tracker()
        a = watch.parse_metrics(metrics(100, ok=500))
        a.start = None
        b = watch.parse_metrics(metrics(100, ok=20))
        b.start = None
        t.start("a", a)
        t.add("a", b)
        self.assertEqual((t.requests, t.resets), (20, 1))

    def test_two_replicas_both_restarted(self):
        t = watch.Tracker()
        for r in "ab":
            t.start(r, watch.parse_metrics(metrics(1, ok=300)))
        for r in "ab":
            t.add(r, watch.parse_metrics(metrics(2, ok=5, err=1)))
        self.assertEqual((t.requests, t.errors, t.resets), (12, 2, 2))


class NginxTest(unittest.TestCase):
    def test_counts_nginx_own_502_504_of_the_prefix(self):
        lines = [json.dumps({"uri": "/prod/version", "status": 502}),
                 json.dumps({"uri": "/prod/echo", "status": 504}),
                 json.dumps({"uri": "/prod/echo", "status": 500}),  # pier's: in its metrics
                 json.dumps({"uri": "/staging/version", "status": 502}),
                 json.dumps({"uri": "/production/x", "status": 502}),
                 "not json", json.dumps({"uri": "/prod/version", "status": 200})]
        self.assertEqual(watch.nginx_errors(lines, "/prod"), 2)


def fig(**kw):
    base = dict(requests=1000, errors=0, edge_errors=0, restarts=0, unreadable=[], p99=5.0,
                old_requests=1000, old_p99=4.0, elapsed=10)
    base.update(kw)
    return watch.Figures(**base)


class JudgeTest(unittest.TestCase):
    def test_good_release_goes_on_then_is_kept(self):
        self.assertEqual(watch.judge(WATCH, fig(), final=False), (None, None))
        self.assertEqual(watch.judge(WATCH, fig(), final=True), ("keep", "kept"))

    def test_5xx_ratio(self):
        d, why = watch.judge(WATCH, fig(errors=20), final=False)
        self.assertEqual(d, "back")
        self.assertIn("5xx ratio 2.00% (20 of 1000 requests)", why)

    def test_nginx_own_5xx_count(self):
        d, why = watch.judge(WATCH, fig(edge_errors=30), final=False)
        self.assertEqual(d, "back")
        self.assertIn("30 of 1030", why)

    def test_low_traffic_with_errors_switches_back(self):
        # 49 errors out of 49 requests used to be kept for being under the minimum.
        d, why = watch.judge(WATCH, fig(requests=49, errors=49), final=False)
        self.assertEqual(d, "back")
        self.assertIn("49 5xx in only 49 requests", why)
        d, _ = watch.judge(WATCH, fig(requests=3, errors=0, edge_errors=5), final=False)
        self.assertEqual(d, "back")

    def test_low_traffic_few_errors_kept_not_judged(self):
        self.assertEqual(watch.judge(WATCH, fig(requests=10, errors=4), final=False), (None, None))
        d, why = watch.judge(WATCH, fig(requests=10, errors=4), final=True)
        self.assertEqual(d, "keep")
        self.assertTrue(why.startswith("kept, not judged: only 10 requests"))

    def test_unreadable_metrics_fail_closed(self):
        d, why = watch.judge(WATCH, fig(unreadable=["pier-prod-green-a: HTTP 401"]), final=False)
        self.assertEqual(d, "back")
        self.assertIn("HTTP 401", why)

    def test_unreadable_metrics_keep_when_the_deploy_file_says_so(self):
        w = dict(WATCH, **{"watch.on_unreadable": "keep"})
        self.assertEqual(watch.judge(w, fig(unreadable=["x"]), final=False), (None, None))
        d, why = watch.judge(w, fig(unreadable=["x"]), final=True)
        self.assertEqual(d, "keep")
        self.assertIn("not judged", why)

    def test_a_restart_switches_back(self):
        d, why = watch.judge(WATCH, fig(restarts=1), final=False)
        self.assertEqual(d, "back")
        self.assertIn("restarted or stopped 1 time", why)
        self.assertEqual(watch.judge(dict(WATCH, **{"watch.max_restarts": 1}), fig(restarts=1), final=True)[0], "keep")

    def test_p99_against_the_old_slot(self):
        d, why = watch.judge(WATCH, fig(p99=120.0, old_p99=4.0), final=False)
        self.assertEqual(d, "back")
        self.assertIn("p99 120.0 ms > 2x the old slot's 4.0 ms", why)
        # below the floor: 1 ms -> 3 ms is not a reason
        self.assertEqual(watch.judge(WATCH, fig(p99=30.0, old_p99=4.0), final=False), (None, None))
        # the old slot served too little to compare
        self.assertEqual(watch.judge(WATCH, fig(p99=120.0, old_p99=4.0, old_requests=10), final=False), (None, None))


if __name__ == "__main__":
    unittest.main()
