#!/usr/bin/env python3
"""An Alertmanager webhook receiver for the rehearsal: every POST body (one notification,
JSON, plus "receivedUnix": when it arrived) is appended as one line to FILE; GET answers with the file, so a test can read it.

    webhook-receiver.py PORT FILE
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, FILE = int(sys.argv[1]), sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n <= 0 or n > 1 << 20:
            self.send_error(400, "expected a JSON body of at most 1 MiB")
            return
        try:
            doc = json.loads(self.rfile.read(n))
        except ValueError:
            self.send_error(400, "not JSON")
            return
        if isinstance(doc, dict):
            doc["receivedUnix"] = time.time()  # when it arrived, for the rehearsal's figures
        with open(FILE, "a") as f:
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        try:
            with open(FILE, "rb") as f:
                body = f.read()
        except FileNotFoundError:
            body = b""
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
