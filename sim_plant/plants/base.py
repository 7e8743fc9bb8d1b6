"""What every plant model shares: fixed-step time, seeded noise, setpoints and actuator overrides.

A model is a few floats of state advanced by explicit physics once per ``dt``,
with its controllers reading the *measured* values of the previous scan, as a
PLC does. That is why sensor noise is drawn once per step, eagerly: the
controllers and any reader (``measured()``, a protocol server, the recorder)
see the same reading, and the random streams depend only on the number of
steps taken, never on who looked. Process disturbances, Gaussian sensor noise
and counting noise come from three independent streams spawned from the seed,
so two plants of one seed that differ only in, say, a source term still see the
same disturbances and the same noise on every Gaussian sensor: the difference
between their runs is the effect of the change alone. (A Poisson draw uses a
variable number of random numbers, so it must not share a stream.)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from sim_plant.catalog import TagSpec

BLOCK = 2048  # noise rows drawn per numpy call; one call per step would dominate the step time


class NormalBlocks:
    """Standard normal rows from ``rng``, drawn ``BLOCK`` rows at a time."""

    def __init__(self, rng: np.random.Generator, width: int) -> None:
        self._rng = rng
        self._width = width
        self._rows = np.empty((0, width))
        self._lists: list[list[float]] = []
        self._next = 0

    def _refill(self) -> None:
        self._rows = self._rng.standard_normal((BLOCK, self._width))
        self._lists = self._rows.tolist()
        self._next = 0

    def row(self) -> np.ndarray:
        if self._next >= len(self._rows):
            self._refill()
        self._next += 1
        return self._rows[self._next - 1]

    def floats(self) -> list[float]:
        """The next row as Python floats: scalar physics is faster on floats than on numpy scalars."""
        if self._next >= len(self._lists):
            self._refill()
        self._next += 1
        return self._lists[self._next - 1]


class OrnsteinUhlenbeck:
    """A slow random wander around zero (upstream supply, weather), exact for any ``dt``.

    ``sd`` is the stationary standard deviation and ``tau_s`` the correlation time.
    """

    __slots__ = ("_a", "_b", "value")

    def __init__(self, sd: float, tau_s: float, dt: float) -> None:
        self._a = math.exp(-dt / tau_s)
        self._b = sd * math.sqrt(1.0 - self._a * self._a)
        self.value = 0.0

    def step(self, z: float) -> float:
        self.value = self._a * self.value + self._b * z
        return self.value


def first_order(value: float, target: float, tau_s: float, dt: float) -> float:
    """One step of a first-order lag (a valve stroking, a pump running down).

    Within a millionth of the target it is there: a valve on its end stop reads 100, not 99.99999.
    """
    value += (target - value) * min(1.0, dt / tau_s)
    return target if abs(target - value) < 1e-6 else value


def ramp(value: float, target: float, rate: float, dt: float) -> float:
    """One step towards ``target`` at most ``rate`` per second (a drive's ramp limit)."""
    step = rate * dt
    return target if abs(target - value) <= step else value + math.copysign(step, target - value)


class Plant(ABC):
    """A seeded, fixed-step plant model with closed control loops.

    Subclasses set ``name``, ``TAGS``, ``SETPOINTS`` (default values, keyed by the
    setpoint tags' names) and ``DISTURBANCES`` (process noise draws per step), and
    implement ``_start`` (steady initial state and controllers), ``_advance`` (one
    ``dt`` of physics given the disturbance draws) and ``_values`` (the true value of
    every tag, in ``TAGS`` order).

    ``setpoints`` and ``actuator_overrides`` are the plant's inputs from outside:
    the operator (or an attacker) writes a setpoint; an override forces an actuator
    or status tag (``{"P101.RUNNING": 0.0}`` stops the pump) whatever its
    controller commands. Both are read at every step.
    """

    name: ClassVar[str]
    dt: ClassVar[float] = 1.0
    TAGS: ClassVar[tuple[TagSpec, ...]]
    SETPOINTS: ClassVar[dict[str, float]]
    DISTURBANCES: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        names = [spec.name for spec in cls.TAGS]
        if len(set(names)) != len(names):
            raise TypeError(f"{cls.__name__}: duplicate tag names")
        setpoint_tags = {spec.name for spec in cls.TAGS if spec.role == "setpoint"}
        if set(cls.SETPOINTS) != setpoint_tags:
            raise TypeError(f"{cls.__name__}: SETPOINTS must give a default for exactly the setpoint tags")

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        process_seed, sensor_seed, counting_seed = np.random.SeedSequence(seed).spawn(3)
        self._disturbances = NormalBlocks(np.random.default_rng(process_seed), self.DISTURBANCES)
        self._sensor = NormalBlocks(np.random.default_rng(sensor_seed), len(self.TAGS))
        self._counting_rng = np.random.default_rng(counting_seed)
        self.index: dict[str, int] = {spec.name: i for i, spec in enumerate(self.TAGS)}
        self._sd = np.array([spec.noise_sd for spec in self.TAGS])
        self._floor = np.array([-np.inf if s.min_reading is None else s.min_reading for s in self.TAGS])
        counting = [(i, s.counts_per_unit) for i, s in enumerate(self.TAGS) if s.counts_per_unit is not None]
        self._counting = np.array([i for i, _ in counting], dtype=np.intp)
        self._counts_per_unit = np.array([c for _, c in counting], dtype=np.float64)
        self._setpoint_tags = frozenset(self.SETPOINTS)
        self._forceable = frozenset(s.name for s in self.TAGS if s.role in ("actuator", "status"))
        self.setpoints: dict[str, float] = dict(self.SETPOINTS)
        self.actuator_overrides: dict[str, float] = {}
        # A spoofed field transmitter: called with (t, readings) after each scan's noise, it may change the
        # readings in place. The controllers (``pv``) and every reader then see the falsified values, as a
        # PLC wired to a compromised transmitter would; ``true_values()`` keeps the real process.
        self.transmitter_tamper: Callable[[float, np.ndarray], None] | None = None
        self.t = 0.0
        self.steps = 0
        self._start()
        self._scan()
        if self._true.shape != (len(self.TAGS),):
            raise TypeError(f"{type(self).__name__}._values must give one value per tag")

    # -- the public surface -----------------------------------------------------------------

    @classmethod
    def tag_names(cls) -> list[str]:
        return [spec.name for spec in cls.TAGS]

    def step(self) -> None:
        """Advance one ``dt``: controllers scan, actuators move, physics integrates, sensors read."""
        if self.actuator_overrides and not self._forceable.issuperset(self.actuator_overrides):
            unknown = sorted(set(self.actuator_overrides) - self._forceable)
            raise KeyError(f"{self.name}: cannot override {unknown}; forceable tags are {sorted(self._forceable)}")
        if self.setpoints.keys() != self._setpoint_tags:
            raise KeyError(f"{self.name}: setpoints must keep exactly the keys {sorted(self._setpoint_tags)}")
        self._advance(self._disturbances.floats())
        self.steps += 1
        self.t = self.steps * self.dt
        self._scan()

    def run(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Step ``steps`` times; return (true, measured), each [steps, tags], read after every step."""
        true = np.empty((steps, len(self.TAGS)))
        measured = np.empty((steps, len(self.TAGS)))
        for k in range(steps):
            self.step()
            true[k] = self._true
            measured[k] = self._measured
        return true, measured

    def true_values(self) -> np.ndarray:
        """The process as it is after the last step, aligned with ``TAGS`` (a copy)."""
        return self._true.copy()

    def measured(self) -> np.ndarray:
        """What the instruments read after the last step: true value plus sensor noise (a copy)."""
        return self._measured.copy()

    # -- for subclasses ---------------------------------------------------------------------

    def pv(self, tag: str) -> float:
        """The measured value a controller reads, from the last scan."""
        return float(self._measured[self.index[tag]])

    def command(self, tag: str, value: float) -> float:
        """The command an actuator receives: its controller's, unless an override forces it."""
        return self.actuator_overrides.get(tag, value)

    @abstractmethod
    def _start(self) -> None:
        """Steady initial state and controllers."""

    @abstractmethod
    def _advance(self, z: list[float]) -> None:
        """One ``dt`` of physics, given this step's disturbance draws ``z``."""

    @abstractmethod
    def _values(self) -> list[float]:
        """The true value of every tag, in ``TAGS`` order."""

    def _scan(self) -> None:
        true = np.array(self._values(), dtype=np.float64)
        measured = true + self._sensor.row() * self._sd
        if self._counting.size:
            mean = np.maximum(true[self._counting], 0.0) * self._counts_per_unit
            measured[self._counting] = self._counting_rng.poisson(mean) / self._counts_per_unit
        np.maximum(measured, self._floor, out=measured)
        if self.transmitter_tamper is not None:
            self.transmitter_tamper(self.t, measured)
        self._true = true
        self._measured = measured


__all__ = ["NormalBlocks", "OrnsteinUhlenbeck", "Plant", "first_order", "ramp"]
