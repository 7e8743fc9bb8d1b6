"""The OPC-UA source: monitored-item subscriptions on one server, read only, surviving faults.

One session at a time, built from scratch on every (re)connect: a fresh
asyncua ``Client`` with the configured security, a subscription created
through the raw service interface (``client.uaclient``), so that one Publish
response (one burst of notifications) becomes exactly one ``SampleBatch``.
asyncua's own auto-reconnect is off: this loop owns backoff (capped,
exponential, jittered), status and error counts. Nothing here writes, calls
methods or manages nodes on the server: the only services used are
GetEndpoints, sessions, Read (namespace array and asyncua's health probe),
and the subscription and monitored-item services.

Failure detection: a closed socket or a failed health probe (asyncua's
supervisor reads ServerStatus every third of ``watchdog_s``; a hung server
does not answer) ends the session, as does a subscription that stays silent
past its keep-alive period plus ``watchdog_s``, or a bad StatusChange
notification. The tags then get one BAD sample, the source is down, and the
loop retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from collector.logs import LogOnce
from collector.receivers.base import Receiver, ReceiverContext, reconnect_delay
from collector.receivers.opcua.nodes import NodeIdError, NodeKey, parse_node_key
from collector.receivers.opcua.options import OpcUaOptions
from collector.samples import Quality, SampleBatch

DEFAULT_APP_URI = "urn:plantwatch:client"
POLICY_CLASSES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
TRIGGERS = {
    "status": ua.DataChangeTrigger.Status,
    "status_value": ua.DataChangeTrigger.StatusValue,
    "status_value_timestamp": ua.DataChangeTrigger.StatusValueTimestamp,
}
FILTER_REFUSED = {
    ua.StatusCodes.BadFilterNotAllowed,
    ua.StatusCodes.BadMonitoredItemFilterUnsupported,
    ua.StatusCodes.BadMonitoredItemFilterInvalid,
    ua.StatusCodes.BadDeadbandFilterInvalid,
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_VALID_TS = 86400.0  # OPC-UA "no time" (1601) and garbage before 1970-01-02 count as missing
SESSION_TIMEOUT_MS = 60_000  # the server drops a session we abandoned (hung network) after this
STABLE_S = 10.0  # a session that lasted this long resets the backoff
TRANSLATE_CHUNK = 1000  # browse paths per TranslateBrowsePathsToNodeIds request (servers cap the operation count)
FULL_PATH = 0xFFFFFFFF  # RemainingPathIndex of a target reached to the end of its path


class SourceLost(Exception):
    """The session ended; ``kind`` is the error counter it goes to."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def classify(exc: BaseException) -> str:
    """The error kind of a failed connect or session, for ``status.errors``."""
    if isinstance(exc, SourceLost):
        return exc.kind
    if isinstance(exc, ua.UaStatusCodeError):
        name = ua.StatusCode(exc.code).name
        if "User" in name or "IdentityToken" in name:
            return "auth"
        if "Certificate" in name or "Security" in name or "Nonce" in name:
            return "security"
        if name in ("BadTimeout", "BadRequestTimeout"):
            return "timeout"
        if name in ("BadServerHalted", "BadShutdown", "BadConnectionClosed", "BadSecureChannelClosed"):
            return "connection"
        return "protocol"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):  # refused, reset, unreachable; ConnectionError is one
        return "connection"
    if isinstance(exc, ua.UaError):
        text = str(exc).lower()
        if "certificate" in text or "endpoint" in text or "security" in text or "signature" in text:
            return "security"
        return "protocol"
    if isinstance(exc, ValueError | InvalidSignature):
        return "security"  # cryptography raises these for keys and signatures that do not fit
    return "protocol"


def describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ua.UaStatusCodeError):
        text = ua.StatusCode(exc.code).name
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def epoch(dt: datetime | None) -> float:
    if dt is None:
        return math.nan
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts = (dt - EPOCH).total_seconds()
    return ts if ts >= MIN_VALID_TS else math.nan


def quality_of(status: ua.StatusCode | None) -> Quality:
    if status is None:
        return Quality.GOOD
    severity = (status.value >> 30) & 3
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.UNCERTAIN
    return Quality.BAD


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class OpcUaReceiver(Receiver):
    kind: ClassVar[str] = "opcua"
    options_model: ClassVar[type[OpcUaOptions]] = OpcUaOptions
    live: ClassVar[bool] = True

    def __init__(self, options: OpcUaOptions, context: ReceiverContext, *, realtime: bool = True) -> None:
        super().__init__(options, context)
        self.options: OpcUaOptions = options
        keys = [tag.source_key for tag in options.tags]
        self._node_keys: list[NodeKey] = [parse_node_key(k) for k in keys]
        self._labels = keys
        self._columns = np.array([context.tag_index[k] for k in keys], dtype=np.int32)
        n = len(keys)
        # Per tag, the time of the last value accepted and the statuses accepted at that time: what a
        # republished (repeated) Publish response is recognised by, see ``_seen``.
        self._last_ts: list[float] = [-math.inf] * n
        self._last_codes: list[tuple[int, ...]] = [()] * n
        self._warn_once = LogOnce(context.log)
        self._rng = random.Random()
        self._pinned: bytes | None = None  # trust-on-first-use: the certificate seen first, for this run
        self._ever_up = False
        self._was_up = False  # the session that just ended had been up
        self._last_fail_kind: str | None = None
        self._lost: asyncio.Future[SourceLost] | None = None
        self._last_publish = 0.0
        # counters beyond status, for tests and the closing note
        self.attempts = 0
        self.duplicates = 0
        self.batches = 0

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        log = self.context.log
        try:
            while True:
                self.attempts += 1
                began = time.monotonic()
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never out of run(): counted, logged, retried
                    kind = classify(exc)  # counted in _session
                    was_up, self._was_up = self._was_up, False
                    fields = {"source": self.name, "endpoint": self.options.endpoint, "kind": kind}
                    if was_up:
                        log.warning("OPC-UA source down", extra={**fields, "error": describe(exc)})
                    elif kind != self._last_fail_kind:
                        log.error("OPC-UA connection failed", extra={**fields, "error": describe(exc)})
                    else:
                        log.debug("OPC-UA connection failed again", extra={**fields, "error": describe(exc)})
                    self._last_fail_kind = kind
                    if was_up and time.monotonic() - began >= STABLE_S:
                        failures = 0
                if _cancel_requested():
                    raise asyncio.CancelledError  # asyncua's teardown may have swallowed our cancellation
                delay = self._backoff(failures)
                failures += 1
                await asyncio.sleep(delay)
        finally:
            self._mark_down()

    def _backoff(self, failures: int) -> float:
        return reconnect_delay(failures, self.options.reconnect_min_s, self.options.reconnect_max_s, self._rng)

    def _mark_down(self) -> None:
        """Down: status, and one BAD sample per tag so that they show BAD at once, not only stale."""
        if not self.status.up:
            return
        self.status.up = False
        self._put(self._bad_batch(self._columns.copy()))

    def _bad_batch(self, columns: np.ndarray) -> SampleBatch:
        now = self.context.clock()
        n = len(columns)
        return SampleBatch(
            source=self.context.index,
            tag=columns,
            value=np.full(n, np.nan),
            ts=np.full(n, now),
            recv_ts=np.full(n, now),
            quality=np.full(n, Quality.BAD, dtype=np.uint8),
        )

    def _put(self, batch: SampleBatch) -> None:
        self.context.queue.put_nowait(batch)
        self.batches += 1

    # -- one session -------------------------------------------------------------------------

    async def _session(self) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        client = Client(opts.endpoint, timeout=opts.timeout_s, watchdog_intervall=opts.watchdog_s / 3.0)
        client.session_timeout = SESSION_TIMEOUT_MS
        client.name = client.description = "plantwatch"
        client.product_uri = "urn:plantwatch"
        client.connection_lost_callback = self._on_connection_lost
        try:
            await self._configure(client)
            await asyncio.wait_for(client.connect(), opts.timeout_s * 3)
            self._check_security(client)
            nodes = await self._resolve(client)
            revised_ms = await self._subscribe(client, nodes)
            if self.status.up is False:
                if self._ever_up:
                    self.status.reconnects += 1
                    self.context.log.info("OPC-UA source up again", extra={"source": self.name})
                else:
                    self.context.log.info("OPC-UA source up", extra={"source": self.name})
                self._ever_up = True
                self.status.up = True
                self._last_fail_kind = None
            await self._watch(revised_ms)
        except Exception as exc:
            # Down and counted at once, before the (possibly slow, on a hung server) teardown.
            self._was_up = self.status.up
            self.status.count_error(classify(exc))
            self._mark_down()
            raise
        finally:
            await self._close(client)

    async def _configure(self, client: Client) -> None:
        opts = self.options
        sec = opts.security
        if opts.username is not None and opts.password is not None:
            client.set_user(opts.username)
            client.set_password(opts.password.get_secret_value())
        client.application_uri = opts.application_uri or DEFAULT_APP_URI
        if not sec.secure:
            return
        assert sec.certificate is not None and sec.private_key is not None
        own = await uacrypto.load_certificate(str(sec.certificate))
        if opts.application_uri is None:
            client.application_uri = _cert_uri(own) or DEFAULT_APP_URI
        password = sec.private_key_password.get_secret_value() if sec.private_key_password else None
        mode = getattr(ua.MessageSecurityMode, sec.mode)
        policy = POLICY_CLASSES[sec.policy]
        # Discovery (GetEndpoints, no session) is what a server answers on an unsecured channel: it tells
        # at once whether the server offers this policy and mode at all (a server that does not would
        # otherwise leave the secure channel request unanswered until the timeout).
        endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), opts.timeout_s * 2)
        endpoint = Client.find_endpoint(endpoints, mode, policy.URI)  # UaError "No matching endpoints"
        if not endpoint.ServerCertificate:
            raise SourceLost("security", "the server announces no certificate")
        announced = uacrypto.der_from_x509(uacrypto.x509_from_der(endpoint.ServerCertificate))
        trusted = self._pinned
        if sec.server_certificate is not None:
            trusted = uacrypto.der_from_x509(await uacrypto.load_certificate(str(sec.server_certificate)))
        if trusted is None:  # trust on first use, before the first session: the certificate the server announces
            trusted = announced
        elif trusted != announced:
            # Refused before the secure channel: the channel would use the trusted certificate's key, which a
            # server without it cannot read, and asyncua's server then leaves the request unanswered.
            raise SourceLost(
                "security",
                f"server certificate {fingerprint(announced)[:16]} is not the trusted {fingerprint(trusted)[:16]}",
            )
        await asyncio.wait_for(
            client.set_security(
                policy,
                str(sec.certificate),
                str(sec.private_key),
                private_key_password=password,
                server_certificate=trusted,
                mode=mode,
            ),
            opts.timeout_s * 2,
        )
        # Checked at CreateSession against the certificate the server presents: validity dates and the
        # application URI of the server's description.
        client.certificate_validator = CertificateValidator(
            CertificateValidatorOptions.TIME_RANGE
            | CertificateValidatorOptions.URI
            | CertificateValidatorOptions.PEER_SERVER
        )

    def _check_security(self, client: Client) -> None:
        """A source configured secure refuses any channel weaker than the one configured."""
        sec = self.options.security
        policy = client.security_policy
        if not sec.secure:
            return
        expected_mode = getattr(ua.MessageSecurityMode, sec.mode)
        if policy.URI != POLICY_CLASSES[sec.policy].URI or policy.Mode != expected_mode:
            raise SourceLost("security", f"channel is {policy.URI} {policy.Mode}, not {sec.policy} {sec.mode}")
        peer = policy.peer_certificate
        if not peer:
            raise SourceLost("security", "secure channel without a server certificate")
        if sec.server_certificate is None and self._pinned is None:
            self._pinned = bytes(peer)
            self.context.log.warning(
                "trusting the OPC-UA server certificate on first use",
                extra={"source": self.name, "sha256": fingerprint(self._pinned)},
            )

    async def _resolve(self, client: Client) -> list[ua.NodeId | None]:
        """Node ids of every tag for this session: namespaces looked up, browse paths translated by the server.

        Done after each connect, since a restarted server may number its namespaces (and so the targets of
        browse paths) differently. A tag that does not resolve is BAD now, counted as ``bad_node`` and logged
        once; the other tags go on.
        """
        opts = self.options
        need_array = opts.namespace_uri is not None or any(isinstance(k.namespace, str) for k in self._node_keys)
        namespaces: list[str] = []
        if need_array:
            namespaces = list(await asyncio.wait_for(client.get_namespace_array(), opts.timeout_s))
        nodes: list[ua.NodeId | None] = [None] * len(self._node_keys)
        paths: list[tuple[int, ua.BrowsePath]] = []
        unresolved: list[int] = []
        for i, key in enumerate(self._node_keys):
            try:
                if key.is_path:
                    paths.append((i, key.browse_path(namespaces, opts.namespace_uri)))
                else:
                    nodes[i] = key.resolve(namespaces, opts.namespace_uri)
            except NodeIdError as exc:
                unresolved.append(i)
                self._bad_node(i, str(exc))
        for at in range(0, len(paths), TRANSLATE_CHUNK):
            chunk = paths[at : at + TRANSLATE_CHUNK]
            results = await asyncio.wait_for(
                client.uaclient.translate_browsepaths_to_nodeids([path for _, path in chunk]), opts.timeout_s * 2
            )
            for (i, _), result in zip(chunk, results, strict=True):
                target = _single_target(result)
                if target is None:
                    unresolved.append(i)
                    self._bad_node(i, f"browse path does not resolve: {result.StatusCode.name}")
                else:
                    nodes[i] = target
        if unresolved:
            self._put(self._bad_batch(self._columns[np.array(sorted(unresolved), dtype=np.intp)]))
        return nodes

    def _bad_node(self, i: int, reason: str) -> None:
        self.status.count_error("bad_node")
        label = self._labels[i]
        self._warn_once(f"node:{label}", "OPC-UA tag not subscribed", source=self.name, node=label, reason=reason)

    async def _subscribe(self, client: Client, nodes: list[ua.NodeId | None]) -> float:
        opts = self.options
        interval = opts.publishing_interval_ms
        keepalive = max(1, math.ceil(opts.watchdog_s * 1000.0 / 2.0 / interval))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval,
            RequestedLifetimeCount=keepalive * 6,
            RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        self._last_publish = time.monotonic()
        result = await asyncio.wait_for(client.uaclient.create_subscription(params, self._on_publish), opts.timeout_s)
        sub_id = result.SubscriptionId
        revised_keepalive_ms = result.RevisedPublishingInterval * max(1, result.RevisedMaxKeepAliveCount)

        wanted = [i for i, node in enumerate(nodes) if node is not None]
        refused = await self._create_items(client, sub_id, nodes, wanted, self._filter())
        if refused and self._filter() is not None:
            # Some servers refuse a deadband or trigger filter on some types (Boolean, String): plain items then.
            self._warn_once(
                "filter",
                "OPC-UA server refused the data change filter on some tags; subscribed them without it",
                source=self.name,
                tags=len(refused),
            )
            refused = await self._create_items(client, sub_id, nodes, refused, None, final=True)
        return revised_keepalive_ms

    def _filter(self) -> ua.DataChangeFilter | None:
        opts = self.options
        if opts.deadband_abs is None and opts.trigger == "status_value":
            return None
        flt = ua.DataChangeFilter(Trigger=TRIGGERS[opts.trigger])
        if opts.deadband_abs is not None:
            flt.DeadbandType = ua.DeadbandType.Absolute
            flt.DeadbandValue = float(opts.deadband_abs)
        return flt

    async def _create_items(
        self,
        client: Client,
        sub_id: int,
        nodes: list[ua.NodeId | None],
        which: list[int],
        flt: ua.DataChangeFilter | None,
        *,
        final: bool = False,
    ) -> list[int]:
        """Create monitored items for tags ``which``; returns the tags refused because of the filter."""
        if not which:
            return []
        opts = self.options
        requests = []
        for i in which:
            mparams = ua.MonitoringParameters(
                ClientHandle=i + 1,
                SamplingInterval=opts.sampling_interval_ms,
                QueueSize=opts.queue_size,
                DiscardOldest=True,
            )
            if flt is not None:
                mparams.Filter = flt
            requests.append(
                ua.MonitoredItemCreateRequest(
                    ItemToMonitor=ua.ReadValueId(NodeId=nodes[i], AttributeId=ua.AttributeIds.Value),
                    MonitoringMode=ua.MonitoringMode.Reporting,
                    RequestedParameters=mparams,
                )
            )
        create = ua.CreateMonitoredItemsParameters(
            SubscriptionId=sub_id, ItemsToCreate=requests, TimestampsToReturn=ua.TimestampsToReturn.Both
        )
        results = await asyncio.wait_for(client.uaclient.create_monitored_items(create), opts.timeout_s * 2)
        refused: list[int] = []
        failed: list[int] = []
        for i, res in zip(which, results, strict=True):
            code = res.StatusCode
            if code.is_good():
                continue
            if not final and flt is not None and code.value in FILTER_REFUSED:
                refused.append(i)
                continue
            failed.append(i)
            self.status.count_error("bad_node")
            self._warn_once(
                f"node:{self._labels[i]}",
                "OPC-UA tag not subscribed",
                source=self.name,
                node=self._labels[i],
                reason=code.name,
            )
        if failed:  # these tags will not come: BAD now rather than silence
            self._put(self._bad_batch(self._columns[failed]))
        return refused

    async def _watch(self, keepalive_ms: float) -> None:
        """Wait for the session to end: lost by asyncua's supervisor, by a bad status, or by silence."""
        assert self._lost is not None
        silent_limit = keepalive_ms / 1000.0 + self.options.watchdog_s
        step = min(1.0, self.options.watchdog_s / 4.0)
        while True:
            done, _ = await asyncio.wait({self._lost}, timeout=step)
            if done:
                raise self._lost.result()
            silence = time.monotonic() - self._last_publish
            if silence > silent_limit:
                raise SourceLost("watchdog", f"no publish response for {silence:.1f} s")

    async def _close(self, client: Client) -> None:
        client.connection_lost_callback = None
        try:
            await asyncio.wait_for(client.disconnect(), min(self.options.timeout_s, 2.0))
        except asyncio.CancelledError:
            raise
        except Exception:  # a dead or hung server: the socket goes anyway
            self.context.log.debug("OPC-UA disconnect failed", extra={"source": self.name}, exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            self._lost = None

    # -- callbacks from asyncua's tasks -------------------------------------------------------

    def _set_lost(self, lost: SourceLost) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(lost)

    async def _on_connection_lost(self, exc: Exception) -> None:
        kind = "watchdog" if isinstance(exc, TimeoutError) else classify(exc)
        if kind == "timeout":
            kind = "watchdog"
        self._set_lost(SourceLost(kind, f"connection lost: {describe(exc)}"))

    def _on_publish(self, result: ua.PublishResult) -> None:
        """One Publish response: every data change in it becomes one batch."""
        self._last_publish = time.monotonic()
        data = result.NotificationMessage.NotificationData
        if not data:
            return  # keep-alive
        now = self.context.clock()
        n = len(self._columns)
        idx: list[int] = []
        values: list[float] = []
        stamps: list[float] = []
        quals: list[int] = []
        for notification in data:
            if isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                if status is not None and not status.is_good():
                    self._set_lost(SourceLost("subscription", f"subscription status {status.name}"))
                continue
            if not isinstance(notification, ua.DataChangeNotification):
                continue
            for item in notification.MonitoredItems:
                i = item.ClientHandle - 1
                if not 0 <= i < n:
                    self.status.count_error("unknown_handle")
                    self._warn_once("unknown_handle", "OPC-UA notification for an unknown item", source=self.name)
                    continue
                sample = self._convert(i, item.Value, now)
                if sample is None:
                    continue
                idx.append(i)
                values.append(sample[0])
                stamps.append(sample[1])
                quals.append(sample[2])
        if not idx:
            return
        k = len(idx)
        batch = SampleBatch(
            source=self.context.index,
            tag=self._columns[np.array(idx, dtype=np.intp)],
            value=np.array(values, dtype=np.float64),
            ts=np.array(stamps, dtype=np.float64),
            recv_ts=np.full(k, now),
            quality=np.array(quals, dtype=np.uint8),
        )
        self._put(batch)
        self.status.samples += k
        self.status.last_sample_time = now

    def _seen(self, i: int, ts: float, code: int) -> bool:
        """Whether tag ``i`` already had this value; if not, it becomes the tag's last.

        A Publish response carries up to ``queue_size`` values per item, oldest first, and may arrive
        again (a republish, the initial values of a re-created subscription), so a repeat is recognised
        by time, not only against the last value: older than the last accepted value, or at the same time
        with a status already accepted at that time. ``ts`` is the source timestamp, else the server's.
        """
        last = self._last_ts[i]
        if ts < last:
            return True
        if ts == last:
            codes = self._last_codes[i]
            if code in codes:
                return True
            self._last_codes[i] = (*codes, code)
            return False
        self._last_ts[i] = ts
        self._last_codes[i] = (code,)
        return False

    def _convert(self, i: int, dv: ua.DataValue | None, now: float) -> tuple[float, float, int] | None:
        if dv is None:
            self.status.count_error("malformed")
            self._warn_once("no_datavalue", "OPC-UA notification without a value", source=self.name)
            return None
        status = dv.StatusCode
        code = status.value if status is not None else 0
        ts = epoch(dv.SourceTimestamp)
        if math.isnan(ts):
            ts = epoch(dv.ServerTimestamp)
        if math.isnan(ts):
            ts = now  # no time at all: a repeat cannot be told from a new value, so it is taken as new
        elif self._seen(i, ts, code):
            self.duplicates += 1  # republished or re-sent initial value: already counted
            return None
        quality = quality_of(status)
        raw: Any = dv.Value.Value if dv.Value is not None else None
        if quality == Quality.BAD:
            value = _number(raw)
            return (math.nan if value is None else value, ts, int(quality))
        value = _number(raw)
        if value is None:
            reason = "no_value" if raw is None else f"type_{type(raw).__name__}"
            self.status.count_error("malformed")
            self._warn_once(
                reason,
                "OPC-UA value is not a number; dropped",
                source=self.name,
                node=self._labels[i],
                type=type(raw).__name__,
            )
            return None
        return (value, ts, int(quality))


def _single_target(result: ua.BrowsePathResult) -> ua.NodeId | None:
    """The node a browse path leads to: a good status and a target reached to the path's end; else None."""
    if not result.StatusCode.is_good() or not result.Targets:
        return None
    target = result.Targets[0]
    if target.RemainingPathIndex != FULL_PATH:  # the path left this server part way: not a node we can read
        return None
    node = target.TargetId
    return ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)


def _cancel_requested() -> bool:
    """True when this task was asked to stop, even if the CancelledError got lost on the way.

    asyncua's ``Client._cancel_task`` (used by ``disconnect``) catches CancelledError, so a
    cancellation that lands while it awaits is swallowed; ``Task.cancelling`` still counts it.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _number(raw: Any) -> float | None:
    """A variant's value as a float, None when it is not a number; never raises (it runs in asyncua's loop)."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        try:
            return float(raw)
        except OverflowError:  # an integer beyond the float range: infinite, BAD in the pipeline (non_finite)
            return math.inf if raw > 0 else -math.inf
    return None


def _cert_uri(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
