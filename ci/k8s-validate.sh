#!/usr/bin/env bash
# k8s-validate.sh — offline checks of pier's Kubernetes manifests (config/kubernetes/).
#
# No cluster is needed. The script:
#   1. lints the manifests (yamllint -d relaxed) and renders every overlay the way
#      `kubectl apply -k`, Argo CD and Flux do: plain `kubectl kustomize DIR`, no flags
#      (kustomize's load restrictor on). The ConfigMap must hold config/pier/ENV.yaml byte
#      for byte, and editing one environment's file must change only that overlay;
#      `kubectl apply -k DIR --dry-run=client -o yaml` must give the same objects, against
#      an empty API on loopback (ci/k8s/discovery-api.py), with no flags either;
#   2. installs the pinned checkers (npm ci in ci/k8s) and runs ci/k8s/check.js on each
#      render: Kubernetes schema and unknown fields (kubernetes-models), pier's rules, and
#      a real pier started on the overlay's ConfigMap content that must answer every
#      probe path with 200 and drain as the manifests expect;
#   3. renders both overlays for a pushed image pinned by digest (ci/k8s-manifests.sh, what
#      the deploy workflow publishes) and checks that only the image changed;
#   4. proves the checker bites: a `readinesProbe` typo put into the kustomize sources
#      must make the render fail the checks.
# The last line is "kubernetes: N passed, M failed"; the exit status is 1 on any failure.
#
# Environment:
#   PIER_BIN                path to the pier binary (default build/default/pier)
#   PIER_K8S_SKIP_PROBES=1  skip the checks that run pier (they fail if pier is missing)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

kdir=config/kubernetes
overlays=(staging prod)
pier_bin="${PIER_BIN:-build/default/pier}"
passed=0
failed=0

ok() {
  passed=$((passed + 1))
  echo "ok   $1"
}
fail() {
  failed=$((failed + 1))
  echo "FAIL $1"
}
finish() {
  echo "kubernetes: ${passed} passed, ${failed} failed"
  [ "$failed" -eq 0 ]
}

tmp="$(mktemp -d "${TMPDIR:-/tmp}/pier-k8s-validate.XXXXXX")"
api_pid=
cleanup() {
  [ -z "$api_pid" ] || kill "$api_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

render() { # render DIR OUT: as `kubectl apply -k DIR` and GitOps tools do, with no flags
  kubectl kustomize "$1" >"$2" 2>"$2.err"
}

# cm_data RENDER KEY: the value of KEY in the rendered ConfigMap(s), exactly as applied.
cm_data() {
  # shellcheck disable=SC2016 # JavaScript template literals, not shell expansions
  node -e '
    const YAML = require("./ci/k8s/node_modules/yaml");
    const fs = require("fs");
    const docs = YAML.parseAllDocuments(fs.readFileSync(process.argv[1], "utf8")).map((d) => d.toJS());
    const cms = docs.filter((o) => o && o.kind === "ConfigMap" && o.data && process.argv[2] in o.data);
    if (cms.length !== 1) { console.error(`${cms.length} ConfigMaps hold ${process.argv[2]}`); process.exit(1); }
    process.stdout.write(cms[0].data[process.argv[2]]);
  ' "$1" "$2"
}

# --- tools ---------------------------------------------------------------------------
for tool in kubectl node npm yamllint; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "$tool" = yamllint ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing yamllint (Debian package)"
      timeout 300 apt-get install -y -qq yamllint >/dev/null || true
    fi
    if ! command -v "$tool" >/dev/null 2>&1; then
      fail "$tool is not installed"
      finish
      exit 1
    fi
  fi
done
kustomize_version="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')"
echo "kubectl: $(kubectl version --client 2>/dev/null | sed -n 's/^Client Version: //p'), kustomize ${kustomize_version:-unknown}, node $(node --version)"
case "$kustomize_version" in
  v5.*) ok "kubectl's kustomize is v5 ($kustomize_version)" ;;
  *) fail "kubectl's kustomize is ${kustomize_version:-unknown}; labels/components/replacements need v5" ;;
esac

# --- the pinned checkers --------------------------------------------------------------
# npm ci wipes and reinstalls node_modules; skip it when the last install was of this
# very lock file (the stamp is written only after a successful npm ci).
lock_sum="$(sha256sum ci/k8s/package-lock.json | cut -d' ' -f1)"
stamp=ci/k8s/node_modules/.pier-lock-sha256
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ]; then
  ok "ci/k8s/node_modules is installed from the current package-lock.json"
elif (cd ci/k8s && timeout 300 npm ci --no-audit --no-fund --loglevel=error >"$tmp/npm.log" 2>&1); then
  echo "$lock_sum" >"$stamp"
  ok "npm ci in ci/k8s (kubernetes-models, yaml)"
else
  cat "$tmp/npm.log"
  fail "npm ci in ci/k8s"
  finish
  exit 1
fi

# --- sources ---------------------------------------------------------------------------
for env in "${overlays[@]}"; do
  if [ -f "config/pier/$env.yaml" ]; then
    ok "config/pier/$env.yaml exists (source of the $env ConfigMap)"
  else
    fail "config/pier/$env.yaml is missing (the $env ConfigMap is generated from it)"
  fi
done
if yamllint -d relaxed "$kdir" >"$tmp/yamllint.log" 2>&1; then
  ok "yamllint -d relaxed $kdir"
else
  cat "$tmp/yamllint.log"
  fail "yamllint -d relaxed $kdir"
fi

# --- render -----------------------------------------------------------------------------
check_args=()
for env in "${overlays[@]}"; do
  if render "$kdir/overlays/$env" "$tmp/$env.yaml"; then
    ok "kubectl kustomize renders overlays/$env with no flags ($(grep -c '^kind:' "$tmp/$env.yaml") objects)"
    check_args+=(--render "$env=$tmp/$env.yaml")
    if cm_data "$tmp/$env.yaml" "$env.yaml" >"$tmp/$env.cm" 2>"$tmp/$env.cm.err" &&
      cmp -s "$tmp/$env.cm" "config/pier/$env.yaml"; then
      ok "overlays/$env: its one ConfigMap holds config/pier/$env.yaml byte for byte"
    else
      cat "$tmp/$env.cm.err"
      fail "overlays/$env: the ConfigMap's $env.yaml is not config/pier/$env.yaml"
    fi
  else
    cat "$tmp/$env.yaml.err"
    fail "kubectl kustomize overlays/$env"
  fi
done

# `kubectl apply -k DIR --dry-run=client -o yaml`, exactly as a user types it, against an
# empty API on loopback (ci/k8s/discovery-api.py: discovery, no schemas, no objects): the
# same objects as the render, and nothing written.
python3 ci/k8s/discovery-api.py "$tmp/api.port" 2>"$tmp/api.log" &
api_pid=$!
for _ in $(seq 1 100); do [ -s "$tmp/api.port" ] && break; sleep 0.1; done
if [ -s "$tmp/api.port" ]; then
  printf 'apiVersion: v1\nkind: Config\nclusters: [{name: d, cluster: {server: "http://127.0.0.1:%s"}}]\ncontexts: [{name: d, context: {cluster: d, user: d}}]\ncurrent-context: d\nusers: [{name: d, user: {}}]\n' \
    "$(cat "$tmp/api.port")" >"$tmp/kubeconfig"
  for env in "${overlays[@]}"; do
    if KUBECONFIG="$tmp/kubeconfig" kubectl apply -k "$kdir/overlays/$env" --dry-run=client -o yaml \
      >"$tmp/apply-$env.yaml" 2>"$tmp/apply-$env.err"; then
      want=$(grep -E '^(kind|  name|        image):' "$tmp/$env.yaml" | grep -v '^  name: app' | sort | tr '\n' ' ')
      got=$(sed -n 's/^  //p' "$tmp/apply-$env.yaml" | grep -E '^(kind|  name|        image):' | grep -v '^  name: app' | sort | tr '\n' ' ')
      if [ -n "$want" ] && [ "$want" = "$got" ]; then
        ok "kubectl apply -k overlays/$env --dry-run=client: no flags, the rendered objects and image"
      else
        fail "kubectl apply -k overlays/$env --dry-run=client: objects differ from the render (want: $want; got: $got)"
      fi
    else
      cat "$tmp/apply-$env.err"
      fail "kubectl apply -k overlays/$env --dry-run=client"
    fi
  done
  if grep -qvE '^GET ' "$tmp/api.log"; then
    fail "kubectl apply --dry-run=client wrote to the API: $(grep -vE '^GET ' "$tmp/api.log" | head -n 3 | tr '\n' ' ')"
  fi
else
  fail "ci/k8s/discovery-api.py did not start: $(head -c 300 "$tmp/api.log")"
fi
kill "$api_pid" 2>/dev/null || true
api_pid=

# The optional ServiceMonitor component, added to each overlay the way
# docs/kubernetes.md#apply-an-overlay says, in a scratch copy of config/.
mkdir -p "$tmp/withsm/config"
cp -R "$kdir" config/pier "$tmp/withsm/config/"
for env in "${overlays[@]}"; do
  printf 'components:\n  - ../../components/servicemonitor\n' \
    >>"$tmp/withsm/$kdir/overlays/$env/kustomization.yaml"
  if render "$tmp/withsm/$kdir/overlays/$env" "$tmp/$env-servicemonitor.yaml"; then
    ok "kubectl kustomize renders overlays/$env with components/servicemonitor"
    check_args+=(--render-extra "$env+servicemonitor=$tmp/$env-servicemonitor.yaml")
  else
    cat "$tmp/$env-servicemonitor.yaml.err"
    fail "kubectl kustomize overlays/$env with components/servicemonitor"
  fi
done

# --- check the renders -----------------------------------------------------------------
if [ "${PIER_K8S_SKIP_PROBES:-0}" = 1 ]; then
  echo "NOTE PIER_K8S_SKIP_PROBES=1: not starting pier; probe paths are checked statically only"
  check_args+=(--skip-pier)
elif [ -x "$pier_bin" ]; then
  check_args+=(--pier "$pier_bin")
else
  fail "pier binary $pier_bin not found (build it, set PIER_BIN, or PIER_K8S_SKIP_PROBES=1)"
  check_args+=(--skip-pier)
fi

if [ "${#check_args[@]}" -gt 1 ]; then
  set +e
  node ci/k8s/check.js "${check_args[@]}" | tee "$tmp/check.log"
  set -e
  summary="$(grep -E '^checks: [0-9]+ passed, [0-9]+ failed$' "$tmp/check.log" | tail -n 1 || true)"
  if [ -z "$summary" ]; then
    fail "ci/k8s/check.js printed no summary"
  else
    read -r _ p _ f _ <<<"$summary"
    passed=$((passed + p))
    failed=$((failed + f))
  fi
fi

# --- the deploy workflow's renders: the pushed image pinned by digest, nothing else changed
fake_digest="sha256:$(printf '%064d' 1)"
if ci/k8s-manifests.sh ghcr.io/example/pier 0123abc "$fake_digest" "$tmp/release" >"$tmp/release.log" 2>&1; then
  for env in "${overlays[@]}"; do
    if diff <(grep -v '^ *image: ' "$tmp/$env.yaml") <(grep -v '^ *image: ' "$tmp/release/pier-$env.yaml") >/dev/null &&
      grep -q "^ *image: ghcr.io/example/pier:0123abc@$fake_digest\$" "$tmp/release/pier-$env.yaml"; then
      ok "ci/k8s-manifests.sh: overlays/$env with the image pinned by tag and digest, nothing else changed"
    else
      fail "ci/k8s-manifests.sh: overlays/$env's render differs from the overlay's beyond the image"
    fi
  done
else
  cat "$tmp/release.log"
  fail "ci/k8s-manifests.sh"
fi

# --- one environment's config change rolls that environment only ----------------------
# A changed file is a new ConfigMap name (content hash), hence a new pod template.
mkdir -p "$tmp/edit/config"
cp -R "$kdir" config/pier "$tmp/edit/config/"
for env in "${overlays[@]}"; do
  printf '# edited\n' >>"$tmp/edit/config/pier/$env.yaml"
  for other in "${overlays[@]}"; do
    render "$tmp/edit/$kdir/overlays/$other" "$tmp/edit-$env-$other.yaml" || cat "$tmp/edit-$env-$other.yaml.err"
    if [ "$other" = "$env" ]; then
      if ! cmp -s "$tmp/edit-$env-$other.yaml" "$tmp/$other.yaml"; then
        ok "editing config/pier/$env.yaml changes overlays/$other's render"
      else
        fail "editing config/pier/$env.yaml leaves overlays/$other's render as it was"
      fi
    elif cmp -s "$tmp/edit-$env-$other.yaml" "$tmp/$other.yaml"; then
      ok "editing config/pier/$env.yaml leaves overlays/$other's render as it was"
    else
      fail "editing config/pier/$env.yaml changes overlays/$other's render"
    fi
  done
  cp "config/pier/$env.yaml" "$tmp/edit/config/pier/$env.yaml"
done

# --- the checker must catch a typo in the kustomize sources ---------------------------
mkdir -p "$tmp/typo/config"
cp -R "$kdir" config/pier "$tmp/typo/config/"
sed -i 's/^\( *\)readinessProbe:/\1readinesProbe:/' "$tmp/typo/$kdir/base/deployment.yaml"
if ! grep -q 'readinesProbe:' "$tmp/typo/$kdir/base/deployment.yaml"; then
  fail "selftest: could not put the readinesProbe typo into base/deployment.yaml"
elif ! render "$tmp/typo/$kdir/overlays/prod" "$tmp/typo.yaml"; then
  cat "$tmp/typo.yaml.err"
  fail "selftest: the render with the readinesProbe typo failed before the checker saw it"
elif node ci/k8s/check.js --render "prod=$tmp/typo.yaml" --skip-pier --no-selftest >"$tmp/typo.log" 2>&1; then
  fail "selftest: a readinesProbe typo in base/deployment.yaml passed the checks"
elif grep -q '^FAIL prod: no unknown fields: .*unknown field spec.template.spec.containers\[0\].readinesProbe' "$tmp/typo.log"; then
  ok "selftest: a readinesProbe typo in base/deployment.yaml fails \"no unknown fields\""
else
  cat "$tmp/typo.log"
  fail "selftest: the readinesProbe typo failed the checks, but not as an unknown field"
fi

finish
