"""plantwatch collector: the daemon that reads a plant's controllers and raises alerts.

Data flows one way: receivers -> sample queue -> frame assembler -> detector bank
-> alert book -> Prometheus exporter. See ``collector.pipeline`` for the spine.
"""

__version__ = "0.1.0"
