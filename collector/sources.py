"""Config models shared by every receiver kind: the source envelope and its tags.

Kept apart from ``collector.config`` so that a receiver's options model can
build on them without importing the whole configuration (no import cycle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    model_validator,
)

from collector.detector_settings import DetectorOverrides

TAG_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:\-]*$"


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base_dir", "."))


def _resolve_path(value: Any, info: ValidationInfo) -> Any:
    """Resolve relative paths against the config file's folder, not the working directory."""
    if isinstance(value, str | Path):
        path = Path(value).expanduser()
        return path if path.is_absolute() else (_base_dir(info) / path).resolve()
    return value


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    """A secret is inline, ``{env: NAME}`` or ``{file: PATH}``, so it never has to sit in the file."""
    if not isinstance(value, dict):
        return value
    if set(value) == {"env"}:
        name = str(value["env"])
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    if set(value) == {"file"}:
        path = _resolve_path(str(value["file"]), info)
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from exc
    raise ValueError("a secret is a string, {env: NAME} or {file: PATH}")


def _existing_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


ConfigPath = Annotated[Path, BeforeValidator(_resolve_path)]
ConfigFile = Annotated[Path, BeforeValidator(_resolve_path), AfterValidator(_existing_file)]
"""A path resolved like ``ConfigPath`` that must name an existing file: a missing certificate or recording
is a config error naming the field, before start, not a failure at the first connect."""
Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]


class TagConfig(Strict):
    """One process variable as the plant's engineers know it."""

    name: Annotated[str, Field(pattern=TAG_NAME_PATTERN, max_length=200)]
    column: str | None = Field(
        default=None, description="Where the source finds the tag (column, node, register); defaults to name."
    )
    description: str = ""
    unit: str = ""
    type: Literal["analog", "discrete"] = "analog"
    range: tuple[float, float] | None = Field(
        default=None, description="Normal operating range [lo, hi]; leaving it is a warning."
    )
    alarm_range: tuple[float, float] | None = Field(
        default=None, description="Alarm range [lolo, hihi]; leaving it is critical."
    )
    detectors: DetectorOverrides = Field(  # type: ignore[valid-type]
        default_factory=DetectorOverrides, description="Per-tag detector settings, e.g. {ewma: {z_limit: 8}}."
    )

    @model_validator(mode="after")
    def _ranges_nest(self) -> TagConfig:
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError("range: lo must be below hi")
        if self.alarm_range is not None:
            lolo, hihi = self.alarm_range
            if not lolo < hihi:
                raise ValueError("alarm_range: lolo must be below hihi")
            if self.range is not None and not (lolo <= self.range[0] and hihi >= self.range[1]):
                raise ValueError("alarm_range must contain range")
        return self

    @property
    def source_key(self) -> str:
        return self.column if self.column is not None else self.name


class ClientTls(Strict):
    """TLS from plantwatch to a server: the server's certificate is always verified, never trusted blind."""

    ca_file: ConfigFile | None = Field(
        default=None, description="CA bundle (PEM) that signed the server's certificate; null: system CAs."
    )
    cert_file: ConfigFile | None = Field(default=None, description="Client certificate (PEM), with key_file.")
    key_file: ConfigFile | None = Field(default=None, description="Client private key (PEM), with cert_file.")
    verify_hostname: bool = Field(
        default=True, description="Check the host (DNS name or IP address) against the server's certificate."
    )

    @model_validator(mode="after")
    def _pair(self) -> ClientTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class SourceBase(Strict):
    """What every source has, whatever its protocol: a name, a kind and its tags."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=100)]
    tags: Annotated[list[TagConfig], Field(min_length=1)]
