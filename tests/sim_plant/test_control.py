"""The PID: direction, limits, anti-windup, no setpoint kick."""

from __future__ import annotations

import pytest

from sim_plant.control import PID


def first_order_loop(pid: PID, setpoint: float, steps: int, gain: float = 1.0, tau: float = 20.0) -> list[float]:
    """A first-order process y' = (gain*u - y)/tau under ``pid``; returns y."""
    y, ys = 0.0, []
    for _ in range(steps):
        u = pid.update(setpoint, y)
        y += (gain * u - y) / tau
        ys.append(y)
    return ys


def test_reverse_acting_reaches_setpoint() -> None:
    pid = PID(kp=2.0, ki=0.1, dt=1.0, out_lo=0.0, out_hi=100.0)
    ys = first_order_loop(pid, 40.0, 600)
    assert abs(ys[-1] - 40.0) < 0.01


def test_direct_acting_moves_the_other_way() -> None:
    rev = PID(kp=1.0, ki=0.0, dt=1.0, out_lo=-100, out_hi=100, action="reverse")
    direct = PID(kp=1.0, ki=0.0, dt=1.0, out_lo=-100, out_hi=100, action="direct")
    assert rev.update(10.0, 12.0) == -2.0
    assert direct.update(10.0, 12.0) == 2.0


def test_output_is_clamped() -> None:
    pid = PID(kp=100.0, ki=0.0, dt=1.0, out_lo=10.0, out_hi=90.0)
    assert pid.update(100.0, 0.0) == 90.0
    assert pid.update(-100.0, 0.0) == 10.0


def test_anti_windup_recovers_fast_after_saturation() -> None:
    """Held at the limit for a long time, the integral must not run away, so the release is quick."""
    held = PID(kp=1.0, ki=0.05, dt=1.0, out_lo=0.0, out_hi=100.0)
    for _ in range(5000):
        held.update(1000.0, 0.0)  # unreachable setpoint: output pinned at 100
    assert held.integral <= 100.0
    # Now the process is reachable again: the output must leave the limit at once.
    assert held.update(0.0, 10.0) < 100.0


def test_derivative_acts_on_measurement_not_setpoint() -> None:
    pid = PID(kp=0.0, ki=0.0, kd=50.0, dt=1.0, out_lo=-1e6, out_hi=1e6, deriv_filter_s=0.0)
    pid.update(0.0, 5.0)
    assert pid.update(100.0, 5.0) == 0.0, "a setpoint step must not kick the output"
    assert pid.update(100.0, 6.0) < 0.0, "a rising measurement pulls a reverse-acting output down"


def test_track_is_bumpless() -> None:
    pid = PID(kp=3.0, ki=0.01, dt=1.0)
    pid.track(42.0, 7.0)
    assert pid.update(7.0, 7.0) == pytest.approx(42.0)


def test_pv_filter_smooths_noise() -> None:
    raw = PID(kp=10.0, ki=0.0, dt=1.0, out_lo=-1e3, out_hi=1e3)
    filtered = PID(kp=10.0, ki=0.0, dt=1.0, out_lo=-1e3, out_hi=1e3, pv_filter_s=10.0)
    pvs = [0.0, 1.0] * 50
    spread_raw = [raw.update(0.0, pv) for pv in pvs]
    spread_filtered = [filtered.update(0.0, pv) for pv in pvs]
    assert max(spread_filtered[50:]) - min(spread_filtered[50:]) < 0.2 * (max(spread_raw) - min(spread_raw))


@pytest.mark.parametrize(
    "kwargs",
    [{"dt": 0.0}, {"out_lo": 1.0, "out_hi": 1.0}, {"kp": -1.0}, {"action": "sideways"}],
)
def test_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PID(**{"kp": 1.0, "ki": 0.1, "dt": 1.0, **kwargs})
