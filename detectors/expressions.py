"""The invariant expression language: a small recursive-descent parser and a vectorized evaluator.

Never ``eval``: numbers, named constants, tag names (letters, digits, ``_``
and ``.``, or any text in double quotes), ``+ - * /``, unary minus,
parentheses, and the functions ``der(TAG)`` (change per second since the
previous tick), ``lag(TAG, N)`` (the value N ticks ago), ``avg(EXPR, N)`` (the
mean over the last N ticks, this one included; N a whole number up to
``MAX_LAG``) and ``abs(EXPR)``. A problem is reported with its column.

An invariant comes from a config file, so the parser bounds what a file can ask
for: at most ``MAX_LENGTH`` characters, ``MAX_NESTING`` levels of brackets,
functions and signs, a tree at most ``MAX_DEPTH`` deep (the evaluators recurse
over it), finite numbers, and ``MAX_LAG`` ticks of history in all (windows
nested in windows add up). Past any bound the file is refused at load, with
the column, instead of failing in the daemon later.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MAX_LAG = 3600
MAX_LENGTH = 2000
MAX_NESTING = 32
MAX_DEPTH = 200
_TOKEN = re.compile(
    r"\s*(?:(?P<num>[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+(?:[eE][-+]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)|\"(?P<quoted>[^\"]+)\"|(?P<op>[-+*/(),]))"
)
FUNCTIONS = ("der", "lag", "avg", "abs")


class ExpressionError(ValueError):
    """An invariant that does not parse, or names a tag the config does not have."""


@dataclass(frozen=True)
class Node:
    kind: str  # num, tag, der, lag, avg, abs, neg, + - * /
    value: float = 0.0
    tag: int = -1
    lag: int = 0
    args: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Token:
    kind: str  # num, name, op, end
    text: str
    column: int  # 1-based, where the token starts in the expression


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    stripped = text.rstrip()
    if len(stripped) > MAX_LENGTH:
        raise ExpressionError(f"column {MAX_LENGTH + 1}: longer than {MAX_LENGTH} characters; split the relation")
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None or m.end() == pos:
            at = len(stripped) - len(stripped[pos:].lstrip())
            raise ExpressionError(f"column {at + 1}: unexpected {stripped[at : at + 10]!r}")
        kind = m.lastgroup or ""
        out.append(Token("name" if kind == "quoted" else kind, m.group(kind), m.start(kind) + 1))
        pos = m.end()
    out.append(Token("end", "the end", len(stripped) + 1))
    return out


class _Parser:
    def __init__(self, text: str, tags: Sequence[str], constants: Mapping[str, float]) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.index = {t: j for j, t in enumerate(tags)}
        self.constants = dict(constants)
        self.nesting = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def is_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.text in ops

    def fail(self, tok: Token, message: str) -> ExpressionError:
        return ExpressionError(f"column {tok.column}: {message}")

    def take(self, op: str | None = None) -> Token:
        tok = self.peek()
        if tok.kind == "end" or (op is not None and not (tok.kind == "op" and tok.text == op)):
            found = "the end" if tok.kind == "end" else repr(tok.text)
            raise self.fail(tok, f"expected {repr(op) if op else 'more'}, found {found}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise self.fail(tok, f"unexpected {tok.text!r} after a complete expression")
        if _depth(node) > MAX_DEPTH:
            raise self.fail(self.tokens[0], f"more than {MAX_DEPTH} operations deep; split the relation")
        history = max_lag(node)
        if history > MAX_LAG:
            raise self.fail(self.tokens[0], f"reads {history} ticks of history, more than {MAX_LAG}")
        return node

    def nest(self, tok: Token) -> None:
        """One more level of brackets, function or sign: bounded, as the parser recurses on each."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.fail(tok, f"nested more than {MAX_NESTING} levels deep")

    def expr(self) -> Node:
        node = self.term()
        while self.is_op("+", "-"):
            op = self.take().text
            node = Node(op, args=(node, self.term()))
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.is_op("*", "/"):
            op = self.take().text
            node = Node(op, args=(node, self.unary()))
        return node

    def unary(self) -> Node:
        if self.is_op("-"):
            self.nest(self.take())
            node = Node("neg", args=(self.unary(),))
            self.nesting -= 1
            return node
        return self.atom()

    def tag(self) -> int:
        tok = self.take()
        if tok.kind != "name" or tok.text not in self.index:
            raise self.fail(tok, f"{tok.text!r} is not a tag of this config")
        return self.index[tok.text]

    def ticks(self, function: str) -> int:
        tok = self.take()
        if tok.kind != "num" or not _WHOLE.fullmatch(tok.text) or not 1 <= int(tok.text) <= MAX_LAG:
            raise self.fail(tok, f"{function} needs a whole number of ticks from 1 to {MAX_LAG}, not {tok.text!r}")
        return int(tok.text)

    def atom(self) -> Node:
        tok = self.take()
        if tok.kind == "num":
            value = float(tok.text)
            if not math.isfinite(value):
                raise self.fail(tok, f"{tok.text[:20]!r} is too large a number")
            return Node("num", value=value)
        if tok.kind == "op" and tok.text == "(":
            self.nest(tok)
            node = self.expr()
            self.take(")")
            self.nesting -= 1
            return node
        if tok.kind == "name" and tok.text in FUNCTIONS and self.is_op("("):
            self.nest(tok)
            node = self.call(tok)
            self.nesting -= 1
            return node
        if tok.kind == "name":
            if tok.text in self.constants:
                return Node("num", value=float(self.constants[tok.text]))
            if tok.text not in self.index:
                raise self.fail(tok, f"{tok.text!r} is not a tag of this config nor a constant")
            return Node("tag", tag=self.index[tok.text])
        raise self.fail(tok, f"unexpected {tok.text!r}")

    def call(self, tok: Token) -> Node:
        """``der``, ``lag``, ``avg`` or ``abs`` and its arguments, from the opening bracket on."""
        self.take("(")
        if tok.text == "abs":
            node = Node("abs", args=(self.expr(),))
        elif tok.text == "der":
            node = Node("der", tag=self.tag(), lag=1)
        elif tok.text == "lag":
            tag = self.tag()
            self.take(",")
            node = Node("lag", tag=tag, lag=self.ticks("lag"))
        else:
            inner = self.expr()
            self.take(",")
            node = Node("avg", lag=self.ticks("avg") - 1, args=(inner,))
        self.take(")")
        return node


def parse(text: str, tags: Sequence[str], constants: Mapping[str, float] | None = None) -> Node:
    """The expression tree of ``text``, with tag names resolved to columns of ``tags``.

    Raises ``ExpressionError`` naming the column of the first problem.
    """
    return _Parser(text, tags, constants or {}).parse()


_WHOLE = re.compile(r"[0-9]+")


def _depth(root: Node) -> int:
    """Levels of the tree, counted without recursion (a long sum is a deep left-leaning tree)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((a, level + 1) for a in node.args)
    return deepest


def max_lag(node: Node) -> int:
    """Ticks of history the expression reads before the current one."""
    inner = max([0, *(max_lag(a) for a in node.args)])
    return node.lag + inner if node.kind == "avg" else max(node.lag, inner)


def remap(node: Node, column: np.ndarray) -> Node:
    """The same tree reading tag ``t`` from column ``column[t]``."""
    args = tuple(remap(a, column) for a in node.args)
    return Node(node.kind, node.value, int(column[node.tag]) if node.tag >= 0 else -1, node.lag, args)


def tags_of(node: Node) -> set[int]:
    own = {node.tag} if node.tag >= 0 else set()
    return own.union(*(tags_of(a) for a in node.args))


def shared(roots: Sequence[Node]) -> list[Node]:
    """The same trees with every repeated sub-expression one object, so ``evaluate``'s memo finds it by identity."""
    seen: dict[Node, Node] = {}

    def one(node: Node) -> Node:
        args = tuple(one(a) for a in node.args)
        node = Node(node.kind, node.value, node.tag, node.lag, args)
        return seen.setdefault(node, node)

    return [one(r) for r in roots]


Memo = dict[tuple[int, int], np.ndarray]


def evaluate(node: Node, H: np.ndarray, ts: np.ndarray, first: int, memo: Memo | None = None) -> np.ndarray:
    """Values for rows ``first:`` of ``H`` (rows of tag values, oldest first, ``first`` rows of history).

    Missing history (NaN) gives NaN, which the caller treats as "not checkable this tick". With a
    ``memo`` shared across calls on the same ``H`` and trees made by ``shared``, a sub-expression several
    invariants hold in common (the same ``lag(TAG, N)``, ``der(TAG)`` or window) is worked out once.
    """
    if memo is not None:
        key = (id(node), first)
        done = memo.get(key)
        if done is None:
            done = memo[key] = _evaluate(node, H, ts, first, memo)
        return done
    return _evaluate(node, H, ts, first, None)


def _evaluate(node: Node, H: np.ndarray, ts: np.ndarray, first: int, memo: Memo | None) -> np.ndarray:
    k = node.kind
    rows = slice(first, None)
    if k == "num":
        return np.full(H.shape[0] - first, node.value)
    if k == "tag":
        return H[rows, node.tag]
    if k == "lag":
        return H[first - node.lag : H.shape[0] - node.lag, node.tag]
    if k == "der":
        dt = ts[rows] - ts[first - 1 : -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return (H[rows, node.tag] - H[first - 1 : -1, node.tag]) / dt
    if k == "avg":
        inner = evaluate(node.args[0], H, ts, first - node.lag, memo)
        step = inner.strides[0]  # each tick's window as a row of a strided view, as sliding_window_view makes it
        shape = (inner.shape[0] - node.lag, node.lag + 1)
        windows = np.lib.stride_tricks.as_strided(inner, shape=shape, strides=(step, step), writeable=False)
        return windows.sum(axis=1) / (node.lag + 1)
    vals = [evaluate(a, H, ts, first, memo) for a in node.args]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if k == "neg":
            return -vals[0]
        if k == "abs":
            return np.abs(vals[0])
        a, b = vals
        return _BINARY[k](a, b)


_BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}


class Program:
    """Many expression trees compiled into one flat list of whole-vector numpy operations, for live ticks.

    ``evaluate`` walks a tree per expression and reads ``avg`` windows from the tick history, which
    suits a block of ticks. One tick at a time, that is Python per node per invariant and a window
    re-read per tick. Here every distinct sub-expression (the same ``lag(TAG, N)`` in ten invariants
    is one) gets a slot of a vector; the slots are worked out level by level, one numpy operation per
    kind of node per level, whatever the number of invariants; and each ``avg`` keeps the last values
    of its inner expression in a buffer written twice (at ``p`` and ``p + N``), so that its window is
    always one contiguous row. The sums are numpy's pairwise sums over the same N values in the same
    order as ``evaluate``'s windows, so the numbers are bit for bit those of the block path.

    The ``avg`` buffers are a cache of the tick history: ``rebuild`` refills them from it (after a
    block, or a restored snapshot).
    """

    def __init__(self, roots: Sequence[Node]) -> None:
        slot: dict[Node, int] = {}
        level: dict[Node, int] = {}
        nodes: list[Node] = []

        def visit(node: Node) -> int:
            if node not in slot:
                lv = 1 + max(visit(a) for a in node.args) if node.args else 0
                slot[node] = len(nodes)
                level[node] = lv
                nodes.append(node)
            return level[node]

        for root in roots:
            visit(root)
        self.size = len(nodes)
        self.roots = np.array([slot[r] for r in roots], dtype=np.intp)
        self.template = np.zeros(self.size)

        def pick(kind: str) -> list[Node]:
            return [n for n in nodes if n.kind == kind]

        for n in pick("num"):
            self.template[slot[n]] = n.value
        self.tag_slots, self.tag_cols = self._index(slot, pick("tag"))
        self.lag_slots, self.lag_cols = self._index(slot, pick("lag"))
        self.lag_back = np.array([n.lag for n in pick("lag")], dtype=np.intp)
        self.der_slots, self.der_cols = self._index(slot, pick("der"))
        # One operation per (level, kind), and per window length for avg: (kind, out, a, b, window).
        self.ops: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None, int]] = []
        self.windows: list[tuple[int, list[Node], np.ndarray]] = []  # (N, inner nodes, buffer (K, 2N))
        for lv in range(1, max(level.values(), default=0) + 1):
            here = [n for n in nodes if level[n] == lv]
            for kind in ("neg", "abs", "+", "-", "*", "/"):
                group = [n for n in here if n.kind == kind]
                if group:
                    out = np.array([slot[n] for n in group], dtype=np.intp)
                    a = np.array([slot[n.args[0]] for n in group], dtype=np.intp)
                    b = np.array([slot[n.args[1]] for n in group], dtype=np.intp) if len(group[0].args) > 1 else None
                    self.ops.append((kind, out, a, b, -1))
            for width in sorted({n.lag + 1 for n in here if n.kind == "avg"}):
                group = [n for n in here if n.kind == "avg" and n.lag + 1 == width]
                out = np.array([slot[n] for n in group], dtype=np.intp)
                inner = np.array([slot[n.args[0]] for n in group], dtype=np.intp)
                self.ops.append(("avg", out, inner, None, len(self.windows)))
                self.windows.append((width, [n.args[0] for n in group], np.full((len(group), 2 * width), np.nan)))

    @staticmethod
    def _index(slot: dict[Node, int], group: list[Node]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.array([slot[n] for n in group], dtype=np.intp),
            np.array([n.tag for n in group], dtype=np.intp),
        )

    def rebuild(self, H: np.ndarray, ts: np.ndarray, tick: int) -> None:
        """Refill the ``avg`` buffers from the tick history ``H``/``ts`` (oldest first, the ticks before
        ``tick``), so the next ``run(..., tick)`` sees the windows ``evaluate`` would."""
        depth = H.shape[0]
        memo: Memo = {}
        for width, inner, buffer in self.windows:
            buffer.fill(np.nan)
            if width > 1:
                vals = np.stack([evaluate(n, H, ts, depth - (width - 1), memo) for n in inner])
                cols = (tick - np.arange(width - 1, 0, -1)) % width
                buffer[:, cols] = vals
                buffer[:, cols + width] = vals

    def run(self, x: np.ndarray, ts: float, H: np.ndarray, prev_ts: float, tick: int) -> np.ndarray:
        """Every slot's value at one tick: ``x`` the tags' values now, ``H`` the history before it (oldest
        first, as ``evaluate`` reads it), ``prev_ts`` the last tick's time; ``tick`` counts the ticks
        (the ``avg`` buffers are written at ``tick``'s place, which only the tick itself reads from now on)."""
        V = self.template.copy()
        depth = H.shape[0]
        V[self.tag_slots] = x[self.tag_cols]
        if self.lag_slots.size:
            V[self.lag_slots] = H[depth - self.lag_back, self.lag_cols]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.der_slots.size:
                V[self.der_slots] = (x[self.der_cols] - H[depth - 1, self.der_cols]) / (ts - prev_ts)
            for kind, out, a, b, window in self.ops:
                if kind == "avg":
                    width, _, buffer = self.windows[window]
                    p = tick % width
                    buffer[:, p] = buffer[:, p + width] = V[a]
                    V[out] = buffer[:, p + 1 : p + width + 1].sum(axis=1) / width
                elif kind == "neg":
                    V[out] = -V[a]
                elif kind == "abs":
                    V[out] = np.abs(V[a])
                else:
                    V[out] = _BINARY[kind](V[a], V[b])
        return V
