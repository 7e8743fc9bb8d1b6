"""Alerts as JSON POSTs to a webhook, at least once, never resent once acknowledged.

Each alert goes to the on-disk spool first, then to the receiver, oldest
first. A 2xx answer acknowledges it (the acked number is fsync'd before the
next POST); anything else, or no answer, keeps it in the spool and retries
with capped, jittered backoff, so a receiver that is down for hours gets
everything, in order, when it comes back, even across a plantwatch restart.
Each POST carries ``Idempotency-Key: <site>:<seq>`` (the alert journal's
sequence number): if plantwatch dies between the receiver's 2xx and the
fsync of the acknowledgement, the one alert resent then has the same key.
"""

from __future__ import annotations

import json
import queue
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from collector import __version__
from collector.receivers.base import reconnect_delay
from collector.sinks.base import Alert, Sink
from collector.sinks.options import WebhookSinkConfig
from collector.sinks.spool import Spool

FLUSH_BATCH = 256  # alerts moved from the hand-off to the spool per fsync


class WebhookSink(Sink):
    kind = "webhook"
    options: WebhookSinkConfig

    def __init__(self, options: WebhookSinkConfig, severity_order: Sequence[str], spool_dir: Path) -> None:
        super().__init__(options, severity_order)
        self.spool = Spool(spool_dir, options.name, options.spool_capacity)
        self._failures = 0
        self._retry_at = 0.0
        context = ssl.create_default_context(cafile=str(options.ca_file) if options.ca_file else None)
        # No proxy from the environment: a plant's alert receiver is reached directly or not at all.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        self._headers = {"Content-Type": "application/json", "User-Agent": f"plantwatch/{__version__}"}
        if options.token is not None:
            self._headers["Authorization"] = f"Bearer {options.token.get_secret_value()}"
        if self.spool.pending:
            self.log.info("webhook spool holds undelivered alerts", extra={"sink": self.name, **self.backlog()})

    def backlog(self) -> dict[str, int]:
        return {"owed": len(self.spool.pending), "acked_seq": self.spool.acked, "spool_dropped": self.spool.dropped}

    def start_from(self, journal_seq: int) -> None:
        """A sink added to a running installation starts with the alerts to come, not the journal's history."""
        if self.spool.fresh and journal_seq > self.spool.last_seq:
            self.spool.ack(journal_seq)
            self.spool.last_seq = journal_seq

    def catch_up(self, journal: Iterable[Alert]) -> int:
        """Spool journal lines written after this sink last spooled (lost in memory at a crash)."""
        return self.spool.extend(a for a in journal if self.wants(a))

    # -- the sink's thread ----------------------------------------------------------------------
    def deliver(self, alert: Alert) -> None:
        batch = [alert]
        while len(batch) < FLUSH_BATCH:
            try:
                batch.append(self._handoff.get_nowait())
            except queue.Empty:
                break
        before = self.spool.dropped
        self.spool.extend(batch)
        self.stats.dropped += self.spool.dropped - before
        self._send_owed()

    def idle(self) -> None:
        if self.spool.pending:
            self._send_owed()

    def _send_owed(self) -> None:
        while self.spool.pending and time.monotonic() >= self._retry_at:
            if not self._handoff.empty():
                return  # spool what came in first, so a crash loses nothing that was handed over
            alert = self.spool.pending[0]
            seq = int(alert["seq"])  # type: ignore[call-overload]
            error = self._post(alert)
            if error is None:
                self.spool.ack(seq)
                self.stats.delivered += 1
                if self._failures:
                    self.log.info("webhook receiver reachable again", extra={"sink": self.name, **self.backlog()})
                    self._failures = 0
                continue
            self.stats.failures += 1
            self.stats.last_error = error
            delay = reconnect_delay(self._failures, self.options.retry_min_s, self.options.retry_max_s)
            self._failures += 1
            self._retry_at = time.monotonic() + delay
            if self._failures == 1:
                self.log.warning(
                    "webhook receiver failed; alerts stay spooled and are retried",
                    extra={"sink": self.name, "error": error, "retry_s": round(delay, 2), **self.backlog()},
                )
            return

    def _post(self, alert: Alert) -> str | None:
        """None on a 2xx answer, else why not."""
        body = json.dumps(dict(alert), separators=(",", ":"), default=str).encode()
        headers = {**self._headers, "Idempotency-Key": f"{alert.get('site', '')}:{alert['seq']}"}
        request = urllib.request.Request(self.options.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.options.timeout_s) as response:
                response.read()
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # URLError, refused, reset, timeout, TLS
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"

    def close(self) -> None:
        if self.spool.pending:
            extra = {"sink": self.name, **self.backlog()}
            self.log.info("webhook sink stopped; undelivered alerts stay spooled", extra=extra)
        self.spool.close()
