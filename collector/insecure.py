"""Insecure choices a config may only make on purpose: inline secrets and world-readable private keys.

A password written into the YAML travels with every copy of the file (backups,
tickets, version control); a private key any local user can read lets them
impersonate plantwatch to the plant's servers. Both are refused before start
unless the config's ``security`` section allows them by name, so the choice is
visible in the file an assessor reads (and ``plantwatch posture`` reports it).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

KEY_FIELDS = ("private_key", "key_file", "client_key")  # fields that hold a private key's path


def inline_secrets(model: BaseModel, raw: Any, prefix: str = "") -> Iterator[str]:
    """Paths of secrets written as plain strings in the file (a mapping means {env} or {file})."""
    if not isinstance(raw, dict):
        return
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, SecretStr) and isinstance(raw.get(name), str):
            yield path
        elif isinstance(value, BaseModel):
            yield from inline_secrets(value, raw.get(name), path)
        elif isinstance(value, list) and isinstance(raw.get(name), list):
            for i, (item, raw_item) in enumerate(zip(value, raw[name], strict=False)):
                if isinstance(item, BaseModel):
                    yield from inline_secrets(item, raw_item, f"{path}[{i}]")


def world_readable(path: Path | None) -> bool:
    """True when other users may read ``path``; a missing file is another check's business."""
    try:
        return path is not None and bool(Path(path).stat().st_mode & (stat.S_IROTH | stat.S_IWOTH))
    except OSError:
        return False


def readable_keys(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """(field path, file) of every private key in the config that other users can read."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = f"{prefix}.{name}" if prefix else name
        if name in KEY_FIELDS and isinstance(value, Path) and world_readable(value):
            yield path, value
        elif isinstance(value, BaseModel):
            yield from readable_keys(value, path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from readable_keys(item, f"{path}[{i}]")


def insecure_problems(cfg: Any, raw: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Config errors for the insecure choices the config's ``security`` section does not allow."""
    allowed = cfg.security
    if not allowed.allow_inline_secrets:
        for path in inline_secrets(cfg, raw):
            yield (
                path,
                "secret written inline in the config; use {file: PATH} or {env: NAME}, "
                "or set security.allow_inline_secrets: true",
            )
    if not allowed.allow_world_readable_keys:
        for path, key in readable_keys(cfg):
            yield (
                path,
                f"private key {key} is readable by other users; chmod o-rwx it, "
                "or set security.allow_world_readable_keys: true",
            )
