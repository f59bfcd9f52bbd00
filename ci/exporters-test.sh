#!/usr/bin/env bash
# ci/exporters-test.sh: the exporters' own configuration, run for real on loopback (no Docker):
#
#   nginx (config/nginx, the shipped files; HTTPS added as the VM adds it) in front of two stub
#   upstreams, prod answering {"status":"pass"} and staging 503 {"status":"fail"};
#   prometheus-blackbox-exporter with config/prometheus/blackbox.yml, trusting a CA made here
#   (SSL_CERT_FILE), probing it: pier_health passes for prod and fails for staging (status
#   503), and fails on a server whose certificate is self-signed; pier_tls verifies the
#   certificate and pier_cert reads it without verifying (the pair CertificateInvalid is built
#   on); probe_ssl_earliest_cert_expiry is the 7-day certificate's (CertificateExpiresSoon);
#   mtail with config/prometheus/nginx.mtail over nginx's access log: its counts by env and
#   status equal the log's own (jq), a path that nginx normalises into /staging/ counts for
#   staging, and a User-Agent that imitates the fields counts as what it really was.
#
# Prints PASS/FAIL per check and "exporters: N passed, M failed". Called by
# ci/monitoring-test.sh; installs nginx, mtail, prometheus-blackbox-exporter, curl, jq, openssl
# when missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=ci/test-lib.sh
. "$root/ci/test-lib.sh"

need=()
for pair in nginx:nginx-light mtail:mtail prometheus-blackbox-exporter:prometheus-blackbox-exporter \
  curl:curl jq:jq openssl:openssl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
((${#need[@]} == 0)) || "$root/ci/install-deps.sh" --only "${need[@]}"

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
chmod 755 "$tmp"

# A loopback port nobody listens on, below the kernel's ephemeral range (32768-60999).
taken=" "
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    if [[ $taken != *" $p "* ]] && port_free "$p"; then
      taken+="$p "
      echo "$p"
      return 0
    fi
  done
  return 1
}
wait_port() { # wait_port PORT: until something listens there (5 s at most)
  for _ in $(seq 1 50); do
    port_free "$1" || return 0
    sleep 0.1
  done
  return 1
}

# ---- certificates: a CA, a 7-day certificate for localhost from it, a self-signed one
ossl() { openssl "$@" >/dev/null 2>&1; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=exporters-test CA" \
  -keyout "$tmp/ca.key" -out "$tmp/ca.crt"
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$tmp/site.key" -out "$tmp/site.csr"
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$tmp/site.ext"
ossl x509 -req -in "$tmp/site.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial -days 7 \
  -extfile "$tmp/site.ext" -out "$tmp/site.crt"
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=localhost" \
  -addext subjectAltName=DNS:localhost -keyout "$tmp/self.key" -out "$tmp/self.crt"
expiry=$(date -d "$(openssl x509 -noout -enddate -in "$tmp/site.crt" | cut -d= -f2)" +%s)

# ---- nginx: the shipped config, HTTPS on top as on the VM, stub upstreams
http=$(free_port)
https=$(free_port)
selfsigned=$(free_port)
up=$(free_port)
cp -r "$root/config/nginx" "$tmp/conf"
sed -i -E "s|^( *)listen .*;|\\1listen 127.0.0.1:$http; listen 127.0.0.1:$https ssl; ssl_certificate $tmp/site.crt; ssl_certificate_key $tmp/site.key;|" \
  "$tmp/conf/pier.conf"
printf 'server 127.0.0.1:%s;\n' "$up" >"$tmp/conf/upstreams/prod.conf"
printf 'server 127.0.0.1:%s;\n' "$up" >"$tmp/conf/upstreams/staging.conf"
cat >"$tmp/conf/stubs.conf" <<EOF
server {
    listen 127.0.0.1:$up;
    access_log off;
    default_type application/json;
    location /prod/ { return 200 '{"status":"pass"}\n'; }
    location /staging/ { return 503 '{"status":"fail"}\n'; }
}
server {
    listen 127.0.0.1:$selfsigned ssl;
    ssl_certificate $tmp/self.crt;
    ssl_certificate_key $tmp/self.key;
    access_log off;
    default_type application/json;
    location / { return 200 '{"status":"pass"}\n'; }
}
EOF
sed -i 's|^\( *\)include pier.conf;|&\n\1include stubs.conf;|' "$tmp/conf/nginx.conf"
grep -q 'include stubs.conf;' "$tmp/conf/nginx.conf"
nginx -e stderr -p "$tmp/" -c "$tmp/conf/nginx.conf" -g 'daemon off;' >"$tmp/access.log" 2>"$tmp/nginx.err" &
pids+=($!)
check "nginx (config/nginx with HTTPS) listens on 127.0.0.1:$https" wait_port "$https"

# ---- blackbox exporter with the shipped modules, trusting the CA made above
bb=$(free_port)
SSL_CERT_FILE=$tmp/ca.crt prometheus-blackbox-exporter --config.file="$root/config/prometheus/blackbox.yml" \
  --web.listen-address="127.0.0.1:$bb" >"$tmp/blackbox.log" 2>&1 &
pids+=($!)
check "blackbox exporter with config/prometheus/blackbox.yml listens on 127.0.0.1:$bb" wait_port "$bb"
probe() { # probe MODULE TARGET: the probe's metrics, one "name value" per line
  curl -fsS --max-time 15 -G "http://127.0.0.1:$bb/probe" --data-urlencode "module=$1" \
    --data-urlencode "target=$2" | awk '!/^#/ { print $1, $2 }'
}
metric() { awk -v m="$1" '$1 == m { print $2 }'; } # metric NAME < probe output
probe pier_health "https://localhost:$https/prod/health" >"$tmp/p1"
check "pier_health https://localhost:$https/prod/health: success ($(tr '\n' ' ' <"$tmp/p1" | grep -o 'probe_success [0-9]*'))" \
  test "$(metric probe_success <"$tmp/p1")" = 1
probe pier_health "https://localhost:$https/staging/health" >"$tmp/p2"
check "pier_health .../staging/health (503 \"fail\"): failure, status $(metric probe_http_status_code <"$tmp/p2")" \
  test "$(metric probe_success <"$tmp/p2"):$(metric probe_http_status_code <"$tmp/p2")" = 0:503
probe pier_health "http://localhost:$http/prod/health" >"$tmp/p3"
check "pier_health over plain http: failure (the answer must be HTTPS)" test "$(metric probe_success <"$tmp/p3")" = 0
probe pier_health "https://localhost:$selfsigned/prod/health" >"$tmp/p4"
check "pier_health with a self-signed certificate: failure" test "$(metric probe_success <"$tmp/p4")" = 0
probe pier_tls "localhost:$https" >"$tmp/t1"
probe pier_cert "localhost:$https" >"$tmp/c1"
check "pier_tls and pier_cert with the CA's certificate: both succeed" \
  test "$(metric probe_success <"$tmp/t1"):$(metric probe_success <"$tmp/c1")" = 1:1
got=$(metric probe_ssl_earliest_cert_expiry <"$tmp/c1")
check "pier_cert reads the certificate's expiry: $got (openssl: $expiry, 7 days)" \
  awk -v a="${got:-0}" -v b="$expiry" 'BEGIN { exit !(a - b < 2 && b - a < 2) }'
probe pier_tls "localhost:$selfsigned" >"$tmp/t2"
probe pier_cert "localhost:$selfsigned" >"$tmp/c2"
check "self-signed: pier_tls fails, pier_cert succeeds (CertificateInvalid)" \
  test "$(metric probe_success <"$tmp/t2"):$(metric probe_success <"$tmp/c2")" = 0:1
probe pier_tls "127.0.0.1:$https" >"$tmp/t3"
check "the CA's certificate under another name (127.0.0.1): pier_tls fails" test "$(metric probe_success <"$tmp/t3")" = 0
dead=$(free_port)
probe pier_tls "localhost:$dead" >"$tmp/t4"
probe pier_cert "localhost:$dead" >"$tmp/c4"
check "nothing listening: pier_tls and pier_cert both fail (not a certificate problem)" \
  test "$(metric probe_success <"$tmp/t4"):$(metric probe_success <"$tmp/c4")" = 0:0

# ---- mtail over nginx's access log
url=http://127.0.0.1:$http
curl -s -o /dev/null "$url/prod/health"
curl -s -o /dev/null "$url/elsewhere"
curl -s -o /dev/null --path-as-is "$url/prod/../staging/health"
curl -s -o /dev/null -A 'x","env":"prod","status":200,"y' "$url/nope"
for _ in 1 2 3; do curl -s -o /dev/null "$url/staging/health"; done
sleep 0.3 # nginx writes its log line after the response
mkdir "$tmp/progs"
cp "$root/config/prometheus/nginx.mtail" "$tmp/progs/"
mtail --one_shot --progs "$tmp/progs" --logs "$tmp/access.log" --emit_prog_label=false \
  --address 127.0.0.1 --port 0 >"$tmp/mtail.json" 2>"$tmp/mtail.err" || cat "$tmp/mtail.err"
counts() { jq -S '.'; } # normalise: sorted keys
jq '[.nginx_http_responses_total[0].LabelValues[] | {key: (.Labels | join(" ")), value: .Value.Value}]
  | from_entries' "$tmp/mtail.json" 2>/dev/null | counts >"$tmp/mtail.counts" || echo '{}' >"$tmp/mtail.counts"
jq -n '[inputs | "\(.env) \(.status)"] | group_by(.) | map({key: .[0], value: length}) | from_entries' \
  "$tmp/access.log" | counts >"$tmp/log.counts"
echo "  mtail: $(jq -c . "$tmp/mtail.counts")"
echo "  log:   $(jq -c . "$tmp/log.counts")"
check "mtail's counts by env and status equal the access log's ($(jq length "$tmp/log.counts") kinds)" \
  bash -c "test \"\$(jq length '$tmp/log.counts')\" -ge 3 && cmp -s '$tmp/mtail.counts' '$tmp/log.counts'"
check "/prod/../staging/health (nginx routes it to staging) counts for staging (with the probe and 3 more: 5 x 503)" \
  jq_ok '.["staging 503"] == 5' "$tmp/mtail.counts"
check "a User-Agent imitating \"env\":\"prod\",\"status\":200 counts as what it was (none 404: 2; prod 200: 3)" \
  jq_ok '.["none 404"] == 2 and .["prod 200"] == 3' "$tmp/mtail.counts"

if ((fail > 0)); then
  echo "--- nginx"
  tail -n 20 "$tmp/nginx.err"
  echo "--- blackbox exporter"
  tail -n 20 "$tmp/blackbox.log"
fi
echo "exporters: $pass passed, $fail failed"
((fail == 0))
