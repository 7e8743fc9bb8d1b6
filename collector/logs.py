"""Structured logs on stderr: one line per event, logfmt or JSON, with the event's fields.

Fields go in ``extra={...}``; anything beyond the standard record attributes
is printed as ``key=value``. ``LogOnce`` keeps a flood of one kind of bad
input down to a single line while the counters keep counting.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _stamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _document(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, object]:
    doc: dict[str, object] = {
        "ts": _stamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
        **_fields(record),
    }
    if record.exc_info:
        doc["exc"] = formatter.formatException(record.exc_info)
    return doc


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_quote(v)}" for k, v in _document(record, self).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_document(record, self), default=str)


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return json.dumps(text)


# syslog priorities journald reads from a "<N>" line prefix (SyslogLevelPrefix=yes, its default)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournaldPrefix(logging.Formatter):
    """Under systemd, stderr goes to journald: a ``<N>`` prefix gives each line its PRIORITY.

    The line itself stays logfmt or JSON (one event per line, fields intact), so
    ``journalctl -u plantwatch -p warning -o cat`` filters by level and the output
    pipes into ``jq`` (with ``--log-format json``) or any logfmt reader.
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in _PRIORITY if lv <= record.levelno), default=logging.DEBUG)
        return f"<{_PRIORITY[level]}>" + self.inner.format(record)


def stderr_is_journal(environ: dict[str, str] | None = None, stream: object = None) -> bool:
    """True when systemd connected stderr to journald: $JOURNAL_STREAM names stderr's device:inode."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else LogfmtFormatter()
    handler.setFormatter(JournaldPrefix(formatter) if stderr_is_journal() else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class LogOnce:
    """Log the first occurrence of each kind of problem; later ones are only counted by the caller."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.seen: set[str] = set()

    def __call__(self, kind: str, msg: str, **fields: object) -> None:
        if kind in self.seen:
            return
        self.seen.add(kind)
        self.logger.warning(msg + " (further ones are counted, not logged)", extra={"kind": kind, **fields})
