"""Tag keys to OPC-UA node ids: ``ns=2;s=...``, ``nsu=<uri>;s=...``, ``i=2258``, a browse path, or a bare string.

A key's namespace is an index (``ns=``), a URI (``nsu=``, resolved through the
server's NamespaceArray after each connect, since indexes may move when a
server restarts), or, when the key names none, the source's ``namespace_uri``
(namespace 0 without one). A key that is not in node id syntax at all is a
string identifier in ``namespace_uri``.

A browse path (``path=/0:Objects/2:oil/2:tank_farm/2:TK101.LEVEL``) names a
node by the browse names from the Root folder down, as a vendor's address
space documentation does; a name without ``<index>:`` is in the source's
``namespace_uri`` (namespace 0 without one), so a path can survive index
moves. The receiver translates every path after each connect with
TranslateBrowsePathsToNodeIds.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import ua

_ID_PREFIXES = ("i=", "s=", "g=", "b=")
PATH_PREFIX = "path="


class NodeIdError(ValueError):
    """A tag key that cannot name a node, or a namespace the server does not have."""


@dataclass(frozen=True)
class NodeKey:
    namespace: int | str | None  # an index, a URI, or None for the source's default namespace
    node: ua.NodeId  # identifier and type; its namespace index is replaced on resolution
    bare: bool = False  # written without node id syntax: a string identifier
    path: tuple[tuple[int | None, str], ...] = ()  # a browse path: (namespace index or None, name) from Root

    @property
    def is_path(self) -> bool:
        return bool(self.path)

    def browse_path(self, namespaces: list[str], default_uri: str | None) -> ua.BrowsePath:
        """The path as a TranslateBrowsePathsToNodeIds request item, from the Root folder."""
        default = 0
        if default_uri is not None:
            try:
                default = namespaces.index(default_uri)
            except ValueError:
                raise NodeIdError(f"the server has no namespace {default_uri}") from None
        relative = ua.RelativePath()
        for index, name in self.path:
            element = ua.RelativePathElement()
            element.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
            element.IsInverse = False
            element.IncludeSubtypes = True
            element.TargetName = ua.QualifiedName(name, default if index is None else index)
            relative.Elements.append(element)
        return ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.RootFolder), RelativePath=relative)

    def resolve(self, namespaces: list[str], default_uri: str | None) -> ua.NodeId:
        if self.path:
            raise NodeIdError("a browse path is resolved by the server (TranslateBrowsePathsToNodeIds)")
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
    if text.startswith(PATH_PREFIX):
        return NodeKey(None, ua.NodeId(), path=parse_browse_path(text[len(PATH_PREFIX) :], key))
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


def parse_browse_path(text: str, key: str) -> tuple[tuple[int | None, str], ...]:
    """``/0:Objects/2:oil/TK101.LEVEL`` -> ((0, "Objects"), (2, "oil"), (None, "TK101.LEVEL")); NodeIdError if bad.

    Names are separated by ``/`` (a name cannot contain one); ``<index>:`` in front of a name gives its
    namespace index, and only digits make an index, so ``a:b`` is the name ``a:b`` in the default namespace.
    """
    if not text.startswith("/"):
        raise NodeIdError(f"bad browse path {key!r}: it starts at the Root folder, with '/'")
    elements: list[tuple[int | None, str]] = []
    for part in text[1:].split("/"):
        head, sep, name = part.partition(":")
        index: int | None = None
        if sep and head.isdigit():
            index = int(head)
            if index > 65535:
                raise NodeIdError(f"bad browse path {key!r}: namespace index above 65535")
        else:
            name = part
        if not name:
            raise NodeIdError(f"bad browse path {key!r}: an empty browse name")
        elements.append((index, name))
    return tuple(elements)
