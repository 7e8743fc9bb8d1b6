"""The dashboards are valid for the Grafana schema they declare, and provision the way the README says.

The schema is Grafana's own: the ``Dashboard`` type of ``@grafana/schema``
(installed with the TypeScript compiler by scripts/test.sh), checked by ``tsc
--strict`` with excess-property checks, so a misspelt key fails as surely as a
wrong type. ``schemaVersion`` must equal the one that package's default
dashboard carries.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.dashboards.shipped import DASHBOARD_FILES, GRAFANA, load, panels, queries, variable_queries

NPM = ROOT / ".venv" / "grafana-schema" / "node_modules"
TSC = NPM / ".bin" / "tsc"
SCHEMA = NPM / "@grafana" / "schema"
TYPES = Path(__file__).with_name("dashboard_types.ts")
EXPECTED = {"site-overview.json", "tag-drilldown.json", "source-health.json", "exercise-view.json"}


def schema_version() -> int:
    """The schemaVersion of @grafana/schema's default dashboard: what this package validates."""
    if not SCHEMA.is_dir() or not TSC.exists():
        pytest.fail(f"{NPM} lacks @grafana/schema or typescript: run scripts/test.sh (it installs them with npm)")
    text = (SCHEMA / "dist" / "esm" / "raw" / "dashboard" / "x" / "types.gen.mjs").read_text()
    match = re.search(r"schemaVersion:\s*(\d+)", text)
    assert match, "no schemaVersion in @grafana/schema's default dashboard"
    return int(match.group(1))


def tsc_check(tmp_path: Path, documents: list[dict]) -> subprocess.CompletedProcess[str]:
    source = TYPES.read_text()
    for i, document in enumerate(documents):
        source += f"\nexport const dashboard{i}: Checked = {json.dumps(document, indent=1)};\n"
    (tmp_path / "check.ts").write_text(source)
    config = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "module": "commonjs",
            "moduleResolution": "node",
            "target": "es2020",
            "skipLibCheck": True,
            "types": [],
            "baseUrl": ".",
            "paths": {"@grafana/schema": [str(SCHEMA)]},
        },
        "files": ["check.ts"],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    return subprocess.run(
        [str(TSC), "-p", str(tmp_path / "tsconfig.json")], capture_output=True, text=True, timeout=120
    )


def test_the_four_dashboards_ship() -> None:
    assert {p.name for p in DASHBOARD_FILES} == EXPECTED
    uids = [load(p)["uid"] for p in DASHBOARD_FILES]
    assert len(set(uids)) == len(uids)


def test_dashboards_type_check_against_grafana_schema(tmp_path: Path) -> None:
    version = schema_version()
    documents = [load(p) for p in DASHBOARD_FILES]
    for path, document in zip(DASHBOARD_FILES, documents, strict=True):
        assert document["schemaVersion"] == version, f"{path.name} declares {document['schemaVersion']}"
    result = tsc_check(tmp_path, documents)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_dashboard(tmp_path: Path) -> None:
    """The check bites: a misspelt panel key and a mapping of an unknown type both fail."""
    broken = load(GRAFANA / "tag-drilldown.json")
    broken["panels"][0]["gridpos"] = broken["panels"][0].pop("gridPos")
    broken["panels"][1]["fieldConfig"]["defaults"]["mappings"][0]["type"] = "values"
    result = tsc_check(tmp_path, [broken])
    assert result.returncode != 0
    assert "gridpos" in result.stdout and "values" in result.stdout


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    for path in DASHBOARD_FILES:
        ids = [p["id"] for p in panels(load(path))]
        assert len(ids) == len(set(ids)), path.name
        for panel in panels(load(path)):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, f"{path.name}: {panel['title']}"
            assert panel.get("description"), f"{path.name}: {panel['title']} tells the operator nothing"


def test_site_and_plant_variables_and_no_hard_coded_tags() -> None:
    tag_names = set()
    for config in (ROOT / "config").glob("*.yaml"):
        doc = yaml.safe_load(config.read_text())
        tag_names |= {t["name"] for s in doc.get("sources", []) for t in s.get("tags", [])}
    assert len(tag_names) > 20
    for path in DASHBOARD_FILES:
        names = [name for name, _ in variable_queries(path)]
        assert names[:2] == ["site", "plant"], path.name
        text = path.read_text()
        assert not [t for t in tag_names if f'"{t}' in text or f"={t}" in text or f'\\"{t}\\"' in text], path.name
        for query in queries(path):
            assert 'site=~"$site"' in query.expr or "ALERTS" in query.expr or "up{" in query.expr, query
            assert "$plant" in query.expr, query


def test_provisioning_points_at_the_dashboards_and_the_datasource_they_default_to() -> None:
    provisioning = GRAFANA / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "plantwatch.yaml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    providers = yaml.safe_load((provisioning / "dashboards" / "plantwatch.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["folder"] == "plantwatch" and provider["options"]["path"]
    for path in DASHBOARD_FILES:
        (variable,) = [v for v in load(path)["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] == "prometheus"
        assert variable["current"]["value"] == source["uid"], path.name
