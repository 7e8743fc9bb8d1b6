"""``/readyz``: is this plantwatch producing verdicts an operator can rely on yet?

``/healthz`` only says the process answers. Readiness is stricter, and it is
what a service manager, a load balancer or an assessor's checklist should
wait for after a start or a reload:

- the config was loaded (true once the daemon serves at all);
- every configured source has connected at least once since start: a source
  that never came up means a whole part of the plant is unwatched, which is
  the first thing an engineer must fix after an install;
- every detector is either warm or still learning (or switched off): all are
  normal states, and the body says which, so "ready but learning" is visible
  without reading the logs.

A source that connected once and later drops is *not* a readiness failure:
that is an incident the operators see on /metrics (``plantwatch_source_up``)
and in the alert rules; flapping readiness would only hide it behind a
restart loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class _Status(Protocol):
    up: bool
    samples: int


class _Receiver(Protocol):
    name: str
    status: _Status


class Readiness:
    """Remembers which sources were ever up; answers /readyz from the current receivers and detectors."""

    def __init__(
        self,
        receivers: Callable[[], Sequence[Any]],
        warm_tags: Callable[[], dict[str, int]],
        enabled_tags: Callable[[], dict[str, int]],
    ) -> None:
        self._receivers = receivers
        self._warm_tags = warm_tags
        self._enabled_tags = enabled_tags
        self._seen: set[str] = set()

    def check(self) -> tuple[bool, dict[str, object]]:
        """(ready, body): the body names each source that has not connected yet and each detector's warmth."""
        waiting: list[str] = []
        sources: dict[str, str] = {}
        for receiver in self._receivers():
            status = receiver.status
            if status.up or status.samples > 0:
                self._seen.add(receiver.name)
            if receiver.name in self._seen:
                sources[receiver.name] = "up" if status.up else "down since first connect"
            else:
                sources[receiver.name] = "never connected"
                waiting.append(receiver.name)
        enabled = self._enabled_tags()
        detectors = {name: _warmth(warm, enabled.get(name, 0)) for name, warm in self._warm_tags().items()}
        ready = not waiting
        body: dict[str, object] = {"ready": ready, "config": "loaded", "sources": sources, "detectors": detectors}
        if waiting:
            body["waiting_for"] = waiting
        return ready, body

    def respond(self) -> tuple[str, bytes]:
        """HTTP status line and JSON body for /readyz: 200 when ready, 503 while waiting."""
        ready, body = self.check()
        return ("200 OK" if ready else "503 Service Unavailable"), (json.dumps(body, sort_keys=True) + "\n").encode()


def _warmth(warm: int, enabled: int) -> str:
    if enabled == 0:
        return "off"
    return "warm" if warm >= enabled else f"learning ({warm}/{enabled} tags warm)"
