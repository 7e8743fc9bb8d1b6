"""The ``plantwatch`` command: check-config, run, replay.

Exit codes: 0 success, 2 a bad config or recording (nothing was started), 1 a failure at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from collector import __version__
from collector.config import ConfigError, PlantConfig, load_config

EXIT_CONFIG = 2


def _summary(cfg: PlantConfig) -> str:
    from detectors import DETECTORS

    lines = [f"site {cfg.site}: {len(cfg.sources)} source(s), {len(cfg.tags)} tag(s), state in {cfg.state_dir}"]
    for source in cfg.sources:
        lines.append(f"  source {source.name} ({source.kind}): {len(source.tags)} tag(s)")
    enabled = [name for name in DETECTORS if getattr(cfg.detectors.defaults, name).enabled]
    lines.append(f"  detectors: {', '.join(enabled)}; {len(cfg.detectors.overrides)} override(s)")
    severities = ", ".join(f"{s.name} >= {s.threshold:g}" for s in cfg.alerting.severities)
    lines.append(f"  alerting: {severities}; pending {cfg.alerting.pending_s:g} s, clear {cfg.alerting.clear_s:g} s")
    lines.append(f"  metrics on {cfg.exporter.url}")
    return "\n".join(lines)


def _load(path: str) -> PlantConfig:
    return load_config(Path(path))


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.file)
    print(f"{args.file}: ok")
    print(_summary(cfg))
    return 0


def cmd_posture(args: argparse.Namespace) -> int:
    from collector.posture import posture_report

    print(posture_report(args.config, as_json=args.json))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from collector.daemon import serve
    from collector.logs import setup_logging

    cfg = _load(args.config)
    setup_logging(args.log_level, args.log_format)
    return asyncio.run(serve(cfg, Path(args.config)))


def cmd_replay(args: argparse.Namespace) -> int:
    from collector.logs import setup_logging
    from collector.replay import replay

    cfg = _load(args.config)
    setup_logging(args.log_level, args.log_format)
    logging.getLogger("plantwatch.runner").setLevel(logging.WARNING)  # a line per alert is the CSV's job
    result = replay(
        cfg,
        Path(args.recording),
        Path(args.out),
        progress=not args.no_progress,
        labels=args.labels,
        grace_s=args.grace,
        train_rows=args.train_rows,
        report=args.report,
        separator=args.separator,
        timestamp_column=args.timestamp_column,
        timestamp_format=args.timestamp_format,
        label_column=args.label_column,
    )
    print(result.summary.render())
    print(f"outputs in {args.out}: scores.csv, alerts.csv, alerts.jsonl, summary.json")
    if args.report:
        print(f"report in {args.report}: report.html, report.md, report.json")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.demo import run_demo
    from collector.logs import setup_logging
    from sim_plant.configs import Ports
    from sim_plant.scenarios import ScenarioError, load_scenario

    plant = args.plant
    if args.scenario is not None:
        try:
            scenario = load_scenario(args.scenario)
        except ScenarioError as exc:
            print(f"plantwatch demo: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if plant is not None and plant != scenario.plant:
            print(
                f"plantwatch demo: --plant {plant} disagrees with the scenario's plant {scenario.plant}",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        plant = scenario.plant
    plant = plant or "oil"
    setup_logging(args.log_level, args.log_format)
    ports = Ports(args.opcua_port, args.modbus_port, args.mqtt_port, args.metrics_port)
    state_dir = args.state_dir or Path("state") / f"demo-{plant}"
    return asyncio.run(run_demo(plant, state_dir, ports, args.speed, args.seed, args.scenario))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plantwatch", description="Anomaly detection beside the SCADA of critical infrastructure."
    )
    parser.add_argument("--version", action="version", version=f"plantwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a config file and summarise it")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    posture = sub.add_parser("posture", help="report each source's and sink's security posture, for an assessor")
    posture.add_argument("-c", "--config", required=True)
    posture.add_argument("--json", action="store_true", help="machine-readable output")
    posture.set_defaults(func=cmd_posture)

    def logging_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        p.add_argument("--log-format", default="logfmt", choices=["logfmt", "json"])

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True)
    logging_options(run)
    run.set_defaults(func=cmd_run)

    replay = sub.add_parser("replay", help="run a recording through the pipeline and write scores and alerts")
    replay.add_argument("recording")
    replay.add_argument("-c", "--config", required=True)
    replay.add_argument("-o", "--out", required=True, help="output folder")
    replay.add_argument("--separator", help="field separator, or 'whitespace'")
    replay.add_argument("--timestamp-column")
    replay.add_argument("--timestamp-format", help="iso, epoch_s, epoch_ms or a strptime format")
    replay.add_argument("--label-column")
    replay.add_argument(
        "--labels",
        help="ground truth: a column of the recording, a timestamp,label[,attack] CSV or a scenario YAML "
        "(default: the config's label column or 'label', with 'attack' naming the steps)",
    )
    replay.add_argument(
        "--grace",
        type=float,
        help="seconds after a step in which an alert is still put down to it (default 300 or 5 ticks)",
    )
    replay.add_argument(
        "--train-rows", type=int, default=0, help="first rows scored neither way (SKAB's leaderboard: 400)"
    )
    replay.add_argument("--report", type=Path, help="folder for report.html, report.md and report.json")
    replay.add_argument("--no-progress", action="store_true")
    logging_options(replay)
    replay.set_defaults(func=cmd_replay)

    from sim_plant.cli import add_parser as add_sim_parser
    from sim_plant.plants import PLANTS

    add_sim_parser(sub)

    demo = sub.add_parser("demo", help="run a simulated plant and the daemon watching it over all three protocols")
    demo.add_argument("--plant", choices=sorted(PLANTS), help="default: the scenario's plant, else oil")
    demo.add_argument("--scenario", type=Path, help="play this attack scenario in the simulator (sim_plant/scenarios/)")
    demo.add_argument("--speed", type=float, default=1.0, help="plant seconds per wall second")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--state-dir", type=Path, help="default: state/demo-<plant> under the working directory")
    demo.add_argument("--opcua-port", type=int, default=4840)
    demo.add_argument("--modbus-port", type=int, default=5020)
    demo.add_argument("--mqtt-port", type=int, default=11883)
    demo.add_argument("--metrics-port", type=int, default=9108)
    logging_options(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
