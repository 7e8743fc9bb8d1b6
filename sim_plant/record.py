"""Write a plant run as a recording that ``plantwatch replay`` (and the replay source) reads.

Format, as in ``sim_plant/demo_recording.py``: a header ``timestamp,<tag>...,label``,
one row per step, ISO timestamps in UTC without an offset (the replay reader takes
naive times as UTC), values of the instruments (``measured()``), an empty cell
for no sample. ``include_true`` adds a ``<tag>.true`` column per tag after the
measured ones: the noise-free process, for scoring detectors against the truth.
The label is 0 throughout a plain run. A scenario's recording carries ground
truth: ``label`` is 1 while any attack step is active at that tick, and a
column ``attack`` right after it holds the ids of the active steps joined by
``+`` (empty when none). The replay reader ignores it unless asked for it.

    python -m sim_plant.record --plant oil --steps 3600 OUT.csv --seed 1
    python -m sim_plant.record --scenario sim_plant/scenarios/oil/pump_stop.yaml OUT.csv --seed 1
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sim_plant.plants import PLANTS, Plant

if TYPE_CHECKING:
    from sim_plant.scenarios import Scenario

DEFAULT_START = datetime(2026, 1, 15, 0, 0, 0, tzinfo=UTC)
DEFAULT_WARMUP_S = 600.0  # unrecorded plant seconds before row 0: the slow disturbances settle into their wander


def _cell(value: float) -> str:
    # Seven significant digits keep a 0.1 mm level and a 0.001 m3/h flow, and print the same everywhere.
    return "" if math.isnan(value) else f"{value:.7g}"


class RecordingWriter:
    """Rows of a plant run, written as they happen: the recorder and the live simulator share it.

    ``served`` are the values clients were given (after any attack on the wire),
    ``true`` the noise-free process; ``label`` is ground truth (0 normal);
    with ``attack_column`` an ``attack`` column after it names the active steps.
    """

    def __init__(
        self,
        path: Path | str,
        names: Sequence[str],
        include_true: bool = False,
        whole_seconds: bool = True,
        attack_column: bool = False,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.include_true = include_true
        self.attack_column = attack_column
        self.timespec = "seconds" if whole_seconds else "milliseconds"
        self._handle = self.path.open("w", encoding="utf-8", newline="")
        header = ["timestamp", *names, *(f"{n}.true" for n in names if include_true), "label"]
        if attack_column:
            header.append("attack")
        self._handle.write(",".join(header) + "\n")
        self.rows = 0

    def write(
        self, moment: datetime, served: Sequence[float], true: Sequence[float] = (), label: float = 0, attack: str = ""
    ) -> None:
        stamp = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=self.timespec)
        cells = [_cell(v) for v in served]
        if self.include_true:
            cells += [_cell(v) for v in true]
        cells.append(f"{label:g}")
        if self.attack_column:
            cells.append(attack)  # step ids are [A-Za-z0-9_-]: never a comma or a quote to escape
        self._handle.write(",".join([stamp, *cells]) + "\n")
        self.rows += 1

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    whole_seconds = float(plant.dt).is_integer() and start.microsecond == 0
    with RecordingWriter(path, plant.tag_names(), include_true, whole_seconds) as writer:
        for _ in range(steps):
            true = plant.true_values().tolist() if include_true else ()
            writer.write(start + timedelta(seconds=plant.t), plant.measured().tolist(), true)
            plant.step()
    return Path(path)


def record_scenario(
    scenario: Scenario,
    path: Path | str,
    *,
    seed: int = 0,
    warmup_s: float = DEFAULT_WARMUP_S,
    start: datetime = DEFAULT_START,
    include_true: bool = False,
) -> Path:
    """Write the labelled recording of a whole scenario, as fast as the CPU goes.

    The plant runs ``warmup_s`` unrecorded first; row 0 is scenario time 0 at
    ``start``. Attacks go through the same ``ScenarioPlayer`` calls as in the
    live simulator, so the file is what the daemon would have received live.
    """
    from sim_plant.scenarios import ScenarioPlayer, warm_up

    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    plant = PLANTS[scenario.plant](seed=seed)
    warm_up(plant, warmup_s)
    player = ScenarioPlayer(scenario, plant, seed=seed)
    whole_seconds = float(plant.dt).is_integer() and start.microsecond == 0
    with RecordingWriter(path, plant.tag_names(), include_true, whole_seconds, attack_column=True) as writer:
        while not player.finished:
            scan = player.scan()
            true = plant.true_values().tolist() if include_true else ()
            writer.write(start + timedelta(seconds=scan.t), scan.seen.tolist(), true, scan.label, scan.attack)
            player.advance()
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim_plant.record", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="CSV file to write")
    parser.add_argument("--plant", choices=sorted(PLANTS), help="required unless --scenario names the plant")
    parser.add_argument("--scenario", type=Path, help="record this scenario file whole, with ground truth")
    parser.add_argument("--steps", type=int, default=3600, help="rows to write (default 3600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=datetime.fromisoformat, default=DEFAULT_START, help="ISO time of row 0 (UTC)")
    parser.add_argument("--true", dest="include_true", action="store_true", help="add <tag>.true columns")
    parser.add_argument(
        "--lead-in", type=float, default=0.0, metavar="S", help="with --scenario: every step S seconds later"
    )
    args = parser.parse_args(argv)
    start = args.start if args.start.tzinfo else args.start.replace(tzinfo=UTC)
    if args.scenario is not None:
        from sim_plant.scenarios import ScenarioError, load_scenario

        try:
            scenario = load_scenario(args.scenario).delayed(args.lead_in)
        except ScenarioError as exc:
            parser.error(str(exc))
        if args.plant is not None and args.plant != scenario.plant:
            parser.error(f"--plant {args.plant} disagrees with the scenario's plant {scenario.plant}")
        record_scenario(scenario, args.output, seed=args.seed, start=start, include_true=args.include_true)
        steps = round(scenario.length_s)
        print(f"{args.output}: scenario {scenario.name} ({len(scenario.steps)} steps, {steps} s), seed {args.seed}")
        return 0
    if args.plant is None:
        parser.error("--plant is required without --scenario")
    if args.lead_in:
        parser.error("--lead-in delays a scenario's steps: give --scenario")
    plant = PLANTS[args.plant](seed=args.seed)
    record(plant, args.steps, args.output, start=start, include_true=args.include_true)
    print(f"{args.output}: {args.steps} rows of {len(plant.TAGS)} tags from the {args.plant} plant, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
