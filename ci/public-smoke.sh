#!/usr/bin/env bash
# Smoke-test a deployed pier through its public URL, as a client would see it.
#
#   ci/public-smoke.sh URL PREFIX TAG
#     URL     scheme and host, e.g. https://pier.example.com (a trailing / is dropped)
#     PREFIX  the environment's path prefix: /prod, /staging (or "" for none)
#     TAG     what was deployed: the commit SHA the image was built from (its tag)
#
# Passes when, within the retry budget:
#   GET {URL}{PREFIX}/health   200, JSON "status":"pass", "releaseId" is the commit TAG;
#   GET {URL}{PREFIX}/version  200, JSON "commit" is the commit TAG, "version" not empty;
#   and both answers carry the X-Request-Id this script sent.
# Two commits match when the shorter (at least 7 hex digits) starts the longer, so a build
# that reports a short commit still matches a full-SHA tag. A TAG that is not hex (a
# release name) must equal the reported version instead (a leading "v" is ignored).
#
# Every request is retried: right after a switch the old colour may still answer, or nginx
# may not have reloaded yet. Bounds (environment):
#   SMOKE_ATTEMPTS  tries per endpoint (default 30)
#   SMOKE_DELAY     seconds between tries (default 5)
#   SMOKE_TIMEOUT   seconds for one request (default 10)
# so the default worst case is about 30 x (5 + 10) s per endpoint.
# Exit status: 0 pass, 1 fail, 2 usage.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

if [[ $# -ne 3 ]]; then
  usage >&2
  exit 2
fi
url=${1%/}
prefix=$2
tag=$3
attempts=${SMOKE_ATTEMPTS:-30}
delay=${SMOKE_DELAY:-5}
timeout=${SMOKE_TIMEOUT:-10}

say() { printf 'public-smoke: %s\n' "$*"; }

[[ $url =~ ^https?://[^/[:space:]]+$ ]] || {
  say "URL must be scheme://host[:port] without a path, got '$url'"
  exit 2
}
[[ -z $prefix || $prefix =~ ^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$ ]] || {
  say "PREFIX must be empty or start with / and not end with /, got '$prefix'"
  exit 2
}
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || {
  say "TAG '$tag' is not an image tag"
  exit 2
}
for n in "$attempts" "$delay" "$timeout"; do
  [[ $n =~ ^[0-9]+$ ]] || {
    say "SMOKE_ATTEMPTS, SMOKE_DELAY and SMOKE_TIMEOUT must be whole numbers"
    exit 2
  }
done
((attempts >= 1)) || attempts=1
command -v curl >/dev/null 2>&1 || {
  say "curl is not installed"
  exit 1
}
command -v python3 >/dev/null 2>&1 || {
  say "python3 is not installed"
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# judge ENDPOINT BODY_FILE HEADERS_FILE REQUEST_ID: print nothing and exit 0 when the answer
# is right, else print what is wrong (one line) and exit 1.
judge() {
  python3 - "$@" "$tag" <<'PY'
import json, re, sys

endpoint, body_file, headers_file, request_id, tag = sys.argv[1:6]

def same_commit(reported, wanted):
    a, b = str(reported).lower(), wanted.lower()
    short, long_ = sorted((a, b), key=len)
    return len(short) >= 7 and re.fullmatch(r"[0-9a-f]+", short) is not None and long_.startswith(short)

def fail(msg):
    print(msg)
    sys.exit(1)

with open(headers_file, encoding="latin-1") as f:
    # With redirects or 100-continue there are several header blocks: the last one counts.
    headers = f.read().replace("\r", "").strip().split("\n\n")[-1].split("\n")
got_id = [h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("x-request-id:")]
if got_id != [request_id]:
    fail(f"X-Request-Id {got_id or 'missing'}, sent {request_id}")
try:
    with open(body_file, encoding="utf-8") as f:
        doc = json.load(f)
except (ValueError, UnicodeDecodeError) as e:
    fail(f"body is not JSON: {e}")
if not isinstance(doc, dict):
    fail("body is not a JSON object")

is_commit = re.fullmatch(r"[0-9a-fA-F]{7,40}", tag) is not None
if endpoint == "health":
    if doc.get("status") != "pass":
        fail(f"status {doc.get('status')!r}, want 'pass'")
    reported = doc.get("releaseId", "")
    if is_commit and not same_commit(reported, tag):
        fail(f"releaseId {reported!r} is not commit {tag} (the previous release still answering?)")
    if not is_commit and str(doc.get("version", "")).lstrip("v") != tag.lstrip("v"):
        fail(f"version {doc.get('version')!r}, want {tag}")
    print(f"status pass, releaseId {reported}, environment {doc.get('environment')}", file=sys.stderr)
else:
    reported = doc.get("commit", "")
    if not doc.get("version"):
        fail("no version")
    if is_commit and not same_commit(reported, tag):
        fail(f"commit {reported!r} is not {tag}")
    if not is_commit and str(doc.get("version", "")).lstrip("v") != tag.lstrip("v"):
        fail(f"version {doc.get('version')!r}, want {tag}")
    print(f"version {doc.get('version')}, commit {reported}, built {doc.get('build_time')}", file=sys.stderr)
PY
}

# probe ENDPOINT: GET it until judge() is content or the attempts run out.
probe() {
  local endpoint=$1 target="$url$prefix/$1" i code why rid
  for ((i = 1; i <= attempts; i++)); do
    rid="smoke-${tag:0:12}-$RANDOM$RANDOM"
    if ! code=$(curl -sS --max-time "$timeout" --proto '=http,https' -H "X-Request-Id: $rid" \
      -H 'Accept: application/json' -o "$work/body" -D "$work/headers" -w '%{http_code}' \
      "$target" 2>"$work/curl.err"); then
      why=$(tail -n 1 "$work/curl.err")
    elif [[ $code != 200 ]]; then
      why="HTTP $code"
    elif why=$(judge "$endpoint" "$work/body" "$work/headers" "$rid" 2>"$work/ok"); then
      say "GET $target: 200, $(cat "$work/ok") (attempt $i)"
      return 0
    fi
    say "GET $target: $why (attempt $i/$attempts)"
    ((i < attempts)) && sleep "$delay"
  done
  return 1
}

say "checking $url$prefix for $tag"
if probe health && probe version; then
  say "PASS: $url$prefix serves $tag"
  exit 0
fi
say "FAIL: $url$prefix does not serve $tag"
exit 1
