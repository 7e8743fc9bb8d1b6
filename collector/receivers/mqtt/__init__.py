"""The MQTT source: topic filters on a broker mapped to tags; reads only, never publishes."""

from collector.receivers.mqtt.options import MqttOptions, TlsOptions, TopicOptions
from collector.receivers.mqtt.receiver import MqttReceiver

__all__ = ["MqttOptions", "MqttReceiver", "TlsOptions", "TopicOptions"]
