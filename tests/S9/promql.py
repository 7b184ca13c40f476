"""Metric names out of PromQL expressions (enough of PromQL for our rules and dashboards), and the
PromQL of the S9 rule and dashboard files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "S9" / "prometheus"
GRAFANA = REPO / "S9" / "grafana"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
             "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Every metric (or recorded series) an expression reads.

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{x=~"y|z"}[5m])) > 0.1 or up{job="t"} == 0'))
    ['a_bucket', 'up']
    """
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)          # strings (label values, regexes)
    s = re.sub(r"'(?:\\.|[^'\\])*'", "''", s)
    s = re.sub(r"\{[^}]*\}", "", s)                       # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)                      # ranges, $__rate_interval
    s = _GROUPING.sub("", s)                              # label lists
    s = re.sub(r"\$\w+", "", s)                           # Grafana variables outside brackets
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue                                      # a function call or a keyword
        if s[max(0, m.start() - 1)].isdigit() or re.fullmatch(r"[eE]\d*", word):
            continue                                      # 1e6, 5m inside numbers
        names.add(word)
    return names


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def recorded_names() -> set[str]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def dashboard_promql() -> list[tuple[str, str]]:
    """(where, expr) of every Prometheus query in the dashboards (panels and template variables)."""
    out = []
    for name, d in dashboards().items():
        for p in d["panels"]:
            if p.get("datasource", {}).get("type") != "prometheus":
                continue
            for t in p.get("targets", []):
                out.append((f"{name}: {p['title']}", t["expr"]))
        for v in d.get("templating", {}).get("list", []):
            if v.get("datasource", {}).get("type") == "prometheus":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
                out.append((f"{name}: ${v['name']}", m.group(1) if m else q))
    return out


def exposed_names(text: str) -> set[str]:
    """Every series name a ``/metrics`` page can carry, from its ``# TYPE`` lines."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "untyped": ("",)}
    names = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        base, kind = m.group(1), m.group(2)
        names.add(base)
        names.update(base + s for s in suffixes.get(kind, ("",)))
    return names
