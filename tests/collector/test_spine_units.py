"""The spine's parts through their public surface: queue, frames, alert machines, journal, snapshots."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from collector.alerts import FIRING, OK, PENDING, AlertBook
from collector.frames import FrameAssembler
from collector.journal import AlertJournal, read_journal
from collector.queue import SampleQueue
from collector.samples import Quality, Sample, SampleBatch
from collector.state import StateStore


def batch(source: int, tags: list[int], values: list[float], ts: list[float], watermark: float | None = None):
    n = len(tags)
    return SampleBatch(
        source,
        np.array(tags, dtype=np.int32),
        np.array(values, dtype=np.float64),
        np.array(ts, dtype=np.float64),
        np.zeros(n),
        np.full(n, Quality.GOOD, dtype=np.uint8),
        watermark=watermark,
    )


# -- queue -------------------------------------------------------------------------------------


def test_queue_drop_oldest_counts_what_it_gives_up() -> None:
    q = SampleQueue(capacity=10, overflow="drop_oldest")
    for i in range(4):
        q.put_nowait(batch(0, [0, 1, 2], [i, i, i], [i, i, i]))
    assert q.depth == 9 and q.dropped == 3
    kept = q.drain()
    assert [float(b.value[0]) for b in kept] == [1.0, 2.0, 3.0]


def test_queue_drop_newest_keeps_the_old_and_never_drops_end_of_stream() -> None:
    q = SampleQueue(capacity=4, overflow="drop_newest")
    q.put_nowait(batch(0, [0, 1, 2], [1, 1, 1], [0, 0, 0]))
    q.put_nowait(batch(0, [0, 1, 2], [2, 2, 2], [1, 1, 1]))
    q.put_nowait(SampleBatch.end_of_stream(0))
    kept = q.drain()
    assert q.dropped == 3
    assert [len(b) for b in kept] == [3, 0]
    assert kept[-1].watermark == math.inf


def test_queue_put_waits_for_room_instead_of_dropping() -> None:
    async def scenario() -> tuple[int, list[int]]:
        q = SampleQueue(capacity=4)
        await q.put(batch(0, [0, 1, 2], [1, 1, 1], [0, 0, 0]))
        waiter = asyncio.create_task(q.put(batch(0, [0, 1, 2], [2, 2, 2], [1, 1, 1])))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        first = [len(b) for b in q.drain()]
        await asyncio.wait_for(waiter, 1)
        return q.dropped, first + [len(b) for b in q.drain()]

    dropped, sizes = asyncio.run(scenario())
    assert dropped == 0 and sizes == [3, 3]


def test_sample_batch_from_single_samples() -> None:
    b = SampleBatch.from_samples(
        2, [Sample(1, 3.5, 10.0, 10.1, Quality.UNCERTAIN, 2), Sample(0, 1.0, 11.0, 11.2, Quality.GOOD, 2)]
    )
    assert b.tag.tolist() == [1, 0] and b.quality.tolist() == [2, 3] and len(b) == 2


# -- frames ------------------------------------------------------------------------------------


def test_frames_align_on_ticks_last_sample_wins_and_gaps_are_nan() -> None:
    fa = FrameAssembler(n_tags=3, tick_s=1.0)
    fa.add(batch(0, [0, 0, 1], [1.0, 2.0, 5.0], [100.1, 100.9, 100.5]))
    fa.add(batch(0, [2], [7.0], [102.2]))
    frame = fa.close(watermark=103.0)
    assert frame is not None
    assert frame.ts.tolist() == [100.0, 101.0, 102.0]
    assert frame.X[0].tolist()[:2] == [2.0, 5.0] and math.isnan(frame.X[0, 2])
    assert np.isnan(frame.X[1]).all()  # an empty tick is still a tick: silence is data
    assert frame.X[2, 2] == 7.0
    assert frame.valid.sum() == 3


def test_frames_count_late_samples_and_keep_ticks_open_until_the_watermark() -> None:
    fa = FrameAssembler(n_tags=1, tick_s=1.0)
    fa.add(batch(0, [0], [1.0], [10.0]))
    assert fa.close(watermark=10.5) is None  # tick 10 may still get samples
    frame = fa.close(watermark=11.0)
    assert frame is not None and len(frame) == 1
    fa.add(batch(0, [0], [9.0], [10.7]))  # tick 10 is closed: late
    assert fa.late == 1
    fa.add(batch(0, [5], [1.0], [11.0]))
    assert fa.unknown_tag == 1


def test_frames_resume_after_snapshot_never_rescore_old_ticks() -> None:
    fa = FrameAssembler(n_tags=1, tick_s=1.0)
    fa.resume_after(50.0)
    fa.add(batch(0, [0, 0], [1.0, 2.0], [49.0, 52.0]))
    frame = fa.close(watermark=math.inf)
    assert frame is not None and frame.ts.tolist() == [51.0, 52.0]
    assert fa.late == 1


# -- alerts ------------------------------------------------------------------------------------


def book(**kw: float) -> AlertBook:
    params = {"hysteresis": 0.1, "pending_s": 2.0, "clear_s": 3.0, **kw}
    return AlertBook(["ewma"], ["T1", "T2"], [("warning", 0.5), ("critical", 0.75)], **params)


def run(b: AlertBook, scores_t1: list[float], t0: float = 0.0):
    s = np.zeros((len(scores_t1), 1, 2), dtype=np.float32)
    s[:, 0, 0] = scores_t1
    return b.update(np.arange(len(scores_t1), dtype=float) + t0, s)


def test_alert_needs_pending_time_and_clears_with_hysteresis() -> None:
    b = book()
    transitions, firing = run(b, [0.6, 0.6, 0.45, 0.6, 0.3, 0.3, 0.3, 0.3])
    events = [(t.event, t.ts) for t in transitions]
    # Fires at t=2 (held 2 s; 0.45 is above the clear level 0.4), resolves after 3 s below 0.4.
    assert events == [("firing", 2.0), ("resolved", 7.0)]
    assert firing.tolist() == [0, 0, 1, 1, 1, 1, 1, 0]
    assert b.state[0, 0] == OK and b.state[0, 1] == OK


def test_alert_blip_is_never_journaled_and_escalation_is() -> None:
    b = book()
    transitions, _ = run(b, [0.6, 0.2, 0.0, 0.6, 0.6, 0.6, 0.9, 0.9])
    assert [(t.event, t.severity, t.ts) for t in transitions] == [
        ("firing", "warning", 5.0),
        ("escalated", "critical", 6.0),
    ]
    assert b.state[0, 0] == FIRING
    assert transitions[-1].peak == pytest.approx(0.9)


def test_alert_state_round_trips_and_journal_catches_up() -> None:
    b = book()
    run(b, [0.6] * 4)
    arrays = {k: v for k, v in b.state_arrays().items()}
    fresh = book()
    fresh.load_state(arrays, np.array([0]), np.array([0, 1]))
    assert fresh.state[0, 0] == FIRING
    late = book()
    late.state[0, 0] = PENDING
    applied = late.apply_journal(
        [{"event": "firing", "tag": "T1", "detector": "ewma", "severity": "critical", "since": 0.0, "peak": 0.8}]
    )
    assert applied == 1 and late.state[0, 0] == FIRING and late.severity[0, 0] == 1


# -- journal and snapshots ---------------------------------------------------------------------


def test_journal_appends_whole_lines_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    with AlertJournal(path) as j:
        assert j.append([{"event": "firing"}, {"event": "resolved"}]) == 2
    with path.open("ab") as handle:
        handle.write(b'{"seq": 3, "ev')
    with AlertJournal(path) as j:
        assert j.repaired_bytes == len(b'{"seq": 3, "ev')
        assert j.seq == 2
        j.append([{"event": "firing"}])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    assert [r["seq"] for r in read_journal(path, after_seq=1)] == [2, 3]


def test_state_store_falls_back_to_the_previous_snapshot(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save({"a": np.arange(3.0)}, {"last_tick_ts": 1.0})
    store.save({"a": np.arange(3.0) * 2}, {"last_tick_ts": 2.0})
    arrays, meta = store.load()  # type: ignore[misc]
    assert meta["last_tick_ts"] == 2.0 and arrays["a"].tolist() == [0.0, 2.0, 4.0]
    store.path.write_bytes(b"not a zip")
    arrays, meta = store.load()  # type: ignore[misc]
    assert meta["last_tick_ts"] == 1.0
    assert not list(tmp_path.glob("*.tmp"))


def test_shutdown_abandons_a_receiver_that_ignores_cancellation(tmp_path: Path) -> None:
    """A library that swallows CancelledError must not hang the daemon's shutdown; state is still saved."""
    import collector.runner as runner_module
    from collector.config import load_config
    from collector.runner import Runner
    from tests.conftest import demo_config

    config, _ = demo_config(tmp_path)
    cfg = load_config(config)
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue  # what a misbehaving client library does

    async def scenario() -> Runner:
        with AlertJournal(tmp_path / "alerts.jsonl") as journal:
            runner = Runner(cfg, journal, realtime=True, store=StateStore(tmp_path / "state"))
            runner.receivers[0].run = stubborn  # type: ignore[method-assign]
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.2, stop.set)  # once the receiver is running
            await asyncio.wait_for(runner.run(stop), runner_module.STOP_GRACE_S + 3)
        released.set()
        await asyncio.gather(*runner.abandoned)
        return runner

    grace = runner_module.STOP_GRACE_S
    runner_module.STOP_GRACE_S = 0.3
    try:
        runner = asyncio.run(scenario())
    finally:
        runner_module.STOP_GRACE_S = grace
    assert len(runner.abandoned) == 1
    assert (tmp_path / "state" / "snapshot.npz").exists()
