"""The ``sinks:`` section: every mistake reported at once, with its field path, before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import ConfigError, parse_config
from collector.sinks import AlertSinks
from tests.conftest import DEMO_CONFIG


def with_sinks(sinks: list[Any], **extra: Any) -> dict[str, Any]:
    doc = yaml.safe_load(DEMO_CONFIG.read_text())
    doc["sinks"] = sinks
    doc.update(extra)
    return doc


def test_every_sink_problem_in_one_pass(tmp_path: Path) -> None:
    doc = with_sinks(
        [
            {"kind": "syslog", "name": "a", "port": 99999, "min_severity": "severe"},
            {"kind": "smtp", "name": "b"},
            {"kind": "webhook", "name": "a", "url": "ftp://soc", "severities": ["warning", "nope"]},
            {"kind": "webhook", "name": "c"},
            {"kind": "syslog", "name": "d", "transport": "udp", "tls": {"verify": False}},
            {"kind": "webhook", "name": "e", "url": "http://127.0.0.1/", "token": {"env": "PLANTWATCH_NO_SUCH_VAR"}},
            {"kind": "syslog", "name": "f", "min_severity": "warning", "severities": ["critical"]},
        ]
    )
    with pytest.raises(ConfigError) as err:
        parse_config(doc, tmp_path)
    problems = dict(err.value.problems)
    assert problems["sinks[0].port"] == "Input should be less than 65536"
    assert problems["sinks[0].min_severity"].startswith("unknown severity 'severe'; alerting defines warning, critical")
    assert problems["sinks[1].kind"] == "must be one of syslog, webhook"
    assert problems["sinks[2].url"] == "must start with http:// or https://"
    assert problems["sinks[2].name"] == "duplicate sink name 'a'"
    assert problems["sinks[2].severities[1]"].startswith("unknown severity 'nope'")
    assert problems["sinks[3].url"] == "required"
    assert problems["sinks[4]"] == "tls options need transport: tls"
    assert problems["sinks[5].token"] == "environment variable PLANTWATCH_NO_SUCH_VAR is not set"
    assert problems["sinks[6]"] == "give min_severity or severities, not both"


def test_severities_follow_the_alerting_section(tmp_path: Path) -> None:
    severities = [
        {"name": "advisory", "threshold": 0.4},
        {"name": "alarm", "threshold": 0.6},
        {"name": "trip", "threshold": 0.9},
    ]
    doc = with_sinks(
        [
            {"kind": "syslog", "name": "s", "min_severity": "alarm"},
            {"kind": "webhook", "name": "w", "url": "http://127.0.0.1:9/", "token": {"file": "token"}},
        ],
        alerting={"severities": severities},
    )
    (tmp_path / "token").write_text("from-a-file\n")
    doc["state_dir"] = str(tmp_path / "state")
    doc["sources"][0]["path"] = str(DEMO_CONFIG.parent / doc["sources"][0]["path"])
    cfg = parse_config(doc, tmp_path)
    sinks = AlertSinks.from_config(cfg)
    syslog, webhook = sinks.sinks
    assert syslog.forwarded == {"alarm", "trip"} and webhook.forwarded == {"advisory", "alarm", "trip"}
    assert cfg.sinks[1].token.get_secret_value() == "from-a-file"  # type: ignore[union-attr]
    assert (tmp_path / "state" / "sinks").is_dir()  # the webhook's spool
    stamped = sinks.stamp({"seq": 1, "tag": "TK101.LEVEL", "written": 1.0, "event": "firing"})
    assert stamped == {"seq": 1, "tag": "TK101.LEVEL", "event": "firing", "site": "demo-tank-farm",
                       "description": "crude storage tank level"}  # fmt: skip
    sinks.stop(0.1)
