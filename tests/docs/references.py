#!/usr/bin/python3
"""No document refers to a file that is not in the repository.

Reads README.md, docs/*.md and clients/*/README.md, and checks every
relative Markdown link and every path of the repository's own directories
written in the text (`src/...`, `lua/...`, `tests/...`, `docs/...`,
`clients/...`, `bench/...`, `scripts/...`, `cmake/...`, `include/...`,
`examples/...`, `.ci/...`). Globs (`*`) must match something; a path
with a placeholder in capitals (`lua/NAME.lua`) must match as a glob.
Source files and documents that cite the design document by name
("DESIGN, Guarantee 6") need docs/DESIGN.md. Prints each missing file
with the document naming it; exit 1 if any.

usage: references.py
"""

import glob
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PATH = re.compile(r"(?<![\w./-])((?:src|lua|tests|docs|clients|bench|scripts|cmake|include|examples|\.ci)"
                  r"/[\w./*-]*[\w*/])")
LINK = re.compile(r"\]\(([^)#\s]+)")


def exists(p):
    p = re.sub(r"/\.h$", "", p)                          # "src/x.c/.h": both files
    pattern = re.sub(r"(?<![a-z])[A-Z][A-Z_]+(?![a-z])", "*", p)
    return bool(glob.glob(os.path.join(ROOT, pattern)))


def main():
    docs = ["README.md"] + sorted(glob.glob("docs/*.md", root_dir=ROOT)) + \
        sorted(glob.glob("clients/*/README.md", root_dir=ROOT))
    missing, seen = [], 0
    for d in docs:
        text = open(os.path.join(ROOT, d), encoding="utf-8").read()
        for m in PATH.finditer(text):
            seen += 1
            if not exists(m.group(1)):
                missing.append("%s names %s" % (d, m.group(1)))
        for m in LINK.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):
                continue
            seen += 1
            if not os.path.exists(os.path.join(ROOT, os.path.dirname(d), target)):
                missing.append("%s links to %s" % (d, target))
    # Documents cited by name rather than path: "DESIGN" (DESIGN, Guarantee 6) is docs/DESIGN.md.
    for top in ("src", "lua", "include", "tests", "docs", "clients"):
        for f in glob.glob(os.path.join(ROOT, top, "**", "*"), recursive=True):
            if not f.endswith((".c", ".h", ".lua", ".md", ".py", ".js")) or "node_modules" in f:
                continue
            if re.search(r"\bDESIGN\b", open(f, encoding="utf-8", errors="replace").read()):
                seen += 1
                if not os.path.exists(os.path.join(ROOT, "docs", "DESIGN.md")):
                    missing.append("%s cites DESIGN (docs/DESIGN.md)" % os.path.relpath(f, ROOT))
    if missing:
        print("references: %d of %d refer to files that are not in the repository:\n  %s"
              % (len(missing), seen, "\n  ".join(missing)), file=sys.stderr)
        return 1
    print("references: %d documents, %d file references, all in the repository" % (len(docs), seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
