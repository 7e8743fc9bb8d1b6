"""Protocol servers that serve a simulated plant's tags the way its controllers would.

Every server takes the same three things: the plant's tag catalog (names,
units, ranges, roles), a ``WriteLog`` that records every write attempt a
client makes (plantwatch must never make one), and, once started, a stream of
``publish(ts, values)`` calls with the served values aligned with the catalog.
"""

from sim_plant.servers.base import PlantServer, WriteAttempt, WriteLog

__all__ = ["PlantServer", "WriteAttempt", "WriteLog"]
