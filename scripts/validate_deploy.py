#!/usr/bin/env python3
"""Validates deploy/ offline: every Kubernetes manifest against the Kubernetes schemas (kubernetes-validate
--strict), the kustomizations rendered by `kubectl kustomize` when kubectl is present, the Prometheus Operator
resources and alert rules structurally (no schema is available offline), and the Grafana dashboard's queries
against the metric names the proxy exports (src/metrics.rs)."""
import json
import pathlib
import re
import shutil
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
problems = []


def validate(path):
    r = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"{path}: {r.stdout}{r.stderr}".strip())


manifests = [p for p in DEPLOY.glob("kubernetes/**/*.yaml") if p.name != "kustomization.yaml"]
for p in manifests:
    validate(p)

kubectl = shutil.which("kubectl")
for k in DEPLOY.glob("kubernetes/*/kustomization.yaml"):
    if not kubectl:
        break
    r = subprocess.run([kubectl, "kustomize", str(k.parent)], capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"kubectl kustomize {k.parent}: {r.stderr}")
        continue
    rendered = ROOT / "target" / f"kustomize-{k.parent.name}.yaml"
    rendered.parent.mkdir(parents=True, exist_ok=True)
    rendered.write_text(r.stdout)
    validate(rendered)

# The metric names the proxy exports.
exported = set(re.findall(r'pub const \w+: &str = "(s3crypt_[a-z_]+)";', (ROOT / "src" / "metrics.rs").read_text()))
series = exported | {f"{m}_{s}" for m in exported for s in ("bucket", "count", "sum")}


def check_expr(where, expr):
    for name in re.findall(r"\b(s3crypt_[a-z_]+)", expr):
        if name not in series:
            problems.append(f"{where}: unknown metric {name}")


rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
for g in rules["groups"]:
    for r in g["rules"]:
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in r:
                problems.append(f"alerts.yaml {r.get('alert')}: no {key}")
        check_expr(f"alerts.yaml {r.get('alert')}", r.get("expr", ""))
crd = yaml.safe_load((DEPLOY / "kubernetes" / "gateway" / "prometheusrule.yaml").read_text())
if crd["spec"] != rules:
    problems.append("prometheusrule.yaml differs from deploy/prometheus/alerts.yaml")
sm = yaml.safe_load((DEPLOY / "kubernetes" / "gateway" / "servicemonitor.yaml").read_text())
if sm["kind"] != "ServiceMonitor" or not sm["spec"]["selector"]["matchLabels"] or not sm["spec"]["endpoints"]:
    problems.append("servicemonitor.yaml: selector and endpoints required")

dash = json.loads((DEPLOY / "grafana" / "s3crypt-dashboard.json").read_text())
for panel in dash["panels"]:
    for t in panel.get("targets", []):
        check_expr(f"dashboard panel {panel['title']!r}", t["expr"])

if problems:
    print("deploy/ does not validate:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"deploy/ validates: {len(manifests)} manifests (strict){', 2 kustomizations rendered' if kubectl else ''}, "
      f"{sum(len(g['rules']) for g in rules['groups'])} alert rules, {len(dash['panels'])} dashboard panels")
