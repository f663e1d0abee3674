#!/usr/bin/env python3
"""Checks of the deployment files that no off-the-shelf linter makes (called by validate-k8s.sh).

  validate_k8s.py dockerfile docker/Dockerfile
      The Dockerfile essentials: multi-stage, every base image pinned by a tag that is not
      `latest` (or by digest), a numeric non-root USER in the final stage, exec-form
      ENTRYPOINT, the default config path in CMD, and a `cargo build` with --release
      --locked --no-default-features. Prints that cargo build command (validate-k8s.sh runs
      it, so the binary CI checks is the one the image ships).

  validate_k8s.py manifests --bin BIN --secret SECRET.yaml... [--runbook README.md] RENDERED.yaml...
      For each rendered kustomization holding the kafka-sidecar Deployment: the deployment
      rules of issue 6 (native sidecar, directory mount without subPath, no hash-suffixed
      ConfigMap, probes on the admin port, security context, resources, PDB, scrape
      annotations, no restart-on-change machinery), then materializes the sidecar's
      ConfigMap and Secret mounts in a temp dir (Secret values from SECRET.yaml), points
      the config's absolute paths there and runs `BIN check` on it. With --runbook, also
      runs the README's failover jq filter (SWITCH_FILTER) on the ConfigMap towards every
      other cluster and checks the result the same way. For each StatefulSet running
      `kafka-sidecar arbiter` (k8s/arbiters): the same security, resources, mount and
      probe rules, a PDB, a zone spread, the ids its pods get (--id with $(POD_INDEX)
      from the pod-index label and ordinals.start) equal to control.automatic.arbiters,
      and `BIN check` on its config. --secret is repeated, one per example Secret; a
      mount takes the one of its name. Renders holding only Prometheus Operator kinds
      get a structural check (no schema for them offline).

  validate_k8s.py reference --bin BIN config/kafka-sidecar.yaml
      `BIN check` on the reference config, with a dummy file at every path it references.

  validate_k8s.py same-objects --namespace NS CHART.yaml KUSTOMIZE.yaml...
      The Helm chart's render (CHART.yaml) holds the same objects as the kustomizations'
      renders (one source of truth: k8s/ is the reference, charts/ must match it). Compared
      after normalisation: objects keyed by apiVersion, kind, namespace and name (a missing
      namespace is NS, as `kubectl apply -n NS` would set); the labels Helm adds
      (HELM_LABELS) dropped; a ConfigMap value that is a YAML mapping compared parsed (the
      chart's config.yaml has other comments and key order); Namespace objects skipped
      (`helm install --create-namespace` makes it). Prints the differing paths.

  validate_k8s.py only-config-changes BEFORE.yaml AFTER.yaml
      Two chart renders, before and after the runbook's `helm upgrade --set activeCluster=...`:
      only ConfigMaps may differ (and one must), so the upgrade restarts no pod.

Needs PyYAML (installed with kubernetes-validate). Prints nothing on success.
"""

import argparse
import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

SIDECAR = "kafka-sidecar"
ERRORS = []
# The jq filter of the failover command in k8s/README.md (which must contain it verbatim).
SWITCH_FILTER = (
    '.data["config.yaml"] |= (split("\\n") | map(if startswith("active_cluster:") '
    'then "active_cluster: \\($to)" else . end) | join("\\n"))'
)


def err(where, msg):
    ERRORS.append(f"{where}: {msg}")


# ----------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text):
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        inst, _, rest = cur.partition(" ")
        out.append((inst.upper(), rest.strip()))
        cur = ""
    return out


def check_dockerfile(path):
    text = open(path, encoding="utf-8").read()
    ins = dockerfile_instructions(text)
    args = {}
    stages = []  # (image, alias, [instructions])
    for inst, rest in ins:
        if inst == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif inst == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = words[0]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append((image, alias, []))
        elif stages:
            stages[-1][2].append((inst, rest))
    if len(stages) < 2:
        err(path, f"expected a multi-stage build, found {len(stages)} FROM")
    aliases = {a for _, a, _ in stages if a}
    for image, _, _ in stages:
        if image in aliases or image == "scratch":
            continue
        resolved = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if "$" in resolved:
            err(path, f"FROM {image}: unresolved build argument")
            continue
        name_part = resolved.split("@")[0]
        tag = name_part.rsplit(":", 1)[1] if ":" in name_part.rsplit("/", 1)[-1] else None
        if "@sha256:" not in resolved and not tag:
            err(path, f"FROM {resolved}: base image not pinned (no tag or digest)")
        if tag == "latest":
            err(path, f"FROM {resolved}: `latest` is not a pinned tag")
    if not stages:
        return None
    final = stages[-1][2]
    users = [rest for inst, rest in final if inst == "USER"]
    if not users:
        err(path, "final stage has no USER (the image must not run as root)")
    else:
        user = users[-1].split(":")[0]
        if not user.isdigit() or int(user) == 0:
            err(path, f"final USER {users[-1]!r}: use a numeric non-zero uid (runAsNonRoot can verify only numbers)")
    entry = [rest for inst, rest in final if inst == "ENTRYPOINT"]
    cmd = [rest for inst, rest in final if inst == "CMD"]
    try:
        entry_v = json.loads(entry[-1]) if entry else None
        cmd_v = json.loads(cmd[-1]) if cmd else None
    except json.JSONDecodeError:
        err(path, "ENTRYPOINT and CMD must use the exec (JSON array) form: there is no shell in the image")
        entry_v = cmd_v = None
    if not entry_v or not entry_v[0].endswith("/kafka-sidecar"):
        err(path, "ENTRYPOINT must be the kafka-sidecar binary (exec form)")
    if cmd_v != ["run", "--config", "/etc/kafka-sidecar/config.yaml"]:
        err(path, f"CMD {cmd_v}: expected [\"run\", \"--config\", \"/etc/kafka-sidecar/config.yaml\"]")
    builds = []
    for _, _, body in stages:
        for inst, rest in body:
            if inst == "RUN":
                m = re.search(r"cargo build[^&;|]*", rest)
                if m:
                    builds.append(m.group(0).strip())
    if len(builds) != 1:
        err(path, f"expected exactly one `cargo build` RUN, found {len(builds)}")
        return None
    flags = shlex.split(builds[0])
    for f in ("--release", "--locked", "--no-default-features"):
        if f not in flags:
            err(path, f"`{builds[0]}` lacks {f}")
    return builds[0]


# ----------------------------------------------------------------------------- manifests


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def secret_data(secret):
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def probe_path_port(probe):
    http = (probe or {}).get("httpGet") or {}
    return http.get("path"), http.get("port")


def selector_matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def check_podmonitor(where, doc):
    spec = doc.get("spec") or {}
    if not (spec.get("selector") or {}).get("matchLabels"):
        err(where, "PodMonitor needs spec.selector.matchLabels")
    eps = spec.get("podMetricsEndpoints") or []
    if not eps:
        err(where, "PodMonitor needs spec.podMetricsEndpoints")
    for ep in eps:
        if ep.get("port") != "admin" or ep.get("path", "/metrics") != "/metrics":
            err(where, f"PodMonitor endpoint {ep}: expected port admin, path /metrics")


def run_check(where, binary, config_path):
    r = subprocess.run([binary, "check", config_path], capture_output=True, text=True)
    if r.returncode != 0:
        err(where, f"`kafka-sidecar check` refused the config:\n{r.stderr.strip()}")


def check_rendered(path, binary, secrets, cmd_config, runbook):
    docs = load_docs(path)
    where = os.path.basename(path)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    for d in by_kind.get("PodMonitor", []):
        check_podmonitor(where, d)
    deployments = [
        d
        for d in by_kind.get("Deployment", [])
        if any(c.get("name") == SIDECAR for c in d["spec"]["template"]["spec"].get("initContainers") or [])
    ]
    for d in by_kind.get("Deployment", []):
        if any(c.get("name") == SIDECAR for c in d["spec"]["template"]["spec"].get("containers") or []):
            err(where, f"Deployment {d['metadata']['name']}: {SIDECAR} must be a native sidecar "
                "(initContainers with restartPolicy: Always), not a regular container")
    arbiters = [
        s
        for s in by_kind.get("StatefulSet", [])
        if any((c.get("args") or [None])[0] == "arbiter" for c in s["spec"]["template"]["spec"]["containers"])
    ]
    if not deployments and not arbiters:
        if not by_kind.get("PodMonitor"):
            err(where, f"no Deployment with a {SIDECAR} sidecar, no arbiter StatefulSet and no PodMonitor")
        return
    for dep in deployments:
        check_deployment(where, dep, by_kind, binary, secrets, cmd_config, runbook)
    for sts in arbiters:
        check_arbiters(where, sts, by_kind, binary, secrets, cmd_config)


def check_deployment(where, dep, by_kind, binary, secrets, cmd_config, runbook):
    name = f"{where}: Deployment {dep['metadata']['name']}"
    tmpl = dep["spec"]["template"]
    pod = tmpl["spec"]
    side = next(c for c in pod["initContainers"] if c["name"] == SIDECAR)

    # Native sidecar, reading the config the image's CMD names.
    if side.get("restartPolicy") != "Always":
        err(name, f"{SIDECAR} initContainer needs restartPolicy: Always (native sidecar, Kubernetes >= 1.29)")
    args = side.get("args") or []
    config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else cmd_config
    if config_path != cmd_config:
        err(name, f"--config {config_path} differs from the image's default {cmd_config}")

    # No restart-on-change machinery.
    annotations = {**(dep["metadata"].get("annotations") or {}), **(tmpl["metadata"].get("annotations") or {})}
    for k in annotations:
        if "reloader" in k or k.startswith("checksum/"):
            err(name, f"annotation {k}: ConfigMap changes must not restart pods (the proxy reloads itself)")

    check_security_and_resources(name, pod)

    # Volumes: whole ConfigMap / Secret as directories, never subPath.
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    mounts = collect_mounts(name, side, volumes, configmaps, secrets)

    # The config itself.
    config_text = config_in_mounts(name, mounts, config_path)
    if config_text is None:
        return
    cfg = yaml.safe_load(config_text)
    admin_port = check_admin(name, cfg, side)
    listen_addr = str((cfg.get("listen") or {}).get("address", "127.0.0.1"))
    if not (listen_addr.startswith("127.") or listen_addr == "::1"):
        err(name, f"listen.address {listen_addr}: the Kafka listeners belong on loopback in a sidecar")
    if side.get("startupProbe") and probe_path_port(side["startupProbe"])[1] not in ("admin", admin_port):
        err(name, f"{SIDECAR} startupProbe must use the admin port")
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != admin_port:
        err(name, f"pod template needs prometheus.io/scrape: \"true\" and prometheus.io/port: \"{admin_port}\"")

    # A PodDisruptionBudget selecting these pods.
    check_pdb(name, tmpl, by_kind)

    # `kafka-sidecar check` on the config, with the mounts materialized in a temp dir.
    check_in_mounts(name, binary, config_text, mounts, config_path)

    # The runbook's failover command (k8s/README.md), applied to this ConfigMap for every
    # other cluster: it must change exactly the active_cluster line and yield a valid config.
    if runbook is not None:
        cm_name = next(v["configMap"]["name"] for v in volumes.values() if "configMap" in v)
        cm_data = configmaps[cm_name].get("data") or {}
        key = os.path.basename(config_path)
        for other in sorted(set(cfg.get("clusters") or {}) - {cfg.get("active_cluster")}):
            r = subprocess.run(
                ["jq", "--arg", "to", other, SWITCH_FILTER],
                input=json.dumps({"kind": "ConfigMap", "data": cm_data}),
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                err(name, f"the runbook's jq filter failed: {r.stderr.strip()}")
                continue
            switched = json.loads(r.stdout)["data"][key]
            changed = [
                (a, b) for a, b in zip(cm_data[key].split("\n"), switched.split("\n")) if a != b
            ]
            if len(changed) != 1 or not changed[0][0].startswith("active_cluster:") \
                    or changed[0][1] != f"active_cluster: {other}":
                err(name, f"the runbook's failover to {other} changed {changed}, not just active_cluster")
            check_in_mounts(f"{name} after failover to {other}", binary, switched, mounts, config_path)


def check_security_and_resources(name, pod):
    psc = pod.get("securityContext") or {}
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        cn = f"{name} container {c['name']}"
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            err(cn, "runAsNonRoot: true is required (container or pod securityContext)")
        if sc.get("readOnlyRootFilesystem") is not True:
            err(cn, "securityContext.readOnlyRootFilesystem: true is required")
        if sc.get("allowPrivilegeEscalation") is not False:
            err(cn, "securityContext.allowPrivilegeEscalation: false is required")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            err(cn, "securityContext.capabilities.drop must contain ALL")
        res = c.get("resources") or {}
        if not res.get("requests") or not (res.get("limits") or {}).get("memory"):
            err(cn, "resources.requests and a memory limit are required")



def collect_mounts(name, container, volumes, configmaps, secrets):
    """(mountPath, {key: content}) of the container's ConfigMap and Secret mounts, each
    a whole directory (never subPath) of a ConfigMap without a hash suffix."""
    mounts = []
    for m in container.get("volumeMounts") or []:
        if "subPath" in m or "subPathExpr" in m:
            err(name, f"volumeMount {m['name']} uses subPath: a subPath mount never sees ConfigMap/Secret updates")
        vol = volumes.get(m["name"]) or {}
        if "configMap" in vol:
            cm_name = vol["configMap"]["name"]
            cm = configmaps.get(cm_name)
            if cm is None:
                err(name, f"volume {m['name']}: ConfigMap {cm_name} is not in the rendered output "
                    "(a hash-suffixed generator name would roll every pod on each edit)")
                continue
            if re.search(r"-[bcdfghkmt2-9]{10}$", cm_name):
                err(name, f"volume {m['name']}: ConfigMap {cm_name} has a kustomize content-hash suffix: "
                    "every edit would roll every pod (set generatorOptions.disableNameSuffixHash)")
            if vol["configMap"].get("items"):
                err(name, f"volume {m['name']}: mount the whole ConfigMap (no items)")
            mounts.append((m["mountPath"], dict(cm.get("data") or {})))
        elif "secret" in vol:
            sname = vol["secret"]["secretName"]
            if sname not in secrets:
                err(name, f"volume {m['name']}: Secret {sname} is none of the example Secrets {sorted(secrets)}")
                continue
            mounts.append((m["mountPath"], secret_data(secrets[sname])))
        else:
            err(name, f"volumeMount {m['name']}: expected a configMap or secret volume")
    return mounts


def config_in_mounts(name, mounts, config_path):
    for mp, files in mounts:
        if os.path.dirname(config_path) == mp.rstrip("/"):
            text = files.get(os.path.basename(config_path))
            if text is not None:
                return text
    err(name, f"{config_path} is not a key of a ConfigMap mounted at {os.path.dirname(config_path)}")
    return None


def check_admin(name, cfg, container):
    """admin.address on all interfaces, its port the container's `admin` port, liveness
    /healthz and readiness /readyz on it. Returns the admin port (a string)."""
    admin = (cfg.get("admin") or {}).get("address", "")
    admin_host, _, admin_port = admin.rpartition(":")
    if admin_host not in ("0.0.0.0", "[::]"):
        err(name, f"admin.address {admin!r}: listen on all interfaces so probes and Prometheus reach it")
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    if str(ports.get("admin")) != admin_port:
        err(name, f"container port `admin` {ports.get('admin')} differs from admin.address port {admin_port}")
    for probe, want in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        p, port = probe_path_port(container.get(probe))
        if p != want or port not in ("admin", ports.get("admin")):
            err(name, f"{container['name']} {probe} must GET {want} on the admin port (has {p} on {port})")
    return admin_port


def check_pdb(name, tmpl, by_kind):
    labels = tmpl["metadata"].get("labels") or {}
    if not any(selector_matches(p["spec"].get("selector") or {}, labels) for p in by_kind.get("PodDisruptionBudget", [])):
        err(name, "no PodDisruptionBudget selects its pods")


POD_INDEX_FIELD = "metadata.labels['apps.kubernetes.io/pod-index']"


def arbiter_ids(name, sts, container):
    """The --id of each pod of the StatefulSet: `$(VAR)` in it expanded for every ordinal
    when VAR comes from the pod-index label, else the literal id (then one replica)."""
    args = container.get("args") or []
    if "--id" not in args[:-1]:
        err(name, "arbiter args need --id")
        return []
    id_arg = args[args.index("--id") + 1]
    spec = sts["spec"]
    replicas = spec.get("replicas", 1)
    start = (spec.get("ordinals") or {}).get("start", 0)
    refs = re.findall(r"\$\((\w+)\)", id_arg)
    if not refs:
        if replicas != 1:
            err(name, f"--id {id_arg} is the same in all {replicas} pods: derive it from the pod index")
        return [id_arg]
    env = {e["name"]: e for e in container.get("env") or []}
    for ref in refs:
        field = ((env.get(ref) or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        if field != POD_INDEX_FIELD:
            err(name, f"--id uses $({ref}), which must come from fieldRef {POD_INDEX_FIELD}")
            return []
    return [re.sub(r"\$\(\w+\)", str(i), id_arg) for i in range(start, start + replicas)]


def check_arbiters(where, sts, by_kind, binary, secrets, cmd_config):
    name = f"{where}: StatefulSet {sts['metadata']['name']}"
    tmpl = sts["spec"]["template"]
    pod = tmpl["spec"]
    arb = next(c for c in pod["containers"] if (c.get("args") or [None])[0] == "arbiter")
    args = arb.get("args") or []
    config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else cmd_config

    check_security_and_resources(name, pod)
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    mounts = collect_mounts(name, arb, volumes, configmaps, secrets)
    config_text = config_in_mounts(name, mounts, config_path)
    if config_text is None:
        return
    cfg = yaml.safe_load(config_text)
    admin_port = check_admin(name, cfg, arb)
    annotations = tmpl["metadata"].get("annotations") or {}
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != admin_port:
        err(name, f"pod template needs prometheus.io/scrape: \"true\" and prometheus.io/port: \"{admin_port}\"")
    check_pdb(name, tmpl, by_kind)

    # Spread: a quorum whose votes share a zone or a node is no quorum.
    zones = [t for t in pod.get("topologySpreadConstraints") or [] if t.get("topologyKey") == "topology.kubernetes.io/zone"]
    anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
    if not zones and not any(t.get("topologyKey") == "topology.kubernetes.io/zone" for t in anti):
        err(name, "spread the arbiters over zones (topologySpreadConstraints on topology.kubernetes.io/zone)")
    if not any(t.get("topologyKey") == "kubernetes.io/hostname" for t in anti):
        err(name, "required podAntiAffinity on kubernetes.io/hostname: never two arbiters on one node")

    # The ids the pods run are exactly the configured arbiters.
    automatic = (cfg.get("control") or {}).get("automatic") or {}
    configured = automatic.get("arbiters") or []
    ids = arbiter_ids(name, sts, arb)
    if ids and sorted(ids) != sorted(configured):
        err(name, f"its pods run --id {ids}, but control.automatic.arbiters is {configured}")
    if ids and len(ids) < 3:
        err(name, f"{len(ids)} arbiters: run three (a quorum of 2 of 3)")

    check_in_mounts(name, binary, config_text, mounts, config_path)


def check_in_mounts(name, binary, config_text, mounts, config_path):
    with tempfile.TemporaryDirectory(prefix="ksc-k8s-") as root:
        text = config_text
        for mp, files in sorted(mounts, key=lambda m: -len(m[0])):
            d = root + mp
            os.makedirs(d, exist_ok=True)
            for k, v in files.items():
                with open(os.path.join(d, k), "w", encoding="utf-8") as f:
                    f.write(v)
            text = re.sub(r"(?<![\w/.-])" + re.escape(mp.rstrip("/") + "/"), lambda _m, d=d: d + "/", text)
        path = root + config_path
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        run_check(name, binary, path)


# ----------------------------------------------------------------------------- reference config


def check_reference(binary, path):
    """`check` on the reference config with a dummy file at every absolute path it uses."""
    text = open(path, encoding="utf-8").read()
    cfg = yaml.safe_load(text)
    paths = set()

    def walk(v, key=""):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, k)
        elif isinstance(v, list):
            for x in v:
                walk(x, key)
        elif isinstance(v, str) and (key == "file" or key.endswith("_file")) and v.startswith("/"):
            paths.add(v)

    walk(cfg)
    with tempfile.TemporaryDirectory(prefix="ksc-ref-") as root:
        for p in sorted(paths, key=len, reverse=True):
            os.makedirs(os.path.dirname(root + p), exist_ok=True)
            with open(root + p, "w", encoding="utf-8") as f:
                f.write("dummy\n")
            text = re.sub(r"(?<![\w/.-])" + re.escape(p) + r"(?![\w/.-])", root + p, text)
        cp = os.path.join(root, "kafka-sidecar.yaml")
        with open(cp, "w", encoding="utf-8") as f:
            f.write(text)
        run_check(path, binary, cp)


HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance")


def normalized(doc, namespace):
    doc = json.loads(json.dumps(doc))  # a deep copy, and YAML scalars as JSON sees them
    meta = doc.setdefault("metadata", {})
    meta.setdefault("namespace", namespace)
    labels = meta.get("labels") or {}
    for k in HELM_LABELS:
        labels.pop(k, None)
    if doc.get("kind") == "ConfigMap":
        for k, v in (doc.get("data") or {}).items():
            try:
                parsed = yaml.safe_load(v)
            except yaml.YAMLError:
                continue
            if isinstance(parsed, dict):
                doc["data"][k] = json.loads(json.dumps(parsed, default=str))
    return doc


def differences(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append(f"{path}.{k}: only in the chart")
            elif k not in b:
                out.append(f"{path}.{k}: only in k8s/")
            else:
                out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: k8s/ has {json.dumps(a)}, the chart {json.dumps(b)}"]


def same_objects(namespace, chart, kustomized):
    def index(paths):
        out = {}
        for p in paths:
            for d in load_docs(p):
                if d.get("kind") == "Namespace":
                    continue
                d = normalized(d, namespace)
                m = d["metadata"]
                out[(d.get("apiVersion"), d.get("kind"), m["namespace"], m.get("name"))] = d
        return out

    want, got = index(kustomized), index([chart])
    where = f"{os.path.basename(chart)} vs {' + '.join(os.path.basename(p) for p in kustomized)}"
    for key in sorted(set(want) | set(got), key=str):
        name = "/".join(str(k) for k in key[1:])
        if key not in got:
            err(where, f"{name} is in k8s/ but not rendered by the chart")
        elif key not in want:
            err(where, f"{name} is rendered by the chart but not in k8s/")
        else:
            for d in differences(want[key], got[key]):
                err(where, f"{name} {d}")


def only_config_changes(before, after):
    def index(p):
        return {(d.get("kind"), d["metadata"].get("name")): d for d in load_docs(p)}

    a, b = index(before), index(after)
    where = f"{os.path.basename(before)} -> {os.path.basename(after)}"
    if set(a) != set(b):
        err(where, f"objects differ: {sorted(set(a) ^ set(b), key=str)}")
    changed = [k for k in set(a) & set(b) if a[k] != b[k]]
    for kind, name in changed:
        if kind != "ConfigMap":
            err(where, f"{kind} {name} changes: `helm upgrade` of the active cluster would roll pods")
    if not any(kind == "ConfigMap" for kind, _ in changed):
        err(where, "no ConfigMap changes")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dockerfile")
    d.add_argument("path")
    m = sub.add_parser("manifests")
    m.add_argument("--bin", required=True)
    m.add_argument("--secret", required=True, action="append", help="an example Secret (repeatable)")
    m.add_argument("--cmd-config", default="/etc/kafka-sidecar/config.yaml")
    m.add_argument("--runbook", help="README whose failover command uses SWITCH_FILTER (needs jq)")
    m.add_argument("rendered", nargs="+")
    r = sub.add_parser("reference")
    r.add_argument("--bin", required=True)
    r.add_argument("path")
    s = sub.add_parser("same-objects")
    s.add_argument("--namespace", required=True)
    s.add_argument("chart")
    s.add_argument("kustomized", nargs="+")
    o = sub.add_parser("only-config-changes")
    o.add_argument("before")
    o.add_argument("after")
    a = ap.parse_args()

    if a.cmd == "dockerfile":
        build = check_dockerfile(a.path)
        if build and not ERRORS:
            print(build)
    elif a.cmd == "manifests":
        secrets = {}
        for path in a.secret:
            docs = [s for s in load_docs(path) if s.get("kind") == "Secret"]
            if len(docs) != 1:
                err(path, "expected exactly one Secret")
            else:
                secrets[docs[0]["metadata"]["name"]] = docs[0]
        if not ERRORS:
            if a.runbook and SWITCH_FILTER not in open(a.runbook, encoding="utf-8").read():
                err(a.runbook, f"the failover command no longer uses the checked jq filter {SWITCH_FILTER}")
            for path in a.rendered:
                check_rendered(path, a.bin, secrets, a.cmd_config, a.runbook)
    elif a.cmd == "only-config-changes":
        only_config_changes(a.before, a.after)
    elif a.cmd == "same-objects":
        same_objects(a.namespace, a.chart, a.kustomized)
    else:
        check_reference(a.bin, a.path)

    if ERRORS:
        for e in ERRORS:
            print(f"validate-k8s: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
