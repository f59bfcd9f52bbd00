#!/usr/bin/env bash
# ci/monitoring-test.sh: checks the monitoring-as-code files under
# config/prometheus/ (scrape config, alerting rules, their unit tests) and
# the runbook sections the alerts link to.
#
# Each check prints the command it runs and counts as passed or failed; the
# last line is "monitoring: N passed, M failed" and the exit status is
# non-zero when anything failed. promtool (Debian package "prometheus"),
# yamllint and PyYAML are installed with apt-get when missing.
#
# The mutation checks prove that alerts_test.yml can fail: for every alert,
# a copy of alerts.yml is made where that alert never fires, and one where it
# fires whenever its real expression is false; for pier's own alerts (group
# "pier") also one where it is computed per slot (target) instead of per
# environment. The unit tests must reject every copy, i.e. every alert has a
# tested firing case and a tested silent case, and pier's are pinned to the
# environment, not to one blue/green slot.
#
# ci/exporters-test.sh runs the blackbox exporter's modules and the mtail
# program with a real nginx on loopback.
#
# The scrape config is also checked against the blue/green deploy: one
# target per environment, slot and replica, on the port from deploy/pier-deploy.yml
# (the deploy tool's loader), with env, slot, replica and the metrics path under
# the environment's prefix (from the same file); and every environment has its
# absent() term in PierDown.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
prom_dir=config/prometheus
passed=0
failed=0

apt_install() { "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" --only "$@"; }

if ! command -v promtool >/dev/null 2>&1; then
	apt_install prometheus
fi
if ! command -v yamllint >/dev/null 2>&1; then
	apt_install yamllint
fi
py=""
for candidate in python3 /usr/bin/python3; do
	if "$candidate" -c 'import yaml' >/dev/null 2>&1; then
		py=$candidate
		break
	fi
done
if [[ -z $py ]]; then
	apt_install python3-yaml
	py=/usr/bin/python3
fi

# check NAME CMD...: run CMD, count it as passed when it exits 0.
check() {
	local name=$1
	shift
	echo "+ $*"
	if "$@"; then
		passed=$((passed + 1))
		echo "ok: $name"
	else
		failed=$((failed + 1))
		echo "FAILED: $name"
	fi
}

# must_fail NAME CMD...: run CMD quietly, count it as passed when it fails.
must_fail() {
	local name=$1
	shift
	echo "+ ! $*"
	if "$@" >/dev/null 2>&1; then
		failed=$((failed + 1))
		echo "FAILED: $name: the unit tests still pass"
	else
		passed=$((passed + 1))
		echo "ok: $name"
	fi
}

check "prometheus.yml is valid" \
	promtool check config "$prom_dir/prometheus.yml"
check "alerts.yml is valid" \
	promtool check rules "$prom_dir/alerts.yml"
check "alert unit tests pass" \
	promtool test rules "$prom_dir/alerts_test.yml"
check "YAML lint" \
	yamllint --strict -d relaxed "$prom_dir"

# Every alert: severity, summary, description, and a runbook_url whose
# anchor is a heading of docs/runbooks.md, using GitHub's anchor rules.
runbook_check() {
	"$py" - "$prom_dir/alerts.yml" <<'PY'
import sys

import yaml

sys.path.insert(0, "ci/lint")
from links import anchors  # GitHub's anchor rules, as the docs link check uses them

PREFIX = "https://github.com/pier-service/pier/blob/main/docs/runbooks.md#"


doc = "docs/runbooks.md"
known = anchors(doc)
errors = []
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]]
for rule in rules:
    name = rule.get("alert")
    if not name:
        continue
    if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
        errors.append(f"{name}: severity must be critical, warning or info")
    ann = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        if not ann.get(key):
            errors.append(f"{name}: annotation {key} is missing")
    url = ann.get("runbook_url", "")
    if not url.startswith(PREFIX):
        errors.append(f"{name}: runbook_url does not start with {PREFIX}")
    elif url[len(PREFIX):] not in known:
        errors.append(f"{name}: no heading in {doc} has the anchor #{url[len(PREFIX):]}")
for e in errors:
    print(e)
print(f"{len(rules)} alerts, runbook anchors checked against {doc}")
sys.exit(1 if errors else 0)
PY
}
check "every alert has severity, annotations and a runbook section" runbook_check

# The deploy's replicas, "ENV SLOT REPLICA PORT PREFIX" per line, from the deploy file
# (deploy/pier-deploy.yml) through the deploy tool's own loader, without overrides.
deploy_slots() {
	env -i PATH="$PATH" "$py" - <<'PY'
import sys
sys.path.insert(0, "deploy")
from pierdeploy import config
cfg = config.load("deploy/pier-deploy.yml", {})
for env in cfg.envs:
    for slot in config.SLOTS:
        for replica, port in zip(cfg.replicas(env), cfg.slot_ports(env, slot)):
            print(env, slot, replica, port, cfg.env(env)["prefix"])
PY
}

slots_check() {
	local slots
	slots=$(deploy_slots) || return 1
	"$py" - "$prom_dir/prometheus.yml" "$prom_dir/alerts.yml" "$slots" <<'PY'
import re
import sys

import yaml

config_path, rules_path, slots = sys.argv[1:4]
want = {}
for line in slots.splitlines():
    env, slot, replica, port, prefix = line.split()
    want[(env, slot, replica)] = (f"127.0.0.1:{port}", f"{prefix}/metrics")

errors = []
config = yaml.safe_load(open(config_path))
jobs = [j for j in config.get("scrape_configs", []) if j.get("job_name") == "pier"]
if len(jobs) != 1:
    errors.append(f"expected one scrape job 'pier', found {len(jobs)}")
got = {}
for job in jobs:
    for group in job.get("static_configs", []):
        labels = group.get("labels", {})
        key = (labels.get("env"), labels.get("slot"), labels.get("replica"))
        path = labels.get("__metrics_path__", job.get("metrics_path", "/metrics"))
        for target in group.get("targets", []):
            if key in got:
                errors.append(f"env={key[0]} slot={key[1]} replica={key[2]}: more than one target")
            got[key] = (target, path)
for key in sorted(set(want) | set(got), key=str):
    if key not in got:
        errors.append(f"env={key[0]} slot={key[1]} replica={key[2]}: no target (want {want[key][0]} {want[key][1]})")
    elif key not in want:
        errors.append(f"target {got[key][0]} has env={key[0]} slot={key[1]} replica={key[2]}: not a deploy replica")
    elif got[key] != want[key]:
        errors.append(f"env={key[0]} slot={key[1]} replica={key[2]}: {got[key][0]} {got[key][1]}, "
                      f"the deploy uses {want[key][0]} {want[key][1]}")

rules = [r for g in yaml.safe_load(open(rules_path))["groups"] for r in g["rules"]]
down = [r for r in rules if r.get("alert") == "PierDown"]
absent = set()
for r in down:
    absent |= set(re.findall(r'absent\(\s*up\{[^}]*env="([^"]+)"', r["expr"]))
for env in sorted({key[0] for key in want}):
    if env not in absent:
        errors.append(f"PierDown has no absent(up{{... env=\"{env}\"}}) term")
for e in errors:
    print(e)
print(f"{len(got)} scrape targets checked against {len(want)} deploy replicas")
sys.exit(1 if errors else 0)
PY
}
check "scrape targets are the blue/green deploy's replicas (deploy/pier-deploy.yml)" slots_check

# The exporters' configuration (blackbox modules, the mtail program over
# nginx's real access log) with the real programs on loopback.
check "exporters: blackbox.yml and nginx.mtail against a real nginx" \
	ci/exporters-test.sh

# Mutants: one directory per (alert, mutation) with a mutated alerts.yml
# next to a copy of alerts_test.yml.
mutant_root=$(mktemp -d)
trap 'rm -rf "$mutant_root"' EXIT
"$py" - "$prom_dir/alerts.yml" "$prom_dir/alerts_test.yml" "$mutant_root" <<'PY'
import copy
import os
import sys

import yaml

rules_path, tests_path, root = sys.argv[1:4]
with open(rules_path) as f:
    original = yaml.safe_load(f)
with open(tests_path) as f:
    tests = yaml.safe_load(f)
mutations = {
    # The alert can never fire: every firing case must fail.
    "never-fires": lambda expr: "vector(0) > 0",
    # The alert also fires (without labels) whenever its real expression is
    # empty: every silent case must fail.
    "always-fires": lambda expr: f"({expr.strip()}) or on() vector(1)",
    # The alert is computed per slot (target) instead of per environment:
    # its labels, and across a deploy its `for` timer and ratios, change.
    "per-slot": lambda expr: expr.replace("by (job, env", "by (job, env, slot, instance"),
}
for gi, group in enumerate(original["groups"]):
    for ri, rule in enumerate(group["rules"]):
        if "alert" not in rule:
            continue
        for kind, mutate in mutations.items():
            # Only pier's own alerts (group "pier") are about blue/green
            # slots; the public, nginx and host alerts have no slots.
            if kind == "per-slot" and group["name"] != "pier":
                continue
            doc = copy.deepcopy(original)
            target = doc["groups"][gi]["rules"][ri]
            mutated = mutate(target["expr"])
            if mutated == target["expr"]:
                # Every pier alert aggregates "by (job, env ...)"; one that
                # does not is reported, not silently left unmutated.
                sys.exit(f"{rule['alert']}: mutation {kind} does not apply "
                         "(no 'by (job, env' in its expression)")
            target["expr"] = mutated
            out = os.path.join(root, f"{rule['alert']}-{kind}")
            os.mkdir(out)
            with open(os.path.join(out, "alerts.yml"), "w") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
            # Only the test groups that evaluate this alert can catch its
            # mutant (promtool compares only the alertname a case names), so
            # the others are left out: the same verdict, a fraction of the time.
            own = [t for t in tests["tests"]
                   if any(c.get("alertname") == rule["alert"] for c in t.get("alert_rule_test", []))]
            if not own:
                sys.exit(f"{rule['alert']}: no test group in {tests_path} evaluates it")
            with open(os.path.join(out, "alerts_test.yml"), "w") as f:
                yaml.safe_dump(dict(tests, tests=own), f, sort_keys=False)
PY
for mutant in "$mutant_root"/*/; do
	name=$(basename "$mutant")
	must_fail "unit tests catch mutant $name" \
		promtool test rules "$mutant/alerts_test.yml"
done

echo "monitoring: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
