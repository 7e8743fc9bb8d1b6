"""Replay source: a recording file played through the pipeline (see README.md here)."""

from collector.receivers.replay.options import ReplayOptions
from collector.receivers.replay.receiver import ReplayReceiver

__all__ = ["ReplayOptions", "ReplayReceiver"]
