"""Exporters: how plantwatch's view of the plant leaves the process."""
