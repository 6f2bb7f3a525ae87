"""Keeps k8s/monitoring/ consistent, and prepares its PromQL for promtool.

Usage (python3 with PyYAML; validate.sh uses its venv):
  monitoring.py sync                      rewrite monitoring/prometheusrule.yaml from the rules file
  monitoring.py check --dashboard-rules OUT

`check` (run by validate.sh, which then runs promtool) fails when:

- the PrometheusRule's spec.groups differ from rules/gpuq.rules.yaml (run `sync`);
- an alert has no promtool test in which it fires, or none in which it stays silent;
- the dashboard is not well-formed: not JSON, no datasource variable, a panel that does not
  use it, a duplicate panel id, a panel without a query, an unknown template variable;
- a rule or a panel names a gpuq metric that monitoring/metrics.txt does not list, a recording
  rule that the rules file does not define, or a label those series do not have. PromQL with
  a misspelt name still parses; it only returns nothing.

It writes every dashboard query, with Grafana's variables substituted, as a recording rule to
OUT, so that `promtool check rules OUT` parses each one (there is no other PromQL parser in
Debian). Exits 1 on any failure, 2 on a usage error.
"""

import argparse
import json
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
MONITORING = os.path.join(os.path.dirname(HERE), "monitoring")
RULES = os.path.join(MONITORING, "rules", "gpuq.rules.yaml")
RULE_TESTS = os.path.join(MONITORING, "rules", "gpuq.rules.test.yaml")
PROMETHEUS_RULE = os.path.join(MONITORING, "prometheusrule.yaml")
DASHBOARD = os.path.join(MONITORING, "grafana", "gpuq-dashboard.json")
METRICS = os.path.join(MONITORING, "metrics.txt")

# Labels Prometheus (through a ServiceMonitor or PodMonitor) attaches to every scraped series.
TARGET_LABELS = {"namespace", "pod", "instance", "job", "container", "endpoint", "service"}
# Grafana's interval variables, replaced by a fixed duration for parsing.
INTERVAL_VARIABLES = {"__rate_interval", "__interval", "__range"}

PROMETHEUS_RULE_HEAD = """\
# GENERATED from rules/gpuq.rules.yaml by `python3 k8s/tools/monitoring.py sync`: edit that
# file, then run the tool. validate.sh and `cargo test -p k8s` fail when spec.groups differs
# from it. The Prometheus Operator selects PrometheusRules by label (its ruleSelector); with
# kube-prometheus-stack add its `release` label, see k8s/README.md.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: gpuq
  labels:
    app.kubernetes.io/name: gpuq
    app.kubernetes.io/component: monitoring
spec:
"""


def rel(path):
    return os.path.relpath(path, os.path.dirname(HERE))


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


# --- the PrometheusRule --------------------------------------------------------------------


def render_prometheus_rule():
    """The PrometheusRule: the rules file from its `groups:` line on, indented under spec."""
    with open(RULES) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines[start:])
    return PROMETHEUS_RULE_HEAD + body


def first_difference(a, b, path="spec.groups"):
    """The path of the first difference between two YAML values, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}.{key}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None if len(a) == len(b) else f"{path} (length {len(a)} vs {len(b)})"
    return None if a == b else path


def check_rule_sync(errors):
    rule = load_yaml(PROMETHEUS_RULE)
    groups = (rule.get("spec") or {}).get("groups")
    diff = first_difference(groups, load_yaml(RULES).get("groups"))
    if diff:
        errors.append(
            f"{rel(PROMETHEUS_RULE)}: {diff} differs from {rel(RULES)}; "
            "run `python3 k8s/tools/monitoring.py sync`"
        )


# --- the promtool tests --------------------------------------------------------------------


def check_alert_tests(rules, errors):
    tests = load_yaml(RULE_TESTS)
    files = [os.path.normpath(os.path.join(os.path.dirname(RULE_TESTS), f)) for f in tests.get("rule_files", [])]
    if os.path.normpath(RULES) not in files:
        errors.append(f"{rel(RULE_TESTS)}: rule_files does not load {rel(RULES)}")
    firing, silent = set(), set()
    for group in tests.get("tests", []):
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case.get("alertname"))
    alerts = sorted({r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r})
    for alert in alerts:
        if alert not in firing:
            errors.append(f"{rel(RULE_TESTS)}: no test in which {alert} fires")
        if alert not in silent:
            errors.append(f"{rel(RULE_TESTS)}: no test in which {alert} stays silent")
    for name in sorted((firing | silent) - set(alerts)):
        errors.append(f"{rel(RULE_TESTS)}: tests an alert the rules do not define: {name}")
    return alerts


# --- metric and label names ----------------------------------------------------------------


def load_metrics():
    """Maps every stored series name to the labels it may carry."""
    series = {}
    with open(METRICS) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            name, kind, labels = line[0], line[1], set(line[2:]) | TARGET_LABELS
            if kind == "counter":
                series[f"{name}_total"] = labels
            elif kind == "histogram":
                series[f"{name}_bucket"] = labels | {"le"}
                series[f"{name}_sum"] = labels
                series[f"{name}_count"] = labels
            elif kind == "gauge":
                series[name] = labels
            else:
                raise SystemExit(f"{rel(METRICS)}: {name}: unknown type {kind}")
    return series


STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
NAME = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)")
MATCHERS = re.compile(r"\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def check_names(where, expr, series, records, errors):
    """Checks the gpuq series, recording rules and labels an expression names."""
    code = STRING.sub('""', expr)
    allowed = set(TARGET_LABELS)
    for name in NAME.findall(MATCHERS.sub("{}", code)):
        if name.startswith("gpuq_"):
            if name not in series:
                errors.append(f"{where}: unknown metric {name} (not in {rel(METRICS)})")
                continue
            allowed |= series[name]
        elif ":" in name:
            if name not in records:
                errors.append(f"{where}: unknown recording rule {name}")
                continue
            allowed |= records[name]
    labels = [label for block in MATCHERS.findall(code) for label in MATCHER_LABEL.findall(block)]
    for group in GROUPING.findall(code):
        labels += [label.strip() for label in group.split(",") if label.strip()]
    for label in labels:
        if label not in allowed and label != "__name__":
            errors.append(f"{where}: label {label} is on none of the series it selects")


def recording_rules(rules, series):
    """Maps every recording rule to the labels of its output: those of the series it reads."""
    records = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" not in rule:
                continue
            code = STRING.sub('""', str(rule["expr"]))
            labels = set()
            for name in NAME.findall(MATCHERS.sub("{}", code)):
                labels |= series.get(name, set()) | records.get(name, set())
            records[rule["record"]] = labels
    return records


# --- the dashboard -------------------------------------------------------------------------


def panels_of(dashboard):
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(where, expr, variables, errors):
    def value(match):
        name = next(g for g in match.groups() if g)
        if name in INTERVAL_VARIABLES:
            return "5m"
        if name not in variables:
            errors.append(f"{where}: unknown template variable ${name}")
            return "x"
        return variables[name]

    return VARIABLE.sub(value, expr)


def check_dashboard(series, records, errors):
    """Checks the dashboard; returns [(record name, expression)] for promtool."""
    try:
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
    except ValueError as e:
        errors.append(f"{rel(DASHBOARD)}: not JSON: {e}")
        return []
    for key in ("uid", "title", "panels", "templating"):
        if key not in dashboard:
            errors.append(f"{rel(DASHBOARD)}: no {key}")
    variables, datasource_vars = {}, []
    for var in dashboard.get("templating", {}).get("list", []):
        name = var.get("name")
        if var.get("type") == "datasource":
            if var.get("query") != "prometheus":
                errors.append(f"{rel(DASHBOARD)}: datasource variable ${name} is not of type prometheus")
            datasource_vars.append(name)
        current = (var.get("current") or {}).get("value")
        variables[name] = current if isinstance(current, str) and current else "gpuq"
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        inner = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query or "")
        if var.get("type") == "query" and inner:
            where = f"{rel(DASHBOARD)}: variable ${name}"
            check_names(where, f"sum by ({inner.group(2)}) ({inner.group(1)})", series, records, errors)
    if len(datasource_vars) != 1:
        errors.append(f"{rel(DASHBOARD)}: needs exactly one datasource variable, has {len(datasource_vars)}")
        return []
    uid = f"${{{datasource_vars[0]}}}"
    for var in dashboard["templating"]["list"]:
        if var.get("type") == "query" and (var.get("datasource") or {}).get("uid") != uid:
            errors.append(f"{rel(DASHBOARD)}: variable ${var.get('name')}: datasource is not {uid}")

    exprs, ids = [], set()
    for panel in panels_of(dashboard):
        pid = panel.get("id")
        where = f"{rel(DASHBOARD)}: panel {pid} ({panel.get('title', '?')!r})"
        if pid in ids or not isinstance(pid, int):
            errors.append(f"{where}: missing or duplicate id")
        ids.add(pid)
        if "gridPos" not in panel:
            errors.append(f"{where}: no gridPos")
        if panel.get("type") == "row":
            continue
        if (panel.get("datasource") or {}).get("uid") != uid:
            errors.append(f"{where}: datasource is not {uid}")
        targets = panel.get("targets") or []
        if not targets:
            errors.append(f"{where}: no query")
        for target in targets:
            ref = target.get("refId", "?")
            if "datasource" in target and target["datasource"].get("uid") != uid:
                errors.append(f"{where} query {ref}: datasource is not {uid}")
            expr = (target.get("expr") or "").strip()
            if not expr:
                errors.append(f"{where} query {ref}: empty expression")
                continue
            expr = substitute(f"{where} query {ref}", expr, variables, errors)
            check_names(f"{where} query {ref}", expr, series, records, errors)
            exprs.append((f"dashboard:panel_{pid}_{ref}", expr))
    return exprs


def write_dashboard_rules(path, exprs):
    """A rules file with one recording rule per query; its names say which panel it is."""
    doc = {"groups": [{"name": "gpuq-dashboard", "rules": [{"record": r, "expr": e} for r, e in exprs]}]}
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False, width=1000)


# --- commands ------------------------------------------------------------------------------


def check(dashboard_rules):
    errors = []
    rules = load_yaml(RULES)
    series = load_metrics()
    records = recording_rules(rules, series)
    check_rule_sync(errors)
    alerts = check_alert_tests(rules, errors)
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule.get("alert")
            check_names(f"{rel(RULES)}: {name}", str(rule["expr"]), series, records, errors)
    exprs = check_dashboard(series, records, errors)
    write_dashboard_rules(dashboard_rules, exprs)
    for message in errors:
        print(f"FAIL {message}")
    if errors:
        print(f"FAIL monitoring rules and dashboard: {len(errors)} problems")
        return 1
    print(
        f"ok   monitoring rules and dashboard: PrometheusRule = {rel(RULES)}, {len(alerts)} "
        f"alerts tested firing and silent, {len(exprs)} dashboard queries, metric and label "
        f"names as in {rel(METRICS)}"
    )
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="rewrite monitoring/prometheusrule.yaml from the rules file")
    check_parser = sub.add_parser("check", help="check monitoring/ and write the dashboard's queries")
    check_parser.add_argument("--dashboard-rules", required=True, metavar="OUT")
    args = parser.parse_args()
    if args.command == "sync":
        with open(PROMETHEUS_RULE, "w") as f:
            f.write(render_prometheus_rule())
        print(f"wrote {rel(PROMETHEUS_RULE)}")
        return 0
    return check(args.dashboard_rules)


if __name__ == "__main__":
    sys.exit(main())
