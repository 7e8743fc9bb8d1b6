"""OPC-UA source: asyncua client, monitored-item subscriptions, security, reconnect; read only."""

from collector.receivers.opcua.options import OpcUaOptions, OpcUaSecurity
from collector.receivers.opcua.receiver import OpcUaReceiver

__all__ = ["OpcUaOptions", "OpcUaReceiver", "OpcUaSecurity"]
