#!/usr/bin/env node
// check.js — offline checks of pier's rendered Kubernetes manifests.
//
// ci/k8s-validate.sh renders each overlay with `kubectl kustomize` and hands the YAML
// here. For every overlay this checks:
//   - each object against the Kubernetes schema of the pinned kubernetes-models package
//     (types, required fields), and every field name against the same schema: the
//     package's validators do not reject unknown fields, so the object is validated
//     through a Proxy that records which fields the validator looked up; a field it never
//     looked up (in an object it did not enumerate as a map) is not in the schema;
//   - pier's own rules: API versions, image tag, security context, ports and probe
//     paths against the config file in the generated ConfigMap, grace period, rollout;
//   - with a pier binary: starts the real pier on that ConfigMap content (and a token
//     file where the metrics token Secret is mounted), GETs every probe path and the
//     scrape path (with the token, and without it for a 401), and sends SIGTERM to watch readiness turn 503
//     while liveness stays 200 and pier exit before terminationGracePeriodSeconds.
// Then it breaks known-good objects on purpose (a `readinesProbe` typo, `latest` tag,
// a wrong port, ...) and expects each check to catch its breakage: a checker that
// passes everything fails here.
//
// Output: one "ok  name" or "FAIL name: why" line per check, then
// "checks: N passed, M failed". Exit status 1 if anything failed.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const http = require("http");
const { spawn } = require("child_process");
const YAML = require("yaml");

// ---------------------------------------------------------------------------------
// Results

const results = { passed: 0, failed: 0 };

function report(name, problems) {
  if (problems.length === 0) {
    results.passed++;
    console.log(`ok   ${name}`);
  } else {
    results.failed++;
    console.log(`FAIL ${name}: ${problems.join("; ")}`);
  }
}

// ---------------------------------------------------------------------------------
// Input

function parseArgs(argv) {
  const opts = { renders: [], extraRenders: [], pier: null, skipPier: false, selftest: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--render" || a === "--render-extra") {
      const [env, file] = next().split("=");
      if (!env || !file) throw new Error(`${a} wants ENV=FILE`);
      (a === "--render" ? opts.renders : opts.extraRenders).push({ env, file });
    } else if (a === "--pier") opts.pier = next();
    else if (a === "--skip-pier") opts.skipPier = true;
    else if (a === "--no-selftest") opts.selftest = false;
    else throw new Error(`unknown argument ${a}`);
  }
  if (opts.renders.length === 0) throw new Error("no --render ENV=FILE given");
  if (!opts.pier && !opts.skipPier) throw new Error("give --pier BIN or --skip-pier");
  return opts;
}

function loadRender(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  const objs = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
    const o = d.toJS();
    if (o !== null && o !== undefined) objs.push(o);
  }
  return objs;
}

const clone = (o) => JSON.parse(JSON.stringify(o));
const id = (o) => `${o.kind}/${o.metadata && o.metadata.name}`;
const find = (objs, kind) => objs.filter((o) => o.kind === kind);
const one = (objs, kind) => {
  const found = find(objs, kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`);
  return found[0];
};

// ---------------------------------------------------------------------------------
// Schema: kubernetes-models, plus the unknown-field trace

function modelClass(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
  const spec =
    apiVersion.split("/")[0] === "monitoring.coreos.com"
      ? `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`
      : `kubernetes-models/${apiVersion}/${kind}`;
  try {
    return require(spec)[kind] || null;
  } catch (e) {
    return null;
  }
}

// Validate `obj` with the model's validator, seeing it through proxies that record, per
// object, which keys were read and whether its keys were enumerated (a map-typed field
// such as labels, or a ConfigMap's data). Returns [schema errors, unknown field paths].
function schemaProblems(obj) {
  const Model = modelClass(obj.apiVersion, obj.kind);
  if (!Model) return [[`no schema for ${obj.apiVersion} ${obj.kind}`], []];
  const trace = new WeakMap();
  const rec = (t) => {
    let r = trace.get(t);
    if (!r) trace.set(t, (r = { read: new Set(), enumerated: false }));
    return r;
  };
  const wrap = (v) => (v !== null && typeof v === "object" ? new Proxy(v, handler) : v);
  const handler = {
    get(t, k) {
      if (typeof k === "string") rec(t).read.add(k);
      return wrap(Reflect.get(t, k));
    },
    has(t, k) {
      if (typeof k === "string") rec(t).read.add(k);
      return Reflect.has(t, k);
    },
    getOwnPropertyDescriptor(t, k) {
      if (typeof k === "string") rec(t).read.add(k);
      return Reflect.getOwnPropertyDescriptor(t, k);
    },
    ownKeys(t) {
      rec(t).enumerated = true;
      return Reflect.ownKeys(t);
    },
  };
  const errors = [];
  try {
    Model.prototype.validate.call(wrap(obj));
  } catch (e) {
    const list = e.errors || [];
    if (list.length === 0) errors.push(String(e.message || e));
    for (const x of list) {
      errors.push(`${x.instancePath || "/"} ${x.message}${x.params ? " " + JSON.stringify(x.params) : ""}`);
    }
  }
  const unknown = [];
  const walk = (v, p) => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${p}[${i}]`));
    if (v === null || typeof v !== "object") return;
    const r = trace.get(v);
    if (!r) return; // never looked into: a free-form value
    for (const k of Object.keys(v)) {
      if (r.enumerated || r.read.has(k)) walk(v[k], `${p}.${k}`);
      else unknown.push(`${p}.${k}`.slice(1));
    }
  };
  walk(obj, "");
  return [errors, unknown.map((u) => `unknown field ${u}`)];
}

// ---------------------------------------------------------------------------------
// pier's config as the pod sees it

const PIER_DEFAULTS = {
  "listen.host": "127.0.0.1",
  "listen.port": 8000,
  prefix: "",
  "shutdown.grace_ms": 0,
  "shutdown.drain_ms": 10000,
};

const envName = (key) => "PIER_" + key.toUpperCase().replace(/\./g, "_");

function lookup(tree, key) {
  let v = tree;
  for (const part of key.split(".")) {
    if (v === null || typeof v !== "object" || !(part in v)) return undefined;
    v = v[part];
  }
  return v;
}

function container(objs) {
  const dep = one(objs, "Deployment");
  const cs = dep.spec.template.spec.containers;
  const c = cs.find((x) => x.name === "pier");
  if (!c) throw new Error("Deployment has no container named pier");
  return { dep, c, pod: dep.spec.template.spec };
}

// The config file the container reads (PIER_CONFIG resolved through its volume mounts to
// a ConfigMap key), and each key's value after env and `--set` arguments, pier's order.
function podConfig(objs) {
  const { c, pod } = container(objs);
  const env = {};
  for (const e of c.env || []) {
    if (e.valueFrom) throw new Error(`env ${e.name} uses valueFrom; cannot check it offline`);
    env[e.name] = e.value === undefined ? "" : String(e.value);
  }
  const sets = {};
  const args = [...(c.command || []).slice(1), ...(c.args || [])];
  for (let i = 0; i < args.length; i++) {
    let kv = null;
    if (args[i] === "--set") kv = args[++i];
    else if (String(args[i]).startsWith("--set=")) kv = String(args[i]).slice(6);
    if (kv) sets[kv.slice(0, kv.indexOf("="))] = kv.slice(kv.indexOf("=") + 1);
  }
  if (args.some((a) => a === "--config" || String(a).startsWith("--config="))) {
    throw new Error("container passes --config, which overrides PIER_CONFIG");
  }
  const file = env.PIER_CONFIG;
  if (!file) throw new Error("container sets no PIER_CONFIG");
  const mount = (c.volumeMounts || []).find((m) => file.startsWith(m.mountPath.replace(/\/$/, "") + "/"));
  if (!mount) throw new Error(`PIER_CONFIG ${file} is under no volume mount`);
  const vol = (pod.volumes || []).find((v) => v.name === mount.name);
  if (!vol || !vol.configMap) throw new Error(`volume ${mount.name} is not a ConfigMap`);
  const key = file.slice(mount.mountPath.replace(/\/$/, "").length + 1);
  const cm = find(objs, "ConfigMap").find((x) => x.metadata.name === vol.configMap.name);
  if (!cm) throw new Error(`ConfigMap ${vol.configMap.name} is not in the render`);
  const text = cm.data && cm.data[key];
  if (typeof text !== "string") throw new Error(`ConfigMap ${cm.metadata.name} has no key ${key}`);
  const tree = YAML.parse(text) || {};
  const value = (k) => {
    if (k in sets) return sets[k];
    if (envName(k) in env) return env[envName(k)];
    const v = lookup(tree, k);
    return v === undefined ? PIER_DEFAULTS[k] : v;
  };
  const num = (k) => Number(value(k));
  return {
    tokenFile: String(value("metrics.token_file") || ""),
    cm,
    key,
    text,
    env,
    args,
    port: num("listen.port"),
    prefix: String(value("prefix")),
    graceMs: num("shutdown.grace_ms"),
    drainMs: num("shutdown.drain_ms"),
  };
}

// The metrics token file (metrics.token_file, PIER_METRICS_TOKEN_FILE) resolved through the
// container's volume mounts: the Secret and key it comes from, or null when none is set.
function tokenSource(objs) {
  const { c, pod } = container(objs);
  const file = podConfig(objs).tokenFile;
  if (!file) return null;
  const mount = (c.volumeMounts || []).find((m) => file.startsWith(m.mountPath.replace(/\/$/, "") + "/"));
  if (!mount) throw new Error(`metrics token file ${file} is under no volume mount`);
  const vol = (pod.volumes || []).find((v) => v.name === mount.name);
  if (!vol || !vol.secret) throw new Error(`metrics token file ${file}: volume ${mount.name} is not a Secret`);
  const rel = file.slice(mount.mountPath.replace(/\/$/, "").length + 1);
  const item = (vol.secret.items || []).find((i) => i.path === rel);
  return { file, mount, secret: vol.secret.secretName, key: item ? item.key : rel, optional: !!vol.secret.optional };
}

// A probe's or Service's port (number or name) as a container port number.
function resolvePort(c, port) {
  if (typeof port === "number") return port;
  const p = (c.ports || []).find((x) => x.name === port);
  return p ? p.containerPort : NaN;
}

// ---------------------------------------------------------------------------------
// The checks. Each takes the overlay's objects and its name, returns a list of problems.

const CURRENT_APIS = new Set(["v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"]);
const EXPECTED_KINDS = [
  "Namespace",
  "ConfigMap",
  "Service",
  "Deployment",
  "HorizontalPodAutoscaler",
  "PodDisruptionBudget",
  "Ingress",
  "NetworkPolicy",
];
const PROBES = ["startupProbe", "livenessProbe", "readinessProbe"];

const checks = {
  "schema (types, required fields)": (objs) =>
    objs.flatMap((o) => schemaProblems(o)[0].map((p) => `${id(o)}: ${p}`)),

  "no unknown fields": (objs) => objs.flatMap((o) => schemaProblems(o)[1].map((p) => `${id(o)}: ${p}`)),

  "only current API versions": (objs, env, extra) =>
    objs
      .filter((o) => !CURRENT_APIS.has(o.apiVersion) && !(extra && o.apiVersion === "monitoring.coreos.com/v1"))
      .map((o) => `${id(o)} uses ${o.apiVersion}`),

  "every object is there, in the overlay's namespace": (objs, env) => {
    const problems = EXPECTED_KINDS.filter((k) => find(objs, k).length !== 1).map(
      (k) => `${find(objs, k).length} ${k} objects, want 1`,
    );
    const ns = `pier-${env}`;
    const nsObj = find(objs, "Namespace")[0];
    if (nsObj && nsObj.metadata.name !== ns) problems.push(`Namespace is ${nsObj.metadata.name}, want ${ns}`);
    for (const o of objs) {
      if (o.kind !== "Namespace" && (o.metadata || {}).namespace !== ns) {
        problems.push(`${id(o)} in namespace ${(o.metadata || {}).namespace}, want ${ns}`);
      }
    }
    return problems;
  },

  "image tag is pinned (not latest)": (objs) => {
    const { pod } = container(objs);
    return [...(pod.initContainers || []), ...pod.containers].flatMap((c) => {
      const img = String(c.image || "");
      if (img.includes("@sha256:")) return [];
      const m = /:([^/:]+)$/.exec(img);
      if (!m) return [`${c.name}: image ${img} has no tag`];
      if (m[1] === "latest") return [`${c.name}: image ${img} uses latest`];
      return [];
    });
  },

  // A name a cluster can pull: a registry host first (a bare "pier" means docker.io/library).
  "image names a registry a cluster can pull from": (objs) => {
    const { pod } = container(objs);
    return [...(pod.initContainers || []), ...pod.containers].flatMap((c) => {
      const img = String(c.image || "");
      const host = img.includes("/") ? img.split("/")[0] : "";
      return /[.:]/.test(host) || host === "localhost" ? [] : [`${c.name}: image ${img} names no registry host`];
    });
  },

  "security context": (objs) => {
    const { pod } = container(objs);
    const problems = [];
    const podSc = pod.securityContext || {};
    for (const c of [...(pod.initContainers || []), ...pod.containers]) {
      const sc = c.securityContext || {};
      const eff = (k) => (sc[k] !== undefined ? sc[k] : podSc[k]);
      const want = (what, ok) => ok || problems.push(`${c.name}: ${what}`);
      want("runAsNonRoot must be true", eff("runAsNonRoot") === true);
      want("runAsUser must be 65532", eff("runAsUser") === 65532);
      want("readOnlyRootFilesystem must be true", sc.readOnlyRootFilesystem === true);
      want("allowPrivilegeEscalation must be false", sc.allowPrivilegeEscalation === false);
      want("privileged must not be true", sc.privileged !== true);
      const drop = ((sc.capabilities || {}).drop || []).map(String);
      want("capabilities.drop must be [ALL]", drop.includes("ALL"));
      want("capabilities.add must be empty", ((sc.capabilities || {}).add || []).length === 0);
      const seccomp = (eff("seccompProfile") || {}).type;
      want("seccompProfile must be RuntimeDefault", seccomp === "RuntimeDefault");
    }
    return problems;
  },

  "container port matches the config file's listen.port": (objs) => {
    const { dep, c } = container(objs);
    const cfg = podConfig(objs);
    const problems = [];
    const http = (c.ports || []).find((p) => p.name === "http");
    if (!http) return ["container has no port named http"];
    if (http.containerPort !== cfg.port) {
      problems.push(`containerPort ${http.containerPort}, but ${cfg.key} listens on ${cfg.port}`);
    }
    const ann = dep.spec.template.metadata.annotations || {};
    if (Number(ann["prometheus.io/port"]) !== cfg.port) {
      problems.push(`prometheus.io/port ${ann["prometheus.io/port"]}, want ${cfg.port}`);
    }
    for (const pr of PROBES) {
      const g = (c[pr] || {}).httpGet;
      if (g && resolvePort(c, g.port) !== cfg.port) problems.push(`${pr} port ${g.port} is not ${cfg.port}`);
    }
    const svc = one(objs, "Service");
    for (const sp of svc.spec.ports) {
      if (resolvePort(c, sp.targetPort) !== cfg.port) {
        problems.push(`Service port ${sp.name} targets ${sp.targetPort}, not ${cfg.port}`);
      }
    }
    return problems;
  },

  "probes are httpGet on health paths under the prefix": (objs) => {
    const { dep, c } = container(objs);
    const cfg = podConfig(objs);
    const want = {
      startupProbe: `${cfg.prefix}/health/live`,
      livenessProbe: `${cfg.prefix}/health/live`,
      readinessProbe: `${cfg.prefix}/health/ready`,
    };
    const problems = [];
    if (!cfg.prefix.startsWith("/")) problems.push(`config prefix "${cfg.prefix}" is not /something`);
    for (const pr of PROBES) {
      const g = (c[pr] || {}).httpGet;
      if (!g) problems.push(`${pr} is not an httpGet probe`);
      else if (g.path !== want[pr]) problems.push(`${pr} path ${g.path}, want ${want[pr]}`);
    }
    const ann = dep.spec.template.metadata.annotations || {};
    if (ann["prometheus.io/scrape"] !== "true") problems.push("prometheus.io/scrape is not \"true\"");
    if (ann["prometheus.io/path"] !== `${cfg.prefix}/metrics`) {
      problems.push(`prometheus.io/path ${ann["prometheus.io/path"]}, want ${cfg.prefix}/metrics`);
    }
    return problems;
  },

  "ingress routes the prefix to the Service": (objs) => {
    const cfg = podConfig(objs);
    const ing = one(objs, "Ingress");
    const svc = one(objs, "Service");
    const problems = [];
    if (ing.spec.ingressClassName !== "nginx") problems.push(`ingressClassName ${ing.spec.ingressClassName}`);
    const paths = (ing.spec.rules || []).flatMap((r) => (r.http || {}).paths || []);
    if (paths.length === 0) problems.push("no paths");
    for (const p of paths) {
      if (p.path !== cfg.prefix) problems.push(`path ${p.path}, want ${cfg.prefix}`);
      if (p.pathType !== "Prefix") problems.push(`pathType ${p.pathType}, want Prefix`);
      const b = (p.backend || {}).service || {};
      if (b.name !== svc.metadata.name) problems.push(`backend ${b.name} is not Service ${svc.metadata.name}`);
      const port = b.port || {};
      if (!svc.spec.ports.some((sp) => sp.name === port.name || sp.port === port.number)) {
        problems.push(`backend port ${JSON.stringify(port)} is not a port of the Service`);
      }
    }
    return problems;
  },

  "config comes from the generated ConfigMap": (objs) => {
    const cfg = podConfig(objs);
    const problems = [];
    if (!/-[a-z0-9]{10}$/.test(cfg.cm.metadata.name)) {
      problems.push(`ConfigMap ${cfg.cm.metadata.name} has no content-hash suffix (not from configMapGenerator?)`);
    }
    if (Object.keys(cfg.cm.data || {}).length !== 1) {
      problems.push(`ConfigMap holds ${Object.keys(cfg.cm.data || {}).join(", ")}; want only ${cfg.key}`);
    }
    return problems;
  },

  // The token lives in a Secret made outside git (the Secret is not rendered: an applied
  // placeholder would reset the real token on every `kubectl apply -k` or GitOps sync).
  "metrics token is a file from a Secret": (objs) => {
    const src = tokenSource(objs);
    if (!src) return ["no metrics.token_file: /metrics is open to anyone who reaches the pod"];
    const problems = [];
    if (!src.mount.readOnly) problems.push(`volume mount ${src.mount.name} is not readOnly`);
    if (src.optional) problems.push(`Secret ${src.secret} is optional: without it pier would refuse to start`);
    for (const s of find(objs, "Secret")) problems.push(`${id(s)} is in the render (a token in git)`);
    return problems;
  },

  "terminationGracePeriodSeconds exceeds grace + drain": (objs) => {
    const { pod } = container(objs);
    const cfg = podConfig(objs);
    const problems = [];
    const tgps = pod.terminationGracePeriodSeconds === undefined ? 30 : pod.terminationGracePeriodSeconds;
    if (!(cfg.graceMs > 0)) problems.push(`shutdown.grace_ms is ${cfg.graceMs}; endpoints need time to drop the pod`);
    if (!(tgps * 1000 > cfg.graceMs + cfg.drainMs)) {
      problems.push(`terminationGracePeriodSeconds ${tgps} s <= grace ${cfg.graceMs} ms + drain ${cfg.drainMs} ms`);
    }
    return problems;
  },

  "rollout, HPA, PDB, spread, resources": (objs) => {
    const { dep, c, pod } = container(objs);
    const problems = [];
    const ru = (dep.spec.strategy || {}).rollingUpdate || {};
    if (dep.spec.strategy.type !== "RollingUpdate" || ru.maxUnavailable !== 0 || ru.maxSurge !== 1) {
      problems.push(`strategy ${JSON.stringify(dep.spec.strategy)}, want RollingUpdate maxUnavailable 0 maxSurge 1`);
    }
    const labels = dep.spec.template.metadata.labels || {};
    const selects = (sel) => Object.entries(sel || {}).every(([k, v]) => labels[k] === v);
    const hpa = one(objs, "HorizontalPodAutoscaler");
    const t = hpa.spec.scaleTargetRef;
    if (t.kind !== "Deployment" || t.name !== dep.metadata.name || t.apiVersion !== "apps/v1") {
      problems.push(`HPA targets ${t.apiVersion} ${t.kind}/${t.name}`);
    }
    const cpu = (hpa.spec.metrics || []).find((m) => m.type === "Resource" && m.resource.name === "cpu");
    if (!cpu || cpu.resource.target.type !== "Utilization" || cpu.resource.target.averageUtilization !== 70) {
      problems.push("HPA does not target 70 % CPU utilization");
    }
    if (!(hpa.spec.minReplicas >= 2) || !(hpa.spec.maxReplicas <= 10) || hpa.spec.maxReplicas < hpa.spec.minReplicas) {
      problems.push(`HPA min ${hpa.spec.minReplicas} max ${hpa.spec.maxReplicas}, want 2 <= min <= max <= 10`);
    }
    if (dep.spec.replicas !== undefined) {
      problems.push(`Deployment sets replicas ${dep.spec.replicas}; the HPA owns the count, apply would reset it`);
    }
    const pdb = one(objs, "PodDisruptionBudget");
    if (pdb.spec.minAvailable !== 1) problems.push(`PDB minAvailable ${pdb.spec.minAvailable}, want 1`);
    if (!selects(pdb.spec.selector.matchLabels)) problems.push("PDB selector does not match the pods");
    if (!selects(one(objs, "Service").spec.selector)) problems.push("Service selector does not match the pods");
    if (!selects(dep.spec.selector.matchLabels)) problems.push("Deployment selector does not match its pods");
    const np = one(objs, "NetworkPolicy");
    if (!selects(np.spec.podSelector.matchLabels)) problems.push("NetworkPolicy does not select the pods");
    const fromIngress = (np.spec.ingress || []).some((r) =>
      (r.from || []).some(
        (f) => ((f.namespaceSelector || {}).matchLabels || {})["kubernetes.io/metadata.name"] === "ingress-nginx",
      ),
    );
    if (!fromIngress) problems.push("NetworkPolicy does not admit the ingress-nginx namespace");
    const wide = (np.spec.ingress || []).some((r) => !r.from || r.from.length === 0);
    if (wide) problems.push("NetworkPolicy has a rule open to every source");
    const spread = (pod.topologySpreadConstraints || []).find((s) => s.topologyKey === "kubernetes.io/hostname");
    if (!spread || !selects((spread.labelSelector || {}).matchLabels)) {
      problems.push("no topologySpreadConstraint across nodes selecting the pods");
    }
    const r = c.resources || {};
    for (const kind of ["requests", "limits"]) {
      for (const res of ["cpu", "memory"]) {
        if (!(r[kind] || {})[res]) problems.push(`resources.${kind}.${res} is not set`);
      }
    }
    return problems;
  },
};

// ---------------------------------------------------------------------------------
// The real pier: start it on the overlay's ConfigMap content and ask it what the
// kubelet would ask.

function httpGet(port, urlPath, timeoutMs = 2000, headers = {}) {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: urlPath, headers, timeout: timeoutMs, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve({ status: 0, body: String(e.message) }));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// For races against a process exit: a timer that does not keep node alive once lost.
const deadline = (ms) => new Promise((r) => setTimeout(r, ms).unref());

// Start pier as the container would (same env and args, config file from the ConfigMap),
// except that it listens on an ephemeral loopback port: other tests on this machine may
// hold 8000/8001, and a pier using SO_REUSEPORT there could answer in ours' place.
// The configured port is checked statically above against the containerPort.
async function startPier(bin, objs, dir) {
  const cfg = podConfig(objs);
  const file = path.join(dir, cfg.key);
  fs.writeFileSync(file, cfg.text);
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("PIER_")) delete env[k];
  Object.assign(env, cfg.env, { PIER_CONFIG: file });
  // The Secret's file, as the kubelet would mount it, with a token made for this run.
  const src = tokenSource(objs);
  let token = null;
  if (src) {
    token = require("crypto").randomBytes(24).toString("hex");
    const tokenFile = path.join(dir, `${cfg.key}.metrics-token`);
    fs.writeFileSync(tokenFile, token + "\n", { mode: 0o600 });
    env.PIER_METRICS_TOKEN_FILE = tokenFile;
  }
  const args = [...cfg.args, "--set", "listen.host=127.0.0.1", "--set", "listen.port=0"];
  const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const out = { lines: [], stderr: "", exit: null };
  child.exited = new Promise((resolve) =>
    child.on("exit", (code, signal) => {
      out.exit = { code, signal };
      resolve(out.exit);
    }),
  );
  let buf = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      out.lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => (out.stderr += d));
  child.on("error", (e) => (out.stderr += String(e)));
  const until = Date.now() + 5000;
  while (Date.now() < until && out.exit === null) {
    for (const line of out.lines) {
      try {
        const j = JSON.parse(line);
        if (j.msg === "listening" && Number(j.port) > 0) return { child, out, cfg, token, listening: j };
      } catch (e) {
        /* not JSON: ignore */
      }
    }
    await sleep(20);
  }
  stopPier(child);
  const why = out.exit ? `exited ${JSON.stringify(out.exit)}` : "no \"listening\" line within 5 s";
  throw new Error(`pier ${why}; stderr: ${out.stderr.trim().slice(0, 400)}; stdout: ${out.lines.slice(-3).join(" | ")}`);
}

function stopPier(child) {
  if (child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch (e) {
      /* already gone */
    }
  }
}

async function pierChecks(bin, env, objs, dir) {
  const { c, pod } = container(objs);
  let run;
  try {
    run = await startPier(bin, objs, dir);
  } catch (e) {
    report(`${env}: real pier starts on the ConfigMap content`, [e.message]);
    return;
  }
  const { child, out, listening } = run;
  try {
    report(`${env}: real pier starts on the ConfigMap content`, []);
    const port = Number(listening.port);
    const cfg = run.cfg;
    const problems = [];
    if (listening.prefix !== undefined && listening.prefix !== cfg.prefix) {
      problems.push(`pier says prefix ${listening.prefix}, the manifests assume ${cfg.prefix}`);
    }
    report(`${env}: pier's own prefix is the one the manifests assume`, problems);

    const paths = new Set(PROBES.map((p) => ((c[p] || {}).httpGet || {}).path).filter(Boolean));
    const ann = objs.find((o) => o.kind === "Deployment").spec.template.metadata.annotations || {};
    for (const p of paths) {
      const r = await httpGet(port, p);
      report(`${env}: GET ${p} -> 200 from real pier`, r.status === 200 ? [] : [`got ${r.status} ${r.body.slice(0, 200)}`]);
    }
    const mpath = ann["prometheus.io/path"];
    const auth = run.token ? { Authorization: `Bearer ${run.token}` } : {};
    const m = await httpGet(port, mpath, 2000, auth);
    report(
      `${env}: GET ${mpath} (scrape path${run.token ? ", the Secret's token" : ""}) -> 200 with pier_ metrics`,
      m.status === 200 && /^pier_/m.test(m.body) ? [] : [`got ${m.status} ${m.body.slice(0, 200)}`],
    );
    if (run.token) {
      const anon = await httpGet(port, mpath);
      report(`${env}: GET ${mpath} without the token -> 401`, anon.status === 401 ? [] : [`got ${anon.status}`]);
    }
    // A path pier does not serve must not pass: proves the GETs above mean something.
    const bogus = await httpGet(port, `${cfg.prefix}/health/no-such-probe`);
    report(`${env}: selftest: a probe on a path pier does not serve fails`, bogus.status === 200 ? ["got 200"] : []);

    // What the kubelet sees at pod deletion: ready turns 503 at once, live stays 200
    // through the grace period, and pier exits before the kubelet would kill it.
    const tgps = pod.terminationGracePeriodSeconds === undefined ? 30 : pod.terminationGracePeriodSeconds;
    const t0 = Date.now();
    process.kill(child.pid, "SIGTERM");
    await sleep(300);
    const ready = await httpGet(port, c.readinessProbe.httpGet.path);
    const live = await httpGet(port, c.livenessProbe.httpGet.path);
    const drainProblems = [];
    if (ready.status !== 503) drainProblems.push(`readiness ${ready.status} after SIGTERM, want 503`);
    if (live.status !== 200) drainProblems.push(`liveness ${live.status} after SIGTERM, want 200`);
    report(`${env}: after SIGTERM readiness is 503 and liveness 200 (grace ${cfg.graceMs} ms)`, drainProblems);
    const limitMs = cfg.graceMs + cfg.drainMs + 2000;
    const exited = await Promise.race([child.exited, deadline(limitMs).then(() => null)]);
    const took = Date.now() - t0;
    const exitProblems = [];
    if (!exited) exitProblems.push(`still running ${limitMs} ms after SIGTERM`);
    else if (exited.code !== 0) exitProblems.push(`exit ${JSON.stringify(exited)}, want 0`);
    else if (took >= tgps * 1000) exitProblems.push(`took ${took} ms, terminationGracePeriodSeconds is ${tgps} s`);
    else if (took < cfg.graceMs - 100) exitProblems.push(`exited after ${took} ms, before the ${cfg.graceMs} ms grace`);
    report(`${env}: pier exits 0 after SIGTERM within terminationGracePeriodSeconds (took ${took} ms)`, exitProblems);
  } finally {
    stopPier(child);
    await Promise.race([child.exited, deadline(2000)]);
  }
}

// ---------------------------------------------------------------------------------
// Self-test: each breakage must be caught by the named check, for the expected reason.

function deploymentOf(objs) {
  return objs.find((o) => o.kind === "Deployment");
}
const pierContainer = (objs) => deploymentOf(objs).spec.template.spec.containers.find((x) => x.name === "pier");

const BREAKAGES = [
  {
    what: "readinessProbe misspelt readinesProbe",
    expect: "unknown field spec.template.spec.containers[0].readinesProbe",
    check: "no unknown fields",
    apply: (objs) => {
      const c = pierContainer(objs);
      c.readinesProbe = c.readinessProbe;
      delete c.readinessProbe;
    },
  },
  {
    what: "unknown field deep inside (httpGet.paht)",
    expect: "livenessProbe.httpGet.paht",
    check: "no unknown fields",
    apply: (objs) => {
      pierContainer(objs).livenessProbe.httpGet.paht = "/x";
    },
  },
  {
    what: "misspelt pod securityContext field runAsNonRot",
    expect: "securityContext.runAsNonRot",
    check: "no unknown fields",
    apply: (objs) => {
      deploymentOf(objs).spec.template.spec.securityContext.runAsNonRot = true;
    },
  },
  {
    what: "misspelt Service field (spec.selecter)",
    expect: "spec.selecter",
    check: "no unknown fields",
    apply: (objs) => {
      const s = objs.find((o) => o.kind === "Service");
      s.spec.selecter = s.spec.selector;
    },
  },
  {
    what: "replicas as a string",
    expect: "/spec/replicas",
    check: "schema (types, required fields)",
    apply: (objs) => {
      deploymentOf(objs).spec.replicas = "3";
    },
  },
  {
    what: "Deployment without spec.selector (required)",
    expect: "selector",
    check: "schema (types, required fields)",
    apply: (objs) => {
      delete deploymentOf(objs).spec.selector;
    },
  },
  {
    what: "HPA on autoscaling/v2beta2",
    expect: "autoscaling/v2beta2",
    check: "only current API versions",
    apply: (objs) => {
      objs.find((o) => o.kind === "HorizontalPodAutoscaler").apiVersion = "autoscaling/v2beta2";
    },
  },
  {
    what: "image tag latest",
    expect: "latest",
    check: "image tag is pinned (not latest)",
    apply: (objs) => {
      pierContainer(objs).image = "pier:latest";
    },
  },
  {
    what: "image without tag",
    expect: "no tag",
    check: "image tag is pinned (not latest)",
    apply: (objs) => {
      pierContainer(objs).image = "registry.example:5000/pier";
    },
  },
  {
    what: "allowPrivilegeEscalation true",
    expect: "allowPrivilegeEscalation",
    check: "security context",
    apply: (objs) => {
      pierContainer(objs).securityContext.allowPrivilegeEscalation = true;
    },
  },
  {
    what: "no capabilities drop",
    expect: "capabilities.drop",
    check: "security context",
    apply: (objs) => {
      delete pierContainer(objs).securityContext.capabilities;
    },
  },
  {
    what: "containerPort not the config's port",
    expect: "containerPort 9999",
    check: "container port matches the config file's listen.port",
    apply: (objs) => {
      pierContainer(objs).ports[0].containerPort = 9999;
    },
  },
  {
    what: "PIER_LISTEN_PORT env moves pier off the containerPort",
    expect: "listens on 9090",
    check: "container port matches the config file's listen.port",
    apply: (objs) => {
      pierContainer(objs).env.push({ name: "PIER_LISTEN_PORT", value: "9090" });
    },
  },
  {
    what: "readiness probe path without the prefix",
    expect: "readinessProbe path /health/ready",
    check: "probes are httpGet on health paths under the prefix",
    apply: (objs) => {
      pierContainer(objs).readinessProbe.httpGet.path = "/health/ready";
    },
  },
  {
    what: "ingress path of the other environment",
    expect: "path /elsewhere",
    check: "ingress routes the prefix to the Service",
    apply: (objs) => {
      objs.find((o) => o.kind === "Ingress").spec.rules[0].http.paths[0].path = "/elsewhere";
    },
  },
  {
    what: "terminationGracePeriodSeconds 10",
    expect: "terminationGracePeriodSeconds 10 s",
    check: "terminationGracePeriodSeconds exceeds grace + drain",
    apply: (objs) => {
      deploymentOf(objs).spec.template.spec.terminationGracePeriodSeconds = 10;
    },
  },
  {
    what: "no PIER_SHUTDOWN_GRACE_MS",
    expect: "shutdown.grace_ms is 0",
    check: "terminationGracePeriodSeconds exceeds grace + drain",
    apply: (objs) => {
      const c = pierContainer(objs);
      c.env = c.env.filter((e) => e.name !== "PIER_SHUTDOWN_GRACE_MS");
    },
  },
  {
    what: "maxUnavailable 1",
    expect: "strategy",
    check: "rollout, HPA, PDB, spread, resources",
    apply: (objs) => {
      deploymentOf(objs).spec.strategy.rollingUpdate.maxUnavailable = 1;
    },
  },
  {
    what: "spec.replicas beside the HPA",
    expect: "the HPA owns the count",
    check: "rollout, HPA, PDB, spread, resources",
    apply: (objs) => {
      deploymentOf(objs).spec.replicas = 3;
    },
  },
  {
    what: "no memory limit",
    expect: "resources.limits.memory",
    check: "rollout, HPA, PDB, spread, resources",
    apply: (objs) => {
      delete pierContainer(objs).resources.limits.memory;
    },
  },
  {
    what: "ConfigMap not from the generator (no hash)",
    expect: "no content-hash suffix",
    check: "config comes from the generated ConfigMap",
    apply: (objs) => {
      const cm = objs.find((o) => o.kind === "ConfigMap");
      const vol = deploymentOf(objs).spec.template.spec.volumes.find((v) => v.configMap);
      cm.metadata.name = "pier-config";
      vol.configMap.name = "pier-config";
    },
  },
];

BREAKAGES.push(
  {
    what: "an image without a registry (pier:0.1.0)",
    expect: "names no registry host",
    check: "image names a registry a cluster can pull from",
    apply: (objs) => {
      pierContainer(objs).image = "pier:0.1.0";
    },
  },
  {
    what: "metrics token from a ConfigMap volume",
    expect: "is not a Secret",
    check: "metrics token is a file from a Secret",
    apply: (objs) => {
      const { c, pod } = container(objs);
      const src = tokenSource(objs);
      const vol = pod.volumes.find((v) => v.name === src.mount.name);
      delete vol.secret;
      vol.configMap = { name: "pier-metrics-token" };
    },
  },
  {
    what: "a Secret with the token in the render",
    expect: "is in the render",
    check: "metrics token is a file from a Secret",
    apply: (objs) => {
      const ns = deploymentOf(objs).metadata.namespace;
      objs.push({ apiVersion: "v1", kind: "Secret", metadata: { name: "pier-metrics-token", namespace: ns }, stringData: { token: "x" } });
    },
  },
  {
    what: "no metrics.token_file",
    expect: "no metrics.token_file",
    check: "metrics token is a file from a Secret",
    apply: (objs) => {
      const c = pierContainer(objs);
      c.env = c.env.filter((e) => e.name !== "PIER_METRICS_TOKEN_FILE");
    },
  },
);

function selftest(env, objs) {
  for (const b of BREAKAGES) {
    const broken = clone(objs);
    b.apply(broken);
    let problems;
    try {
      problems = checks[b.check](broken, env);
    } catch (e) {
      problems = [e.message];
    }
    const caught = problems.some((p) => p.includes(b.expect));
    const why = problems.length ? `it said "${problems.join("; ")}", not "${b.expect}"` : "it passed";
    report(`${env}: selftest: "${b.check}" catches ${b.what}`, caught ? [] : [why]);
  }
}

// ---------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pier-k8s-"));
  try {
    for (const { env, file } of opts.renders) {
      const objs = loadRender(file);
      for (const [name, fn] of Object.entries(checks)) {
        let problems;
        try {
          problems = fn(objs, env, false);
        } catch (e) {
          problems = [e.message];
        }
        report(`${env}: ${name}`, problems);
      }
      if (opts.selftest) selftest(env, objs);
      if (!opts.skipPier) await pierChecks(opts.pier, env, objs, dir);
    }
    // Renders with optional parts (the ServiceMonitor component): schema, fields, APIs.
    for (const { env, file } of opts.extraRenders) {
      const objs = loadRender(file);
      const names = ["schema (types, required fields)", "no unknown fields", "only current API versions"];
      for (const name of names) report(`${env}: ${name}`, checks[name](objs, env, true));
      const sm = objs.filter((o) => o.kind === "ServiceMonitor");
      const smProblems = sm.length === 1 ? [] : [`${sm.length} ServiceMonitors, want 1`];
      for (const s of sm) {
        if (!s.metadata.namespace) smProblems.push("ServiceMonitor has no namespace");
        const eps = s.spec.endpoints || [];
        if (!eps.some((e) => e.port === "http")) smProblems.push("no endpoint on port http");
        const src = tokenSource(objs);
        for (const e of eps) {
          const cred = ((e.authorization || {}).credentials || {});
          if (src && (cred.name !== src.secret || cred.key !== src.key)) {
            smProblems.push(`endpoint ${e.port} sends no bearer token from Secret ${src.secret} key ${src.key}`);
          }
        }
      }
      report(`${env}: ServiceMonitor selects the http port in the overlay's namespace, with the metrics token`, smProblems);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`checks: ${results.passed} passed, ${results.failed} failed`);
  process.exitCode = results.failed === 0 ? 0 : 1;
}

main().catch((e) => {
  console.log(`FAIL checker crashed: ${e.stack || e}`);
  console.log(`checks: ${results.passed} passed, ${results.failed + 1} failed`);
  process.exitCode = 1;
});
