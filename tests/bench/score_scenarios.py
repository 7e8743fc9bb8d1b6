"""Detection table of every shipped attack scenario against its plant's default config.

Not a pytest test (pytest ignores tests/bench). Run from the repository root:

    python tests/bench/score_scenarios.py [--grace S] [--seed N] [--report DIR] [--markdown] [--detector pca]

Each scenario is recorded offline (``record_scenario``), replayed through ``config/<plant>.yaml``
and scored (docs/scoring.md): per step detected or missed and the time to detect; per scenario
false alerts per hour of normal operation, event precision and recall, and the NAB score
(standard profile). With ``--report DIR`` the full report of each scenario goes to DIR/<plant>_<name>/.
With ``--detector NAME`` two more columns say when that detector's own alerts caught each step and
when the other detectors' did: what it adds (a step only it caught, or caught sooner).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from collector.config import load_config  # noqa: E402
from collector.replay import replay  # noqa: E402
from collector.scoring.metrics import StepScore, alert_episodes, score_steps  # noqa: E402
from sim_plant.record import record_scenario  # noqa: E402
from sim_plant.scenarios import load_scenario, shipped  # noqa: E402


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _caught(step: StepScore) -> str:
    return _num(step.time_to_detect_s, "g") if step.detected else "missed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grace", type=float, help="grace after each step, seconds (default as plantwatch replay)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, help="write each scenario's report under this folder")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--detector", help="add when this detector alone, and the others, caught each step")
    parser.add_argument(
        "--lead-in",
        type=float,
        default=0.0,
        help="seconds of normal operation added before every step (the shipped files attack at 15 min, "
        "before PCA's 20-minute warm-up is over; a monitored plant's models are long warm)",
    )
    args = parser.parse_args(argv)
    header = [
        "scenario",
        "stealth",
        "step",
        "detected",
        "time to detect s",
        "false alerts/h",
        "event P",
        "event R",
        "NAB",
    ]
    if args.detector:
        header += [f"{args.detector} alone s", "the others s"]
    rows: list[list[str]] = []
    overt_ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for path in shipped():
            scenario = load_scenario(path).delayed(args.lead_in)
            name = f"{scenario.plant}/{path.stem}"
            recording = record_scenario(scenario, Path(tmp) / f"{scenario.plant}_{path.stem}.csv", seed=args.seed)
            cfg = load_config(ROOT / "config" / f"{scenario.plant}.yaml")
            report = args.report / f"{scenario.plant}_{path.stem}" if args.report else None
            result = replay(cfg, recording, Path(tmp) / "out" / name, progress=False, grace_s=args.grace, report=report)
            card = result.scorecard
            assert card is not None
            split: list[list[str]] = [[] for _ in card.steps]
            if args.detector:
                alerts = alert_episodes(result.trace.transitions)
                steps = [s.step for s in card.steps]
                mine = score_steps(steps, [a for a in alerts if a.detector == args.detector], card.grace_s)
                rest = score_steps(steps, [a for a in alerts if a.detector != args.detector], card.grace_s)
                split = [[_caught(a), _caught(b)] for a, b in zip(mine, rest, strict=True)]
            for i, step in enumerate(card.steps):
                verdict = ("yes, after it ended" if step.after_end else "yes") if step.detected else "MISSED"
                if scenario.stealth == "overt" and not step.detected:
                    overt_ok = False
                first = i == 0
                rows.append(
                    [
                        name if first else "",
                        scenario.stealth if first else "",
                        step.step.id,
                        verdict,
                        _num(step.time_to_detect_s, "g"),
                        _num(card.false_alerts_per_hour, ".2f") if first else "",
                        _num(card.event_precision, ".2f") if first else "",
                        _num(card.event_recall, ".2f") if first else "",
                        _num(card.nab["standard"]["score"], ".1f") if first else "",
                        *split[i],
                    ]
                )
            if scenario.stealth == "overt" and card.alerts_false:
                overt_ok = False
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"\novert scenarios: {'every step detected, no false alert' if overt_ok else 'NOT all clean'}")
    return 0 if overt_ok else 1


if __name__ == "__main__":
    sys.exit(main())
