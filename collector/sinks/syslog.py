"""Alerts as RFC 5424 syslog messages, over UDP, TCP (RFC 6587 octet counting) or TLS (RFC 5425).

A security team's collector (rsyslog, syslog-ng, a SIEM listener) parses the
header and the structured data without knowing plantwatch; the body is the
alert again as JSON, or as CEF for SIEMs that map CEF fields. The
structured-data ID uses 32473, the enterprise number RFC 5612 reserves for
examples, until the project registers its own.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import ssl
import time
from collections.abc import Sequence

from collector import __version__
from collector.receivers.base import reconnect_delay
from collector.sinks.base import Alert, Sink
from collector.sinks.options import SyslogSinkConfig

SD_ID = "plantwatch@32473"
APP_NAME = "plantwatch"
SD_FIELDS = ("site", "seq", "event", "tag", "detector", "severity", "score", "peak", "since", "description", "reason")
NOTICE, WARNING, CRITICAL = 5, 4, 2  # syslog severities


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def _header_token(text: str, limit: int) -> str:
    """HOSTNAME, APP-NAME and MSGID are printable US-ASCII without spaces (RFC 5424 section 6)."""
    cleaned = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def sd_escape(value: object) -> str:
    """PARAM-VALUE escaping: '"', '\\' and ']' get a backslash (RFC 5424 section 6.3.3)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def cef_header(value: object) -> str:
    """CEF header fields escape '\\' and '|'; a newline cannot appear there at all."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def cef_value(value: object) -> str:
    """CEF extension values escape '\\' and '=' and write line breaks as \\n and \\r."""
    text = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def syslog_severity(alert: Alert, order: Sequence[str]) -> int:
    """Resolved is a notice; the highest plant severity is crit, any lower one warning."""
    if alert.get("event") == "resolved":
        return NOTICE
    return CRITICAL if order and alert.get("severity") == order[-1] else WARNING


def cef_severity(alert: Alert, order: Sequence[str]) -> int:
    """CEF's 0..10: resolved 1, then the plant's severities spread over 5..10."""
    if alert.get("event") == "resolved":
        return 1
    sev = str(alert.get("severity"))
    if sev not in order or len(order) == 1:
        return 10 if sev in order else 5
    return 5 + round(5 * order.index(sev) / (len(order) - 1))


def cef_body(alert: Alert, order: Sequence[str], hostname: str) -> str:
    ms = lambda key: round(float(alert.get(key, 0.0)) * 1000)  # noqa: E731
    name = f"{alert.get('tag')} {alert.get('event')} ({alert.get('detector')})"
    head = "|".join(
        cef_header(v)
        for v in (
            "CEF:0",
            "plantwatch",
            "plantwatch",
            __version__,
            f"{alert.get('detector')}:{alert.get('event')}",
            name,
            cef_severity(alert, order),
        )
    )
    ext: list[tuple[str, object]] = [
        ("rt", ms("ts")),
        ("dvchost", hostname),
        ("act", alert.get("event")),
        ("cs1Label", "tag"),
        ("cs1", alert.get("tag")),
        ("cs2Label", "detector"),
        ("cs2", alert.get("detector")),
        ("cs3Label", "site"),
        ("cs3", alert.get("site", "")),
        ("cs4Label", "severity"),
        ("cs4", alert.get("severity")),
        ("cfp1Label", "score"),
        ("cfp1", alert.get("score")),
        ("cfp2Label", "peak"),
        ("cfp2", alert.get("peak")),
        ("cn1Label", "seq"),
        ("cn1", alert.get("seq")),
    ]
    if isinstance(alert.get("since"), float | int) and alert.get("since") == alert.get("since"):
        ext.append(("start", ms("since")))
    if alert.get("reason"):  # why the detector scored it so: which invariant broke, which tags moved the model
        ext += [("cs5Label", "reason"), ("cs5", alert.get("reason"))]
    if alert.get("description"):
        ext.append(("msg", alert.get("description")))
    return head + "|" + " ".join(f"{k}={cef_value(v)}" for k, v in ext)


def rfc5424(alert: Alert, *, facility: int, hostname: str, body_format: str, order: Sequence[str]) -> bytes:
    """One complete syslog message (no transport framing)."""
    pri = facility * 8 + syslog_severity(alert, order)
    params = " ".join(f'{k}="{sd_escape(alert[k])}"' for k in SD_FIELDS if k in alert)
    host = _header_token(hostname, 255)
    head = f"<{pri}>1 {_stamp(float(alert.get('ts', time.time())))} {host} {APP_NAME} {os.getpid()} "
    head += f"{_header_token(str(alert.get('event', 'alert')), 32)} [{SD_ID} {params}] "
    if body_format == "cef":
        body = cef_body(alert, order, host)
    else:
        body = json.dumps(dict(alert), separators=(",", ":"), default=str)
    return (head + body).encode("utf-8")


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting, the framing RFC 5425 requires on TLS: 'LEN SP MSG'."""
    return str(len(message)).encode("ascii") + b" " + message


class SyslogSink(Sink):
    kind = "syslog"
    options: SyslogSinkConfig

    def __init__(self, options: SyslogSinkConfig, severity_order: Sequence[str]) -> None:
        super().__init__(options, severity_order)
        self.order = list(severity_order)
        self.hostname = options.hostname or socket.gethostname()
        self._sock: socket.socket | None = None
        # Messages a stream transport could not send yet, oldest first; bounded like the hand-off.
        self._backlog: collections.deque[bytes] = collections.deque()
        self._failures = 0
        self._retry_at = 0.0

    def message(self, alert: Alert) -> bytes:
        return rfc5424(
            alert,
            facility=self.options.facility,
            hostname=self.hostname,
            body_format=self.options.format,
            order=self.order,
        )

    def deliver(self, alert: Alert) -> None:
        if len(self._backlog) >= self.options.handoff_capacity:
            self._backlog.popleft()
            self.stats.dropped += 1
        self._backlog.append(self.message(alert))
        self._flush()

    def idle(self) -> None:
        if self._backlog:
            self._flush()

    def _flush(self) -> None:
        if time.monotonic() < self._retry_at:
            return
        while self._backlog:
            data = self._backlog[0]
            try:
                self._send(data)
            except OSError as exc:  # refused, reset, TLS handshake failure: retry later, keep the order
                self._close_socket()
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                delay = reconnect_delay(self._failures, 0.2, 30.0)
                self._failures += 1
                self._retry_at = time.monotonic() + delay
                if self._failures == 1:
                    self.log.warning(
                        "syslog collector unreachable; keeping alerts and retrying",
                        extra={"sink": self.name, "error": self.stats.last_error, "retry_s": round(delay, 2)},
                    )
                return
            self._backlog.popleft()
            self.stats.delivered += 1
            if self._failures:
                self.log.info("syslog collector reachable again", extra={"sink": self.name})
                self._failures = 0

    def _send(self, message: bytes) -> None:
        opts = self.options
        if self._sock is None:
            self._sock = self._connect()
        if opts.transport == "udp":
            self._sock.sendto(message, (opts.host, opts.port))
        else:
            self._sock.sendall(octet_frame(message))

    def _connect(self) -> socket.socket:
        opts = self.options
        if opts.transport == "udp":
            family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
            return socket.socket(family, socket.SOCK_DGRAM)
        sock = socket.create_connection((opts.host, opts.port), timeout=opts.timeout_s)
        if opts.transport == "tls":
            try:
                sock = self._tls_context().wrap_socket(sock, server_hostname=self._server_name())
            except BaseException:
                sock.close()
                raise
        return sock

    def _server_name(self) -> str:
        tls = self.options.tls
        return tls.server_name if tls is not None and tls.server_name else self.options.host

    def _tls_context(self) -> ssl.SSLContext:
        tls = self.options.tls
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls is not None and tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        if tls is not None and not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _close_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def close(self) -> None:
        if self._backlog:
            self.log.warning(
                "syslog sink stopped with undelivered alerts", extra={"sink": self.name, "count": len(self._backlog)}
            )
        self._close_socket()
