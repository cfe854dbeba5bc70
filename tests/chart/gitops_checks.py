#!/usr/bin/env python3
"""Checks of examples/gitops (run by scripts/chart-test.sh in .tools/venv).

- every YAML document parses and names a known GitOps kind, and none is a trunkgate.io object
  (the Rust example test validates every CR under examples/);
- the Argo CD health scripts give the documented status for each state of a CarrierTrunk and a
  NumberOwnership, run under Lua 5.1 (Argo CD's gopher-lua speaks 5.1) through lupa;
- the Application and HelmRelease point at the chart path that exists.
"""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
KINDS = {
    ("argoproj.io/v1alpha1", "Application"),
    ("v1", "ConfigMap"),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"),
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
}


def obj(generation, observed=None, ready=None, cond_generation=None, message="m", reason="R"):
    o = {"metadata": {"name": "x", "namespace": "acme", "generation": generation}}
    if observed is None and ready is None:
        return o
    o["status"] = {"conditions": []}
    if observed is not None:
        o["status"]["observedGeneration"] = observed
    if ready is not None:
        c = {"type": "Ready", "status": ready, "reason": reason, "message": message}
        if cond_generation is not None:
            c["observedGeneration"] = cond_generation
        o["status"]["conditions"].append({"type": "Accepted", "status": "True"})
        o["status"]["conditions"].append(c)
    return o


CASES = [
    ("no status yet", obj(1), "Progressing"),
    ("spec changed, not observed", obj(3, observed=2, ready="True"), "Progressing"),
    ("observed, no Ready yet", obj(2, observed=2), "Progressing"),
    ("Ready=Unknown", obj(2, observed=2, ready="Unknown"), "Progressing"),
    ("Ready for an older generation", obj(2, observed=2, ready="True", cond_generation=1), "Progressing"),
    ("Ready=True", obj(2, observed=2, ready="True", cond_generation=2), "Healthy"),
    ("Ready=False", obj(2, observed=2, ready="False", message="targets: none resolve",
                        reason="InvalidSpec"), "Degraded"),
]


def to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def run_health(script, o):
    from lupa import lua51

    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, o)
    hs = lua.execute(script)
    return hs["status"], hs["message"]


def main():
    problems, docs = [], []
    for path in sorted(GITOPS.rglob("*.y*ml")):
        for d in yaml.safe_load_all(path.read_text()):
            if not d:
                continue
            key = (d.get("apiVersion"), d.get("kind"))
            if str(key[0]).startswith("trunkgate.io/"):
                problems.append(f"{path}: {key[1]} belongs in the configuration repository, not here")
            elif key not in KINDS:
                problems.append(f"{path}: unexpected {key[0]} {key[1]}")
            docs.append((path, d))

    cm = [d for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "argocd-cm"]
    scripts = {k[len("resource.customizations.health."):]: v for c in cm for k, v in c["data"].items()
               if k.startswith("resource.customizations.health.")}
    for kind in ("trunkgate.io_CarrierTrunk", "trunkgate.io_NumberOwnership"):
        if kind not in scripts:
            problems.append(f"argocd-cm: no resource.customizations.health.{kind}")
            continue
        for name, o, want in CASES:
            status, message = run_health(scripts[kind], o)
            if status != want:
                problems.append(f"{kind}: {name}: {status} ({message}), want {want}")
            if want == "Degraded" and "targets: none resolve" not in message:
                problems.append(f"{kind}: {name}: message {message!r} lacks the condition's message")

    chart = ROOT / "charts" / "trunkgate" / "Chart.yaml"
    for _, d in docs:
        if d["kind"] == "Application" and d["spec"]["source"].get("path", "").startswith("charts/"):
            if not (ROOT / d["spec"]["source"]["path"] / "Chart.yaml").exists():
                problems.append(f"Application {d['metadata']['name']}: no chart at its path")
        if d["kind"] == "HelmRelease":
            if not (ROOT / d["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").exists():
                problems.append(f"HelmRelease {d['metadata']['name']}: no chart at its path")
    assert chart.exists()

    for p in problems:
        print(f"  {p}")
    if not problems:
        print(f"  {len(docs)} GitOps documents; Argo CD health scripts give the right status in "
              f"{len(CASES)} cases for both kinds (Lua 5.1)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
