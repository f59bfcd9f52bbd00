#!/usr/bin/env python3
"""Every relative link in the given Markdown files resolves: the file or directory exists, and
an anchor (#part) names a heading of the target Markdown file the way GitHub renders it.

    links.py FILE.md...              the links in these Markdown files
    links.py --mentions FILE...      mentions like `docs/deploys.md#roll-back` (or a GitHub
                                     blob URL of this repository ending so) in comments and
                                     config files: paths are relative to the repository root

GitHub's anchor rules (github-slugger): the heading's text as rendered (code spans keep their
text without the backticks, links keep their text, HTML tags go), lower-cased, every character
that is not a letter, digit, `_`, `-` or space removed, spaces turned into `-`; the second
heading with the same anchor gets `-1`, the third `-2`. `<a name="x">` / `id="x"` count too.
Links with a scheme (https:, mailto:) are not fetched. In a link to a non-Markdown file only
a line anchor (#L10, #L10-L20) is accepted.

Each dead link is printed as `FILE:LINE: message`; the exit status is 1 when there is any.
"""

import os
import re
import sys

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the target may be wrapped in <>.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"", re.I)
HTML_HREF = re.compile(r"<a\s[^>]*href=\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
LINE_ANCHOR = re.compile(r"^L\d+(-L\d+)?$")


def rendered_text(heading):
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images keep their text
    return re.sub(r"<[^>]+>", "", text)


def slug(heading):
    text = rendered_text(heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def lines_outside_code(path):
    """(line number, line) of every line that is not inside a fenced code block."""
    fenced = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = FENCE.match(line)
            if m:
                if fenced is None:
                    fenced = m.group(1)
                elif m.group(1) == fenced:
                    fenced = None
                continue
            if fenced is None:
                yield n, line.rstrip("\n")


_anchors = {}


def anchors(path):
    path = os.path.normpath(path)
    if path not in _anchors:
        found, seen = set(), {}
        for _, line in lines_outside_code(path):
            m = HEADING.match(line)
            if m:
                base = slug(m.group(2))
                k = seen.get(base, 0)
                seen[base] = k + 1
                found.add(base if k == 0 else f"{base}-{k}")
            found.update(HTML_ANCHOR.findall(line))
        _anchors[path] = found
    return _anchors[path]


def targets(line):
    text = CODE_SPAN.sub("", line)
    out = [m.group(1) for m in INLINE_LINK.finditer(text)]
    m = REF_DEF.match(text)
    if m:
        out.append(m.group(1))
    out += HTML_HREF.findall(text)
    return out


def check(path):
    findings = []
    for n, line in lines_outside_code(path):
        for target in targets(line):
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue
            file_part, _, anchor = target.partition("#")
            if file_part.startswith("/"):
                findings.append(f"{path}:{n}: {target}: use a relative link (GitHub resolves / from the host)")
                continue
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(dest):
                findings.append(f"{path}:{n}: {target}: {dest} does not exist")
                continue
            if not anchor:
                continue
            if os.path.isdir(dest):
                findings.append(f"{path}:{n}: {target}: an anchor on a directory")
            elif dest.endswith(".md"):
                if anchor not in anchors(dest):
                    findings.append(f"{path}:{n}: {target}: no heading in {dest} has the anchor #{anchor}")
            elif not LINE_ANCHOR.match(anchor):
                findings.append(f"{path}:{n}: {target}: {dest} is not Markdown; only #L<line> anchors resolve")
    return findings


MENTION = re.compile(
    r"(?<![\w./-])(?:https://github\.com/[\w.-]+/[\w.-]+/blob/[\w.-]+/)?((?:[\w.-]+/)*[\w.-]+\.md)#([\w-]+)")


def check_mentions(paths):
    findings, count = [], 0
    for path in paths:
        if path.endswith(".md") or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue  # binary files
        for n, line in enumerate(text.splitlines(), 1):
            for m in MENTION.finditer(line):
                count += 1
                dest, anchor = os.path.normpath(m.group(1)), m.group(2)
                if not os.path.isfile(dest):
                    findings.append(f"{path}:{n}: {m.group(0)}: {dest} does not exist")
                elif anchor not in anchors(dest):
                    findings.append(f"{path}:{n}: {m.group(0)}: no heading in {dest} has the anchor #{anchor}")
    return findings, count


def main(args):
    if not args:
        print(__doc__.strip().splitlines()[2].strip())
        return 2
    if args[0] == "--mentions":
        findings, count = check_mentions(args[1:])
        for f in findings:
            print(f)
        print(f"{len(args) - 1} files, {count} mentions of a Markdown anchor, {len(findings)} dead")
        return 1 if findings else 0
    paths = args
    findings = [f for p in paths for f in check(p)]
    for f in findings:
        print(f)
    count = sum(len(targets(l)) for p in paths for _, l in lines_outside_code(p))
    print(f"{len(paths)} files, {count} links, {len(findings)} dead")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
