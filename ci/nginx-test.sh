#!/usr/bin/env bash
# Check config/nginx without Docker or pier: `nginx -t` on a temporary prefix, then a real
# nginx on a loopback port answers what it answers by itself — the 404 JSON outside /prod/
# and /staging/, the request id (the client's, or one nginx makes), the 502 JSON when no
# pier is listening, and the JSON access-log line. smoke.sh checks the proxying itself.
#
# Then the VM's edge, assembled as the VM's host setup assembles it (pier.conf with
# `listen ... ssl http2 default_server; include edge.conf;`, a self-signed certificate in
# place of certbot's, the VM's port-80 server with probes.conf): every HTTPS answer carries
# exactly one Strict-Transport-Security header — a proxied 200, pier.conf's own 404 and 502
# (no slot answering), edge.conf's 404/413/429, and nginx's own 400 — and the plain-HTTP
# server sends none; on port 80, requests shaped like the Azure Load Balancer, Application
# Gateway and AWS ALB probes get the slot's readiness (200, or 503 with no slot), everything
# else a redirect to HTTPS, ACME challenges their file.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=ci/test-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"

# jq -e FILTER FILE, quietly: is the JSON in FILE what FILTER expects?

# A TCP port on 127.0.0.1 nobody listens on (there is a small race until nginx binds it).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12768)) # 20000-32767: below the ephemeral range (32768-60999)
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
command -v openssl >/dev/null 2>&1 || apt_install openssl

tmp=$(mktemp -d)
nginx_pid=""
tls_pid=""
cleanup() {
  local p
  for p in $nginx_pid $tls_pid; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
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

check "plain HTTP: no Strict-Transport-Security (browsers ignore it over HTTP)" \
  bash -c "! grep -qi '^strict-transport-security:' '$tmp/headers' '$tmp/headers2'"

# ---------------------------------------------------------------- the VM's edge: 443 and 80
# As on the VM: pier.conf's `listen 8080;` becomes the TLS listener plus edge.conf, whose
# TLS snippet (certbot's certificate on the VM) is replaced by a self-signed one; the port-80
# server is the VM's own file (deploy/host/nginx-edge.conf), on a loopback port, including
# probes.conf from the release as the VM does; it also defines the zone edge.conf uses. /staging/ goes to a
# stand-in slot (one more server of this nginx that answers 200 JSON); /prod/ to a port
# nobody listens on.
tls_port=$(free_port)
http_port=$(free_port)
up_port=$(free_port)
tls=$tmp/tls
mkdir "$tmp/tls-prefix" "$tmp/acme"
cp -r "$root/config/nginx" "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pier.test \
  -addext subjectAltName=DNS:pier.test -keyout "$tls/key.pem" -out "$tls/cert.pem" 2>"$tmp/openssl.log"
printf 'ssl_certificate %s;\nssl_certificate_key %s;\n' "$tls/cert.pem" "$tls/key.pem" >"$tls/tls-snippet.conf"
sed -i "s|include /etc/nginx/snippets/pier-tls.conf;|include $tls/tls-snippet.conf;|" "$tls/edge.conf"
sed -i -E "s|^( *)listen +8080;|\\1listen 127.0.0.1:$tls_port ssl http2 default_server; include $tls/edge.conf;|" \
  "$tls/pier.conf"
printf 'server 127.0.0.1:%s;\n' "$dead" >"$tls/upstreams/prod.conf"
printf 'server 127.0.0.1:%s;\n' "$up_port" >"$tls/upstreams/staging.conf"
port80_src=deploy/host/nginx-edge.conf
cp "$root/$port80_src" "$tls/port80.conf"
# nginx.conf says server_tokens itself; the VM's paths become the test's.
sed -i -E -e '/^server_tokens /d' -e "s|^( *)listen +80 default_server;|\\1listen 127.0.0.1:$http_port default_server;|" \
  -e "s|root /var/www/acme;|root $tmp/acme;|" -e "s|include /etc/nginx/pier/probes|include $tls/probes|" \
  "$tls/port80.conf"
cat >"$tls/test-extra.conf" <<CONF
server {
    listen 127.0.0.1:$up_port;
    access_log off; # the stand-in slot: on the VM pier logs its own requests, not nginx
    default_type application/json;
    return 200 '{"status":"pass","stand-in":"slot"}\n';
}
CONF
# The port-80 file before pier.conf, as conf.d/pier-edge.conf comes before conf.d/pier.conf.
sed -i -E "s|^( *)include pier.conf;|\\1include $tls/port80.conf;\\n\\1include $tls/test-extra.conf;\\n\\1include pier.conf;|" \
  "$tls/nginx.conf"
check "the test's port-80 server is $port80_src, on a loopback port, with the probes" \
  bash -c "grep -q 'listen 127.0.0.1:$http_port default_server;' '$tls/port80.conf' && grep -q 'include $tls/probes' '$tls/port80.conf'"
check "the HTTPS test config listens with TLS and includes edge.conf" \
  grep -q "listen 127.0.0.1:$tls_port ssl http2 default_server; include $tls/edge.conf;" "$tls/pier.conf"
check "nginx -t accepts the VM's edge (pier.conf + edge.conf + port 80 + probes)" nginx_t -p "$tmp/tls-prefix/" -c "$tls/nginx.conf"

nginx -e stderr -p "$tmp/tls-prefix/" -c "$tls/nginx.conf" -g 'daemon off;' \
  >"$tmp/tls-access.log" 2>"$tmp/tls-error.log" &
tls_pid=$!
https=(curl -s --max-time 10 --cacert "$tls/cert.pem" --resolve "pier.test:$tls_port:127.0.0.1")
base=https://pier.test:$tls_port
for _ in $(seq 1 50); do
  "${https[@]}" -o /dev/null "$base/" && break
  sleep 0.1
done
check "the HTTPS server answers" "${https[@]}" -o /dev/null "$base/"

# hsts NAME WANT_STATUS CURL_ARGS...: the answer has status WANT and exactly one
# Strict-Transport-Security header, the two-year max-age.
n=0
hsts() {
  local name=$1 want=$2 got count
  shift 2
  n=$((n + 1))
  got=$("${https[@]}" -D "$tmp/h$n" -o "$tmp/b$n" -w '%{http_code}' "$@" || true)
  count=$(tr -d '\r' <"$tmp/h$n" | grep -ci '^strict-transport-security: max-age=63072000$' || true)
  check "HTTPS $name -> $want with one HSTS header (got $got, $count)" \
    test "$got" = "$want" -a "$count" = 1
}
hsts "/staging/health (proxied to a slot)" 200 "$base/staging/health"
check "HTTPS /staging/health is the slot's body" jq_ok '.status == "pass"' "$tmp/b$n"
hsts "/nope (pier.conf's 404 location)" 404 "$base/nope"
check "HTTPS /nope keeps its X-Request-Id" grep -qiE '^x-request-id: [0-9a-f]{32}' "$tmp/h$n"
hsts "/prod/health, no slot answering (pier.conf's 502)" 502 "$base/prod/health"
check "HTTPS /prod/health's 502 is pier's error JSON" jq_ok '.error.status == 502' "$tmp/b$n"
hsts "/prod/metrics (edge.conf's 404)" 404 "$base/prod/metrics"
head -c 20000 /dev/zero | tr '\0' x >"$tmp/big"
hsts "/staging/echo with 20 KB (edge.conf's 413)" 413 -H 'Content-Type: application/json' \
  --data-binary @"$tmp/big" "$base/staging/echo"
hsts "a 17 KB header line (nginx's own 400)" 400 \
  -H "X-Big: $(head -c 17000 /dev/zero | tr '\0' y)" "$base/staging/health"
# Over the rate (5 a second, bursts of 10): 20 at once on one connection leave some 429s.
urls=()
for _ in $(seq 1 20); do urls+=(-o /dev/null "$base/staging/echo"); done
"${https[@]}" -w '%{http_code}\n' -H 'Content-Type: application/json' -d '{}' "${urls[@]}" >"$tmp/rate" || true
hsts "/staging/echo over the rate (edge.conf's 429)" 429 -H 'Content-Type: application/json' \
  -d '{}' "$base/staging/echo"
check "20 echo requests at once: some answered 429 ($(sort "$tmp/rate" | uniq -c | xargs))" \
  grep -qx 429 "$tmp/rate"

# ---------------------------------------------------------------- port 80: probes, redirect
# Requests shaped like each load balancer's probe (docs/cloud.md#load-balancer-probes), to
# the VM's address on port 80, plain HTTP: the slot's readiness, never a redirect; 503 when
# no replica answers (prod here), so the probe marks the VM down.
plain=(curl -s --max-time 10 -o "$tmp/probe" -D "$tmp/probe-h" -w '%{http_code}')
# probe NAME WANT PATH CURL_ARGS...
probe() {
  local name=$1 want=$2 path=$3 got
  shift 3
  got=$("${plain[@]}" "$@" "http://127.0.0.1:$http_port$path" || true)
  check "port 80, $name: $path -> $want (got $got)" test "$got" = "$want"
}
# Azure Load Balancer HTTP probe: GET to the VM's address, no host name of ours.
probe "Azure LB probe" 200 /staging/health/ready -H 'User-Agent:' -H 'Host: 10.0.0.4'
check "port 80, the probe's answer is the slot's" jq_ok '.status == "pass"' "$tmp/probe"
probe "Azure LB probe, slot down" 503 /prod/health/ready -H 'User-Agent:' -H 'Host: 10.0.0.4'
check "port 80, no slot: pier's error JSON" jq_ok '.error.status == 503' "$tmp/probe"
# Application Gateway custom probe: host 127.0.0.1 as docs/cloud.md sets it, or the site's name.
probe "App Gateway probe" 200 /staging/health/ready -H 'Host: 127.0.0.1'
probe "App Gateway probe (host from the backend setting)" 200 /staging/health/ready -H 'Host: pier.example.com'
probe "App Gateway probe, slot down" 503 /prod/health/ready -H 'Host: 127.0.0.1'
# AWS ALB health check: GET, Host = the target's address and port, ELB-HealthChecker's agent.
probe "ALB health check" 200 /staging/health/ready -H "Host: 10.0.1.23:80" -A 'ELB-HealthChecker/2.0'
probe "ALB health check, slot down" 503 /prod/health/ready -H "Host: 10.0.1.23:80" -A 'ELB-HealthChecker/2.0'
check "port 80, probes carry no HSTS (plain HTTP)" bash -c "! grep -qi '^strict-transport-security:' '$tmp/probe-h'"
# Everything else on port 80 still goes to HTTPS; ACME challenges are served.
probe "any other path" 301 /prod/health -H 'Host: pier.example.com'
check "port 80, the redirect goes to https://<host><path>" \
  grep -qi '^location: https://pier.example.com/prod/health' "$tmp/probe-h"
probe "a readiness path with a suffix" 301 /prod/health/ready/x -H 'Host: pier.example.com'
mkdir -p "$tmp/acme/.well-known/acme-challenge"
echo token-123 >"$tmp/acme/.well-known/acme-challenge/t123"
probe "an ACME challenge" 200 /.well-known/acme-challenge/t123 -H 'Host: pier.example.com'
check "port 80, the ACME challenge is the file" grep -qx token-123 "$tmp/probe"
sleep 0.2
check "probes are not in the access log (the redirected /ready/x is)" \
  bash -c "! grep -E '\"uri\":\"/(prod|staging)/health/ready\"' '$tmp/tls-access.log' && grep -qF '/prod/health/ready/x' '$tmp/tls-access.log'"

if ((fail > 0)); then
  echo "--- nginx error log"
  cat "$tmp/error.log"
  echo "--- nginx error log (HTTPS)"
  cat "$tmp/tls-error.log"
fi
echo "nginx-test: $pass passed, $fail failed"
(( fail == 0 ))
