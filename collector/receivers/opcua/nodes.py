"""Tag keys to OPC-UA node ids: ``ns=2;s=...``, ``nsu=<uri>;s=...``, ``i=2258``, or a bare string identifier.

A key's namespace is an index (``ns=``), a URI (``nsu=``, resolved through the
server's NamespaceArray after each connect, since indexes may move when a
server restarts), or, when the key names none, the source's ``namespace_uri``
(namespace 0 without one). A key that is not in node id syntax at all is a
string identifier in ``namespace_uri``.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import ua

_ID_PREFIXES = ("i=", "s=", "g=", "b=")


class NodeIdError(ValueError):
    """A tag key that cannot name a node, or a namespace the server does not have."""


@dataclass(frozen=True)
class NodeKey:
    namespace: int | str | None  # an index, a URI, or None for the source's default namespace
    node: ua.NodeId  # identifier and type; its namespace index is replaced on resolution
    bare: bool = False  # written without node id syntax: a string identifier

    def resolve(self, namespaces: list[str], default_uri: str | None) -> ua.NodeId:
        ns = self.namespace
        if ns is None:
            ns = default_uri if default_uri is not None else 0
        if isinstance(ns, str):
            try:
                index = namespaces.index(ns)
            except ValueError:
                raise NodeIdError(f"the server has no namespace {ns}") from None
        else:
            index = ns
        return ua.NodeId(self.node.Identifier, index, self.node.NodeIdType)


def parse_node_key(key: str) -> NodeKey:
    """Parse a tag's key; raises NodeIdError with the reason. Bare keys are string identifiers."""
    text = key.strip()
    if not text:
        raise NodeIdError("empty node id")
    namespace: int | str | None = None
    rest = text
    if text.startswith("ns="):
        head, sep, rest = text.partition(";")
        if not sep or not head[3:].isdigit():
            raise NodeIdError(f"bad node id {key!r}: expected ns=<index>;<i|s|g|b>=<identifier>")
        namespace = int(head[3:])
        if namespace > 65535:
            raise NodeIdError(f"bad node id {key!r}: namespace index above 65535")
    elif text.startswith("nsu="):
        head, sep, rest = text.partition(";")
        if not sep or not head[4:]:
            raise NodeIdError(f"bad node id {key!r}: expected nsu=<namespace uri>;<i|s|g|b>=<identifier>")
        namespace = head[4:]
    elif not text.startswith(_ID_PREFIXES):
        return NodeKey(None, ua.NodeId(text, 0, ua.NodeIdType.String), bare=True)
    if not rest.startswith(_ID_PREFIXES):
        raise NodeIdError(f"bad node id {key!r}: the identifier must start with i=, s=, g= or b=")
    try:
        node = ua.NodeId.from_string(rest)
    except Exception as exc:  # asyncua raises UaStringParsingError, ValueError, ... for bad identifiers
        raise NodeIdError(f"bad node id {key!r}: {exc}") from None
    return NodeKey(namespace, node)
