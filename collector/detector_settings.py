"""Config models for detector settings, generated from the detector registry.

Each detector declares its own ``Params``; from them come the models for the
``detectors.defaults`` section (every field, with defaults) and for an
override, whether in ``detectors.overrides`` or in a tag's own ``detectors``
block (every field optional: unset means "inherit").
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, create_model

from detectors import DETECTORS
from detectors.base import DetectorParams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _partial(model: type[DetectorParams]) -> type[_Strict]:
    """The same fields as ``model``, all optional: what an override may set."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = (annotation | None, None)
    return create_model(f"{model.__name__}Override", __base__=_Strict, **fields)


PARTIALS: dict[str, type[_Strict]] = {name: _partial(cls.Params) for name, cls in DETECTORS.items()}

DetectorDefaults = create_model(
    "DetectorDefaults",
    __base__=_Strict,
    **{name: (cls.Params, cls.Params()) for name, cls in DETECTORS.items()},  # type: ignore[call-overload]
)

# A tag's own block: each detector optional, each of its fields optional.
DetectorOverrides = create_model(
    "DetectorOverrides",
    __base__=_Strict,
    **{name: (model | None, None) for name, model in PARTIALS.items()},  # type: ignore[call-overload]
)


def overridden(block: BaseModel | None) -> dict[str, Any]:
    """The fields an override block actually sets."""
    return {} if block is None else block.model_dump(exclude_none=True)
