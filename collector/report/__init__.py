"""The exercise report of a scored replay: ``report.html`` (self-contained), ``report.md``, ``report.json``."""

from collector.report.build import write_report

__all__ = ["write_report"]
