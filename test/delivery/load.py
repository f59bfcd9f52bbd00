#!/usr/bin/env python3
"""Strict HTTP clients for test/delivery/deploy-test.sh: every request is sent exactly once.

Three kinds of client threads run against HOST:PORT (nginx) under one PREFIX until
STOP_FILE exists or MAX_SECONDS have passed:

  keepalive  GET PREFIX/version on one HTTP/1.1 connection, reused for as long as the
             server keeps it (a response with Connection: close ends it; the next request
             opens a new one, as any client does);
  newconn    GET PREFIX/version on a new connection for every request (Connection: close);
  post       POST PREFIX/echo with a JSON body on a keep-alive connection; the answer must
             be 200 and echo the body back.

No request is ever sent twice: a request whose connection fails (refused, reset, EOF before
a whole answer, timeout) is an error, full stop. Most HTTP clients resend an idempotent
request once on a reused connection that was closed under them; this one does not, so it
sees every connection a server or proxy closes at the wrong moment. Each request carries
X-Request-Id load-<kind>-<client>-<n> to find it in nginx's and pier's logs.

One JSON object is printed at the end, per kind and in total: requests, ok (2xx, and for
post the body echoed), non_2xx (by code), errors (by kind), bad_echo, versions (of the
version answers, in order of first sight), the first errors with the time they happened
(unix seconds), requests per second.
"""
import argparse
import collections
import http.client
import json
import os
import sys
import threading
import time

KINDS = ("keepalive", "newconn", "post")


class Stats:
    def __init__(self):
        self.c = collections.Counter()
        self.codes = collections.Counter()
        self.kinds = collections.Counter()
        self.versions = collections.OrderedDict()
        self.first_errors = []
        self.error_times = []

    def error(self, rid, what):
        self.c["errors"] += 1
        self.kinds[what.split(":")[0]] += 1
        self.error_times.append(round(time.time(), 3))
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{time.time():.3f} {rid}: {what}")

    def merge(self, o):
        self.c.update(o.c)
        self.codes.update(o.codes)
        self.kinds.update(o.kinds)
        for k, v in o.versions.items():
            self.versions[k] = self.versions.get(k, 0) + v
        self.first_errors.extend(o.first_errors)
        self.error_times.extend(o.error_times)


def client(kind, idx, args, deadline, out):
    st = Stats()
    conn = None
    n = 0
    path = args.prefix + ("/echo" if kind == "post" else "/version")
    while time.monotonic() < deadline:
        if n % 20 == 0 and os.path.exists(args.stop_file):
            break
        n += 1
        rid = f"load-{kind}-{idx}-{n}"
        headers = {"X-Request-Id": rid}
        body = None
        if kind == "post":
            body = json.dumps({"client": idx, "n": n}).encode()
            headers["Content-Type"] = "application/json"
        if kind == "newconn":
            headers["Connection"] = "close"
        if conn is None:
            conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
        st.c["requests"] += 1
        try:
            conn.request("POST" if kind == "post" else "GET", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            conn = None
            st.error(rid, f"{type(e).__name__}: {e}")
            continue
        if resp.will_close or kind == "newconn":
            conn.close()
            conn = None
        if not 200 <= resp.status < 300:
            st.c["non_2xx"] += 1
            st.codes[resp.status] += 1
            if len(st.first_errors) < 5:
                st.first_errors.append(f"{time.time():.3f} {rid}: HTTP {resp.status}: {data[:120]!r}")
            st.error_times.append(round(time.time(), 3))
            continue
        try:
            j = json.loads(data)
        except ValueError:
            j = None
        if kind == "post":
            if not isinstance(j, dict) or j.get("received") != json.loads(body):
                st.c["bad_echo"] += 1
                if len(st.first_errors) < 5:
                    st.first_errors.append(f"{time.time():.3f} {rid}: echo mismatch: {data[:120]!r}")
                continue
        else:
            v = j.get("version", "?") if isinstance(j, dict) else "?"
            st.versions[v] = st.versions.get(v, 0) + 1
        st.c["ok"] += 1
    if conn is not None:
        conn.close()
    out[(kind, idx)] = st


def summary(st, seconds):
    return {
        "requests": st.c["requests"], "ok": st.c["ok"], "non_2xx": st.c["non_2xx"],
        "errors": st.c["errors"], "bad_echo": st.c["bad_echo"],
        "failed": st.c["requests"] - st.c["ok"],
        "codes": {str(k): v for k, v in st.codes.items()}, "error_kinds": dict(st.kinds),
        "versions": st.versions, "rps": round(st.c["requests"] / seconds) if seconds else 0,
        "first_errors": st.first_errors[:10], "error_times": sorted(st.error_times)[:200],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", required=True, help="/prod or /staging")
    for k, d in (("keepalive", 2), ("newconn", 1), ("post", 2)):
        p.add_argument("--" + k, type=int, default=d, help=f"{k} clients (default {d})")
    p.add_argument("--max-seconds", type=float, default=60)
    p.add_argument("--timeout", type=float, default=10, help="per request, seconds")
    p.add_argument("--stop-file", required=True)
    args = p.parse_args()

    start = time.monotonic()
    deadline = start + min(args.max_seconds, 600)
    out = {}
    threads = [threading.Thread(target=client, args=(k, i, args, deadline, out))
               for k in KINDS for i in range(getattr(args, k))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    result = {"prefix": args.prefix, "seconds": round(seconds, 1)}
    total = Stats()
    for k in KINDS:
        st = Stats()
        for (kind, _), s in out.items():
            if kind == k:
                st.merge(s)
        result[k] = summary(st, seconds)
        total.merge(st)
    result["total"] = summary(total, seconds)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
