"""The shipped dashboards/ files as the tests read them: dashboards, their PromQL, the rules, the names used.

One place knows how a Grafana dashboard holds its queries (panel targets, annotation
``expr``, query variables), so every test walks the same expressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

DASHBOARDS = ROOT / "dashboards"
GRAFANA = DASHBOARDS / "grafana"
PROMETHEUS = DASHBOARDS / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))
ALERTMANAGER = DASHBOARDS / "alertmanager" / "alertmanager.yml"
DASHBOARD_FILES = sorted(GRAFANA.glob("*.json"))

# Grafana's own interval macros, given the values Grafana would pick for a short range.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# PromQL words that are not metric names (functions, aggregations, keywords, label names after by/without).
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR_BODY = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it lives, for messages a reader can act on."""

    dashboard: str
    where: str
    expr: str


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels folded inside a row


def queries(path: Path) -> Iterator[Query]:
    """Every PromQL expression of a dashboard: panel targets and annotations (variables separately)."""
    dashboard = load(path)
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield Query(path.name, f"panel {panel['title']!r} target {target['refId']}", target["expr"])
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield Query(path.name, f"annotation {annotation['name']!r}", annotation["expr"])


def variable_queries(path: Path) -> Iterator[tuple[str, str]]:
    """(name, label_values(...) query) of each query variable, in dashboard order (later ones use earlier)."""
    for variable in load(path).get("templating", {}).get("list", []):
        if variable["type"] == "query":
            query = variable["query"]
            yield variable["name"], query["query"] if isinstance(query, dict) else query


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's interpolation, enough for the shipped dashboards: macros first, then variables."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names (and recording rule names) a PromQL expression reads.

    Strings, label matchers, range selectors and by/on clauses are cut first;
    what is left and followed by ``(`` is a function or an aggregation.
    """
    text = _STRING.sub('""', expr)
    text = _SELECTOR_BODY.sub("{}", text)
    text = _RANGE.sub("", text)
    text = _CLAUSE.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word in _KEYWORDS or re.fullmatch(r"\d.*", word):
            continue
        names.add(word)
    return names


_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}


def rule_groups() -> list[dict[str, Any]]:
    return [group for path in RULES for group in yaml.safe_load(path.read_text())["groups"]]


def recording_rule_names() -> set[str]:
    return {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


def rule_expressions() -> list[tuple[str, str]]:
    return [(rule.get("record") or rule["alert"], rule["expr"]) for group in rule_groups() for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule]
