"""Write a plant run as a recording that ``plantwatch replay`` (and the replay source) reads.

Format, as in ``sim_plant/demo_recording.py``: a header ``timestamp,<tag>...,label``,
one row per step, ISO timestamps in UTC without an offset (the replay reader takes
naive times as UTC), values of the instruments (``measured()``), an empty cell
for no sample. ``include_true`` adds a ``<tag>.true`` column per tag after the
measured ones: the noise-free process, for scoring detectors against the truth.
The label is 0 throughout: a plain run has no attack in it.

    python -m sim_plant.record --plant oil --steps 3600 OUT.csv --seed 1
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sim_plant.plants import PLANTS, Plant

DEFAULT_START = datetime(2026, 1, 15, 0, 0, 0, tzinfo=UTC)


def _cell(value: float) -> str:
    # Seven significant digits keep a 0.1 mm level and a 0.001 m3/h flow, and print the same everywhere.
    return "" if math.isnan(value) else f"{value:.7g}"


def record(
    plant: Plant,
    steps: int,
    path: Path | str,
    start: datetime = DEFAULT_START,
    include_true: bool = False,
) -> Path:
    """Write ``steps`` rows: the plant's current scan, then a step, ``steps`` times.

    Row times are ``start`` plus the plant's own clock, so a plant already run for
    a while (warmed up, or mid-scenario) carries on its timeline.
    """
    if steps < 0:
        raise ValueError("steps must not be negative")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    origin = start.astimezone(UTC).replace(tzinfo=None)
    whole_seconds = float(plant.dt).is_integer() and origin.microsecond == 0
    timespec = "seconds" if whole_seconds else "milliseconds"
    names = plant.tag_names()
    header = ["timestamp", *names, *(f"{n}.true" for n in names if include_true), "label"]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(header) + "\n")
        for _ in range(steps):
            stamp = (origin + timedelta(seconds=plant.t)).isoformat(timespec=timespec)
            cells = [_cell(v) for v in plant.measured().tolist()]
            if include_true:
                cells += [_cell(v) for v in plant.true_values().tolist()]
            handle.write(",".join([stamp, *cells, "0"]) + "\n")
            plant.step()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim_plant.record", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="CSV file to write")
    parser.add_argument("--plant", choices=sorted(PLANTS), required=True)
    parser.add_argument("--steps", type=int, default=3600, help="rows to write (default 3600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=datetime.fromisoformat, default=DEFAULT_START, help="ISO time of row 0 (UTC)")
    parser.add_argument("--true", dest="include_true", action="store_true", help="add <tag>.true columns")
    args = parser.parse_args(argv)
    start = args.start if args.start.tzinfo else args.start.replace(tzinfo=UTC)
    plant = PLANTS[args.plant](seed=args.seed)
    record(plant, args.steps, args.output, start=start, include_true=args.include_true)
    print(f"{args.output}: {args.steps} rows of {len(plant.TAGS)} tags from the {args.plant} plant, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
