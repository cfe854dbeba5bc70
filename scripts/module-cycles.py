#!/usr/bin/env python3
"""The import graph between the edge's top-level modules (its folders), and its circles.

A module uses another when one of its files names `crate::OTHER` (a `use` or a path). Prints
each circle (strongly connected group of two or more modules) and exits 1 when one is not in
the allowed list given with --allow (`a,b,c` per circle, sorted; the circles still to be taken
apart), or when an allowed circle no longer exists (so the list only shrinks).

    usage: scripts/module-cycles.py [--graph] [--allow a,b,c ...] [SRC]
"""
import argparse
import os
import re
import sys


def graph(src):
    deps = {}
    for dirpath, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            top = os.path.relpath(path, src).split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue
            text = open(path, encoding="utf-8").read()
            # Doc comments and plain comments name modules without using them.
            code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
            used = deps.setdefault(top, set())
            used.update(m for m in re.findall(r"\bcrate::(\w+)", code) if m != top)
    return deps


def circles(deps):
    """Tarjan's strongly connected components, those of two or more."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in deps:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(",".join(sorted(group)))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return sorted(out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("src", nargs="?", default=os.path.join(here, "..", "dataplane", "edge", "src"))
    p.add_argument("--allow", action="append", default=[])
    p.add_argument("--graph", action="store_true")
    a = p.parse_args()
    deps = graph(a.src)
    if a.graph:
        for m in sorted(deps):
            print(f"{m} -> {' '.join(sorted(deps[m]))}")
    found = circles(deps)
    allowed = {",".join(sorted(x.split(","))) for x in a.allow}
    bad = False
    for c in found:
        if c in allowed:
            print(f"import circle (allowed, to be taken apart): {c}")
        else:
            print(f"import circle: {c}", file=sys.stderr)
            bad = True
    for c in sorted(allowed - set(found)):
        print(f"allowed circle no longer there, remove it from --allow: {c}", file=sys.stderr)
        bad = True
    if not found:
        print("no import circle between the edge's modules")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
