"""Writes ``config/recordings/demo_tank_farm.csv``: a crude tank farm with three labelled faults.

Until the plant simulator serves live tags, this recording is what the demo
daemon replays. It is small physics, seeded and deterministic: a storage tank
whose level a PI loop holds at 5 m by trimming the outflow pump, with sensor
noise. Three faults are injected on the served values, each labelled 1:

- 900-959 s: discharge pressure spoofed 1.5 bar high (false-data injection);
- 1300-1499 s: tank temperature frozen at its last value (stuck sensor);
- 1700-1759 s: inflow meter silent (the transmitter stops reporting).

Run ``python -m sim_plant.demo_recording [PATH]`` to write it again.
"""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

TAGS = [
    "TK101.LEVEL",
    "FT101.FLOW_IN",
    "FT102.FLOW_OUT",
    "P101.SPEED",
    "PT101.PRESSURE",
    "TT101.TEMP",
    "P101.RUNNING",
    "XV101.POSITION",
]
START = datetime(2026, 1, 15, 8, 0, 0, tzinfo=UTC)
ROWS = 1800
SPOOF = (900, 960)
FREEZE = (1300, 1500)
SILENCE = (1700, 1760)


def simulate(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Return (values[rows, tags] with NaN for missing, labels[rows])."""
    rng = np.random.default_rng(seed)
    area = 40.0  # m2
    level, integral = 5.0, 0.0
    rows = np.empty((ROWS, len(TAGS)))
    t = np.arange(ROWS, dtype=np.float64)
    inflow = 120.0 + 6.0 * np.sin(2 * np.pi * t / 900.0)  # m3/h, upstream pipeline swing
    temp = 35.0 + 0.8 * np.sin(2 * np.pi * t / 1800.0)
    for i in range(ROWS):
        error = level - 5.0
        integral = np.clip(integral + error, -200, 200)
        speed = np.clip(70.0 + 25.0 * error + 0.05 * integral, 20.0, 100.0)  # %
        outflow = 1.7 * speed  # m3/h
        level += (inflow[i] - outflow) / 3600.0 / area * 60.0  # time-lapsed x60 so the loop moves
        pressure = 2.0 + 0.085 * speed
        rows[i] = [level, inflow[i], outflow, speed, pressure, temp[i], 1.0, 100.0]
    noise = np.array([0.01, 0.8, 0.8, 0.2, 0.03, 0.05, 0.0, 0.0])
    values = rows + rng.normal(size=rows.shape) * noise
    values[:, 0] = np.round(values[:, 0], 3)
    labels = np.zeros(ROWS)
    p = TAGS.index("PT101.PRESSURE")
    values[SPOOF[0] : SPOOF[1], p] += 1.5
    labels[SPOOF[0] : SPOOF[1]] = 1
    tt = TAGS.index("TT101.TEMP")
    values[FREEZE[0] : FREEZE[1], tt] = values[FREEZE[0] - 1, tt]
    labels[FREEZE[0] : FREEZE[1]] = 1
    fi = TAGS.index("FT101.FLOW_IN")
    values[SILENCE[0] : SILENCE[1], fi] = np.nan
    labels[SILENCE[0] : SILENCE[1]] = 1
    return values, labels


def write(path: Path, seed: int = 7) -> None:
    values, labels = simulate(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["timestamp", *TAGS, "label"])
        for i in range(ROWS):
            stamp = (START + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S")
            cells = ["" if np.isnan(v) else f"{v:.4f}" for v in values[i]]
            out.writerow([stamp, *cells, f"{labels[i]:.0f}"])


DEFAULT_PATH = Path(__file__).resolve().parent.parent / "config" / "recordings" / "demo_tank_farm.csv"

if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH)
