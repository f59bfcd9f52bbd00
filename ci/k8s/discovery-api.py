#!/usr/bin/env python3
"""An empty Kubernetes API on 127.0.0.1, just enough for `kubectl apply -k DIR --dry-run=client`.

    discovery-api.py PORTFILE      listens on an ephemeral loopback port, writes it to PORTFILE

kubectl's client-side dry run still asks a server which resources exist (discovery), fetches
the OpenAPI document for validation, and GETs every object to choose between create and
patch. This answers discovery for the kinds pier's overlays use, an OpenAPI v2 document with
no schemas (the schema checks are ci/k8s/check.js's), and 404 for every object, so kubectl
takes the path of a first install. It stores nothing: every write is refused with 405.
Each request is logged on stderr as `METHOD PATH`.
"""

import http.server
import json
import sys


def resource(name, kind, namespaced=True):
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    return {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs}


CORE = [
    resource("namespaces", "Namespace", namespaced=False),
    resource("configmaps", "ConfigMap"),
    resource("secrets", "Secret"),
    resource("services", "Service"),
]
GROUPS = {
    "apps/v1": [resource("deployments", "Deployment")],
    "autoscaling/v2": [resource("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
    "policy/v1": [resource("poddisruptionbudgets", "PodDisruptionBudget")],
    "networking.k8s.io/v1": [resource("ingresses", "Ingress"), resource("networkpolicies", "NetworkPolicy")],
}
# openapi_v2.Document{swagger: "2.0"} in protobuf, the encoding kubectl asks for.
OPENAPI_V2 = b"\x0a\x032.0"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        sys.stderr.write(f"{self.command} {self.path}\n")

    def reply(self, code, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def status(self, code, reason, message):
        self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                          "code": code, "message": message})

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-discovery"})
        if path == "/openapi/v2":
            return self.reply(200, OPENAPI_V2, "application/octet-stream")
        if path == "/openapi/v3":
            return self.reply(200, {"paths": {}})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if path == "/apis":
            groups = {}
            for gv in GROUPS:
                group, version = gv.split("/")
                groups.setdefault(group, []).append({"groupVersion": gv, "version": version})
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": vs, "preferredVersion": vs[0]} for g, vs in groups.items()]})
        if path == "/api/v1":
            return self.reply(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE})
        if path.startswith("/apis/") and path[len("/apis/"):] in GROUPS:
            gv = path[len("/apis/"):]
            return self.reply(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                                    "resources": GROUPS[gv]})
        return self.status(404, "NotFound", f"{path} not found")

    def do_POST(self):
        self.status(405, "MethodNotAllowed", "this API stores nothing")

    do_PUT = do_PATCH = do_DELETE = do_POST


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
