"""Status codes are a signal of their own: a tag whose reads keep failing raises a ``quality`` alert.

Through the pipeline the daemon and replay share: a device answering every other poll of one tag
with an exception (status BAD, no value, as the Modbus receiver delivers it) keeps ``stale`` quiet,
since a good value still comes every two seconds, yet half of what the operators see of that tag
is unusable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from collector.alerts import Transition
from collector.config import load_config
from collector.pipeline import Pipeline
from collector.samples import Quality, SampleBatch
from tests.conftest import demo_config

T0 = 1_800_000_000.0


def play(tmp_path: Path, ticks: int, failing: int) -> tuple[list[Transition], list[str]]:
    """``ticks`` one-second ticks of every tag; tag ``failing`` answers BAD without a value every other tick."""
    cfg = load_config(demo_config(tmp_path)[0])
    n = len(cfg.tags)
    pipeline = Pipeline(cfg, live_sources=[False])
    rng = np.random.default_rng(3)
    mid = np.array([(t.range[0] + t.range[1]) / 2 if t.range else 1.0 for t in cfg.tags])
    transitions: list[Transition] = []
    for i in range(ticks):
        ts = T0 + i
        value = mid + 0.01 * rng.standard_normal(n)
        quality = np.full(n, Quality.GOOD, dtype=np.uint8)
        if i >= 100 and i % 2:
            value[failing] = np.nan
            quality[failing] = Quality.BAD
        batch = SampleBatch(
            source=0,
            tag=np.arange(n, dtype=np.int32),
            value=value,
            ts=np.full(n, ts + 0.5),
            recv_ts=np.full(n, ts + 0.6),
            quality=quality,
            watermark=ts + 1.0,
        )
        pipeline.feed(batch)
        result = pipeline.advance(ts + 1.0)
        if result is not None:
            transitions += result.transitions
    return transitions, [t.name for t in cfg.tags]


def test_a_tag_failing_every_other_read_raises_a_quality_alert_with_its_share(tmp_path: Path) -> None:
    transitions, names = play(tmp_path, ticks=400, failing=0)
    fired = [t for t in transitions if t.event == "firing"]
    quality = [t for t in fired if t.detector == "quality"]
    assert [t.tag for t in quality] == [names[0]], fired
    assert quality[0].reason is not None and "arrived not good" in quality[0].reason
    assert 100 < quality[0].ts - T0 < 200, "within a window of samples after the reads start failing"
    assert not [t for t in fired if t.detector == "stale"], "a good value still comes every other second"
