#!/usr/bin/env node
// Lint Dockerfiles with dockerfile-utils (the validator behind VS Code's Docker support).
//
//   node ci/lint/dockerfile-lint.js FILE...
//
// Prints one line per finding, `FILE:LINE:COL: severity: message`, and exits 1 when there
// is any finding. The stock `dockerfile-utils lint` CLI exits 0 on warnings (deprecated
// MAINTAINER, lower-case instructions, a second CMD that silently wins, ...); those are
// real mistakes here, so every diagnostic counts.
"use strict";

const fs = require("fs");
const path = require("path");
const { validate } = require(path.join(__dirname, "node_modules", "dockerfile-utils"));

const SEVERITY = { 1: "error", 2: "warning", 3: "info", 4: "hint" };

let findings = 0;
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: dockerfile-lint.js FILE...");
  process.exit(2);
}
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  for (const d of validate(text)) {
    const { line, character } = d.range.start;
    const severity = SEVERITY[d.severity] || "warning";
    console.log(`${file}:${line + 1}:${character + 1}: ${severity}: ${d.message}`);
    findings++;
  }
}
process.exit(findings === 0 ? 0 : 1);
