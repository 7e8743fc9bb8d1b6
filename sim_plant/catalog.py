"""The tag catalog: one ``TagSpec`` per process variable a plant model publishes.

A plant's ``TAGS`` tuple is the single source of truth for its tags. The
protocol servers name their OPC-UA nodes, Modbus registers and MQTT topics from
it, the recorder writes its columns from it, and ``as_config_tags`` turns it
into the ``tags:`` list of a plantwatch config, so the ranges the daemon alarms
on are the ranges the model was built to stay in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["measurement", "setpoint", "actuator", "status"]
ROLES: tuple[Role, ...] = ("measurement", "setpoint", "actuator", "status")

# Same pattern as ``collector.sources.TAG_NAME_PATTERN``; repeated rather than imported so the
# simulator does not depend on the daemon (a test checks the two agree).
TAG_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:\-]*$"
_NAME = re.compile(TAG_NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One tag as the plant's engineers would list it in the I/O schedule.

    ``lo``/``hi`` is the *normal operating range*: a healthy plant running
    under control stays inside it (the tests hold the models to that), so it
    can serve directly as plantwatch's ``range``. ``role`` says who writes the
    value: the process (measurement), the operator (setpoint), a controller
    (actuator) or a discrete 0/1 state (status). ``loop`` names the control
    loop that acts on the tag, so an attack on one tag can be traced to the
    actuator it moves.

    Sensor noise is Gaussian with ``noise_sd`` unless ``counts_per_unit`` is
    set: a counting instrument (a dose-rate monitor) registers that many counts
    per reading for every unit of its value, and its noise is Poisson.
    ``min_reading`` is the floor of the transmitter (a flow meter's low-flow
    cut-off, a valve's closed end stop): noise never reads below it.
    """

    name: str
    unit: str
    lo: float
    hi: float
    description: str
    area: str
    role: Role = "measurement"
    loop: str | None = None
    noise_sd: float = 0.0
    counts_per_unit: float | None = None
    min_reading: float | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"tag name {self.name!r} does not match {TAG_NAME_PATTERN}")
        if self.role not in ROLES:
            raise ValueError(f"{self.name}: role {self.role!r} is not one of {ROLES}")
        if not self.lo < self.hi:
            raise ValueError(f"{self.name}: lo {self.lo} must be below hi {self.hi}")
        if self.noise_sd < 0:
            raise ValueError(f"{self.name}: noise_sd must not be negative")
        if self.counts_per_unit is not None and self.counts_per_unit <= 0:
            raise ValueError(f"{self.name}: counts_per_unit must be positive")

    @property
    def discrete(self) -> bool:
        """Only statuses are discrete; a setpoint is an analog value the operator dials in."""
        return self.role == "status"


def as_config_tags(specs: Iterable[TagSpec]) -> list[dict[str, Any]]:
    """The ``tags:`` list of a plantwatch source for these specs, ready for YAML."""
    return [
        {
            "name": spec.name,
            "unit": spec.unit,
            "description": spec.description,
            "range": [spec.lo, spec.hi],
            "type": "discrete" if spec.discrete else "analog",
        }
        for spec in specs
    ]


__all__ = ["ROLES", "TAG_NAME_PATTERN", "Role", "TagSpec", "as_config_tags"]
