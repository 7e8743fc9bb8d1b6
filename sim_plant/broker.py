"""An MQTT broker inside the simulator process, so that the demo needs no external server.

amqtt is a pure-Python asyncio broker: about 3k messages/s here (see
../shared/MEASUREMENTS.md), plenty for a plant of a few dozen tags at 1 Hz
and far too little for load tests, which use Debian's mosquitto instead.
"""

from __future__ import annotations

import logging
from typing import Any


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 11883) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def endpoint(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker = Broker(config)
        await self._broker.start()

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
