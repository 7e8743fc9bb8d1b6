"""Streaming anomaly detectors: pure numpy, vectorized across tags, no I/O and no clock.

``DETECTORS`` is the registry: a detector listed here is configurable by name
and is run through the shared check suite (``detectors.checks``) by the tests.
"""

from detectors.bank import DetectorBank
from detectors.base import Detector, DetectorParams, TagLimits, to_score
from detectors.command_watch import CommandWatchDetector
from detectors.cusum import CusumDetector
from detectors.ewma import EwmaDetector
from detectors.flatline import FlatlineDetector
from detectors.iforest import IforestDetector
from detectors.limits import LimitDetector
from detectors.pca import PcaDetector
from detectors.quality import QualityDetector
from detectors.rate import RateDetector
from detectors.replay_watch import ReplayWatchDetector
from detectors.stale import StaleDetector

DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        LimitDetector,
        RateDetector,
        EwmaDetector,
        CusumDetector,
        FlatlineDetector,
        StaleDetector,
        QualityDetector,
        PcaDetector,
        IforestDetector,
        ReplayWatchDetector,
        CommandWatchDetector,
    )
}

__all__ = [
    "DETECTORS",
    "Detector",
    "DetectorBank",
    "DetectorParams",
    "TagLimits",
    "to_score",
]
