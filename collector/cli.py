"""The ``plantwatch`` command: check-config, run, replay, baseline.

Exit codes: 0 success, 2 a bad config or recording (nothing was started), 1 a failure at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
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
    if cfg.invariants:
        names = ", ".join(inv.name for inv in cfg.invariants)
        lines.append(f"  invariants: {len(cfg.invariants)} ({names})")
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


BASELINE_VERBS = ("fit", "list", "show", "activate", "rollback")


def cmd_baseline(args: argparse.Namespace) -> int:
    """fit RECORDING | RECORDING | list | show VERSION | activate VERSION | rollback VERSION (or --list, --rollback)."""
    from collector.audit import AUDIT_FILE, AuditTrail
    from collector.baseline import BaselineError, BaselineStore, check_fits, fit, render_list, render_show, version_name

    words = list(args.words)
    if args.list:
        words = ["list", *words]
    elif args.rollback:
        words = ["rollback", args.rollback, *words]
    elif args.show:
        words = ["show", args.show, *words]
    if words and words[0] not in BASELINE_VERBS:
        words = ["fit", *words]  # `plantwatch baseline RECORDING -c FILE`, as the issue writes it
    verb, operands = (words[0], words[1:]) if words else ("list", [])
    wanted = 0 if verb == "list" else 1
    if len(operands) != wanted:
        what = "nothing" if wanted == 0 else ("a RECORDING" if verb == "fit" else "a VERSION")
        print(f"plantwatch baseline {verb}: takes {what}, got {operands or 'none'}", file=sys.stderr)
        return EXIT_CONFIG
    cfg = _load(args.config)
    store = BaselineStore(cfg.state_dir)
    logging.getLogger("plantwatch.runner").setLevel(logging.WARNING)  # a line per alert during a fit is noise
    try:
        if verb == "list":
            print(render_list(store, cfg))
            return 0
        if verb == "fit":
            meta, arrays = fit(cfg, Path(args.config), Path(operands[0]), note=args.note or "")
            version = store.add(arrays, meta)
            with AuditTrail(cfg.state_dir / AUDIT_FILE) as audit:
                audit.record(
                    "baseline_fitted", version=version, recording=meta["recording"], rows=meta["rows"], by=meta["by"]
                )
                if args.activate:
                    pointer = store.activate(version, action="activate")
                    audit.record("baseline_changed", **pointer.__dict__)
            print(f"baseline {version} fitted from {meta['recording']}: {meta['rows']} rows, {len(meta['tags'])} tags")
            print(render_show(store.meta(version), store.active(), store.reference_for(version)))
            if not args.activate:
                print(f"not active: review it, then `plantwatch baseline activate {version} -c {args.config}`")
            return 0
        version = version_name(operands[0])
        meta = store.meta(version)
        warnings = check_fits(meta, cfg)
        if verb == "show":
            print(render_show(meta, store.active(), store.reference_for(version)))
            for warning in warnings:
                print(f"note: {warning}")
            return 0
        pointer = store.activate(version, action=verb)
        with AuditTrail(cfg.state_dir / AUDIT_FILE) as audit:
            audit.record("baseline_changed", **pointer.__dict__)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(
            f"baseline {version} active (was {pointer.previous or 'none'}); "
            "the daemon restores it at its next start, over its snapshot"
        )
        return 0
    except BaselineError as exc:
        print(f"plantwatch baseline {verb}: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.demo import run_demo
    from collector.logs import setup_logging
    from sim_plant.configs import Ports
    from sim_plant.scenarios import ScenarioError, load_scenario

    plant = args.plant
    if args.scenario is not None:
        try:
            scenario = load_scenario(args.scenario).delayed(args.lead_in)
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
    elif args.lead_in:
        print("plantwatch demo: --lead-in delays a scenario's steps: give --scenario", file=sys.stderr)
        return EXIT_CONFIG
    plant = plant or "oil"
    setup_logging(args.log_level, args.log_format)
    ports = Ports(args.opcua_port, args.modbus_port, args.mqtt_port, args.metrics_port)
    state_dir = args.state_dir or Path("state") / f"demo-{plant}"
    return asyncio.run(run_demo(plant, state_dir, ports, args.speed, args.seed, args.scenario, args.lead_in))


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

    baseline = sub.add_parser(
        "baseline",
        help="fit learned baselines from a trusted recording, list, show, activate or roll back versions",
        description="plantwatch baseline [fit] RECORDING | list | show VERSION | activate VERSION | rollback VERSION",
    )
    baseline.add_argument("words", nargs="*", metavar="fit RECORDING | list | show V | activate V | rollback V")
    baseline.add_argument("-c", "--config", required=True)
    baseline.add_argument("--note", help="why this recording is trusted; kept with the version")
    baseline.add_argument("--activate", action="store_true", help="with fit: make the new version active at once")
    baseline.add_argument("--list", action="store_true", help="same as `baseline list`")
    baseline.add_argument("--rollback", metavar="VERSION", help="same as `baseline rollback VERSION`")
    baseline.add_argument("--show", metavar="VERSION", help="same as `baseline show VERSION`")
    baseline.set_defaults(func=cmd_baseline)

    from sim_plant.cli import add_parser as add_sim_parser
    from sim_plant.plants import PLANTS

    add_sim_parser(sub)

    demo = sub.add_parser("demo", help="run a simulated plant and the daemon watching it over all three protocols")
    demo.add_argument("--plant", choices=sorted(PLANTS), help="default: the scenario's plant, else oil")
    demo.add_argument("--scenario", type=Path, help="play this attack scenario in the simulator (sim_plant/scenarios/)")
    demo.add_argument(
        "--lead-in", type=float, default=0.0, metavar="S", help="with --scenario: every step S seconds later"
    )
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
    except BrokenPipeError:
        # `plantwatch replay ... | head`: the reader left; the outputs on disk are complete, say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
