#!/usr/bin/env python3
"""check_layout - the include rules of doc/architecture.md, checked on the tree.

Reads the rules from the block between "<!-- include rules -->" and
"<!-- end include rules -->" in doc/architecture.md (one line a part:
"part: parts it may include"), then checks every source under lib/, tools/
and tests/:
  - a quoted include names its folder ("attr/attr.h"), so the rules see it;
  - a part includes only itself and the parts its line allows;
  - internal headers (INTERNAL below) are included only inside their folder;
  - no attribution family includes another family (lib/attr/F/ and
    lib/attr/G/), and only lib/attr/F/ and the unit tests include F's headers;
  - libtorch headers and C++ sources appear under lib/shim/ only;
  - every lib/ folder has a rule and every rule a folder.
Prints TAP ("ok N - ..." / "not ok N - ..."), exits 1 on any violation.
Usage: check_layout.py [ROOT]
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
INTERNAL = {"attr/family.h": "lib/attr/", "image/format.h": "lib/image/",
            "shim/internal.hpp": "lib/shim/", "shim/memory.hpp": "lib/shim/"}
TORCH = re.compile(r'#\s*include\s*[<"](torch|ATen|c10|caffe2)/')
QUOTED = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
SOURCES = (".c", ".h", ".cpp", ".hpp")

n = 0
failed = False


def report(good, what):
    global n, failed
    n += 1
    print(("ok %d - %s" if good else "not ok %d - %s") % (n, what))
    failed |= not good


def read_rules():
    doc = (ROOT / "doc/architecture.md").read_text()
    m = re.search(r"<!-- include rules -->(.*?)<!-- end include rules -->", doc, re.S)
    if not m:
        return None
    rules = {}
    for line in m.group(1).splitlines():
        line = line.strip().strip("`")
        if ":" in line and not line.startswith("#"):
            part, allowed = line.split(":", 1)
            rules[part.strip()] = set(allowed.replace(",", " ").split()) - {"nothing"}
    return rules


def part_of(rel):
    """The part a source belongs to: lib/<part>/..., tools, tests."""
    bits = rel.split("/")
    if bits[0] == "lib" and len(bits) > 2:
        return bits[1]
    return bits[0] if bits[0] in ("tools", "tests") else None


def family_of(rel):
    """F for lib/attr/F/..., else None; F for an include "attr/F/x.h"."""
    bits = rel.split("/")
    if rel.startswith("lib/attr/") and len(bits) > 3:
        return bits[2]
    if rel.startswith("attr/") and len(bits) > 2:
        return bits[1]
    return None


rules = read_rules()
report(rules is not None, "doc/architecture.md has the include rules block")
if rules is None:
    print("1..%d" % n)
    sys.exit(1)

folders = {p.name for p in (ROOT / "lib").iterdir() if p.is_dir()}
missing = sorted(folders - set(rules))
report(not missing, "every lib/ folder has an include rule" + (" (%s)" % ", ".join(missing) if missing else ""))
report(set(rules) - {"tools", "tests"} <= folders, "every rule names a lib/ folder")

files = sorted(p for d in ("lib", "tools", "tests") for p in (ROOT / d).rglob("*")
               if p.suffix in SOURCES and p.is_file())
problems = {k: [] for k in ("qualified", "allowed", "internal", "family", "torch", "cpp")}
for path in files:
    rel = path.relative_to(ROOT).as_posix()
    text = path.read_text(errors="replace")
    part = part_of(rel)
    fam = family_of(rel)
    if rel.startswith("lib/"):
        if TORCH.search(text) and not rel.startswith("lib/shim/"):
            problems["torch"].append(rel)
        if path.suffix in (".cpp", ".hpp") and not rel.startswith("lib/shim/"):
            problems["cpp"].append(rel)
    for inc in QUOTED.findall(text):
        target = inc.split("/")[0] if "/" in inc else None
        if target is None:
            # a tool's or a test's own helper header lives beside it
            if rel.startswith("lib/") or not (path.parent / inc).exists():
                problems["qualified"].append("%s: \"%s\"" % (rel, inc))
            continue
        if target not in folders:
            problems["qualified"].append("%s: \"%s\" (no lib/%s)" % (rel, inc, target))
            continue
        if part != target and target not in rules.get(part, set()):
            problems["allowed"].append("%s: \"%s\" (%s may not include %s)" % (rel, inc, part, target))
        if inc in INTERNAL and not rel.startswith(INTERNAL[inc]):
            problems["internal"].append("%s: \"%s\"" % (rel, inc))
        ifam = family_of(inc)
        if ifam and ifam != fam and not rel.startswith("tests/unit/"):
            problems["family"].append("%s: \"%s\"" % (rel, inc))

report(not problems["qualified"], "quoted includes name their lib/ folder"
       + "".join("\n#   " + p for p in problems["qualified"]))
report(not problems["allowed"], "each part includes only the parts its rule allows"
       + "".join("\n#   " + p for p in problems["allowed"]))
report(not problems["internal"], "internal headers (%s) stay in their folders" % ", ".join(sorted(INTERNAL))
       + "".join("\n#   " + p for p in problems["internal"]))
report(not problems["family"], "no attribution family includes another family's headers"
       + "".join("\n#   " + p for p in problems["family"]))
report(not problems["torch"], "libtorch headers only under lib/shim/"
       + "".join("\n#   " + p for p in problems["torch"]))
report(not problems["cpp"], "C++ sources only under lib/shim/"
       + "".join("\n#   " + p for p in problems["cpp"]))
print("1..%d" % n)
sys.exit(1 if failed else 0)
