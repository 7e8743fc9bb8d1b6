"""The config file as an engineer meets it: through ``plantwatch check-config`` and ``load_config``.

Most cases are folders under ``configcases/`` (one ``config.yaml`` each) so that a
new case is a new folder, not new code:

- ``expected_errors.txt``: one ``path: reason`` fragment per line. The command must
  exit 2, every fragment must appear in its stderr, and every problem it reports
  must be matched by some fragment (no spurious or duplicated errors).
- ``expected_summary.txt``: fragments that must appear in stdout; exit code 0.
- ``env.txt`` (optional): ``NAME=value`` lines exported for the run. Every
  ``PLANTWATCH_TEST_*`` variable of the test's own environment is removed first.
- ``forbidden.txt`` (optional): strings (secrets) that must appear in no output.

The command runs from a scratch folder, so a relative path that resolved against
the working directory instead of the config file's folder would fail the case.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from collector.config import ConfigError, PlantConfig, load_config
from collector.detection import detector_params
from detectors import DETECTORS

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "configcases"
RECORDING = ROOT / "config" / "recordings" / "demo_tank_farm.csv"
TEST_ENV_PREFIX = "PLANTWATCH_TEST_"


def _case_dirs() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if p.is_dir())


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _case_env(case: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(TEST_ENV_PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for line in _lines(case / "env.txt"):
        name, _, value = line.partition("=")
        env[name.strip()] = value
    return env


def check_config(config: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``plantwatch check-config`` exactly as a user runs it, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "collector", "check-config", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- the case folders --------------------------------------------------------------------------


def test_case_folders_are_well_formed() -> None:
    cases = _case_dirs()
    for case in cases:
        assert (case / "config.yaml").is_file(), f"{case.name}: no config.yaml"
        kinds = [(case / name).is_file() for name in ("expected_errors.txt", "expected_summary.txt")]
        assert sum(kinds) == 1, f"{case.name}: needs exactly one of expected_errors.txt, expected_summary.txt"
        expected = _lines(case / ("expected_errors.txt" if kinds[0] else "expected_summary.txt"))
        assert expected, f"{case.name}: the expected file is empty"
    assert sum((c / "expected_errors.txt").is_file() for c in cases) >= 15
    assert sum((c / "expected_summary.txt").is_file() for c in cases) >= 4


@pytest.mark.parametrize("case", _case_dirs(), ids=lambda p: p.name)
def test_check_config_case(case: Path, tmp_path: Path) -> None:
    result = check_config(case / "config.yaml", cwd=tmp_path, env=_case_env(case))
    output = result.stdout + result.stderr

    for secret in _lines(case / "forbidden.txt"):
        assert secret not in output, f"{secret!r} was printed"

    errors_file = case / "expected_errors.txt"
    if errors_file.is_file():
        expected = _lines(errors_file)
        assert result.returncode == 2, output
        assert "ok" not in result.stdout.split(), result.stdout
        missing = [fragment for fragment in expected if fragment not in result.stderr]
        assert not missing, f"not reported: {missing}\nstderr:\n{result.stderr}"
        problems = [line for line in result.stderr.splitlines() if line.startswith("  ")]
        unexpected = [p for p in problems if not any(fragment in p for fragment in expected)]
        assert not unexpected, f"reported but not expected: {unexpected}\nstderr:\n{result.stderr}"
        assert f": {len(problems)} error(s)" in result.stderr.splitlines()[0]
    else:
        assert result.returncode == 0, output
        missing = [fragment for fragment in _lines(case / "expected_summary.txt") if fragment not in result.stdout]
        assert not missing, f"not in the summary: {missing}\nstdout:\n{result.stdout}"


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nowhere.yaml", cwd=tmp_path, env=_case_env(tmp_path))
    assert result.returncode == 2
    assert "cannot read config: No such file or directory" in result.stderr


# -- load_config directly ----------------------------------------------------------------------


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _doc(tags: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    return {
        "site": "unit",
        "state_dir": "state",
        "sources": [{"name": "historian", "kind": "replay", "path": str(RECORDING), "tags": tags}],
        **sections,
    }


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plant = tmp_path / "etc" / "plantwatch"
    (plant / "recordings").mkdir(parents=True)
    shutil.copy(RECORDING, plant / "recordings" / "farm.csv")
    (plant / "secrets").mkdir()
    (plant / "secrets" / "scrape.txt").write_text("from-a-relative-file\n", encoding="utf-8")
    doc = _doc(
        [{"name": "TK101.LEVEL"}],
        exporter={"basic_auth": {"username": "u", "password": {"file": "secrets/scrape.txt"}}},
    )
    doc["state_dir"] = "../../var/state"
    doc["sources"][0]["path"] = "recordings/farm.csv"
    config = _write(plant / "plant.yaml", doc)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(os.path.relpath(config, elsewhere))

    assert cfg.state_dir == (tmp_path / "var" / "state").resolve()
    assert cfg.sources[0].path == (plant / "recordings" / "farm.csv").resolve()
    assert cfg.exporter.basic_auth is not None
    assert cfg.exporter.basic_auth.password.get_secret_value() == "from-a-relative-file"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    doc = _doc([{"name": "TK101.LEVEL"}])
    doc["state_dir"] = str(tmp_path / "abs-state")
    cfg = load_config(_write(tmp_path / "sub" / "plant.yaml", doc))
    assert cfg.state_dir == tmp_path / "abs-state"
    assert cfg.sources[0].path == RECORDING


def test_detector_settings_merge_defaults_then_overrides_in_order_then_the_tag(tmp_path: Path) -> None:
    tags = [
        {"name": "A1", "column": "TK101.LEVEL", "detectors": {"ewma": {"z_limit": 9}, "cusum": {"enabled": True}}},
        {"name": "A2", "column": "FT101.FLOW_IN"},
        {"name": "B1", "column": "FT102.FLOW_OUT", "detectors": {"ewma": {"warmup": 10}}},
        {"name": "C1", "column": "P101.SPEED"},
    ]
    detectors = {
        "defaults": {"ewma": {"alpha": 0.02, "z_limit": 6, "warmup": 60}},
        "overrides": [
            {"tags": ["A*"], "ewma": {"z_limit": 7, "alpha": 0.1}, "rate": {"max_rate": 0.5}},
            {"tags": ["A2", "B1"], "ewma": {"z_limit": 8}},
            {"tags": ["C1"], "cusum": {"enabled": True}, "ewma": {"enabled": False}},
        ],
    }
    cfg = load_config(_write(tmp_path / "plant.yaml", _doc(tags, detectors=detectors)))
    assert [t.name for t in cfg.tags] == ["A1", "A2", "B1", "C1"]

    ewma = detector_params(cfg, "ewma")
    np.testing.assert_array_equal(ewma["z_limit"], [9, 8, 8, 6])  # tag > later override > earlier > defaults
    np.testing.assert_array_equal(ewma["alpha"], [0.1, 0.1, 0.02, 0.02])
    np.testing.assert_array_equal(ewma["warmup"], [60, 60, 10, 60])
    np.testing.assert_array_equal(ewma["enabled"], [1, 1, 1, 0])
    np.testing.assert_array_equal(ewma["min_std"], [0, 0, 0, 0])

    rate = detector_params(cfg, "rate")
    np.testing.assert_array_equal(rate["max_rate"], [0.5, 0.5, np.nan, np.nan])  # unset = learned (NaN)

    cusum = detector_params(cfg, "cusum")  # off by default, on where a tag or an override says so
    np.testing.assert_array_equal(cusum["enabled"], [1, 0, 0, 1])


@pytest.mark.parametrize(
    ("settings", "key", "expected"),
    [
        # `alpha:` with nothing after it is YAML null: it must be refused, or mean "not set here".
        ({"alpha": None}, "alpha", 0.02),
        # pydantic reads "off" as False when it checks the block; the params must agree.
        ({"enabled": "off"}, "enabled", 0.0),
    ],
    ids=["null-alpha", "enabled-off-string"],
)
def test_a_tag_block_that_passes_validation_gives_usable_params(
    tmp_path: Path, settings: dict[str, Any], key: str, expected: float
) -> None:
    doc = _doc([{"name": "TK101.LEVEL", "detectors": {"ewma": settings}}])
    try:
        cfg = load_config(_write(tmp_path / "plant.yaml", doc))
    except ConfigError:
        return  # refusing the block is a fine answer too
    ewma = detector_params(cfg, "ewma")
    assert ewma[key][0] == expected
    assert all(math.isfinite(float(v[0])) for v in ewma.values())


def test_secrets_never_reach_repr_dumps_or_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTWATCH_TEST_UNIT_PASSWORD", "env-secret-4711")
    (tmp_path / "pw.txt").write_text("file-secret-0815\n", encoding="utf-8")
    secrets = ["env-secret-4711", "file-secret-0815"]
    for password, secret in zip([{"env": "PLANTWATCH_TEST_UNIT_PASSWORD"}, {"file": "pw.txt"}], secrets, strict=True):
        doc = _doc([{"name": "TK101.LEVEL"}], exporter={"basic_auth": {"username": "u", "password": password}})
        cfg = load_config(_write(tmp_path / "plant.yaml", doc))
        assert cfg.exporter.basic_auth is not None
        assert cfg.exporter.basic_auth.password.get_secret_value() == secret
        for text in (repr(cfg), str(cfg), repr(cfg.exporter), cfg.model_dump_json(), str(cfg.model_dump())):
            assert secret not in text

        # The secret resolved, but something else in the file is wrong: the error must not carry it.
        doc["colour"] = "blue"
        doc["exporter"]["listen"] = "nowhere"
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path / "plant.yaml", doc))
        for text in (str(caught.value), caught.value.render(), repr(caught.value.problems)):
            assert secret not in text


def test_secret_not_in_check_config_output(tmp_path: Path) -> None:
    doc = _doc([{"name": "TK101.LEVEL"}], exporter={"basic_auth": {"username": "u", "password": "inline-secret-42"}})
    doc["security"] = {"allow_inline_secrets": True}
    result = check_config(_write(tmp_path / "plant.yaml", doc), cwd=tmp_path, env=_case_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "inline-secret-42" not in result.stdout + result.stderr


def test_world_readable_private_key_is_refused_unless_allowed(tmp_path: Path) -> None:
    from sim_plant.servers.certs import make_tls_ca, make_tls_cert

    pair = make_tls_cert(tmp_path, "metrics", make_tls_ca(tmp_path))
    cert, key = pair.cert, pair.key
    doc = _doc([{"name": "TK101.LEVEL"}], exporter={"tls": {"cert_file": str(cert), "key_file": str(key)}})
    key.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path / "plant.yaml", doc))
    assert [path for path, _ in caught.value.problems] == ["exporter.tls.key_file"]
    assert "readable by other users" in caught.value.problems[0][1]

    doc["security"] = {"allow_world_readable_keys": True}
    assert load_config(_write(tmp_path / "plant.yaml", doc)).exporter.tls is not None
    del doc["security"]
    key.chmod(0o640)  # group-readable (the service's own group) is the normal install
    assert load_config(_write(tmp_path / "plant.yaml", doc)).exporter.tls is not None


def test_config_error_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    doc = _doc([{"name": "TK101.LEVEL", "range": [2, 1]}, {"name": "bad name"}])
    doc["exporter"] = {"listen": "127.0.0.1:0"}
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path / "plant.yaml", doc))
    paths = [path for path, _ in caught.value.problems]
    assert paths == ["exporter.listen", "sources[0].tags[0]", "sources[0].tags[1].name"]
    assert caught.value.file == tmp_path / "plant.yaml"


def test_load_config_returns_a_plant_config_with_tags_in_order() -> None:
    cfg = load_config(CASES / "good_full" / "config.yaml")
    assert isinstance(cfg, PlantConfig)
    assert [t.name for t in cfg.tags] == ["TK101.LEVEL", "P101.RUNNING", "PT101.PRESSURE", "FT101.FLOW_IN"]
    assert cfg.tag_sources() == [0, 0, 1, 1]
    assert (cfg.exporter.host, cfg.exporter.port) == ("::1", 9200)


def test_a_replay_builds_the_daemons_models_per_source(tmp_path: Path) -> None:
    """A replay reads every tag from one recording, yet the default one model per source must stay
    the daemon's: otherwise a baseline fitted from a recording, or a replayed exercise, would not be
    the model that runs live."""
    from collector.replay import replay_config

    cfg = load_config(CASES / "good_full" / "config.yaml")
    recording = tmp_path / "recording.csv"
    recording.write_text("ts\n")
    replayed = replay_config(cfg, recording)
    assert len(replayed.sources) == 1 and replayed.tag_sources() == [0, 0, 0, 0]
    for name in ("pca", "iforest"):
        groups = detector_params(replayed, name)["group"]
        assert groups.tolist() == detector_params(cfg, name)["group"].tolist()
        assert groups[0] == groups[1] != groups[2] == groups[3]


# -- the configs the project ships -------------------------------------------------------------


SHIPPED = sorted((ROOT / "config").glob("*.yaml"))


def test_the_project_ships_example_configs() -> None:
    assert SHIPPED, "no config/*.yaml found"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.tags
    for name in DETECTORS:
        for key, values in detector_params(cfg, name).items():
            assert values.shape == (len(cfg.tags),), (name, key)
