"""Config models for detector settings (generated from the detector registry) and for invariants.

Each detector declares its own ``Params``; from them come the models for the
``detectors.defaults`` section (every field, with defaults) and for an
override, whether in ``detectors.overrides`` or in a tag's own ``detectors``
block (every field optional: unset means "inherit").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from detectors import DETECTORS
from detectors.base import DetectorParams
from detectors.expressions import ExpressionError, parse


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


# -- physics invariants ------------------------------------------------------------------------


class InvariantConfig(_Strict):
    """One relation between tags that holds in normal operation (``detectors/invariants.py``)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=100, description="Names it in logs.")]
    expression: Annotated[str, Field(min_length=1, description="~0 or constant when the plant is healthy.")]
    constants: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], float] = Field(
        default={}, description="Named numbers the expression uses (a tank's area, a pump's rating)."
    )
    tolerance: Annotated[
        float, Field(ge=0, description="Deviations within this band, in expression units, never count.")
    ] = 0.0
    k: Annotated[float, Field(ge=0, description="CUSUM slack, in learned residual spreads.")] = 0.5
    h: Annotated[float, Field(gt=0, description="CUSUM limit: the score is 0.5 there.")] = 12.0
    warmup: Annotated[int, Field(ge=1, description="Ticks learned before it is checked.")] = 600
    alpha: Annotated[
        float,
        Field(ge=0, le=1, description="Learning weight of each unflagged tick once warm; 0: fixed after warm-up."),
    ] = 0.0
    severity: str | None = Field(default=None, description="Highest severity it may raise; null: any.")


def invariant_problems(data: dict[str, Any], tag_names: list[str]) -> Iterable[tuple[str, str]]:
    """Every invariant parsed against the config's tags, on the raw document: each problem with its path."""
    alerting = data.get("alerting")
    severities = alerting.get("severities") if isinstance(alerting, dict) else None
    levels = ([s.get("name") for s in severities if isinstance(s, dict)] if isinstance(severities, list) else None) or [
        "warning",
        "critical",
    ]
    invariants = data.get("invariants")
    seen: set[str] = set()
    tags = set(tag_names)
    for k, inv in enumerate(invariants if isinstance(invariants, list) else []):
        if not isinstance(inv, dict):
            continue
        path = f"invariants[{k}]"
        name = inv.get("name")
        if isinstance(name, str):
            if name in seen:
                yield f"{path}.name", f"duplicate invariant name {name!r}"
            seen.add(name)
        constants = inv.get("constants") if isinstance(inv.get("constants"), dict) else {}
        for const in constants:
            if const in tags:
                yield f"{path}.constants.{const}", "is also a tag name; rename the constant"
        text = inv.get("expression")
        numeric = {c: v for c, v in constants.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if isinstance(text, str) and text.strip():
            try:
                parse(text, tag_names, numeric)
            except ExpressionError as exc:
                yield f"{path}.expression", str(exc)
        severity = inv.get("severity")
        if severity is not None and severity not in levels:
            yield f"{path}.severity", f"must be one of {', '.join(str(v) for v in levels)}"
