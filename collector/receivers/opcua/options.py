"""Options of the OPC-UA source: one server endpoint, its security, and the subscription's parameters."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from collector.receivers.opcua.nodes import NodeIdError, parse_node_key
from collector.sources import ConfigFile, Secret, SourceBase, Strict

POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")


class OpcUaSecurity(Strict):
    """How the channel is secured; anything but policy None needs a client certificate and key."""

    policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = Field(
        default="None", description="Security policy; a secure source never falls back to None."
    )
    mode: Literal["Sign", "SignAndEncrypt"] = Field(
        default="SignAndEncrypt", description="Message security mode for a secure policy."
    )
    certificate: ConfigFile | None = Field(default=None, description="Client certificate (DER or PEM).")
    private_key: ConfigFile | None = Field(default=None, description="Client private key (PEM), unencrypted.")
    private_key_password: Secret | None = Field(default=None, description="Password of an encrypted private key.")
    server_certificate: ConfigFile | None = Field(
        default=None, description="The server certificate to trust (DER or PEM); required for a secure policy."
    )
    trust_on_first_use: bool = Field(
        default=False,
        description="Without server_certificate, trust the certificate the server first presents, for this run.",
    )

    @model_validator(mode="after")
    def _complete(self) -> OpcUaSecurity:
        if self.policy == "None":
            given = [name for name in ("certificate", "private_key", "server_certificate") if getattr(self, name)]
            if given:
                raise ValueError(f"policy None uses no certificates; remove {', '.join(given)} or choose a policy")
            return self
        if self.certificate is None or self.private_key is None:
            raise ValueError(f"policy {self.policy} needs certificate and private_key")
        if self.server_certificate is None and not self.trust_on_first_use:
            raise ValueError(
                f"policy {self.policy} needs server_certificate (the server's certificate to trust), "
                "or trust_on_first_use: true"
            )
        return self

    @property
    def secure(self) -> bool:
        return self.policy != "None"


class OpcUaOptions(SourceBase):
    kind: Literal["opcua"]
    endpoint: str = Field(description="Server endpoint URL, opc.tcp://host:port/path.")
    namespace_uri: str | None = Field(
        default=None, description="Namespace of node ids written without ns= or nsu=; resolved to its index at connect."
    )
    publishing_interval_ms: Annotated[float, Field(gt=0, description="Subscription publishing interval.")] = 1000.0
    sampling_interval_ms: Annotated[
        float, Field(ge=0, description="Monitored items' sampling interval; 0 is the server's fastest.")
    ] = 0.0
    queue_size: Annotated[
        int, Field(ge=1, le=10000, description="Values the server queues per item between publishes.")
    ] = 10
    deadband_abs: Annotated[
        float | None, Field(gt=0, description="Absolute deadband: report a value only when it moved more than this.")
    ] = None
    trigger: Literal["status", "status_value", "status_value_timestamp"] = Field(
        default="status_value_timestamp",
        description="What makes a notification: status_value_timestamp also reports an unchanged, refreshed value.",
    )
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity, description="Channel security.")
    application_uri: str | None = Field(
        default=None,
        description="This client's application URI; default: its certificate's URI, else urn:plantwatch:client.",
    )
    username: str | None = Field(default=None, description="User name; anonymous without it.")
    password: Secret | None = Field(default=None, description="Password, inline, {env: NAME} or {file: PATH}.")
    timeout_s: Annotated[float, Field(gt=0, le=60, description="Timeout of one request to the server.")] = 5.0
    watchdog_s: Annotated[
        float, Field(gt=0, le=300, description="A server silent this long (hung, unplugged) is declared down.")
    ] = 5.0
    reconnect_min_s: Annotated[float, Field(gt=0, description="First reconnect delay; doubles per failure.")] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=300, description="Cap of the reconnect delay.")] = 10.0

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("opc.tcp://") or len(value) <= len("opc.tcp://"):
            raise ValueError("must be an opc.tcp:// URL, for example opc.tcp://10.0.0.5:4840")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaOptions:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.deadband_abs is not None and self.trigger == "status":
            raise ValueError("deadband_abs needs trigger status_value or status_value_timestamp")
        for tag in self.tags:
            try:
                key = parse_node_key(tag.source_key)
            except NodeIdError as exc:
                raise ValueError(f"tag {tag.name}: {exc}") from None
            if key.bare and self.namespace_uri is None:
                raise ValueError(
                    f"tag {tag.name}: {tag.source_key!r} is not a node id; set its column "
                    "(ns=2;s=..., nsu=<uri>;s=..., i=...) or the source's namespace_uri"
                )
        return self
