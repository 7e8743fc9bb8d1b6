"""Scoring a replayed recording against its ground truth: which attack steps were caught, how fast,
and at what cost in false alerts. Pure functions over arrays; the definitions are in docs/scoring.md.

- ``truth``: ground truth (attack steps and per-tick labels) from a label column, a labels CSV
  or a scenario YAML;
- ``metrics``: alert episodes, per-step detection, event-level and point-wise figures, NAB.
"""

from collector.scoring.metrics import (
    NAB_PROFILES,
    Alert,
    Scorecard,
    StepScore,
    alert_episodes,
    classify_alerts,
    nab_score,
    normal_hours,
    pointwise,
    score_run,
    score_steps,
)
from collector.scoring.truth import AttackStep, GroundTruth, LabelsError, steps_from_labels, tick_labels

__all__ = [
    "NAB_PROFILES",
    "Alert",
    "AttackStep",
    "GroundTruth",
    "LabelsError",
    "Scorecard",
    "StepScore",
    "alert_episodes",
    "classify_alerts",
    "nab_score",
    "normal_hours",
    "pointwise",
    "score_run",
    "score_steps",
    "steps_from_labels",
    "tick_labels",
]
