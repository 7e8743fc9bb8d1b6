"""The invariant expression language: a small recursive-descent parser and a vectorized evaluator.

Never ``eval``: numbers, named constants, tag names (letters, digits, ``_``
and ``.``, or any text in double quotes), ``+ - * /``, unary minus,
parentheses, and the functions ``der(TAG)`` (change per second since the
previous tick), ``lag(TAG, N)`` (the value N ticks ago), ``avg(EXPR, N)`` (the
mean over the last N ticks, this one included; N a whole number up to
``MAX_LAG``) and ``abs(EXPR)``. A problem is reported with its column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MAX_LAG = 3600
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
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
        return node

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
            self.take()
            return Node("neg", args=(self.unary(),))
        return self.atom()

    def tag(self) -> int:
        tok = self.take()
        if tok.kind != "name" or tok.text not in self.index:
            raise self.fail(tok, f"{tok.text!r} is not a tag of this config")
        return self.index[tok.text]

    def ticks(self, function: str) -> int:
        tok = self.take()
        if tok.kind != "num" or not tok.text.isdigit() or not 1 <= int(tok.text) <= MAX_LAG:
            raise self.fail(tok, f"{function} needs a whole number of ticks from 1 to {MAX_LAG}, not {tok.text!r}")
        return int(tok.text)

    def atom(self) -> Node:
        tok = self.take()
        if tok.kind == "num":
            return Node("num", value=float(tok.text))
        if tok.kind == "op" and tok.text == "(":
            node = self.expr()
            self.take(")")
            return node
        if tok.kind == "name" and tok.text in FUNCTIONS and self.is_op("("):
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
        if tok.kind == "name":
            if tok.text in self.constants:
                return Node("num", value=float(self.constants[tok.text]))
            if tok.text not in self.index:
                raise self.fail(tok, f"{tok.text!r} is not a tag of this config nor a constant")
            return Node("tag", tag=self.index[tok.text])
        raise self.fail(tok, f"unexpected {tok.text!r}")


def parse(text: str, tags: Sequence[str], constants: Mapping[str, float] | None = None) -> Node:
    """The expression tree of ``text``, with tag names resolved to columns of ``tags``.

    Raises ``ExpressionError`` naming the column of the first problem.
    """
    return _Parser(text, tags, constants or {}).parse()


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


def evaluate(node: Node, H: np.ndarray, ts: np.ndarray, first: int) -> np.ndarray:
    """Values for rows ``first:`` of ``H`` (rows of tag values, oldest first, ``first`` rows of history).

    Missing history (NaN) gives NaN, which the caller treats as "not checkable this tick".
    """
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
        inner = evaluate(node.args[0], H, ts, first - node.lag)
        windows = np.lib.stride_tricks.sliding_window_view(inner, node.lag + 1)
        return windows.sum(axis=1) / (node.lag + 1)
    vals = [evaluate(a, H, ts, first) for a in node.args]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if k == "neg":
            return -vals[0]
        if k == "abs":
            return np.abs(vals[0])
        a, b = vals
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[k]
