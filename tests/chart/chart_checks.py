#!/usr/bin/env python3
"""Offline checks of rendered Trunkgate manifests (run by scripts/chart-test.sh in .tools/venv).

  chart_checks.py validate KUBE_VERSION FILE...  every object against the Kubernetes JSON schemas
  chart_checks.py rbac FILE                       least privilege of the edge and the operator
  chart_checks.py workloads FILE                  pod settings the edge and operator rely on
  chart_checks.py monitoring FILE                 alerts, ServiceMonitor selectors, dashboard
  chart_checks.py redis FILE deployed|absent [URL]
                                                  the lab Redis (edge.stateStore.deploy) and the
                                                  edge's --state-store (URL: the one it must use)
  chart_checks.py defaults EDGE_HELP OPERATOR_HELP DEFAULT_RENDER
                                                  binaries, chart, deploy/, Makefile, README agree

Each prints what it checked and exits 1 on the first file with a finding.
"""

import re
from pathlib import Path
import sys
from collections import Counter

import yaml

EDGE_FLAGS = {
    "SNAPSHOT_SECRET", "PUBLIC_SIP", "INTERNAL_SIP", "PUBLIC_MEDIA_IP", "INTERNAL_MEDIA_IP",
    "RTP_PORTS", "WORKERS", "ADMIN", "ADVERTISE_HOST", "DRAIN_SECONDS", "ADVERTISE_IP_POOL",
    "PUBLIC_SIPS", "INTERNAL_SIPS", "TLS_CERT", "TLS_KEY", "TLS_CA", "KERNEL_FAST_PATH",
    "PLATFORM_CIDRS", "STATE_STORE", "STATE_LEASE_SECONDS", "STATE_STORE_PASSWORD", "STATE_DIR",
}
TLS_FLAGS = {"PUBLIC_SIPS", "INTERNAL_SIPS", "TLS_CERT", "TLS_KEY", "TLS_CA"}
# PUBLIC_MEDIA_IP is left to the edge (its carrier-side address) with edge.daemonset.publicNetwork.
STATE_FLAGS = {"STATE_STORE", "STATE_LEASE_SECONDS", "STATE_STORE_PASSWORD", "STATE_DIR"}
REQUIRED_EDGE_FLAGS = EDGE_FLAGS - {"WORKERS", "ADVERTISE_HOST", "ADVERTISE_IP_POOL", "KERNEL_FAST_PATH", "PUBLIC_MEDIA_IP"} - TLS_FLAGS - STATE_FLAGS
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


# --- validate ---------------------------------------------------------------------------------

def validate(version, files):
    import kubernetes_validate as kv

    bad = 0
    for path in files:
        valid, skipped = 0, Counter()
        for d in load(path):
            kind = f"{d.get('apiVersion')}/{d.get('kind')}"
            try:
                kv.validate(d, version, strict=True)
                valid += 1
            except kv.SchemaNotFoundError:
                # Kinds defined by CRDs (monitoring.coreos.com, trunkgate.io) have no schema here.
                skipped[kind] += 1
            except kv.ValidationError as e:
                bad += 1
                where = ".".join(str(p) for p in e.path)
                print(f"  {path}: {kind} {d['metadata'].get('name')}: {where}: {e.message}")
        note = ", ".join(f"{k} x{n}" for k, n in sorted(skipped.items()))
        print(f"  {path}: {valid} objects valid (Kubernetes {version}, strict)"
              + (f"; skipped, no schema for custom kinds: {note}" if note else ""))
    return bad == 0


# --- rbac -------------------------------------------------------------------------------------

def bound_rules(docs, sa, ns):
    """(scope, role kind/name, rule) for every rule bound to ServiceAccount ns/sa."""
    out = []
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        bns = b["metadata"].get("namespace")
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa
                   and s.get("namespace", bns) == ns for s in b.get("subjects", [])):
            continue
        ref = b["roleRef"]
        roles = [r for r in docs if r["kind"] == ref["kind"] and r["metadata"]["name"] == ref["name"]
                 and (ref["kind"] == "ClusterRole" or r["metadata"].get("namespace") == bns)]
        if len(roles) != 1:
            raise AssertionError(f"{b['kind']} {b['metadata']['name']} refers to {ref['kind']} "
                                 f"{ref['name']}, which the chart does not render")
        role = roles[0]
        if role.get("aggregationRule"):
            raise AssertionError(f"{ref['name']} aggregates other roles")
        scope = "cluster" if b["kind"] == "ClusterRoleBinding" else bns
        for rule in role.get("rules") or []:
            out.append((scope, f"{ref['kind']}/{ref['name']}", rule))
    return out


def rbac(path):
    docs = load(path)
    op = one(docs, "Deployment")
    ns = op["metadata"]["namespace"]
    container = op["spec"]["template"]["spec"]["containers"][0]
    args = dict(a.split("=", 1) for a in container["args"] if a.startswith("--"))
    snapshot_ns, snapshot = args["--snapshot-secret"].split("/", 1)
    assert snapshot_ns == ns, f"operator: snapshot Secret in {snapshot_ns}, release in {ns}"
    lease = args.get("--leader-lease", "")
    max_parts = int(args.get("--snapshot-max-parts", "1"))
    parts = [f"{snapshot}-part-{i}" for i in range(1, max_parts)]
    edge_sa = edge_workload(docs)["spec"]["template"]["spec"]["serviceAccountName"]
    op_sa = op["spec"]["template"]["spec"]["serviceAccountName"]

    edge_rules = bound_rules(docs, edge_sa, ns)
    assert edge_rules, "the edge ServiceAccount has no rules: it could not read its snapshot"
    for scope, role, r in edge_rules:
        assert scope == ns, f"edge: {role} is bound cluster-wide"
        assert not r.get("nonResourceURLs"), f"edge: {role} grants nonResourceURLs"
        assert r.get("apiGroups") == [""], f"edge: {role} grants apiGroups {r.get('apiGroups')}"
        assert r.get("resources") == ["secrets"], f"edge: {role} grants {r.get('resources')}"
        if r.get("resourceNames") == parts and parts:
            # The parts of a snapshot too large for one Secret: read by name only.
            assert r["verbs"] == ["get"], f"edge: {role} grants {r['verbs']} on the snapshot parts"
            continue
        assert set(r["verbs"]) <= {"get", "list", "watch"}, f"edge: {role} grants {r['verbs']}"
        assert r.get("resourceNames") == [snapshot], \
            f"edge: {role} resourceNames {r.get('resourceNames')} != [{snapshot}]"
    print(f"  edge ServiceAccount {ns}/{edge_sa}: only get/list/watch on Secret {ns}/{snapshot}, "
          f"get on its {len(parts)} part names")

    op_rules = bound_rules(docs, op_sa, ns)
    for scope, role, r in op_rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in (r.get(field) or []), f"operator: {role} has a wildcard in {field}"
        assert not r.get("nonResourceURLs"), f"operator: {role} grants nonResourceURLs"
        assert not {"escalate", "bind", "impersonate"} & set(r["verbs"]), f"operator: {role} {r['verbs']}"
        writes = WRITE_VERBS & set(r["verbs"])
        if not writes:
            continue
        resources = set(r["resources"])
        if "secrets" in resources and "" in r["apiGroups"]:
            assert scope == ns, f"operator: {role} writes Secrets cluster-wide ({sorted(writes)})"
            assert "deletecollection" not in writes, f"operator: {role} may deletecollection Secrets"
            # `create` cannot be narrowed by resourceNames; everything else must name the snapshot
            # or its parts (delete: only the parts a smaller snapshot leaves over).
            if writes - {"create"}:
                names = r.get("resourceNames")
                assert names == [snapshot] or (names == parts and parts), \
                    f"operator: {role} may {sorted(writes)} Secrets {names or 'any'}"
                assert "delete" not in writes or names == parts, f"operator: {role} deletes Secret {names}"
        elif "leases" in resources:
            assert scope == ns, f"operator: {role} writes Leases cluster-wide"
            if writes - {"create"}:
                assert r.get("resourceNames") == [lease], f"operator: {role} writes other Leases"
        elif resources == {"events"} and r["apiGroups"] == ["events.k8s.io"]:
            # SnapshotNotPublished Events, in the release namespace only.
            assert scope == ns, f"operator: {role} writes Events cluster-wide"
            assert writes <= {"create", "patch"}, f"operator: {role} may {sorted(writes)} Events"
        else:
            allowed = {"carriertrunks/status", "numberownerships/status"}
            assert resources <= allowed and writes <= {"patch", "update"}, \
                f"operator: {role} may {sorted(writes)} {sorted(resources)}"
    print(f"  operator ServiceAccount {ns}/{op_sa}: writes only Secret {ns}/{snapshot} and its parts "
          f"(+ create), Lease {lease or '(none)'}, Events, CR status; no wildcards")
    return True


# --- workloads --------------------------------------------------------------------------------

def component(d):
    return d["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def edge_workload(docs):
    found = [d for d in docs if d["kind"] in ("DaemonSet", "StatefulSet") and component(d) == "edge"]
    assert len(found) == 1, f"expected one edge DaemonSet or StatefulSet, found {len(found)}"
    return found[0]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def env_source(env, name):
    """What env var `name` resolves to: a literal value or fieldRef path (after $(VAR) refs)."""
    e = env[name]
    if "valueFrom" in e:
        if "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            return f"secretKeyRef:{ref['name']}/{ref['key']}"
        return "fieldRef:" + e["valueFrom"]["fieldRef"]["fieldPath"]
    return re.sub(r"\$\(([A-Z_]+)\)", lambda m: env_source(env, m.group(1)), e["value"])


def check_security(kind, pod, low_port, fast_path=False):
    """Non-root with every capability dropped; with the kernel fast path (and only then) uid 0
    with exactly CAP_BPF and CAP_NET_ADMIN added, on the host network."""
    psc = pod.get("securityContext", {})
    assert psc.get("runAsNonRoot") is (not fast_path), f"{kind}: pod runAsNonRoot {psc.get('runAsNonRoot')}"
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{kind}: seccomp"
    if fast_path:
        assert pod.get("hostNetwork") is True, f"{kind}: the fast path without hostNetwork"
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        assert sc.get("readOnlyRootFilesystem") is True, f"{kind}/{c['name']}: writable root FS"
        assert sc.get("allowPrivilegeEscalation") is False, f"{kind}/{c['name']}: privilege escalation"
        caps = sc.get("capabilities", {})
        assert caps.get("drop") == ["ALL"], f"{kind}/{c['name']}: capabilities not dropped"
        want = (["BPF", "NET_ADMIN"] if fast_path else []) + (["NET_BIND_SERVICE"] if low_port else [])
        assert caps.get("add", []) == want, f"{kind}/{c['name']}: adds {caps.get('add')}, want {want}"
        if not fast_path:
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser") != 0, f"{kind}/{c['name']}: root"


WILDCARDS = ("0.0.0.0:", "[::]:", ":")


def check_listen(kind, pod, c, env, admin_port):
    """Every address the edge binds is deliberate: the pod's own address (the node's IP with
    hostNetwork) or loopback with probes that ask loopback; never a wildcard on the host
    network. Returns a one-line summary."""
    own = "fieldRef:status.hostIP" if pod.get("hostNetwork") else "fieldRef:status.podIP"
    found = {}
    for flag in ("TRUNKGATE_PUBLIC_SIP", "TRUNKGATE_INTERNAL_SIP", "TRUNKGATE_ADMIN"):
        value = env_source(env, flag)
        found[flag] = value
        assert not value.startswith(WILDCARDS), \
            f"edge {kind}: {flag}={value} binds every address" + \
            (" of the node (hostNetwork)" if pod.get("hostNetwork") else "")
    for flag in ("TRUNKGATE_PUBLIC_SIP", "TRUNKGATE_INTERNAL_SIP"):
        assert found[flag].startswith(own + ":"), f"edge {kind}: {flag}={found[flag]}, want {own}:PORT"
    admin = found["TRUNKGATE_ADMIN"]
    assert admin.endswith(f":{admin_port}"), f"edge {kind}: admin {admin} not on port {admin_port}"
    if admin.startswith(("127.", "[::1]")):
        assert pod.get("hostNetwork"), f"edge {kind}: admin on loopback without hostNetwork cannot be probed"
        host = admin.rsplit(":", 1)[0].strip("[]")
        for probe in ("livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"].get("host") == host, f"edge {kind}: {probe} does not ask {host}"
    else:
        assert admin.startswith(own + ":"), f"edge {kind}: admin {admin}, want {own}:{admin_port}"
        for probe in ("livenessProbe", "readinessProbe"):
            assert "host" not in c[probe]["httpGet"], f"edge {kind}: {probe} asks another host"
    return ", ".join(f"{k[len('TRUNKGATE_'):]}={v}" for k, v in found.items())


def workloads(path):
    docs = load(path)
    op = one(docs, "Deployment")
    ns = op["metadata"]["namespace"]
    pod = op["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = c["args"]
    assert args[0] == "run", "operator: first argument must be the `run` subcommand"
    flags = dict(a.split("=", 1) for a in args[1:])
    assert flags["--namespace"] == ns, "operator: --namespace is not the release namespace"
    assert flags["--admin"] == "0.0.0.0:9090" or flags["--admin"].startswith("0.0.0.0:")
    if op["spec"]["replicas"] > 1:
        assert flags.get("--leader-lease"), "operator: several replicas without a leader Lease"
    assert env_source(env_of(c), "POD_NAME") == "fieldRef:metadata.name", "operator: POD_NAME"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz", f"operator: {probe}"
    check_security("operator", pod, False)

    sts = edge_workload(docs)
    kind = sts["kind"]
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = env_of(c)
    names = {n[len("TRUNKGATE_"):] for n in env if n.startswith("TRUNKGATE_")}
    assert not names - EDGE_FLAGS, f"edge: unknown flag variables {sorted(names - EDGE_FLAGS)}"
    assert not REQUIRED_EDGE_FLAGS - names, f"edge: missing {sorted(REQUIRED_EDGE_FLAGS - names)}"
    # TLS files come from mounted Secrets: every path the edge is given lies in a mount whose
    # volume is a Secret, and a TLS listener has its certificate.
    if names & {"PUBLIC_SIPS", "INTERNAL_SIPS"}:
        assert {"TLS_CERT", "TLS_KEY"} <= names, "edge: a TLS listener without --tls-cert/--tls-key"
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for flag in ("TLS_CERT", "TLS_KEY", "TLS_CA"):
        if flag in names:
            path = env[f"TRUNKGATE_{flag}"]["value"]
            mount = next((m for m in c.get("volumeMounts", [])
                          if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
            assert mount, f"edge: {flag} {path} is in no volume mount"
            assert mount.get("readOnly"), f"edge: the mount of {flag} is not read-only"
            assert "secret" in volumes[mount["name"]], f"edge: {flag} is not from a Secret"
    # The fleet's store: the password only ever from a Secret, never in the URL or the values.
    if "STATE_STORE" in names:
        url = env["TRUNKGATE_STATE_STORE"]["value"]
        assert url.startswith(("redis://", "rediss://", "redis+sentinel://")), f"edge: state store {url}"
        assert "@" not in url, "edge: a password in the state store URL"
        assert "STATE_LEASE_SECONDS" in names, "edge: state store without its lease"
    # Calls survive a restart: a shared store, or a journal on a writable volume (the root
    # file system is read-only).
    assert ("STATE_STORE" in names) != ("STATE_DIR" in names), "edge: neither (or both) a state store and a journal"
    if "STATE_DIR" in names:
        path = env["TRUNKGATE_STATE_DIR"]["value"].rstrip("/")
        mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == path), None)
        assert mount and not mount.get("readOnly"), f"edge: the journal {path} is on no writable volume"
    if "STATE_STORE_PASSWORD" in names:
        assert env_source(env, "TRUNKGATE_STATE_STORE_PASSWORD").startswith("secretKeyRef:"), \
            "edge: the state store password is not from a Secret"
    # One meaning on both sides: NAMESPACE/NAME.
    assert env["TRUNKGATE_SNAPSHOT_SECRET"]["value"] == flags["--snapshot-secret"], \
        "edge and operator disagree on the snapshot Secret"
    assert flags["--snapshot-secret"].startswith(f"{ns}/"), "operator: snapshot Secret not NAMESPACE/NAME"
    low, high = (int(p) for p in env["TRUNKGATE_RTP_PORTS"]["value"].split("-"))
    ports = [p["containerPort"] for p in c["ports"]] + [low]
    fast_path = "KERNEL_FAST_PATH" in names
    if fast_path:
        assert env["TRUNKGATE_KERNEL_FAST_PATH"]["value"], "edge: the fast path without interfaces"
    check_security(f"edge {kind}", pod, min(ports) < 1024, fast_path)
    admin = next(p["containerPort"] for p in c["ports"] if p["name"] == "admin")
    listen = check_listen(kind, pod, c, env, admin)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", "edge: readiness is not /readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", "edge: liveness is not /healthz"
    pre = c.get("lifecycle", {}).get("preStop", {})
    assert "exec" not in pre, "edge: exec preStop needs a shell, the image has none"
    drain = int(env["TRUNKGATE_DRAIN_SECONDS"]["value"]) + pre.get("sleep", {}).get("seconds", 0)
    assert pod["terminationGracePeriodSeconds"] >= drain + 15, "edge: grace period < drain + 15"

    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1, "edge: PDB maxUnavailable"

    if kind == "DaemonSet":
        assert pod.get("hostNetwork") is True, "daemonset: hostNetwork"
        assert pod.get("dnsPolicy") == "ClusterFirstWithHostNet", "daemonset: dnsPolicy"
        assert pod.get("nodeSelector"), "daemonset: runs on every node (no nodeSelector)"
        for e in ("TRUNKGATE_PUBLIC_MEDIA_IP", "TRUNKGATE_INTERNAL_MEDIA_IP"):
            assert env_source(env, e) == "fieldRef:status.hostIP", f"daemonset: {e} is not the node IP"
        assert env_source(env, "TRUNKGATE_PUBLIC_SIP").startswith("fieldRef:status.hostIP:")
        assert not [d for d in docs if d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer"]
        assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
        print(f"  edge DaemonSet: hostNetwork on nodes {pod['nodeSelector']}, node IP advertised")
    else:
        assert not pod.get("hostNetwork"), "statefulset: hostNetwork"
        pool = env["TRUNKGATE_ADVERTISE_IP_POOL"]["value"].split(",")
        for e in ("TRUNKGATE_ADVERTISE_HOST", "TRUNKGATE_ADVERTISE_IP_POOL"):
            if e in env:
                assert "status.podIP" not in env_source(env, e), f"edge: {e} advertises the pod IP"
        assert env_source(env, "POD_NAME") == "fieldRef:metadata.name", "statefulset: POD_NAME"
        name = sts["metadata"]["name"]
        lbs = sorted((d for d in docs if d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer"),
                     key=lambda d: d["metadata"]["name"])
        assert len(lbs) == len(pool), f"statefulset: {len(lbs)} LoadBalancer Services for {len(pool)} IPs"
        sip = next(p["containerPort"] for p in c["ports"] if p["name"] == "sip-udp")
        for i, ip in enumerate(pool):
            svc = one(docs, "Service", f"{name}-{i}")
            spec = svc["spec"]
            assert spec["selector"].get("statefulset.kubernetes.io/pod-name") == f"{name}-{i}"
            assert spec.get("loadBalancerIP", ip) == ip, f"Service {name}-{i}: IP {spec.get('loadBalancerIP')}"
            assert spec["externalTrafficPolicy"] == "Local", f"Service {name}-{i}: traffic policy"
            have = {(p["protocol"], p["port"]) for p in spec["ports"]}
            want = {("UDP", sip)} | {("UDP", p) for p in range(low, high + 1)}
            assert want <= have, f"Service {name}-{i}: missing ports {sorted(want - have)[:5]}"
        replicas = sts["spec"].get("replicas")
        hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
        if hpas:
            assert replicas is None, "statefulset: replicas set while an HPA scales it"
            assert hpas[0]["spec"]["maxReplicas"] <= len(pool), "HPA maxReplicas > IPs"
        else:
            assert replicas <= len(pool), "statefulset: more replicas than IPs"
        print(f"  edge StatefulSet: {len(pool)} LoadBalancer Services, pod i advertises ips[i], "
              f"{high - low + 1} RTP ports each")
    print(f"  listening: {listen}")
    print(f"  security contexts: non-root, read-only root FS, drop ALL, seccomp RuntimeDefault")
    return True


# --- redis ------------------------------------------------------------------------------------

def cli_flags(args):
    """{--flag: value} of a command line whose flags each take one value (Redis's)."""
    assert len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]), f"args {args}"
    return dict(zip(args[::2], args[1::2]))


def redis(path, expect, url=None):
    """The lab Redis (edge.stateStore.deploy): rendered only when asked and no url is given; one
    replica, non-root, read-only root FS, every capability dropped, its data on an emptyDir, the
    password (if any) from the edge's own Secret; the edge's --state-store points at its Service."""
    docs = load(path)
    edge = edge_workload(docs)
    ns = edge["metadata"]["namespace"]
    env = env_of(edge["spec"]["template"]["spec"]["containers"][0])
    store = env.get("TRUNKGATE_STATE_STORE", {}).get("value")
    objects = [d for d in docs if component(d) == "redis"]
    if url is not None:
        assert store == url, f"edge --state-store {store!r}, want {url!r}"
    if expect == "absent":
        assert not objects, f"a lab Redis is rendered: {[d['kind'] for d in objects]}"
        assert not store or "-redis." not in store, f"the edge points at a lab Redis: {store}"
        print(f"  no lab Redis; edge --state-store {store or '(none: the journal in the pod)'}")
        return True
    assert expect == "deployed", f"unknown expectation {expect}"
    sts = one(objects, "StatefulSet")
    svc = one(objects, "Service")
    name = sts["metadata"]["name"]
    assert sts["spec"]["replicas"] == 1, "redis: more than one replica (the edges need one store)"
    assert svc["metadata"]["name"] == name == sts["spec"]["serviceName"], "redis: Service name"
    pod = sts["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken") is False, "redis: mounts an API token"
    assert not pod.get("hostNetwork"), "redis: hostNetwork"
    check_security("redis StatefulSet", pod, False)
    (c,) = pod["containers"]
    assert "trunkgate-redis" in c["image"], f"redis: image {c['image']}"
    flags = cli_flags(c["args"])
    for flag, want in (("--port", "6379"), ("--bind", "0.0.0.0"), ("--protected-mode", "no"),
                       ("--dir", "/data"), ("--appendonly", "yes"), ("--save", ""),
                       ("--maxmemory-policy", "noeviction")):
        assert flags.get(flag) == want, f"redis: {flag} {flags.get(flag)!r}, want {want!r}"
    mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == "/data"), None)
    assert mount and not mount.get("readOnly"), "redis: /data is on no writable volume"
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    assert "emptyDir" in volumes[mount["name"]], "redis: /data is not an emptyDir"
    port = next(p for p in c["ports"] if p["name"] == "redis")
    assert port["containerPort"] == 6379, "redis: container port"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["tcpSocket"]["port"] == "redis", f"redis: {probe}"
    spec = svc["spec"]
    assert spec.get("type", "ClusterIP") == "ClusterIP", "redis: the Service leaves the cluster"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= labels.items(), "redis: the Service selects another pod"
    assert sts["spec"]["selector"]["matchLabels"] == spec["selector"], "redis: selectors differ"
    assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [(6379, "redis")], "redis: Service ports"
    # The edge's store is this Service, by its pinned ClusterIP or its DNS name; no journal.
    host = spec.get("clusterIP") or f"{name}.{ns}.svc"
    assert store == f"redis://{host}:6379", f"edge --state-store {store!r}, want redis://{host}:6379"
    assert "TRUNKGATE_STATE_DIR" not in env, "edge: a journal as well as the lab Redis"
    # The password: the edge's Secret for both, or none for both; never a literal.
    renv = env_of(c)
    if "TRUNKGATE_STATE_STORE_PASSWORD" in env:
        secret = env_source(env, "TRUNKGATE_STATE_STORE_PASSWORD")
        assert env_source(renv, "REDIS_PASSWORD") == secret, "redis: its password is not the edge's Secret"
        assert flags.get("--requirepass") == "$(REDIS_PASSWORD)", "redis: --requirepass not from the Secret"
        password = f"from {secret}"
    else:
        assert "--requirepass" not in flags and "REDIS_PASSWORD" not in renv, \
            "redis: a password the edge does not have"
        password = "none"
    # With the NetworkPolicies on, only the edge pods reach it.
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if policies:
        pol = one(objects, "NetworkPolicy")["spec"]
        assert pol["podSelector"]["matchLabels"] == spec["selector"], "redis: the policy selects another pod"
        edge_labels = edge["spec"]["selector"]["matchLabels"]
        (rule,) = pol["ingress"]
        assert [f.get("podSelector", {}).get("matchLabels") for f in rule["from"]] == [edge_labels], \
            f"redis: the policy admits {rule['from']}"
        assert rule["ports"] == [{"protocol": "TCP", "port": 6379}], "redis: the policy's ports"
    print(f"  lab Redis {ns}/{name}: 1 replica, non-root, read-only root FS, drop ALL, appendonly on "
          f"an emptyDir; password {password}; edge --state-store {store}"
          + ("; NetworkPolicy: edge pods only" if policies else ""))
    return True


# --- monitoring -------------------------------------------------------------------------------

REQUIRED_ALERT_EXPRS = [
    "trunkgate_edge_trunk_targets_healthy) == 0",
    "trunkgate_edge_trunk_targets_configured) > 0",
    "sum by (trunk) (rate(trunkgate_edge_refusals_total[5m]))",
    "/ sum by (trunk) (rate(trunkgate_edge_calls_total[5m])) > 0.2",
    "histogram_quantile(0.95, sum by (le, trunk) (rate(trunkgate_edge_media_loss_ratio_bucket[10m]))) > 0.05",
    "trunkgate_edge_snapshot_reloads_total{result!~\"ok|unchanged|with_problems\"}",
    "trunkgate_operator_objects_with_problems",
]
DASHBOARD_METRICS = [
    "trunkgate_edge_calls_total", "trunkgate_edge_refusals_total", "trunkgate_edge_active_calls",
    "trunkgate_edge_acl_drops_total", "trunkgate_edge_snapshot_info",
    "trunkgate_edge_call_cost_total", "trunkgate_edge_target_asr_ratio",
    "trunkgate_edge_target_pdd_seconds",
]


def registered_metrics():
    """Every metric name the edge and the operator register (the string literals of their
    sources: each metric's name is written once, where it is made)."""
    import glob
    import re
    root = Path(__file__).resolve().parents[2]
    names = set()
    for pattern in ("dataplane/edge/src/**/*.rs", "operator/src/**/*.rs", "dataplane/admin/src/**/*.rs"):
        for f in glob.glob(str(root / pattern), recursive=True):
            names |= set(re.findall(r'"(trunkgate_(?:edge|operator)_[a-z0-9_]+)"', open(f).read()))
    return names


def unknown_metrics(text, names):
    """Metric names `text` reads that nobody exports (a histogram's _bucket/_sum/_count count as
    its name)."""
    import re
    out = set()
    for n in re.findall(r"(trunkgate_(?:edge|operator)_[a-z0-9_]+)", text):
        base = next((n[: -len(s)] for s in ("_bucket", "_sum", "_count")
                     if n.endswith(s) and n[: -len(s)] in names), n)
        if base not in names:
            out.add(n)
    return sorted(out)


def monitoring(path):
    import json

    docs = load(path)
    rule = one(docs, "PrometheusRule")
    exprs = " ".join(" ".join(r["expr"].split()) for g in rule["spec"]["groups"] for r in g["rules"])
    for want in REQUIRED_ALERT_EXPRS:
        assert want in exprs, f"PrometheusRule: no alert on `{want}`"
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            assert r["labels"]["severity"] in ("warning", "critical"), f"{r['alert']}: severity"
            assert r["annotations"]["summary"], f"{r['alert']}: summary"
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert len(monitors) == 2, "expected ServiceMonitors for the operator and the edge"
    services = [d for d in docs if d["kind"] == "Service"]
    for m in monitors:
        sel = m["spec"]["selector"]["matchLabels"]
        hits = [s for s in services if sel.items() <= s["metadata"]["labels"].items()]
        assert len(hits) == 1, f"ServiceMonitor {m['metadata']['name']} selects {len(hits)} Services"
        port = m["spec"]["endpoints"][0]["port"]
        assert port in {p["name"] for p in hits[0]["spec"]["ports"]}, f"no port {port}"
    cm = next(d for d in docs if d["kind"] == "ConfigMap"
              and d["metadata"]["labels"].get("grafana_dashboard") == "1")
    dash = json.loads(next(iter(cm["data"].values())))
    queries = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for metric in DASHBOARD_METRICS:
        assert metric in queries, f"dashboard: no panel reads {metric}"
    # Every metric an alert or a panel reads is one the binaries export (the issue found an
    # alert on a metric the edge never had).
    names = registered_metrics()
    assert "trunkgate_edge_calls_total" in names, "could not read the metric names from the sources"
    for what, text in (("PrometheusRule", exprs), ("dashboard", queries)):
        unknown = unknown_metrics(text, names)
        assert not unknown, f"{what} reads metrics nothing exports: {unknown}"
    readme = (Path(__file__).resolve().parents[2] / "charts/trunkgate/README.md").read_text()
    unknown = unknown_metrics(readme, names)
    assert not unknown, f"charts/trunkgate/README.md names metrics nothing exports: {unknown}"
    n = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    print(f"  {n} alerts, 2 ServiceMonitors each selecting one Service, "
          f"dashboard with {len(dash['panels'])} panels")
    return True


# --- defaults -----------------------------------------------------------------------------------

def help_defaults(text):
    """{--flag: default} from a clap --help text ("[default: X]" under each flag)."""
    out, flag = {}, None
    for line in text.splitlines():
        m = re.match(r"\s+(?:-\w, )?(--[a-z0-9-]+)", line)
        if m:
            flag = m.group(1)
        d = re.search(r"\[default: ([^\]]*)\]", line)
        if d and flag:
            out[flag] = d.group(1)
    return out


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def defaults(edge_help, operator_help, render):
    """The defaults the binaries, the chart (values and its render), deploy/trunkgate.yaml,
    the Makefile and the README state must be the same numbers."""
    with open(edge_help) as f:
        edge = help_defaults(f.read())
    with open(operator_help) as f:
        op = help_defaults(f.read())
    with open("charts/trunkgate/values.yaml") as f:
        values = yaml.safe_load(f)
    e = values["edge"]
    findings = []

    def same(what, a, b):
        if a != b:
            findings.append(f"{what}: {a!r} != {b!r}")

    same("edge --public-sip port vs edge.publicSipPort", port_of(edge["--public-sip"]), e["publicSipPort"])
    same("edge --internal-sip port vs edge.internalSipPort", port_of(edge["--internal-sip"]), e["internalSipPort"])
    same("edge --admin port vs edge.adminPort", port_of(edge["--admin"]), e["adminPort"])
    same("operator --edge-admin-port vs edge.adminPort", int(op["--edge-admin-port"]), e["adminPort"])
    same("operator --admin port vs operator.adminPort", port_of(op["--admin"]), values["operator"]["adminPort"])
    same("edge --drain-seconds vs edge.drainSeconds", int(edge["--drain-seconds"]), e["drainSeconds"])
    same("operator --debounce-ms vs operator.debounceMs", int(op["--debounce-ms"]), values["operator"]["debounceMs"])
    same("operator --snapshot-max-parts vs snapshotMaxParts", int(op["--snapshot-max-parts"]),
         values["snapshotMaxParts"])
    same("operator --secret-selector vs operator.secretSelector", op["--secret-selector"],
         values["operator"]["secretSelector"])
    for path in (render, "deploy/trunkgate.yaml"):
        docs = load(path)
        ds = edge_workload(docs)
        assert ds["kind"] == "DaemonSet", f"{path}: default mode is not daemonset"
        env = env_of(ds["spec"]["template"]["spec"]["containers"][0])
        same(f"edge --rtp-ports vs {path} TRUNKGATE_RTP_PORTS", edge["--rtp-ports"],
             env["TRUNKGATE_RTP_PORTS"]["value"])
        same(f"edge --drain-seconds vs {path}", edge["--drain-seconds"], env["TRUNKGATE_DRAIN_SECONDS"]["value"])
        same(f"edge --internal-sip port vs {path}", port_of(edge["--internal-sip"]),
             port_of(env["TRUNKGATE_INTERNAL_SIP"]["value"]))
        op_args = dict(a.split("=", 1) for a in one(docs, "Deployment")["spec"]["template"]["spec"]
                       ["containers"][0]["args"] if a.startswith("--"))
        same(f"{path}: operator --snapshot-secret vs edge TRUNKGATE_SNAPSHOT_SECRET",
             op_args["--snapshot-secret"], env["TRUNKGATE_SNAPSHOT_SECRET"]["value"])
        if path == "deploy/trunkgate.yaml":
            # The operator's own default is the one deploy/ uses (namespace trunkgate-system).
            same("operator --snapshot-secret default vs deploy/trunkgate.yaml",
                 "trunkgate-system/trunkgate-edge-config", op_args["--snapshot-secret"])
    assert "NAMESPACE/trunkgate-edge-config" in op.get("--snapshot-secret", operator_help_text(operator_help)), \
        "operator --snapshot-secret: the help does not say NAMESPACE/NAME"

    # make run and the README's two-minute call use the edge's own ports on loopback.
    with open("Makefile") as f:
        make = f.read()
    m = re.search(r"--internal-sip 127\.0\.0\.1:(\d+)", make)
    same("Makefile EDGE_FLAGS --internal-sip port vs the edge default", int(m.group(1)) if m else None,
         port_of(edge["--internal-sip"]))
    with open("README.md") as f:
        readme = f.read()
    m = re.search(r"platform side `127\.0\.0\.1:(\d+)`", readme)
    same("README make run platform side port vs the edge default", int(m.group(1)) if m else None,
         port_of(edge["--internal-sip"]))

    # The default RTP range carries the example trunks (lab excepted: a loopback toy with
    # limits meant never to bind): 4 ports a call, a freed pair resting 5 s (values.yaml rule).
    low, high = (int(p) for p in edge["--rtp-ports"].split("-"))
    ports = high - low + 1
    need_all = 0
    for path in ("examples/acme.yaml", "examples/globex.yaml"):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d and d.get("kind") == "CarrierTrunk":
                    lim = d["spec"].get("limits", {})
                    need = 4 * (lim.get("maxConcurrentCalls", 0) + 5 * lim.get("maxCallsPerSecond", 0))
                    need_all += need
                    if need > ports:
                        findings.append(f"{path} {d['metadata']['name']} needs {need} RTP ports, "
                                        f"the default range has {ports}")
    if need_all > ports:
        findings.append(f"the example trunks together need {need_all} RTP ports, the default has {ports}")
    for finding in findings:
        print(f"  {finding}")
    print(f"  edge: public :{port_of(edge['--public-sip'])}, internal :{port_of(edge['--internal-sip'])}, "
          f"admin :{port_of(edge['--admin'])}, drain {edge['--drain-seconds']} s, RTP {edge['--rtp-ports']} "
          f"({ports} ports; the example trunks need {need_all}); snapshot Secret NAMESPACE/NAME on both sides")
    return not findings


def operator_help_text(path):
    with open(path) as f:
        return f.read()


def main(argv):
    cmd = argv[1]
    try:
        if cmd == "validate":
            ok = validate(argv[2], argv[3:])
        elif cmd == "rbac":
            ok = rbac(argv[2])
        elif cmd == "workloads":
            ok = workloads(argv[2])
        elif cmd == "monitoring":
            ok = monitoring(argv[2])
        elif cmd == "defaults":
            ok = defaults(argv[2], argv[3], argv[4])
        elif cmd == "redis":
            ok = redis(argv[2], argv[3], argv[4] if len(argv) > 4 else None)
        else:
            raise SystemExit(f"unknown command {cmd}")
    except (AssertionError, KeyError, StopIteration, ValueError) as e:
        print(f"  {argv[2] if len(argv) > 2 else ''}: {type(e).__name__}: {e}")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
