"""The webhook sink against a real HTTP receiver on 127.0.0.1 that goes down and comes back.

The receiver (``http.server`` in a subprocess, so it can be killed and
restarted on the same port) records every POST it acknowledges, with its
Idempotency-Key, and dedups nothing: a resent alert would show up twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from collector.journal import AlertJournal, read_journal
from collector.sinks.options import WebhookSinkConfig
from collector.sinks.spool import Spool
from collector.sinks.webhook import WebhookSink
from tests.conftest import free_port

ORDER = ["warning", "critical"]

RECEIVER = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log_path, fail_first = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
state = {"seen": 0}

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        state["seen"] += 1
        if state["seen"] <= fail_first:
            self.send_response(503); self.end_headers(); return
        line = json.dumps({"key": self.headers.get("Idempotency-Key"), "auth": self.headers.get("Authorization"),
                           "type": self.headers.get("Content-Type"), "alert": json.loads(body)})
        with open(log_path, "a") as f:
            f.write(line + "\n"); f.flush(); os.fsync(f.fileno())
        self.send_response(204); self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


class Receiver:
    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.script = workdir / "receiver.py"
        self.script.write_text(RECEIVER)
        self.log = workdir / "received.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, fail_first: int = 0) -> None:
        self.proc = subprocess.Popen([sys.executable, str(self.script), str(self.port), str(self.log), str(fail_first)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("receiver did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def received(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@pytest.fixture
def receiver(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Receiver(tmp_path, free_port())
    yield r
    r.kill()


def alert(seq: int, severity: str = "critical") -> dict[str, Any]:
    """An alert; every fifth says why, as an invariant's does (the others, like the journal's older lines, do not)."""
    why = {"reason": f"invariant pt101_balance: residual +{seq}.0 sd (CUSUM 2.0x limit)"} if seq % 5 == 0 else {}
    return {"seq": seq, "event": "firing", "ts": 1_790_000_000.0 + seq, "tag": "PT101.PRESSURE",
            "detector": "invariant", "severity": severity, "score": 0.9, "peak": 0.9, "since": 1_789_999_990.0,
            "site": "tank-farm", **why}  # fmt: skip


def make_sink(receiver: Receiver, spool_dir: Path, **options: Any) -> WebhookSink:
    defaults: dict[str, Any] = {"retry_min_s": 0.05, "retry_max_s": 0.3, "timeout_s": 2.0}
    cfg = WebhookSinkConfig(
        kind="webhook", name="soc-hook", url=f"http://127.0.0.1:{receiver.port}/alerts", **{**defaults, **options}
    )
    return WebhookSink(cfg, ORDER, spool_dir)


def test_receiver_down_and_plantwatch_restarted_loses_and_duplicates_nothing(
    receiver: Receiver, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "state" / "sinks"
    receiver.start()
    first = make_sink(receiver, spool_dir, token="s3cret-token")
    first.start()
    for seq in range(1, 21):
        assert first.offer(alert(seq))
    assert first.wait_until(lambda st: st.delivered == 20, 20), first.stats

    receiver.kill()  # the receiver goes down while alerts keep coming
    for seq in range(21, 41):
        assert first.offer(alert(seq))
    assert first.wait_until(lambda st: st.failures >= 2, 10)
    first.stop(1.0)  # plantwatch stops too, with 20 alerts owed: they are on disk
    assert len(Spool(spool_dir, "soc-hook", 100).pending) == 20

    # plantwatch comes back; alerts 51..55 were journaled but never reached the sink before a crash.
    journal_path = tmp_path / "state" / "alerts.jsonl"
    with AlertJournal(journal_path) as journal:
        journal.append({k: v for k, v in alert(seq).items() if k != "seq"} for seq in range(1, 56))
    second = make_sink(receiver, spool_dir, token="s3cret-token")
    for seq in range(41, 51):
        assert second.offer(alert(seq))
    assert second.catch_up({**r, "site": "tank-farm"} for r in read_journal(journal_path)) == 15  # 41..55
    second.start()
    time.sleep(0.5)
    receiver.start(fail_first=3)  # back, but answers 503 three times before it recovers
    assert second.wait_until(lambda st: st.delivered == 35, 30), (second.stats, second.backlog())
    second.stop()

    got = receiver.received()
    keys = [r["key"] for r in got]
    assert keys == [f"tank-farm:{seq}" for seq in range(1, 56)]  # each alert once, in journal order
    assert [r["alert"]["seq"] for r in got] == list(range(1, 56))
    sent = [{k: v for k, v in r["alert"].items() if k != "written"} for r in got]
    assert sent == [alert(seq) for seq in range(1, 56)], "reasons too, through the spool and the journal"
    assert {r["auth"] for r in got} == {"Bearer s3cret-token"}
    assert {r["type"] for r in got} == {"application/json"}
    assert not Spool(spool_dir, "soc-hook", 100).pending  # nothing owed any more


def test_spool_is_bounded_oldest_dropped_and_counted(receiver: Receiver, tmp_path: Path) -> None:
    spool_dir = tmp_path / "sinks"
    s = make_sink(receiver, spool_dir, spool_capacity=5)  # receiver never started
    s.start()
    for seq in range(1, 13):
        assert s.offer(alert(seq))
    assert s.wait_until(lambda st: st.dropped == 7, 10), s.stats
    s.stop(0.5)
    owed = Spool(spool_dir, "soc-hook", 5)
    assert [int(a["seq"]) for a in owed.pending] == [8, 9, 10, 11, 12]  # type: ignore[call-overload]
    assert owed.acked == 7
    owed.close()


def test_torn_spool_line_is_cut_and_acked_lines_never_come_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "hook", 100)
    spool.extend([alert(1), alert(2), alert(3)])
    spool.ack(1)
    spool.close()
    with (tmp_path / "hook.spool.jsonl").open("ab") as f:
        f.write(b'{"seq":4,"event":"fir')  # power lost mid-write
    again = Spool(tmp_path, "hook", 100)
    assert again.repaired_bytes > 0
    assert [int(a["seq"]) for a in again.pending] == [2, 3]  # type: ignore[call-overload]
    assert again.extend([alert(2), alert(3), alert(4)]) == 1  # only 4 is new
    again.ack(4)
    assert (tmp_path / "hook.spool.jsonl").stat().st_size == 0  # nothing owed: truncated
    again.close()


def test_severity_list_filters(tmp_path: Path) -> None:
    cfg = WebhookSinkConfig(kind="webhook", name="w", url="http://127.0.0.1:1/", severities=["warning"])
    s = WebhookSink(cfg, ORDER, tmp_path)
    assert s.wants(alert(1, "warning")) and not s.wants(alert(1, "critical"))
    s.close()


def test_a_webhook_added_later_starts_after_the_journal_history(receiver: Receiver, tmp_path: Path) -> None:
    """The first start of a new webhook sends what comes next, not months of journal; a restart resumes."""
    from collector.sinks import AlertSinks

    journal_path = tmp_path / "alerts.jsonl"
    with AlertJournal(journal_path) as journal:
        journal.append({k: v for k, v in alert(seq).items() if k != "seq"} for seq in range(1, 11))
    receiver.start()
    sinks = AlertSinks([make_sink(receiver, tmp_path / "sinks")], "tank-farm")
    sinks.start(journal_path, journal_seq=10)
    (sink,) = sinks.sinks
    assert sink.offer(alert(11))
    assert sink.wait_until(lambda st: st.delivered == 1, 10)
    sinks.stop()
    assert [r["key"] for r in receiver.received()] == ["tank-farm:11"]
