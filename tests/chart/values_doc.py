#!/usr/bin/env python3
"""The values table of charts/trunkgate/README.md, generated from values.yaml.

A key's description is the `# -- ...` comment block right above it (continued by further `#`
lines); a described key is one row, whatever its value (a map like `resources` is one row). Keys
without a description are sections and must hold described keys.

  values_doc.py --check   exit 1 when the README table differs, a key lacks a description, or
                          values.yaml and values.schema.json do not name the same keys
  values_doc.py --write   rewrite the table between the markers in the README
"""

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "trunkgate"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$")


def described_keys(text):
    """[(dotted path, description)] in file order; raises on an undescribed leaf."""
    rows, stack, desc = [], [], None
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("# --"):
            desc = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if desc is not None:
                desc.append(stripped[1:].strip())
            continue
        if not stripped:
            desc = None
            continue
        m = KEY.match(line)
        if not m:
            continue  # inside a block value (a described map's children, list items)
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).split(" #")[0].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stack and stack[-1][2]:
            desc = None
            continue  # below a described key: part of its default
        path = ".".join([s[1] for s in stack] + [key])
        if desc is not None:
            rows.append((path, " ".join(desc)))
            stack.append((indent, key, True))
        elif rest:
            raise SystemExit(f"values.yaml:{n}: `{path}` has no `# --` description")
        else:
            stack.append((indent, key, False))
        desc = None
    return rows


def lookup(values, path):
    for part in path.split("."):
        values = values[part]
    return values


def type_of(v):
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list",
            dict: "object", type(None): "null"}[type(v)]


def table(rows, values):
    out = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, desc in rows:
        v = lookup(values, path)
        default = json.dumps(v, separators=(", ", ": "), sort_keys=True)
        cell = f"`{default}`".replace("|", "\\|")
        text = desc.replace("|", "\\|")
        out.append(f"| `{path}` | {type_of(v)} | {cell} | {text} |")
    return "\n".join(out)


def schema_paths(schema, prefix=""):
    """Dotted paths the schema defines with fixed properties, down to the described keys."""
    out = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        out.add(path)
        out |= schema_paths(sub, path + ".")
    return out


def main(argv):
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = described_keys(text)
    problems = []

    described = {p for p, _ in rows}
    sections = {".".join(p.split(".")[:i]) for p in described for i in range(1, p.count(".") + 1)}
    known = schema_paths(json.loads((CHART / "values.schema.json").read_text()))
    for path in sorted(described):
        if path not in known:
            problems.append(f"values.yaml `{path}` is not in values.schema.json")
    for path in sorted(known - {"global"}):
        top = path.split(".")
        if not any(".".join(top[:i]) in described for i in range(1, len(top) + 1)) and path not in sections:
            problems.append(f"values.schema.json `{path}` has no default in values.yaml")

    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"{readme_path}: missing {START} / {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    fresh = f"{head}{START}\n{table(rows, values)}\n{END}{tail}"
    if "--write" in argv:
        readme_path.write_text(fresh)
        print(f"wrote {len(rows)} values into {readme_path}")
    elif fresh != readme:
        problems.append("charts/trunkgate/README.md values table is stale: "
                        "run `python3 tests/chart/values_doc.py --write`")
    for p in problems:
        print(f"  {p}")
    if not problems:
        print(f"  {len(rows)} values described in values.yaml, the schema and README.md")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
