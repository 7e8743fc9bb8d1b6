"""A PID controller as a PLC runs it: fixed scan time, clamped output, no windup.

The plants have a handful of loops each, so one small scalar class is enough
(no vectors). Choices that matter for attacks and disturbances:

- ``action`` follows the ISA convention. A *reverse*-acting controller lowers
  its output when the measurement rises (makeup valve on a level); a *direct*
  one raises it (outflow pump on a level, coolant valve on a temperature).
  Gains stay positive either way.
- The derivative acts on the measurement, not the error, and is filtered, so a
  setpoint change (or a tampered setpoint) does not kick the actuator.
- An optional first-order input filter on the measurement, as PLC analog
  inputs have, keeps sensor noise from chattering a slow loop's valve.
- Anti-windup is conditional integration: while the output is pinned at a limit
  and the error pushes further into it, the integral stops growing. Otherwise a
  controller held at a limit (say, by an attack) would overshoot for minutes
  after release.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(slots=True)
class PID:
    """Parallel PID: ``u = kp*e + ki*integral(e) + kd*d(-pv)/dt``, clamped to [out_lo, out_hi].

    ``kp`` is in output units per measurement unit, ``ki`` in the same per second and
    ``kd`` in the same times seconds. ``deriv_filter_s`` and ``pv_filter_s`` are the time
    constants of the derivative and input filters. ``integral`` is kept in output units,
    so ``track`` can preset it.
    """

    kp: float
    ki: float
    dt: float
    out_lo: float = 0.0
    out_hi: float = 100.0
    kd: float = 0.0
    action: Literal["direct", "reverse"] = "reverse"
    deriv_filter_s: float = 5.0
    pv_filter_s: float = 0.0
    integral: float = 0.0
    output: float = 0.0
    _sign: float = field(init=False, repr=False)
    _last_pv: float | None = field(default=None, init=False, repr=False)
    _filtered: float | None = field(default=None, init=False, repr=False)
    _deriv: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.dt <= 0:
            raise ValueError("dt must be positive")
        if not self.out_lo < self.out_hi:
            raise ValueError("out_lo must be below out_hi")
        if min(self.kp, self.ki, self.kd) < 0:
            raise ValueError("gains are positive; choose the sign with action")
        if self.action not in ("direct", "reverse"):
            raise ValueError("action is 'direct' or 'reverse'")
        self._sign = 1.0 if self.action == "reverse" else -1.0
        self.output = min(max(self.output, self.out_lo), self.out_hi)

    def track(self, output: float, pv: float | None = None) -> None:
        """Start from ``output`` with no bump: the loop was in manual, or the plant starts in steady state."""
        self.output = min(max(output, self.out_lo), self.out_hi)
        self.integral = self.output
        self._last_pv = pv
        self._filtered = pv
        self._deriv = 0.0

    def update(self, setpoint: float, pv: float) -> float:
        """One scan: read the measurement, return the new output."""
        if self.pv_filter_s > 0.0:
            if self._filtered is None:
                self._filtered = pv
            self._filtered += self.dt / (self.pv_filter_s + self.dt) * (pv - self._filtered)
            pv = self._filtered
        error = self._sign * (setpoint - pv)
        if self.kd > 0.0 and self._last_pv is not None:
            raw = -self._sign * (pv - self._last_pv) / self.dt
            a = self.dt / (self.deriv_filter_s + self.dt)
            self._deriv += a * (raw - self._deriv)
        self._last_pv = pv
        proportional = self.kp * error + self.kd * self._deriv
        integral = self.integral + self.ki * error * self.dt
        u = proportional + integral
        if u > self.out_hi:
            if error <= 0.0:
                self.integral = integral
            u = self.out_hi
        elif u < self.out_lo:
            if error >= 0.0:
                self.integral = integral
            u = self.out_lo
        else:
            self.integral = integral
        # At steady state the output is the integral, so it never needs to leave the output range.
        self.integral = min(max(self.integral, self.out_lo), self.out_hi)
        self.output = u
        return u


__all__ = ["PID"]
