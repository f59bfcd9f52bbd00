#!/usr/bin/env python3
"""Bounded HTTP load for ci/deploy-test.sh.

CLIENTS threads each keep one HTTP/1.1 keep-alive connection to HOST:PORT and GET PATH in a
loop until STOP_FILE exists, MAX_SECONDS have passed or MAX_REQUESTS were sent; then one
JSON line with the counts is printed:

  total      requests that got an answer or failed for good
  ok         2xx answers;  non_2xx  other answers (codes in "codes")
  errors     no answer at all (refused, reset, timeout, closed mid-answer); kinds in "error_kinds"
  keepalive_retries
             a request written on a reused keep-alive connection that the server had
             closed (no byte of an answer came back) was sent again once on a new
             connection, as HTTP clients do for idempotent requests (RFC 9112 9.3.1);
             if that second try fails it counts in errors
  versions   the "version" field of 2xx JSON answers, with counts, in order of first sight

Each request carries X-Request-Id load-<client>-<n> so it can be found in nginx's and
pier's logs.
"""
import argparse
import collections
import http.client
import json
import os
import sys
import threading
import time


def client(idx, args, deadline, out):
    counts = collections.Counter()
    codes = collections.Counter()
    kinds = collections.Counter()
    versions = collections.OrderedDict()
    first_errors = []
    lat_max = 0.0
    conn = None
    on_conn = 0  # answers received on the current connection
    n = 0
    while n < args.max_requests and time.monotonic() < deadline:
        if n % 50 == 0 and os.path.exists(args.stop_file):
            break
        n += 1
        headers = {"X-Request-Id": f"load-{idx}-{n}"}
        t0 = time.monotonic()
        for attempt in (1, 2):
            if conn is None:
                conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
                on_conn = 0
            reused = on_conn > 0
            try:
                conn.request("GET", args.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                conn = None
                if reused and attempt == 1:
                    counts["keepalive_retries"] += 1
                    continue
                counts["errors"] += 1
                kinds[type(e).__name__] += 1
                if len(first_errors) < 5:
                    first_errors.append(f"{headers['X-Request-Id']}: {type(e).__name__}: {e}")
                break
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = None
                counts["errors"] += 1
                kinds[type(e).__name__] += 1
                if len(first_errors) < 5:
                    first_errors.append(f"{headers['X-Request-Id']}: {type(e).__name__}: {e}")
                break
            lat_max = max(lat_max, time.monotonic() - t0)
            if 200 <= resp.status < 300:
                counts["ok"] += 1
                try:
                    v = json.loads(body).get("version", "?")
                except ValueError:
                    v = "?"
                versions[v] = versions.get(v, 0) + 1
            else:
                counts["non_2xx"] += 1
                codes[resp.status] += 1
                if len(first_errors) < 5:
                    first_errors.append(f"{headers['X-Request-Id']}: HTTP {resp.status}: {body[:120]!r}")
            if resp.will_close:
                conn.close()
                conn = None
            else:
                on_conn += 1
            break
        counts["total"] += 1
    if conn is not None:
        conn.close()
    out[idx] = (counts, codes, kinds, versions, first_errors, lat_max)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--max-seconds", type=float, default=60)
    p.add_argument("--max-requests", type=int, default=200000, help="per client")
    p.add_argument("--timeout", type=float, default=5, help="per request, seconds")
    p.add_argument("--stop-file", required=True)
    args = p.parse_args()

    start = time.monotonic()
    deadline = start + min(args.max_seconds, 300)
    out = [None] * args.clients
    threads = [threading.Thread(target=client, args=(i, args, deadline, out)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start

    counts, codes, kinds = collections.Counter(), collections.Counter(), collections.Counter()
    versions, first_errors, lat_max = collections.OrderedDict(), [], 0.0
    for c, co, k, v, fe, lm in out:
        counts.update(c)
        codes.update(co)
        kinds.update(k)
        for name, num in v.items():
            versions[name] = versions.get(name, 0) + num
        first_errors.extend(fe)
        lat_max = max(lat_max, lm)
    json.dump({
        "total": counts["total"], "ok": counts["ok"], "non_2xx": counts["non_2xx"],
        "errors": counts["errors"], "keepalive_retries": counts["keepalive_retries"],
        "codes": {str(k): v for k, v in codes.items()}, "error_kinds": dict(kinds),
        "versions": versions, "seconds": round(elapsed, 1),
        "rps": round(counts["total"] / elapsed) if elapsed else 0,
        "max_latency_ms": round(lat_max * 1000, 1), "first_errors": first_errors[:10],
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
