"""The syslog sink against a real rsyslog on 127.0.0.1: UDP, TCP with octet counting, TLS; JSON and CEF bodies.

Each test starts its own ``rsyslogd -n`` with a config written here (no
system-wide config), which parses RFC 5424 (``mmpstrucdata`` turns the
structured data into JSON, unescaping it as any collector would) and writes
one JSON line per message with the fields it parsed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.sinks.options import SyslogSinkConfig
from collector.sinks.syslog import SyslogSink, cef_value, octet_frame
from sim_plant.servers.certs import make_tls_ca, make_tls_cert
from tests.conftest import free_port

RSYSLOGD = "/usr/sbin/rsyslogd"


ORDER = ["warning", "critical"]
NASTY = 'level glass | cracked = "yes" \\ [bracket] ]end\nsecond line'

TEMPLATE = (
    'template(name="pw" type="string" string="{'
    '\\"hostname\\":\\"%hostname:::json%\\",\\"app\\":\\"%app-name:::json%\\",\\"procid\\":\\"%procid:::json%\\",'
    '\\"msgid\\":\\"%msgid:::json%\\",\\"severity\\":%syslogseverity%,\\"facility\\":%syslogfacility%,'
    '\\"reported\\":\\"%timereported:::date-rfc3339%\\",\\"sd\\":%$!rfc5424-sd%,\\"msg\\":\\"%msg:::json%\\"}\\n")'
)


def port_bound(port: int, udp: bool) -> bool:
    """A socket bound (UDP) or listening (TCP) on 127.0.0.1:``port``, per /proc/net/{udp,tcp}."""
    table = Path("/proc/net/udp" if udp else "/proc/net/tcp").read_text().splitlines()[1:]
    local = f"0100007F:{port:04X}"  # 127.0.0.1 as the kernel prints it (little-endian hex), then the port
    listen = "0A"  # TCP_LISTEN
    return any(f[1] == local and (udp or f[3] == listen) for f in (line.split() for line in table))


class Rsyslog:
    """One foreground rsyslogd with its own config, pid file and output file; killed by its PID."""

    def __init__(self, workdir: Path, inputs: str, global_extra: str = "", modules: str = "") -> None:
        self.workdir = workdir
        self.out = workdir / "received.jsonl"
        self.pidfile = workdir / "rsyslogd.pid"
        conf = workdir / "rsyslog.conf"
        conf.write_text(
            f'global(workDirectory="{workdir}" {global_extra})\n'
            f'{modules}\nmodule(load="mmpstrucdata")\n{inputs}\n{TEMPLATE}\n'
            'action(type="mmpstrucdata")\n'
            f'action(type="omfile" file="{self.out}" template="pw")\n'
        )
        self.log = (workdir / "rsyslogd.log").open("wb")
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.pidfile)], stdout=self.log, stderr=self.log
        )

    def wait_listening(self, port: int, udp: bool = False) -> None:
        """Wait until rsyslogd's input holds its port, the readiness that matters: a UDP datagram sent
        before the bind is lost for good. Read from the kernel's socket table, so no probe reaches rsyslog."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.workdir / "rsyslogd.log").read_text()
            if self.pidfile.exists() and port_bound(port, udp):
                return
            time.sleep(0.05)
        pytest.fail(f"rsyslogd did not start listening on 127.0.0.1:{port}")

    def messages(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            if self.out.exists():
                lines = [line for line in self.out.read_text().splitlines() if line]
                if len(lines) >= count:
                    break
            time.sleep(0.05)
        return [json.loads(line) for line in lines]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Callable[..., Rsyslog]]:
    started: list[Rsyslog] = []

    def start(inputs: str, **kwargs: str) -> Rsyslog:
        workdir = tmp_path / f"rsyslog{len(started)}"
        workdir.mkdir()
        server = Rsyslog(workdir, inputs, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


REASON = "invariant tk101_mass_balance: residual +6.1 sd (CUSUM 2.3x limit) = broken"


def alert(seq: int, event: str = "firing", severity: str = "critical", **extra: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "event": event,
        "ts": 1_790_000_000.25 + seq,
        "tag": "TK101.LEVEL",
        "detector": "ewma",
        "severity": severity,
        "score": 0.91,
        "peak": 0.97,
        "since": 1_789_999_990.0,
        "site": "tank-farm",
        "description": NASTY,
        **extra,
    }


def sink(**options: Any) -> SyslogSink:
    return SyslogSink(SyslogSinkConfig(kind="syslog", name="soc", hostname="plant-host-7", **options), ORDER)


def run_sink(s: SyslogSink, alerts: list[dict[str, Any]]) -> None:
    s.start()
    for a in alerts:
        assert s.offer(a)
    assert s.wait_until(lambda st: st.delivered == len(alerts), 10), s.stats
    s.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rsyslog_parses_header_structured_data_and_json_body(rsyslog, transport: str) -> None:
    port = free_port()
    kind = "imudp" if transport == "udp" else "imtcp"
    server = rsyslog(f'module(load="{kind}")\ninput(type="{kind}" address="127.0.0.1" port="{port}")')
    server.wait_listening(port, udp=transport == "udp")
    alerts = [alert(1), alert(2, "resolved", "warning"), alert(3, "escalated", reason=REASON)]
    run_sink(sink(port=port, transport=transport, format="json"), alerts)

    got = server.messages(3)
    assert len(got) == 3, got
    for sent, msg in zip(alerts, got, strict=True):
        assert (msg["hostname"], msg["app"], msg["procid"]) == ("plant-host-7", "plantwatch", str(os.getpid()))
        assert msg["msgid"] == sent["event"]
        assert msg["facility"] == 16  # local0
        assert msg["reported"].startswith("2026-09-21T")  # the alert's own time, not the send time
        sd = msg["sd"]["plantwatch@32473"]
        assert sd["tag"] == "TK101.LEVEL" and sd["seq"] == str(sent["seq"]) and sd["site"] == "tank-farm"
        assert sd["description"] == NASTY.replace("\n", "#012")  # rsyslog's escape for a control character
        assert json.loads(msg["msg"]) == sent
        assert sd.get("reason") == sent.get("reason"), "the reason travels in the structured data too"
    assert [m["severity"] for m in got] == [2, 5, 2]  # crit, notice for a resolution, crit


def test_tcp_framing_keeps_messages_apart_when_batched(rsyslog) -> None:
    """Octet counting, not newlines, delimits messages: a newline inside one does not split it."""
    port = free_port()
    server = rsyslog(f'module(load="imtcp")\ninput(type="imtcp" address="127.0.0.1" port="{port}")')
    server.wait_listening(port)
    s = sink(port=port, transport="tcp", format="cef")
    frames = b"".join(octet_frame(s.message(alert(seq))) for seq in range(1, 51))
    import socket

    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(frames)
    got = server.messages(50)
    assert [m["sd"]["plantwatch@32473"]["seq"] for m in got] == [str(i) for i in range(1, 51)]


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """A CEF reader as a SIEM has it: split the header on unescaped '|', then key=value pairs."""
    head, i, field = [], 0, ""
    while len(head) < 7:
        c = text[i]
        if c == "\\":
            field += text[i + 1]
            i += 2
            continue
        if c == "|":
            head.append(field)
            field = ""
        else:
            field += c
        i += 1
    ext, key, value, rest = {}, "", "", text[i:]
    tokens = rest.split(" ")
    for token in tokens:
        k, eq, v = token.partition("=")
        if eq and k.isalnum() and not k.endswith("\\"):
            if key:
                ext[key] = value
            key, value = k, v
        else:
            value += " " + token
    ext[key] = value
    unescape = {"\\\\": "\\", "\\=": "=", "\\n": "\n", "\\r": "\r"}
    for k, v in ext.items():
        out, j = "", 0
        while j < len(v):
            pair = v[j : j + 2]
            if pair in unescape:
                out, j = out + unescape[pair], j + 2
            else:
                out, j = out + v[j], j + 1
        ext[k] = out
    return head, ext


def test_cef_body_escapes_as_the_standard_says(rsyslog) -> None:
    port = free_port()
    server = rsyslog(f'module(load="imudp")\ninput(type="imudp" address="127.0.0.1" port="{port}")')
    server.wait_listening(port, udp=True)
    run_sink(sink(port=port, transport="udp", format="cef"), [alert(7, reason=REASON), alert(8, "resolved", "warning")])
    got = server.messages(2)
    assert len(got) == 2
    body = got[0]["msg"]
    # The exact escapes: '=' and '\' in extension values, newline as \n; '|' stays as it is there.
    assert "msg=" + cef_value(NASTY) in body
    assert cef_value(NASTY) == 'level glass | cracked \\= "yes" \\\\ [bracket] ]end\\nsecond line'
    head, ext = parse_cef(body)
    assert head == ["CEF:0", "plantwatch", "plantwatch", head[3], "ewma:firing", "TK101.LEVEL firing (ewma)", "10"]
    assert ext["msg"] == NASTY
    assert (ext["cs5Label"], ext["cs5"]) == ("reason", REASON)
    assert "cs5" not in parse_cef(got[1]["msg"])[1], "no reason, no field"
    assert (ext["cs1Label"], ext["cs1"], ext["cn1"], ext["act"]) == ("tag", "TK101.LEVEL", "7", "firing")
    assert ext["rt"] == str(round((1_790_000_000.25 + 7) * 1000))
    assert parse_cef(got[1]["msg"])[0][6] == "1"  # a resolution is low severity


def test_tls_to_rsyslog_with_a_verified_certificate(rsyslog, tmp_path: Path) -> None:
    port = free_port()
    ca = make_tls_ca(tmp_path, "soc-ca")
    collector = make_tls_cert(tmp_path, "rsyslog", ca)  # localhost and 127.0.0.1
    cert, key = collector.cert, collector.key
    server = rsyslog(
        f'input(type="imtcp" address="127.0.0.1" port="{port}")',
        global_extra=(
            f'DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca.cert}" '
            f'DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}"'
        ),
        modules='module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")',
    )
    server.wait_listening(port)
    run_sink(sink(port=port, transport="tls", tls={"ca_file": str(ca.cert)}), [alert(1), alert(2)])
    got = server.messages(2)
    assert [m["sd"]["plantwatch@32473"]["seq"] for m in got] == ["1", "2"]
    assert json.loads(got[1]["msg"])["description"] == NASTY

    # A collector whose certificate this CA did not sign gets nothing: the sink keeps the alert and retries.
    other = make_tls_ca(tmp_path, "rogue-ca")
    wrong = sink(port=port, transport="tls", tls={"ca_file": str(other.cert)})
    wrong.start()
    assert wrong.offer(alert(3))
    assert wrong.wait_until(lambda st: st.failures >= 1, 10)
    assert wrong.stats.delivered == 0 and "CERTIFICATE_VERIFY_FAILED" in wrong.stats.last_error
    wrong.stop(0.5)
    time.sleep(0.3)
    assert len(server.messages(3, timeout=0.5)) == 2


def test_tcp_collector_down_then_up_gets_every_alert_in_order(rsyslog) -> None:
    port = free_port()
    s = sink(port=port, transport="tcp")
    s.start()
    for seq in range(1, 6):
        assert s.offer(alert(seq))
    assert s.wait_until(lambda st: st.failures >= 1, 5)  # nobody listening yet
    server = rsyslog(f'module(load="imtcp")\ninput(type="imtcp" address="127.0.0.1" port="{port}")')
    server.wait_listening(port)
    assert s.wait_until(lambda st: st.delivered == 5, 40), s.stats
    s.stop()
    got = server.messages(5)
    assert [m["sd"]["plantwatch@32473"]["seq"] for m in got] == ["1", "2", "3", "4", "5"]


def test_severity_filter_and_a_full_handoff_never_block() -> None:
    """min_severity picks what goes out; a sink whose thread is not draining drops and counts, at once."""
    s = SyslogSink(
        SyslogSinkConfig(kind="syslog", name="crit-only", min_severity="critical", handoff_capacity=3, port=9), ORDER
    )
    assert s.wants(alert(1)) and not s.wants(alert(2, severity="warning"))
    started = time.perf_counter()
    results = [s.offer(alert(i)) for i in range(10_000)]  # never started: nothing drains
    elapsed = time.perf_counter() - started
    assert results[:3] == [True] * 3 and not any(results[3:])
    assert s.stats.dropped == 9_997
    assert elapsed < 1.0  # 10^4 offers to a stuck sink: a fraction of a second, never a wait
