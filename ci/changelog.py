#!/usr/bin/env python3
"""CHANGELOG.md in Keep a Changelog form: check it, and print one release's notes.

    ci/changelog.py check [FILE] [--cmake CMAKELISTS]
        FILE (default CHANGELOG.md) follows the rules below; with --cmake, the version in
        `project(pier VERSION X.Y.Z)` has a section (a version is never shipped without notes).
    ci/changelog.py section VERSION [FILE]
        print VERSION's section without its heading (the GitHub release notes; deploy.yml's
        release job). Exit 1 when the file breaks a rule or has no such section.

Rules: the first line is `# Changelog`; the first `## ` heading is `## [Unreleased]`, every
other one is `## [X.Y.Z] - YYYY-MM-DD` (Semantic Versioning, a real date); versions are unique
and newest first, and so are the dates; inside a section, `### ` headings are Added, Changed,
Deprecated, Removed, Fixed or Security, each at most once; every `- ` item sits under one; a
released version lists at least one item. Lines of the form `[x]: url` (link definitions) may
close the file. Findings are printed as FILE:LINE: message.
"""

import re
import sys
from datetime import date

KINDS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
SEMVER = r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?"
RELEASE = re.compile(r"^## \[(?P<version>" + SEMVER + r")\] - (?P<date>\d{4}-\d{2}-\d{2})$")
UNRELEASED = "## [Unreleased]"
LINK_DEF = re.compile(r"^\[[^\]]+\]: \S+$")
CMAKE = re.compile(r"^project\(pier VERSION ([0-9][^ )]*)", re.M)


def version_key(v):
    m = re.fullmatch(SEMVER, v)
    major, minor, patch, pre = m.groups()
    # A pre-release sorts before its release (SemVer 11); compared as text beyond that.
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


def parse(path):
    """Returns (sections, findings); sections: list of dicts with version, date, line, body."""
    findings = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        return [], [f"{path}:1: cannot read: {e.strerror}"]

    def bad(lineno, msg):
        findings.append(f"{path}:{lineno}: {msg}")

    if not lines or lines[0] != "# Changelog":
        bad(1, "the first line must be `# Changelog`")
    sections, current, kinds, links_started = [], None, set(), False
    for lineno, line in enumerate(lines, 1):
        if links_started and line.strip() and not LINK_DEF.match(line):
            bad(lineno, "only link definitions `[x]: url` may follow the link definitions")
            continue
        if line.startswith("## "):
            kinds = set()
            if line == UNRELEASED:
                if sections:
                    bad(lineno, "`## [Unreleased]` must be the first section")
                current = {"version": "Unreleased", "date": None, "line": lineno, "body": []}
            else:
                m = RELEASE.match(line)
                if not m:
                    bad(lineno, f"a section heading is `## [X.Y.Z] - YYYY-MM-DD`, not {line!r}")
                    current = None
                    continue
                version, day = m.group("version"), m.group("date")
                try:
                    date.fromisoformat(day)
                except ValueError:
                    bad(lineno, f"{day} is not a date")
                    day = None
                if not sections:
                    bad(lineno, "the first section must be `## [Unreleased]`")
                current = {"version": version, "date": day, "line": lineno, "body": []}
            sections.append(current)
            continue
        if line.startswith("# ") and lineno != 1:
            bad(lineno, "only the first line is a `# ` heading")
            continue
        if LINK_DEF.match(line):
            links_started = True
            continue
        if current is None:
            if line.startswith("- ") or line.startswith("### "):
                bad(lineno, "an entry before the first section")
            continue
        if line.startswith("### "):
            kind = line[4:].strip()
            if kind not in KINDS:
                bad(lineno, f"`### {kind}`: the kinds are {', '.join(KINDS)}")
            elif kind in kinds:
                bad(lineno, f"`### {kind}` twice in [{current['version']}]")
            kinds.add(kind)
        elif line.startswith("- ") and not kinds:
            bad(lineno, f"an item of [{current['version']}] outside an `### Added/Changed/...` heading")
        current["body"].append(line)

    released = [s for s in sections if s["version"] != "Unreleased"]
    if not any(s["version"] == "Unreleased" for s in sections):
        bad(1, "no `## [Unreleased]` section")
    seen = {}
    for s in released:
        if s["version"] in seen:
            bad(s["line"], f"[{s['version']}] again (first at line {seen[s['version']]})")
        seen.setdefault(s["version"], s["line"])
        if not any(l.startswith("- ") for l in s["body"]):
            bad(s["line"], f"[{s['version']}] lists no change")
    for newer, older in zip(released, released[1:]):
        if version_key(newer["version"]) <= version_key(older["version"]):
            bad(older["line"], f"[{older['version']}] comes after [{newer['version']}]: newest first")
        if newer["date"] and older["date"] and newer["date"] < older["date"]:
            bad(older["line"], f"[{older['version']}] ({older['date']}) is dated after "
                f"[{newer['version']}] ({newer['date']}) above it")
    return sections, findings


def cmake_version(path):
    with open(path, encoding="utf-8") as f:
        m = CMAKE.search(f.read())
    return m.group(1) if m else None


def main(argv):
    args = argv[1:]
    if args[:1] == ["check"]:
        rest, cmake = args[1:], None
        if "--cmake" in rest:
            i = rest.index("--cmake")
            if i + 1 >= len(rest):
                print(__doc__, file=sys.stderr)
                return 2
            cmake = rest[i + 1]
            rest = rest[:i] + rest[i + 2:]
        if len(rest) > 1:
            print(__doc__, file=sys.stderr)
            return 2
        path = rest[0] if rest else "CHANGELOG.md"
        sections, findings = parse(path)
        if cmake:
            v = cmake_version(cmake)
            if v is None:
                findings.append(f"{cmake}:1: no `project(pier VERSION X.Y.Z)`")
            elif not any(s["version"] == v for s in sections):
                findings.append(f"{path}:1: {cmake} says version {v}, which has no `## [{v}] - DATE` "
                                "section: move [Unreleased]'s entries into one when you bump the version")
        for finding in findings:
            print(finding)
        if not findings:
            print(f"{path}: {len(sections)} sections, Keep a Changelog form")
        return 1 if findings else 0
    if args[:1] == ["section"] and len(args) in (2, 3):
        version, path = args[1], (args[2] if len(args) == 3 else "CHANGELOG.md")
        sections, findings = parse(path)
        for finding in findings:
            print(finding, file=sys.stderr)
        if findings:
            return 1
        for s in sections:
            if s["version"] == version:
                body = "\n".join(s["body"]).strip("\n")
                if not body.strip():
                    print(f"{path}:{s['line']}: [{version}] is empty", file=sys.stderr)
                    return 1
                print(body)
                return 0
        print(f"{path}:1: no section for version {version}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
