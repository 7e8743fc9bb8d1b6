"""Config models of the alert sinks: one ``sinks:`` entry per destination, checked before start.

Every sink has a name, a kind and the severities it forwards (``min_severity``
or an explicit ``severities`` list, names from ``alerting.severities``); the
rest are the kind's own options. Secrets use the shared ``Secret`` type, so a
token can come from ``{env: NAME}`` or ``{file: PATH}`` instead of the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from collector.sources import ConfigPath, Secret, Strict

DEFAULT_SEVERITIES = ("warning", "critical")  # AlertingConfig's defaults, when the file names none


class SinkBase(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=100)]
    min_severity: str | None = Field(default=None, description="Forward this severity and every higher one.")
    severities: list[str] | None = Field(default=None, description="Forward exactly these severities.")
    events: list[Literal["firing", "escalated", "resolved"]] = Field(
        default=["firing", "escalated", "resolved"], description="Which alert transitions to forward."
    )
    handoff_capacity: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=10_000, description="Alerts waiting in memory for the sink's thread; beyond it they are dropped."
    )

    @model_validator(mode="after")
    def _one_filter(self) -> SinkBase:
        if self.min_severity is not None and self.severities is not None:
            raise ValueError("give min_severity or severities, not both")
        return self


class SyslogTls(Strict):
    ca_file: ConfigPath | None = Field(default=None, description="CA bundle that signed the collector's certificate.")
    cert_file: ConfigPath | None = Field(default=None, description="Client certificate, if the collector asks.")
    key_file: ConfigPath | None = None
    server_name: str | None = Field(default=None, description="Name to check in the collector's certificate.")
    verify: bool = Field(default=True, description="Check the collector's certificate; off only for a lab.")

    @model_validator(mode="after")
    def _pair(self) -> SyslogTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class SyslogSinkConfig(SinkBase):
    """RFC 5424 to a syslog collector (rsyslog, syslog-ng, a SIEM's listener)."""

    kind: Literal["syslog"]
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 514
    transport: Literal["udp", "tcp", "tls"] = "udp"
    format: Literal["json", "cef"] = "json"
    facility: Annotated[int, Field(ge=0, le=23, description="Syslog facility number; 16 is local0.")] = 16
    hostname: str | None = Field(default=None, description="HOSTNAME field; defaults to this machine's name.")
    tls: SyslogTls | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0

    @model_validator(mode="after")
    def _tls_needs_tls(self) -> SyslogSinkConfig:
        if self.tls is not None and self.transport != "tls":
            raise ValueError("tls options need transport: tls")
        return self


class WebhookSinkConfig(SinkBase):
    """JSON POST per alert with an idempotency key, spooled on disk until the receiver says 2xx."""

    kind: Literal["webhook"]
    url: str
    token: Secret | None = Field(default=None, description="Sent as 'Authorization: Bearer <token>'.")
    ca_file: ConfigPath | None = Field(default=None, description="CA bundle for an https receiver.")
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    retry_min_s: Annotated[float, Field(gt=0)] = 0.5
    retry_max_s: Annotated[float, Field(gt=0)] = 60.0
    spool_capacity: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=100_000, description="Undelivered alerts kept on disk; past it the oldest is dropped and counted."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _retry_order(self) -> WebhookSinkConfig:
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s must not exceed retry_max_s")
        return self


SinkConfig = Annotated[SyslogSinkConfig | WebhookSinkConfig, Field(discriminator="kind")]


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def sink_problems(data: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """Checks that span sections: unique sink names, severities that ``alerting`` defines."""
    alerting = data.get("alerting")
    declared = alerting.get("severities") if isinstance(alerting, dict) else None
    names = [s.get("name") for s in _items(declared) if isinstance(s, dict)] if declared else list(DEFAULT_SEVERITIES)
    seen: set[str] = set()
    for i, sink in enumerate(_items(data.get("sinks"))):
        if not isinstance(sink, dict):
            continue
        name = sink.get("name")
        if isinstance(name, str):
            if name in seen:
                yield f"sinks[{i}].name", f"duplicate sink name {name!r}"
            seen.add(name)
        wanted = sink.get("min_severity")
        if isinstance(wanted, str) and wanted not in names:
            yield f"sinks[{i}].min_severity", f"unknown severity {wanted!r}; alerting defines {', '.join(names)}"
        for k, sev in enumerate(_items(sink.get("severities"))):
            if isinstance(sev, str) and sev not in names:
                yield f"sinks[{i}].severities[{k}]", f"unknown severity {sev!r}; alerting defines {', '.join(names)}"


def sink_kinds() -> list[str]:
    return ["syslog", "webhook"]
