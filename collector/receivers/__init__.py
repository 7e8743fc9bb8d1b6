"""The registry of receiver kinds: one explicit mapping, no import-time registration.

Each kind lives in its own folder with its code, a README listing every option
and a ``sample.yaml`` in which every option appears with its default.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from collector.receivers.base import Receiver, ReceiverContext, SourceStatus
from collector.receivers.modbus import ModbusReceiver
from collector.receivers.mqtt import MqttReceiver
from collector.receivers.opcua import OpcUaReceiver
from collector.receivers.replay import ReplayReceiver

RECEIVERS: dict[str, type[Receiver]] = {
    ReplayReceiver.kind: ReplayReceiver,
    MqttReceiver.kind: MqttReceiver,
    OpcUaReceiver.kind: OpcUaReceiver,
    ModbusReceiver.kind: ModbusReceiver,
}

SourceConfig = Annotated[
    Union[tuple(cls.options_model for cls in RECEIVERS.values())],  # noqa: UP007
    Field(discriminator="kind"),
]


def source_kinds() -> list[str]:
    return list(RECEIVERS)


__all__ = ["RECEIVERS", "Receiver", "ReceiverContext", "SourceConfig", "SourceStatus", "source_kinds"]
