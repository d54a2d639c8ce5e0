#!/usr/bin/env python3
"""Checks deploy/monitoring: the alerting rules (with promtool when it is on
PATH, and structurally in any case: every rule has alert, expr, labels.severity
and a summary, and names only metrics tokenvault exports) and the Grafana
dashboard JSON (the fields Grafana's dashboard schema requires, unique panel
ids, a Prometheus target in each panel, no overlapping panels).

    python3 deploy/monitoring/check.py    # exit 1 on any failure
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"
fails = []


def exported_metrics():
    names = set()
    for path in SRC.rglob("*.rs"):
        names.update(re.findall(r'"(tokenvault_[a-z_]+)"', path.read_text()))
    return names


def metrics_in(expr):
    return set(re.findall(r"\b(tokenvault_[a-z_]+)", expr))


def check_rules(path, known):
    if shutil.which("promtool"):
        run = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
        if run.returncode != 0:
            fails.append("%s: promtool: %s" % (path.name, (run.stdout + run.stderr).strip()))
        else:
            print("ok    %s (promtool check rules)" % path.name)
    else:
        fails.append("%s: promtool is not on PATH (tests/setup-machine.sh installs Debian's prometheus package, which has it)" % path.name)
    doc = yaml.safe_load(path.read_text())
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert", "?")
            for key in ("alert", "expr"):
                if key not in rule:
                    fails.append("%s: rule %s has no %s" % (path.name, name, key))
            if "severity" not in rule.get("labels", {}):
                fails.append("%s: rule %s has no severity" % (path.name, name))
            if "summary" not in rule.get("annotations", {}):
                fails.append("%s: rule %s has no summary" % (path.name, name))
            unknown = metrics_in(rule.get("expr", "")) - known
            if unknown:
                fails.append("%s: rule %s names metrics tokenvault does not export: %s" % (path.name, name, sorted(unknown)))
    print("ok    %s (structure, metric names)" % path.name if not fails else "FAIL  %s" % path.name)


def check_dashboard(path, known):
    before = len(fails)
    d = json.loads(path.read_text())
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(d.get(key), kind):
            fails.append("%s: %s missing or not %s" % (path.name, key, kind.__name__))
    ids = [p.get("id") for p in d.get("panels", [])]
    if len(ids) != len(set(ids)) or None in ids:
        fails.append("%s: panel ids missing or repeated" % path.name)
    cells = set()
    for p in d.get("panels", []):
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")) or g["x"] + g["w"] > 24:
            fails.append("%s: panel %s has a bad gridPos" % (path.name, p.get("title")))
            continue
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    fails.append("%s: panel %s overlaps another" % (path.name, p.get("title")))
                cells.add((x, y))
        targets = p.get("targets", [])
        if not targets or any("expr" not in t or "refId" not in t for t in targets):
            fails.append("%s: panel %s has no Prometheus target" % (path.name, p.get("title")))
        for t in targets:
            unknown = metrics_in(t.get("expr", "")) - known
            if unknown:
                fails.append("%s: panel %s names unknown metrics %s" % (path.name, p.get("title"), sorted(unknown)))
    print(("ok    %s (dashboard fields, panels, metric names)" if len(fails) == before else "FAIL  %s") % path.name)


known = exported_metrics()
check_rules(HERE / "tokenvault-rules.yaml", known)
check_dashboard(HERE / "tokenvault-dashboard.json", known)
for f in fails:
    print("FAIL  " + f)
sys.exit(1 if fails else 0)
