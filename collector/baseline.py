"""Learned baselines fitted from a recording an engineer trusts, kept as versions, activated on purpose.

``plantwatch baseline fit RECORDING -c FILE`` plays the recording through the daemon's own
pipeline (the replay path, with the config's tags and detectors) and keeps what the detectors
learned as an immutable version in ``state_dir/baselines/``:

- ``v0003.npz``: the detectors' state arrays, the same layout as the snapshot's;
- ``v0003.json``: when, from which recording (path, SHA-256, rows), the config's hash, and per
  tag what the detectors learned (mean, sd) beside the recording's own figures (mean, sd, min,
  max, and the straight-line trend over the recording) so that a slow ramp an attacker played
  into the "trusted" recording shows before anyone activates it.

A fitted version is not active: ``activate VERSION`` (or ``rollback VERSION``, the same act
named for going back, or ``fit --activate``) writes the small pointer ``baselines/active.json``
with a fresh activation id. At start the daemon resumes from its snapshot (live learning goes
on) unless the pointer names an activation the snapshot has not seen: then the activated
baseline's learned state replaces the detectors' (alert state and the journal still come from
the snapshot). Every snapshot carries the activation id it grew from, so a daemon that was
running while an engineer rolled back still takes the baseline at its next start.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import logging
import math
import re
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from collector.audit import utc_stamp
from collector.config import ConfigError, PlantConfig
from collector.state import name_rows, npz_bytes, read_npz, write_atomic
from detectors import Detector, DetectorBank

if TYPE_CHECKING:
    from collector.audit import AuditTrail
    from collector.frames import Frame
    from collector.runner import Runner

log = logging.getLogger("plantwatch.baseline")

BASELINES = "baselines"
ACTIVE = "active.json"
VERSION_RE = re.compile(r"^v?0*(\d+)$")
MAX_VERSIONS = 9999
DRIFT_REVIEW = 3.0  # |trend| in residual sd over the recording from which `show` asks for a review

# State that follows the last sample or the last instant rather than a learned statistic of the
# plant: restoring it from a recording would compare live values with a moment long gone (a stale
# "last seen", a flat-line "held since" months ago), so a baseline leaves these as they stand. Each
# detector names its own in ``tracking_fields``; this fallback covers a detector class that does not
# declare them yet (by detector name), so moving the list onto the detectors changed nothing.
FALLBACK_TRACKING: dict[str, tuple[str, ...]] = {
    "stale": ("last_seen",),
    "flatline": ("held_x", "held_since"),
    "rate": ("prev_x", "prev_ts"),
    "cusum": ("s_hi", "s_lo"),
    "replay": ("prev_x", "since_match"),
}


def tracking_fields(bank: DetectorBank) -> frozenset[str]:
    """The bank's state keys (``detector.field``) a baseline restore leaves as the snapshot had them."""
    keys: set[str] = set()
    for det in bank.detectors:
        declared = any("tracking_fields" in vars(cls) for cls in type(det).__mro__ if cls is not Detector)
        fields = det.tracking_fields if declared else FALLBACK_TRACKING.get(det.name, ())
        keys.update(f"{det.name}.{f}" for f in fields)
    return frozenset(keys)


# Detectors whose mean and variance arrays are a per-tag baseline an engineer can read, in order of preference.
MEAN_VAR_DETECTORS = ("ewma", "cusum")


class BaselineError(Exception):
    """A baseline command that cannot go on (unknown version, mismatched config); the CLI exits 2."""


def version_name(text: str) -> str:
    """``3``, ``v3`` and ``v0003`` all name ``v0003``."""
    match = VERSION_RE.match(text.strip())
    if match is None or not 0 < int(match.group(1)) <= MAX_VERSIONS:
        raise BaselineError(f"{text!r} is not a baseline version (v0001 .. v{MAX_VERSIONS:04d})")
    return f"v{int(match.group(1)):04d}"


def config_hash(cfg: PlantConfig) -> str:
    """A hash of what shapes learned state (tags, their types and ranges, detector settings, tick)."""
    doc = {
        "tick_s": cfg.pipeline.tick_s,
        "tags": [t.model_dump(mode="json", include={"name", "type", "range", "detectors"}) for t in cfg.tags],
        "detectors": cfg.detectors.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# -- the recording's own figures, per tag ---------------------------------------------------------
class TagStats:
    """Running sums per tag over the frames of a fit: mean, sd, range and the least-squares trend.

    Values are shifted by each tag's first value and times by the first tick, so that the sums
    of squares keep their precision over long recordings. One numpy pass per frame block.
    """

    def __init__(self, n_tags: int) -> None:
        self.shift = np.full(n_tags, np.nan)
        self.t0 = math.nan
        self.t_last = math.nan
        self.n, self.sx, self.sxx, self.st, self.stt, self.sxt = np.zeros((6, n_tags))
        self.lo = np.full(n_tags, np.inf)
        self.hi = np.full(n_tags, -np.inf)

    def add(self, frame: Frame) -> None:
        if not len(frame):
            return
        valid = frame.valid
        unset = np.isnan(self.shift) & valid.any(axis=0)
        if unset.any():
            first = valid.argmax(axis=0)
            self.shift[unset] = frame.X[first[unset], np.flatnonzero(unset)]
        if math.isnan(self.t0):
            self.t0 = float(frame.ts[0])
        self.t_last = float(frame.ts[-1])
        x = np.where(valid, frame.X - np.nan_to_num(self.shift), 0.0)
        t = np.where(valid, (frame.ts - self.t0)[:, None], 0.0)
        self.n += valid.sum(axis=0)
        self.sx += x.sum(axis=0)
        self.sxx += (x * x).sum(axis=0)
        self.st += t.sum(axis=0)
        self.stt += (t * t).sum(axis=0)
        self.sxt += (x * t).sum(axis=0)
        self.lo = np.minimum(self.lo, np.where(valid, frame.X, np.inf).min(axis=0))
        self.hi = np.maximum(self.hi, np.where(valid, frame.X, -np.inf).max(axis=0))

    def summary(self) -> dict[str, np.ndarray]:
        """Per tag: n, mean, sd, min, max, trend (units over the recording) and trend in residual sd."""
        with np.errstate(divide="ignore", invalid="ignore"):
            n = self.n
            mean_x = self.sx / n
            var_x = np.maximum(self.sxx / n - mean_x**2, 0.0)
            mean_t = self.st / n
            var_t = np.maximum(self.stt / n - mean_t**2, 0.0)
            slope = np.where(var_t > 0, (self.sxt / n - mean_x * mean_t) / var_t, 0.0)
            resid_var = np.maximum(var_x - slope**2 * var_t, 0.0)
            trend = slope * (self.t_last - self.t0 if math.isfinite(self.t0) else 0.0)
            trend_sd = np.where(resid_var > 0, trend / np.sqrt(resid_var), np.where(trend == 0, 0.0, np.inf))
        empty = n == 0
        return {
            "n": n,
            "mean": np.where(empty, np.nan, mean_x + np.nan_to_num(self.shift)),
            "sd": np.where(empty, np.nan, np.sqrt(var_x)),
            "min": np.where(empty, np.nan, self.lo),
            "max": np.where(empty, np.nan, self.hi),
            "trend": np.where(empty, np.nan, trend),
            "trend_sd": np.where(empty, np.nan, trend_sd),
        }


def learned_figures(arrays: Mapping[str, np.ndarray]) -> tuple[str | None, np.ndarray, np.ndarray]:
    """(detector, mean, sd) per tag from the first detector that learns a mean and variance, if any."""
    for det in MEAN_VAR_DETECTORS:
        mean, var = arrays.get(f"{det}.mean"), arrays.get(f"{det}.var")
        if mean is not None and var is not None and mean.ndim == 1:
            count = arrays.get(f"{det}.count")
            learned = np.ones(mean.shape, dtype=bool) if count is None else np.asarray(count) > 0
            return det, np.where(learned, mean, np.nan), np.where(learned, np.sqrt(np.maximum(var, 0.0)), np.nan)
    return None, np.empty(0), np.empty(0)


# -- versions on disk -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Activation:
    version: str
    activation: str  # a fresh id per act: the snapshot remembers the one it grew from
    activated: str
    action: str
    by: str
    previous: str | None


class BaselineStore:
    """``state_dir/baselines``: immutable versions and the pointer to the active one."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / BASELINES

    def versions(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        names = [p.stem for p in self.dir.glob("v*.npz")]
        return sorted(n for n in names if VERSION_RE.match(n) and n == f"v{int(n[1:]):04d}")

    def meta(self, version: str) -> dict[str, Any]:
        """A version's metadata (the JSON beside it; the npz's own header if the JSON was lost)."""
        self._require(version)
        sidecar = self.dir / f"{version}.json"
        try:
            return dict(json.loads(sidecar.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            try:
                return read_npz(self.dir / f"{version}.npz")[1]
            except ValueError as exc:
                raise BaselineError(str(exc)) from None

    def load(self, version: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._require(version)
        try:
            return read_npz(self.dir / f"{version}.npz")
        except ValueError as exc:
            raise BaselineError(str(exc)) from None

    def add(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> str:
        """Write a new version (never over an existing one) and return its name."""
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        number = int(existing[-1][1:]) + 1 if existing else 1
        for _ in range(100):  # another fit may take the same number at the same moment: the next one
            if number > MAX_VERSIONS:
                break
            version = f"v{number:04d}"
            stamped = {**meta, "version": version}
            try:
                write_atomic(self.dir / f"{version}.npz", npz_bytes(arrays, stamped), exclusive=True)
            except FileExistsError:
                number += 1
                continue
            sidecar = json.dumps(stamped, indent=2, sort_keys=False) + "\n"
            write_atomic(self.dir / f"{version}.json", sidecar.encode("utf-8"), exclusive=True)
            return version
        raise BaselineError(f"{self.dir}: no free version number left")

    def active(self) -> Activation | None:
        path = self.dir / ACTIVE
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return Activation(**{k: doc.get(k) for k in Activation.__dataclass_fields__})
        except (OSError, ValueError, TypeError) as exc:
            raise BaselineError(f"{path}: unreadable ({exc})") from None

    def activate(self, version: str, *, action: str, clock: Any = time.time) -> Activation:
        self._require(version)
        try:
            current = self.active()
        except BaselineError:
            current = None  # a damaged pointer is replaced, not a reason to refuse a rollback
        pointer = Activation(
            version=version,
            activation=uuid.uuid4().hex,
            activated=utc_stamp(clock()),
            action=action,
            by=_user(),
            previous=current.version if current else None,
        )
        write_atomic(self.dir / ACTIVE, (json.dumps(pointer.__dict__, indent=2) + "\n").encode("utf-8"))
        return pointer

    def reference_for(self, version: str) -> dict[str, Any] | None:
        """The active version's metadata, to show ``version`` against; None if it is the one shown."""
        try:
            active = self.active()
            return self.meta(active.version) if active is not None and active.version != version else None
        except BaselineError:
            return None

    def _require(self, version: str) -> None:
        if not (self.dir / f"{version}.npz").exists():
            have = ", ".join(self.versions()) or "none"
            raise BaselineError(f"no baseline {version} in {self.dir} (versions: {have})")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- fitting ------------------------------------------------------------------------------------
def fit(cfg: PlantConfig, config_path: Path, recording: Path, *, note: str = "") -> tuple[dict[str, Any], dict]:
    """The recording through the pipeline; returns (metadata, detector state arrays), nothing written.

    Raises ``ConfigError`` (exit 2) when the recording cannot be read or lacks the config's tags.
    """
    from collector.journal import AlertJournal
    from collector.receivers.replay import ReplayOptions
    from collector.receivers.replay.recording import Recording, RecordingError
    from collector.replay import replay_config
    from collector.runner import Runner

    if not recording.is_file():
        raise ConfigError([("recording", f"{recording}: no such file")])
    try:
        rcfg = replay_config(cfg, recording)
        source = rcfg.sources[0]
        assert isinstance(source, ReplayOptions)
        rows = Recording(source, [t.source_key for t in source.tags]).count_rows()
    except RecordingError as exc:
        raise ConfigError([("recording", str(exc))]) from None
    if rows == 0:
        raise ConfigError([("recording", f"{recording}: no rows to learn from")])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="plantwatch-fit-") as tmp, AlertJournal(Path(tmp) / "alerts.jsonl") as j:
        runner = Runner(rcfg, j, realtime=False)
        stats = TagStats(len(runner.pipeline.tag_names))
        runner.on_frame = lambda result: stats.add(result.frame)
        asyncio.run(runner.run(asyncio.Event(), until_finished=True))
        if runner.receivers[0].status.errors.get("recording"):
            raise ConfigError([("recording", f"{recording}: could not be read; see the log")])
        arrays = runner.pipeline.bank.state()
        tags = list(runner.pipeline.tag_names)
        detectors = list(runner.pipeline.bank.names)
        ticks = runner.pipeline.stats.ticks
        alerts = dict(runner.pipeline.alerts.transitions)
    figures = stats.summary()
    det, learned_mean, learned_sd = learned_figures(arrays)
    per_tag = {}
    for i, tag in enumerate(tags):
        entry = {k: (int(v[i]) if k == "n" else _finite(float(v[i]))) for k, v in figures.items()}
        if det is not None:
            entry["learned_mean"], entry["learned_sd"] = _finite(learned_mean[i]), _finite(learned_sd[i])
        per_tag[tag] = entry
    now = time.time()
    meta: dict[str, Any] = {
        "created": utc_stamp(now),
        "created_ts": now,
        "by": _user(),
        "note": note,
        "site": cfg.site,
        "config": str(config_path.resolve()),
        "config_hash": config_hash(cfg),
        "recording": str(recording.resolve()),
        "recording_sha256": _file_sha256(recording),
        "rows": rows,
        "ticks": ticks,
        "first_tick": utc_stamp(stats.t0) if math.isfinite(stats.t0) else None,
        "last_tick": utc_stamp(stats.t_last) if math.isfinite(stats.t_last) else None,
        "fit_seconds": round(time.perf_counter() - started, 3),
        "alerts_during_fit": alerts,
        "tags": tags,
        "detectors": detectors,
        "learned_from": det,
        "per_tag": per_tag,
    }
    return meta, arrays


def check_fits(meta: Mapping[str, Any], cfg: PlantConfig) -> list[str]:
    """Raise BaselineError if the baseline cannot serve this config; return warnings if it only partly does."""
    if meta.get("site") != cfg.site:
        raise BaselineError(
            f"config mismatch: baseline {meta.get('version')} was fitted for site {meta.get('site')!r}, "
            f"this config is site {cfg.site!r}"
        )
    names = [t.name for t in cfg.tags]
    known = set(meta.get("tags", []))
    common = [n for n in names if n in known]
    if not common:
        raise BaselineError(
            f"config mismatch: baseline {meta.get('version')} knows none of this config's {len(names)} tags"
        )
    warnings = []
    if meta.get("config_hash") != config_hash(cfg):
        warnings.append(
            f"baseline {meta.get('version')} was fitted with other tag or detector settings "
            f"(config hash {meta.get('config_hash')} != {config_hash(cfg)}); it restores by tag and detector name"
        )
    if len(common) < len(names):
        warnings.append(f"{len(names) - len(common)} of {len(names)} tags are not in the baseline and start cold")
    return warnings


# -- the daemon's side --------------------------------------------------------------------------
def restore_active(runner: Runner, state_dir: Path, audit: AuditTrail | None = None) -> dict[str, Any] | None:
    """Apply the active baseline at start if the snapshot has not grown from this activation yet.

    Returns what the audit trail should record, or None when the snapshot (or a cold start) stands.
    An active baseline that cannot be applied is logged and, with ``audit``, recorded as
    ``baseline_refused``: the engineer meant it, so its absence must be visible.
    Detector state is matched by tag and detector name, as the snapshot restore does; the
    tracking fields (each detector's ``tracking_fields``) and the alert state stay as the snapshot left them.
    """
    store = BaselineStore(state_dir)
    try:
        pointer = store.active()
    except BaselineError as exc:
        log.error("baseline pointer unreadable; resuming without it", extra={"error": str(exc)})
        if audit is not None:
            audit.record("baseline_refused", error=str(exc))
        return None
    if pointer is None:
        return None
    seen = (runner.restored_meta or {}).get("baseline_activation")
    runner.counters.baseline_version = pointer.version  # the normal the detectors grew from, for /metrics
    if seen == pointer.activation:
        runner.snapshot_meta["baseline_activation"] = pointer.activation
        return None  # the snapshot grew from this baseline: live learning goes on
    try:
        arrays, meta = store.load(pointer.version)
        check_fits(meta, runner.cfg)
    except BaselineError as exc:
        log.error("active baseline not restored", extra={"version": pointer.version, "error": str(exc)})
        if audit is not None:
            audit.record("baseline_refused", version=pointer.version, activation=pointer.activation, error=str(exc))
        runner.counters.baseline_version = ""
        return None
    pipeline = runner.pipeline
    before = pipeline.bank.state()
    header = {"tags": meta.get("tags", []), "detectors": meta.get("detectors", [])}  # no tick: live time goes on
    pipeline.restore(arrays, header)
    after = pipeline.bank.state()
    for key in tracking_fields(pipeline.bank) & before.keys():
        after[key] = before[key]
    pipeline.bank.load_state(after)
    runner.snapshot_meta["baseline_activation"] = pointer.activation
    runner.counters.restored = True
    rows = name_rows(list(pipeline.tag_names), list(meta.get("tags", [])))
    matched = int(np.count_nonzero(rows >= 0))
    log.info(
        "baseline restored",
        extra={"version": pointer.version, "activated": pointer.activated, "tags_matched": matched},
    )
    return {
        "version": pointer.version,
        "activation": pointer.activation,
        "activated": pointer.activated,
        "recording": meta.get("recording"),
        "tags_matched": matched,
        "tags": len(pipeline.tag_names),
        "over_snapshot": runner.restored_meta is not None,
    }


# -- what the CLI prints ------------------------------------------------------------------------
def render_list(store: BaselineStore, cfg: PlantConfig) -> str:
    versions = store.versions()
    if not versions:
        return f"no baselines in {store.dir}"
    try:
        active = store.active()
    except BaselineError:
        active = None
    current = config_hash(cfg)
    lines = [f"{'':1} {'version':8} {'created':24} {'rows':>8} {'config':8}  recording  note"]
    for version in versions:
        meta = store.meta(version)
        mark = "*" if active is not None and active.version == version else " "
        same = "same" if meta.get("config_hash") == current else "differs"
        lines.append(
            f"{mark} {version:8} {meta.get('created', '?'):24} {meta.get('rows', 0):>8} {same:8}  "
            f"{Path(str(meta.get('recording', '?'))).name}  {meta.get('note', '')}"
        )
    if active is not None:
        lines.append(f"* active: {active.version} ({active.action} by {active.by} at {active.activated})")
    else:
        lines.append("no baseline active: the daemon resumes from its snapshot or learns from scratch")
    return "\n".join(lines)


def render_show(meta: Mapping[str, Any], active: Activation | None, reference: Mapping[str, Any] | None = None) -> str:
    """The version's header and per-tag figures; with ``reference`` (the active version), how far
    each tag's learned mean would move, in the sd of the active version's recording."""
    version = meta.get("version")
    ref_tags: Mapping[str, Any] = (reference or {}).get("per_tag") or {}
    state = "ACTIVE" if active is not None and active.version == version else "not active"
    lines = [
        f"baseline {version} ({state}), site {meta.get('site')}, created {meta.get('created')} by {meta.get('by')}",
        f"  recording {meta.get('recording')} (sha256 {str(meta.get('recording_sha256'))[:16]}...)",
        f"  {meta.get('rows')} rows, {meta.get('ticks')} ticks from {meta.get('first_tick')} "
        f"to {meta.get('last_tick')}",
        f"  config {meta.get('config')} (hash {meta.get('config_hash')}); "
        f"detectors {', '.join(meta.get('detectors', []))}",
    ]
    if meta.get("note"):
        lines.append(f"  note: {meta['note']}")
    alerts = meta.get("alerts_during_fit") or {}
    if alerts.get("firing"):
        lines.append(f"  {alerts['firing']} alert(s) fired during the fit: their samples were not learned; review them")
    det = meta.get("learned_from") or "-"
    lines.append("")
    lines.append(
        f"  {'tag':24} {'learned mean':>13} {'learned sd':>11} {'rec. mean':>11} {'rec. sd':>10} "
        f"{'min':>10} {'max':>10} {'trend':>10} {'trend/sd':>9}"
        + (f" {'vs ' + str(reference.get('version')):>9}" if reference else "")
    )
    flagged, moved = [], []
    for tag, e in (meta.get("per_tag") or {}).items():
        drift = e.get("trend_sd")
        review = drift is not None and abs(drift) >= DRIFT_REVIEW
        if review:
            flagged.append(tag)
        shift = _shift(e, ref_tags.get(tag)) if reference else None
        if shift is not None and abs(shift) >= DRIFT_REVIEW:
            moved.append(tag)
        lines.append(
            f"  {tag:24} {_num(e.get('learned_mean')):>13} {_num(e.get('learned_sd')):>11} {_num(e.get('mean')):>11} "
            f"{_num(e.get('sd')):>10} {_num(e.get('min')):>10} {_num(e.get('max')):>10} {_num(e.get('trend')):>10} "
            f"{_num(drift):>9}"
            + (f" {_num(shift):>9}" if reference else "")
            + ("  <- DRIFT: review" if review else "")
            + ("  <- MOVED: review" if shift is not None and abs(shift) >= DRIFT_REVIEW else "")
        )
    lines.append("")
    lines.append(
        f"  learned mean/sd: what the {det} detector learned; trend: least-squares change over the recording, "
        f"trend/sd: in the residual's sd (|x| >= {DRIFT_REVIEW:g} is marked)."
    )
    if flagged:
        lines.append(
            f"  {len(flagged)} tag(s) drift steadily through the recording ({', '.join(flagged)}): a slow ramp "
            "(an attack, or a process change) would be learned as normal. Check before activating."
        )
    if moved:
        lines.append(
            f"  {len(moved)} tag(s) learned a mean {DRIFT_REVIEW:g} recording sd or more away from the active "
            f"{reference.get('version') if reference else ''} ({', '.join(moved)})."
        )
    return "\n".join(lines)


def _shift(entry: Mapping[str, Any], ref: Mapping[str, Any] | None) -> float | None:
    """How far a tag's learned mean moved from the reference's, in the sd of the reference's recording.

    The recording's sd (the spread the engineer trusted then) rather than the learned one, which
    is the short-term noise and would flag every change of operating point.
    """
    if ref is None or entry.get("learned_mean") is None or ref.get("learned_mean") is None:
        return None
    sd = ref.get("sd") or 0.0
    delta = float(entry["learned_mean"]) - float(ref["learned_mean"])
    if sd <= 0:
        return None if delta == 0 else math.copysign(math.inf, delta)
    return delta / sd


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"
