#!/usr/bin/env bash
# Check config/nginx without Docker or pier: `nginx -t` on a temporary prefix, then a real
# nginx on a loopback port answers what it answers by itself — the 404 JSON outside /prod/
# and /staging/, the request id (the client's, or one nginx makes), the 502 JSON when no
# pier is listening, and the JSON access-log line. smoke.sh checks the proxying itself.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=ci/test-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"

# jq -e FILTER FILE, quietly: is the JSON in FILE what FILTER expects?

# A TCP port on 127.0.0.1 nobody listens on (there is a small race until nginx binds it).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! ss -Htln "sport = :$p" | grep -q .; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

apt_install() { "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" --only "$@"; }
command -v nginx >/dev/null 2>&1 || apt_install nginx-light
command -v jq >/dev/null 2>&1 || apt_install jq
command -v curl >/dev/null 2>&1 || apt_install curl

tmp=$(mktemp -d)
nginx_pid=""
cleanup() {
  if [[ -n $nginx_pid ]]; then
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
chmod 755 "$tmp"

# The shipped files, on a free loopback port, with upstreams nobody listens on.
port=$(free_port)
dead=$(free_port)
cp -r "$root/config/nginx" "$tmp/conf"
sed -i -E "s/^( *listen ).*;/\\1127.0.0.1:$port;/" "$tmp/conf/pier.conf"
for env in prod staging; do
  printf 'server 127.0.0.1:%s;\n' "$dead" >"$tmp/conf/upstreams/$env.conf"
done

# nginx -t with its output in a file we own: as non-root, nginx cannot open /dev/stdout
# when it is a pipe that belongs to another user.
nginx_t() {
  nginx -e stderr -q -t "$@" >"$tmp/nginx-t.log" 2>&1 || { cat "$tmp/nginx-t.log"; return 1; }
}
check "nginx -t accepts config/nginx/nginx.conf (shipped, unmodified)" \
  nginx_t -p "$tmp/" -c "$root/config/nginx/nginx.conf"
check "nginx -t accepts the test copy" nginx_t -p "$tmp/" -c "$tmp/conf/nginx.conf"

nginx -e stderr -p "$tmp/" -c "$tmp/conf/nginx.conf" -g 'daemon off;' >"$tmp/access.log" 2>"$tmp/error.log" &
nginx_pid=$!
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.1
done

url=http://127.0.0.1:$port
rid="nginx-test-$RANDOM$RANDOM"
code=$(curl -s -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' -H "X-Request-Id: $rid" "$url/elsewhere")
check "/elsewhere -> 404" test "$code" = 404
check "/elsewhere body is pier's error JSON" \
  jq_ok '.error.status == 404 and (.error.message | type == "string")' "$tmp/body"
check "/elsewhere is application/json" grep -qi '^content-type: application/json' "$tmp/headers"
check "client X-Request-Id echoed" grep -qi "^x-request-id: $rid" "$tmp/headers"
check "no nginx version in Server header" grep -qi '^server: nginx\s*$' "$tmp/headers"

curl -s -D "$tmp/headers2" -o /dev/null "$url/other"
check "without a client id nginx makes one (32 hex)" grep -qiE '^x-request-id: [0-9a-f]{32}\s*$' "$tmp/headers2"

long=$(printf 'x%.0s' $(seq 1 129))
curl -s -D "$tmp/headers3" -o /dev/null -H "X-Request-Id: $long" "$url/other"
check "an id pier would refuse (129 chars) is replaced" grep -qiE '^x-request-id: [0-9a-f]{32}\s*$' "$tmp/headers3"

code=$(curl -s -o "$tmp/body502" -w '%{http_code}' "$url/prod/health")
check "/prod/health with no pier -> 502 JSON" \
  bash -c "test $code = 502 && jq -e '.error.status == 502' '$tmp/body502' >/dev/null"
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/staging")
check "/staging -> 301 to /staging/" test "$code" = 301

sleep 0.2
check "access log is JSON with the request id" \
  bash -c "grep -F '\"request_id\":\"$rid\"' '$tmp/access.log' | jq -e '.status == 404' >/dev/null"
check "access log names the upstream tried" \
  bash -c "grep -F '/prod/health' '$tmp/access.log' | jq -e '.upstream | test(\"127.0.0.1:$dead\")' >/dev/null"

if (( fail > 0 )); then
  echo "--- nginx error log"
  cat "$tmp/error.log"
fi
echo "nginx-test: $pass passed, $fail failed"
(( fail == 0 ))
