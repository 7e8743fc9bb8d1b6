"""The one YAML file an engineer writes: parsed, checked as a whole, explained field by field.

``load_config`` either returns a ``PlantConfig`` or raises ``ConfigError``
listing *every* problem as ``path.to[3].field: reason``, so a bad file is
fixed in one pass and never half-starts the daemon.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, create_model, field_validator, model_validator

from collector.detector_settings import PARTIALS, DetectorDefaults, InvariantConfig, invariant_problems
from collector.exporters.tls import server_context
from collector.insecure import insecure_problems
from collector.receivers import SourceConfig, source_kinds
from collector.sinks.options import SinkConfig, sink_kinds, sink_problems
from collector.sources import ConfigFile, ConfigPath, Secret, SourceBase, Strict, TagConfig
from detectors import DETECTORS

DEFAULT_LISTEN = "127.0.0.1:9108"


class ConfigError(Exception):
    """A config that must not start the daemon; ``problems`` are (field path, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]], file: Path | None = None) -> None:
        self.problems = problems
        self.file = file
        where = f"{file}: " if file else ""
        super().__init__(where + "; ".join(f"{p}: {r}" if p else r for p, r in problems))

    def render(self) -> str:
        head = f"{self.file}: {len(self.problems)} error(s)" if self.file else f"{len(self.problems)} error(s)"
        return "\n".join([head, *(f"  {p}: {r}" if p else f"  {r}" for p, r in self.problems)])


# -- sections ----------------------------------------------------------------------------------


class BasicAuth(Strict):
    username: str
    password: Secret


class ExporterTls(Strict):
    """/metrics over TLS; with ``client_ca_file`` only scrapers holding a certificate that CA signed get in."""

    cert_file: ConfigFile = Field(description="Server certificate chain (PEM) presented to Prometheus.")
    key_file: ConfigFile = Field(description="Private key (PEM) of cert_file.")
    client_ca_file: ConfigFile | None = Field(
        default=None, description="CA (PEM) that must have signed the scraper's client certificate; null: none asked."
    )

    @model_validator(mode="after")
    def _loads(self) -> ExporterTls:
        """A key that does not match its certificate must stop the start, not the first scrape."""
        try:
            server_context(self.cert_file, self.key_file, self.client_ca_file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load the certificate, key or client CA: {exc}") from None
        return self


class ExporterConfig(Strict):
    listen: str = Field(default=DEFAULT_LISTEN, description="host:port of /metrics; loopback unless you say so.")
    per_tag_values: bool = Field(default=True, description="Export each tag's value, quality and limits.")
    basic_auth: BasicAuth | None = None
    tls: ExporterTls | None = Field(default=None, description="Serve /metrics and /healthz over TLS; null: plain HTTP.")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, for example 127.0.0.1:9108")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if host != "localhost":
                raise ValueError("host must be an IP address or localhost") from None
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.listen}/metrics"


class PipelineConfig(Strict):
    tick_s: Annotated[float, Field(gt=0, le=3600, description="Width of one frame in seconds.")] = 1.0
    queue_capacity: Annotated[int, Field(ge=16, description="Samples the queue holds before it drops.")] = 200_000
    overflow: Literal["drop_oldest", "drop_newest"] = Field(
        default="drop_oldest", description="What a full queue gives up: the oldest samples keep the view fresh."
    )
    lateness_s: Annotated[float, Field(ge=0, description="How long a live tick waits for late samples.")] = 2.0
    snapshot_interval_s: Annotated[float, Field(gt=0, description="Seconds between state snapshots.")] = 60.0


class Severity(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    threshold: Annotated[float, Field(gt=0, le=1)]


class AlertingConfig(Strict):
    severities: Annotated[list[Severity], Field(min_length=1)] = [
        Severity(name="warning", threshold=0.5),
        Severity(name="critical", threshold=0.75),
    ]
    hysteresis: Annotated[float, Field(ge=0, lt=1, description="Score drop below the lowest threshold to clear.")] = 0.1
    pending_s: Annotated[float, Field(ge=0, description="Seconds above threshold before an alert fires.")] = 5.0
    clear_s: Annotated[float, Field(ge=0, description="Seconds below the clear level before it resolves.")] = 30.0

    @field_validator("severities")
    @classmethod
    def _ascending(cls, value: list[Severity]) -> list[Severity]:
        thresholds = [s.threshold for s in value]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("thresholds must rise strictly from the first severity to the last")
        if len({s.name for s in value}) != len(value):
            raise ValueError("severity names must be unique")
        return value


DetectorOverride = create_model(
    "DetectorOverride",
    __base__=Strict,
    tags=(Annotated[list[str], Field(min_length=1, description="Tag names or glob patterns.")], ...),
    **{name: (model | None, None) for name, model in PARTIALS.items()},  # type: ignore[call-overload]
)


class DetectorsConfig(Strict):
    protect_threshold: Annotated[
        float, Field(gt=0, le=1, description="A sample scoring this high anywhere is not learned.")
    ] = 0.5
    protection: Literal["own", "any"] = Field(
        default="own", description="Withhold a flagged sample from the flagging detector only, or from all."
    )
    defaults: DetectorDefaults = DetectorDefaults()  # type: ignore[valid-type]
    overrides: list[DetectorOverride] = []  # type: ignore[valid-type]


class SecurityConfig(Strict):
    """Insecure choices this config makes on purpose; each is refused before start unless allowed here."""

    allow_inline_secrets: bool = Field(
        default=False, description="Accept passwords written inline instead of {file: PATH} or {env: NAME}."
    )
    allow_world_readable_keys: bool = Field(
        default=False, description="Accept private key files that other local users can read."
    )


class PlantConfig(Strict):
    site: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=100)]
    state_dir: ConfigPath = Field(description="Where snapshots and the alert journal live.")
    exporter: ExporterConfig = ExporterConfig()
    pipeline: PipelineConfig = PipelineConfig()
    sources: Annotated[list[SourceConfig], Field(min_length=1)]
    detectors: DetectorsConfig = DetectorsConfig()
    alerting: AlertingConfig = AlertingConfig()
    sinks: list[SinkConfig] = Field(default=[], description="Where alerts go besides the journal.")  # type: ignore[valid-type]
    security: SecurityConfig = SecurityConfig()
    invariants: list[InvariantConfig] = Field(default=[], description="Relations between tags, checked by CUSUM.")
    _units: list[int] | None = PrivateAttr(default=None)  # set by a replay: the sources its tags were read from

    @property
    def tags(self) -> list[TagConfig]:
        """All tags in config order; a tag's position here is its column in every frame."""
        return [tag for source in self.sources for tag in source.tags]

    def tag_sources(self) -> list[int]:
        return [i for i, source in enumerate(self.sources) for _ in source.tags]

    def tag_units(self) -> list[int]:
        """The unit of each tag: the index of the source (a PLC, a unit's server) the daemon reads it from.

        Multivariate detectors model one unit each by default. A replay folds every source into one
        (``collector.replay.replay_config``) but keeps the units, so it builds the same models as the daemon.
        """
        return list(self._units) if self._units is not None else self.tag_sources()

    def with_units_of(self, original: PlantConfig) -> PlantConfig:
        """This config, its tags keeping the units they have in ``original`` (same tags, same order)."""
        units = original.tag_units()
        if len(units) != len(self.tags):
            raise ValueError("with_units_of: the two configs do not have the same tags")
        self._units = units
        return self


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _cross_problems(data: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """Checks that span fields, run on the raw document so they are reported even when
    some field is wrong too: every problem in one pass."""
    seen_sources: set[str] = set()
    seen_tags: dict[str, str] = {}
    for i, source in enumerate(_items(data.get("sources"))):
        if not isinstance(source, dict):
            continue
        name = source.get("name")
        if isinstance(name, str):
            if name in seen_sources:
                yield f"sources[{i}].name", f"duplicate source name {name!r}"
            seen_sources.add(name)
        for j, tag in enumerate(_items(source.get("tags"))):
            tag_name = tag.get("name") if isinstance(tag, dict) else None
            if not isinstance(tag_name, str):
                continue
            path = f"sources[{i}].tags[{j}]"
            if tag_name in seen_tags:
                yield f"{path}.name", f"tag {tag_name!r} is already defined at {seen_tags[tag_name]}"
            seen_tags.setdefault(tag_name, path)
    detectors = data.get("detectors")
    overrides = detectors.get("overrides") if isinstance(detectors, dict) else None
    names = list(seen_tags)
    for k, override in enumerate(_items(overrides)):
        patterns = override.get("tags") if isinstance(override, dict) else None
        for m, pattern in enumerate(_items(patterns)):
            if isinstance(pattern, str) and not fnmatch.filter(names, pattern):
                yield f"detectors.overrides[{k}].tags[{m}]", f"{pattern!r} matches no tag"
    yield from sink_problems(data)
    yield from invariant_problems(data, names)


# -- errors ------------------------------------------------------------------------------------


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    kinds = set(source_kinds())
    for position, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif position == 2 and part in (kinds if loc[0] == "sources" else sink_kinds() if loc[0] == "sinks" else ()):
            pass  # the discriminated union's branch name; the user wrote kind: <part>, not a key
        elif isinstance(part, str) and part.startswith("function-"):
            pass
        else:
            out += f".{part}" if out else str(part)
    return out


def _reason(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {expected}"
    if kind == "union_tag_invalid":
        return f"must be one of {', '.join(source_kinds())} (got {ctx.get('tag')!r})"
    if kind == "union_tag_not_found":
        return f"required: the source's kind, one of {', '.join(source_kinds())}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        path, reason = _path(loc), _reason(error)
        if error["type"] == "extra_forbidden" and len(loc) >= 2 and loc[-2] in ("detectors", "defaults"):
            reason = f"unknown detector; must be one of {', '.join(DETECTORS)}"
        if error["type"] in ("union_tag_invalid", "union_tag_not_found") and loc[:1] == ("sinks",):
            reason = f"must be one of {', '.join(sink_kinds())}"
        if error["type"] == "union_tag_not_found":
            path = f"{path}.kind"
        if error["type"] == "union_tag_invalid":
            path = f"{path}.kind"
        problems.append((path, reason))
    return problems


def parse_config(data: Any, base_dir: Path, file: Path | None = None) -> PlantConfig:
    """Validate an already-parsed document; relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError([("", "the config must be a mapping at the top level")], file)
    problems: list[tuple[str, str]] = []
    cfg = None
    try:
        cfg = PlantConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems.extend(_problems(exc))
    problems.extend(_cross_problems(data))
    if cfg is not None:
        problems.extend(insecure_problems(cfg, data))
    if problems or cfg is None:
        raise ConfigError(problems, file)
    return cfg


def load_config(path: str | Path) -> PlantConfig:
    """Read and validate a config file, or raise ``ConfigError`` with every problem in it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read config: {exc.strerror}")], file) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([("", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}")], file) from None
    return parse_config(data, file.resolve().parent, file)


__all__ = [
    "AlertingConfig",
    "ConfigError",
    "DetectorsConfig",
    "ExporterConfig",
    "PipelineConfig",
    "PlantConfig",
    "SecurityConfig",
    "SourceBase",
    "TagConfig",
    "load_config",
    "parse_config",
]
