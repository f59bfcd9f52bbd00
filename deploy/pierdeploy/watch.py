"""The watch after the switch: what the new slot served, and the verdict. Pure functions,
no I/O (engine.py reads the metrics, Docker and nginx's log and calls these).

Figures come from each replica's /metrics (pier_http_requests_total and the latency
histogram, health probes and scrapes left out), read every interval. A replica's counters
restart from zero when its process restarts: `Tracker` notices it (process_start_time_seconds
changed, or a counter went down) and counts what the new process served from zero, the way
Prometheus' rate() treats a reset, so a restart never makes the figures go down or negative.

The verdict fails closed (docs/deploys.md#the-watch-after-the-switch): a restart during the
window, metrics that cannot be read (unless the deploy file says `on_unreadable: keep`),
too many 5xx (pier's plus nginx's own 502/504 for the environment), too many 5xx in
absolute terms while traffic is below the minimum, or a p99 far above the old slot's over
the moments before the switch: switch back.
"""

import json

NOT_TRAFFIC = ('route="/health', 'route="/metrics"')


class Sample:
    """One replica's counters at one moment."""

    def __init__(self, start=None, requests=0, errors=0, buckets=None):
        self.start, self.requests, self.errors = start, requests, errors
        self.buckets = buckets or {}

    def __repr__(self):
        return f"Sample(start={self.start}, n={self.requests}, 5xx={self.errors})"


def _value(line):
    """The sample's value; counters and buckets are whole numbers."""
    try:
        v = float(line.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return None
    return int(v) if v.is_integer() else v


def parse_metrics(text):
    """A Sample from pier's Prometheus text; None when it is not pier's metrics."""
    s = Sample()
    seen = False
    for line in text.splitlines():
        if line.startswith("process_start_time_seconds "):
            s.start = _value(line)
        elif line.startswith("pier_http_requests_total{"):
            seen = True
            if any(t in line for t in NOT_TRAFFIC):
                continue
            v = _value(line) or 0
            s.requests += v
            if 'code="5' in line:
                s.errors += v
        elif line.startswith("pier_http_request_duration_seconds_bucket{"):
            seen = True
            if any(t in line for t in NOT_TRAFFIC):
                continue
            le = line.split('le="', 1)[1].split('"', 1)[0]
            s.buckets[le] = s.buckets.get(le, 0) + (_value(line) or 0)
        elif line.startswith("# TYPE pier_http_requests_total"):
            seen = True
    return s if seen else None


def _le_key(le):
    return float("inf") if le == "+Inf" else float(le)


def p99_ms(buckets):
    """p99 in ms from cumulative buckets {le: count}, linear within the bucket like
    Prometheus' histogram_quantile; None without requests."""
    items = sorted(buckets.items(), key=lambda kv: _le_key(kv[0]))
    if not items or items[-1][1] <= 0:
        return None
    want = 0.99 * items[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in items:
        if c >= want:
            if le == "+Inf":
                return prev_le * 1000
            frac = (want - prev_c) / (c - prev_c) if c > prev_c else 1
            return (prev_le + (float(le) - prev_le) * frac) * 1000
        prev_le, prev_c = float(le), c
    return prev_le * 1000


class Tracker:
    """What a set of replicas served since `start()`, across restarts of their processes."""

    def __init__(self):
        self.last = {}
        self.requests = 0
        self.errors = 0
        self.buckets = {}
        self.resets = 0

    def start(self, name, sample):
        self.last[name] = sample

    def add(self, name, sample):
        prev = self.last.get(name)
        reset = prev is None or (sample.start is not None and prev.start is not None and sample.start != prev.start) \
            or sample.requests < prev.requests or sample.errors < prev.errors \
            or any(sample.buckets.get(le, 0) < c for le, c in prev.buckets.items())
        if reset:
            if prev is not None:
                self.resets += 1
            base = Sample()
        else:
            base = prev
        self.requests += sample.requests - base.requests
        self.errors += sample.errors - base.errors
        for le, c in sample.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0) + c - base.buckets.get(le, 0)
        self.last[name] = sample

    def p99(self):
        return p99_ms(self.buckets)


def nginx_errors(lines, prefix):
    """nginx's own 5xx for PREFIX in pier_json access-log LINES: the answers nginx made
    itself because no replica answered (502, 504). pier never sends those, and the 5xx pier
    did send are counted from its metrics."""
    n = 0
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        uri = str(rec.get("uri", ""))
        if not (uri == prefix or uri.startswith(prefix + "/") or uri.startswith(prefix + "?")):
            continue
        if rec.get("status") in (502, 504):
            n += 1
    return n


class Figures:
    def __init__(self, requests=0, errors=0, edge_errors=0, restarts=0, unreadable=None, p99=None,
                 old_requests=0, old_p99=None, elapsed=0.0):
        self.requests, self.errors, self.edge_errors, self.restarts = requests, errors, edge_errors, restarts
        self.unreadable = unreadable or []
        self.p99, self.old_requests, self.old_p99, self.elapsed = p99, old_requests, old_p99, elapsed

    def total(self):
        return self.requests + self.edge_errors

    def total_errors(self):
        return self.errors + self.edge_errors

    def ratio(self):
        return self.total_errors() / self.total() if self.total() else 0.0

    def line(self):
        p99 = "-" if self.p99 is None else f"{self.p99:.1f} ms"
        old = "-" if self.old_p99 is None else f"{self.old_p99:.1f} ms over {self.old_requests} requests"
        return (f"{self.total()} requests in {self.elapsed:.1f} s, 5xx {self.ratio() * 100:.2f}% "
                f"({self.errors} from pier, {self.edge_errors} from nginx), restarts {self.restarts}, "
                f"p99 {p99} (old slot {old})")


def judge(w, f, final):
    """The watch's decision after one look: ("back", reason), ("keep", reason) or
    (None, None) to go on. W: the environment's watch settings (dict with the deploy file's
    watch.* keys); F: Figures; FINAL: the window is over."""
    if f.restarts > w["watch.max_restarts"]:
        return "back", (f"the new replicas restarted or stopped {f.restarts} time(s) during the window "
                        f"(RestartCount, not running; at most {w['watch.max_restarts']})")
    if f.unreadable and w["watch.on_unreadable"] == "fail":
        return "back", "metrics could not be read: " + "; ".join(f.unreadable)
    n, e = f.total(), f.total_errors()
    if n >= w["watch.min_requests"]:
        if f.ratio() > w["watch.max_5xx_ratio"]:
            return "back", f"5xx ratio {f.ratio() * 100:.2f}% ({e} of {n} requests) > {w['watch.max_5xx_ratio'] * 100:g}%"
        if f.p99 is not None and f.old_p99 is not None and f.old_requests >= w["watch.min_requests"] \
                and f.p99 > w["watch.p99_factor"] * f.old_p99 and f.p99 > w["watch.p99_min_ms"]:
            return "back", (f"p99 {f.p99:.1f} ms > {w['watch.p99_factor']:g}x the old slot's {f.old_p99:.1f} ms "
                            f"and > {w['watch.p99_min_ms']:g} ms ({n} requests)")
    elif e >= w["watch.max_errors"]:
        return "back", f"{e} 5xx in only {n} requests (at most {w['watch.max_errors'] - 1} while below {w['watch.min_requests']} requests)"
    if not final:
        return None, None
    if f.unreadable:
        return "keep", "kept, not judged: metrics could not be read (on_unreadable: keep): " + "; ".join(f.unreadable)
    if n < w["watch.min_requests"]:
        return "keep", f"kept, not judged: only {n} requests (fewer than {w['watch.min_requests']}), {e} 5xx"
    return "keep", "kept"
