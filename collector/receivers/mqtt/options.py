"""Options of the MQTT source: a broker, topic filters mapped to tags, and how payloads are read."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from collector.sources import ClientTls, Secret, SourceBase, Strict

MAX_PACKET = 268_435_455  # the largest MQTT packet: 256 MiB - 1
PACKET_OVERHEAD = 65_536 + 1024  # room for the topic and properties of a packet on top of its payload


def check_filter(value: str) -> str:
    """An MQTT topic filter: '+' and '#' only as whole levels, '#' only last."""
    if not value:
        raise ValueError("a topic filter cannot be empty")
    if "\x00" in value:
        raise ValueError("a topic filter cannot contain NUL")
    if len(value.encode()) > 65_535:
        raise ValueError("a topic filter is at most 65535 bytes")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"{value!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"{value!r}: '+' must be a whole level")
    return value


def check_path(value: str | None) -> str | None:
    if value is not None and (not value or any(not part for part in value.split("."))):
        raise ValueError(f"{value!r} is not a dotted path such as 'value' or 'data.value'")
    return value


class TopicOptions(Strict):
    """One topic filter and how the messages that match it become samples."""

    filter: str = Field(description="Topic filter, wildcards allowed, e.g. plantwatch/oil/#.")
    tag_from: Literal["topic_segment", "payload"] = Field(
        default="topic_segment", description="Where the tag's name is: a level of the topic, or a payload field."
    )
    segment: int = Field(default=-1, description="With tag_from topic_segment: the topic level (0 first, -1 last).")
    tag_path: str | None = Field(default="tag", description="With tag_from payload: dotted path of the tag's name.")
    value_path: str | None = Field(
        default="value", description="Dotted path of the value in a JSON object; null: the payload is a plain number."
    )
    timestamp_path: str | None = Field(
        default="ts", description="Dotted path of the source timestamp; null: the receive time is used."
    )
    timestamp_format: Literal["epoch_s", "epoch_ms", "iso"] = Field(
        default="epoch_s", description="epoch_s, epoch_ms or iso (ISO 8601; naive times are UTC)."
    )
    quality_path: str | None = Field(
        default="quality", description="Dotted path of the quality (good | uncertain | bad); null or absent: good."
    )

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str) -> str:
        return check_filter(value)

    @field_validator("tag_path", "value_path", "timestamp_path", "quality_path")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return check_path(value)

    @model_validator(mode="after")
    def _consistent(self) -> TopicOptions:
        if self.tag_from == "payload":
            if self.value_path is None:
                raise ValueError("tag_from payload needs a JSON payload: set value_path")
            if self.tag_path is None:
                raise ValueError("tag_from payload needs tag_path")
        elif "#" not in self.filter:
            levels = len(self.filter.split("/"))
            if not -levels <= self.segment < levels:
                raise ValueError(f"segment {self.segment} is outside the {levels} levels of {self.filter!r}")
        return self


class TlsOptions(ClientTls):
    """TLS to the broker; the broker's certificate is always verified."""


class MqttOptions(SourceBase):
    kind: Literal["mqtt"]
    host: str = Field(default="127.0.0.1", min_length=1, description="Broker host name or address.")
    port: Annotated[int, Field(ge=1, le=65535, description="Broker port (8883 is usual with TLS).")] = 1883
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="MQTT client id; keep it stable for a persistent session. Null: plantwatch-<source name>.",
    )
    username: str | None = Field(default=None, description="User name; null: anonymous.")
    password: Secret | None = Field(default=None, description="Password: a string, {env: NAME} or {file: PATH}.")
    protocol: Literal["v5", "v311"] = Field(default="v5", description="MQTT protocol version: v5 or v311.")
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of the subscriptions; 1 or 2 for a persistent session.")
    clean_start: bool = Field(
        default=False, description="Start a fresh session at every connection (loses messages sent while away)."
    )
    session_expiry_s: Annotated[
        int, Field(ge=0, le=4_294_967_295, description="v5: how long the broker keeps the session while away.")
    ] = 3600
    keepalive_s: Annotated[int, Field(ge=1, le=65535, description="Keepalive (PINGREQ) interval in seconds.")] = 30
    connect_timeout_s: Annotated[float, Field(gt=0, le=300, description="TCP and TLS connect timeout.")] = 10.0
    reconnect_min_s: Annotated[float, Field(gt=0, le=3600, description="First reconnect delay (with jitter).")] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600, description="Cap of the exponential reconnect delay.")] = (
        10.0
    )
    tls: TlsOptions | None = Field(default=None, description="TLS settings; null: plain TCP.")
    topics: Annotated[list[TopicOptions], Field(min_length=1, description="Topic filters, first match wins.")]
    max_payload_bytes: Annotated[
        int, Field(ge=1, le=MAX_PACKET, description="Larger payloads are counted (too_large) and dropped.")
    ] = 65536
    max_packet_bytes: Annotated[
        int,
        Field(ge=1, le=MAX_PACKET, description="v5: Maximum Packet Size told to the broker; larger: dropped unseen."),
    ] = 16 * 1024 * 1024
    queue_max: Annotated[
        int, Field(ge=1, description="Messages held between paho's thread and the pipeline; beyond: overflow.")
    ] = 50_000
    queue_max_bytes: Annotated[
        int, Field(ge=1, description="Payload bytes held between paho's thread and the pipeline; beyond: overflow.")
    ] = 16 * 1024 * 1024

    @model_validator(mode="after")
    def _consistent(self) -> MqttOptions:
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.queue_max_bytes < self.max_payload_bytes:
            raise ValueError("queue_max_bytes must hold at least one payload of max_payload_bytes")
        room = min(MAX_PACKET, self.max_payload_bytes + PACKET_OVERHEAD)
        if self.max_packet_bytes < room:
            # A ceiling at max_payload_bytes would make the broker drop, uncounted, what must be counted too_large.
            raise ValueError(
                f"max_packet_bytes must be at least max_payload_bytes + {PACKET_OVERHEAD} (topic and properties),"
                f" here {room}, so that oversized payloads reach plantwatch and are counted"
            )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        keys = [tag.source_key for tag in self.tags]
        dupes = sorted(k for k, n in Counter(keys).items() if n > 1)  # linear: sources may have 10^4 tags
        if dupes:
            raise ValueError(f"two tags read the same topic name: {', '.join(dupes)}")
        return self

    @property
    def effective_client_id(self) -> str:
        return self.client_id if self.client_id is not None else f"plantwatch-{self.name}"
