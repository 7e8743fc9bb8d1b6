"""Modbus TCP source: polls register blocks of one device, read-only (see README.md here)."""

from collector.receivers.modbus.options import ModbusOptions, RegisterSpec
from collector.receivers.modbus.receiver import ModbusReceiver

__all__ = ["ModbusOptions", "ModbusReceiver", "RegisterSpec"]
