"""Physics invariants: relations between tags declared as expressions, checked by a CUSUM on the residual.

A tank's level change must match inflow minus outflow; a valve command must be
followed by the flow it opens. An attacker who spoofs one side of such a
relation breaks it, however plausible each tag looks alone. An invariant is an
expression over tag names that is ~0 in normal operation, for example::

    der(TK101.LEVEL) * 3600 * 50.0 - (FT101.FLOW_IN - FT102.FLOW_OUT)

The expression language is parsed here by a small recursive-descent parser,
never by ``eval``: numbers, tag names (letters, digits, ``_`` and ``.``, or any
text in double quotes), ``+ - * /``, unary minus, parentheses, and the
functions ``der(TAG)`` (change per second since the previous tick), ``lag(TAG,
N)`` (the value N ticks ago, N a whole number up to ``MAX_LAG``) and
``abs(EXPR)``. Evaluation is vectorized over a block of ticks.

``InvariantWatch`` standardizes each residual by a learned mean and spread
(learned only from ticks it does not flag) and runs a two-sided CUSUM on it;
the score is ``1 - 2**-(cusum / h)`` like every detector's, and each tag gets
the worst score of the invariants it appears in.

Not wired into the config yet: the ``invariants:`` section and its place in
the bank are left to the integration (see the issue notes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_LAG = 3600
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)|\"(?P<quoted>[^\"]+)\"|(?P<op>[-+*/(),]))"
)
FUNCTIONS = ("der", "lag", "abs")


class ExpressionError(ValueError):
    """An invariant that does not parse, or names a tag the config does not have."""


@dataclass(frozen=True)
class Node:
    kind: str  # num, tag, der, lag, abs, neg, + - * /
    value: float = 0.0
    tag: int = -1
    lag: int = 0
    args: tuple[Node, ...] = ()


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"unexpected {text[pos : pos + 10]!r} at column {pos + 1}")
        kind = m.lastgroup or ""
        out.append(("name" if kind == "quoted" else kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, tags: Sequence[str]) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.index = {t: j for j, t in enumerate(tags)}

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, op: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (op is not None and tok != ("op", op)):
            raise ExpressionError(
                f"expected {op or 'more'} at token {self.i + 1}, found {tok[1] if tok else 'the end'}"
            )
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.expr()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} after a complete expression")  # type: ignore[index]
        return node

    def expr(self) -> Node:
        node = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            node = Node(op, args=(node, self.term()))
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take()[1]
            node = Node(op, args=(node, self.unary()))
        return node

    def unary(self) -> Node:
        if self.peek() == ("op", "-"):
            self.take()
            return Node("neg", args=(self.unary(),))
        return self.atom()

    def tag(self) -> int:
        kind, name = self.take()
        if kind != "name" or name not in self.index:
            raise ExpressionError(f"{name!r} is not a tag of this config")
        return self.index[name]

    def atom(self) -> Node:
        kind, text = self.take()
        if kind == "num":
            return Node("num", value=float(text))
        if kind == "op" and text == "(":
            node = self.expr()
            self.take(")")
            return node
        if kind == "name" and text in FUNCTIONS and self.peek() == ("op", "("):
            self.take("(")
            if text == "abs":
                node = Node("abs", args=(self.expr(),))
            elif text == "der":
                node = Node("der", tag=self.tag(), lag=1)
            else:
                tag = self.tag()
                self.take(",")
                k, n = self.take()
                if k != "num" or not n.isdigit() or not 1 <= int(n) <= MAX_LAG:
                    raise ExpressionError(f"lag needs a whole number of ticks from 1 to {MAX_LAG}, not {n!r}")
                node = Node("lag", tag=tag, lag=int(n))
            self.take(")")
            return node
        if kind == "name":
            if text not in self.index:
                raise ExpressionError(f"{text!r} is not a tag of this config")
            return Node("tag", tag=self.index[text])
        raise ExpressionError(f"unexpected {text!r}")


def parse(text: str, tags: Sequence[str]) -> Node:
    """The expression tree of ``text``, with tag names resolved to columns of ``tags``."""
    return _Parser(text, tags).parse()


def max_lag(node: Node) -> int:
    return max([node.lag, *(max_lag(a) for a in node.args)])


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
    vals = [evaluate(a, H, ts, first) for a in node.args]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if k == "neg":
            return -vals[0]
        if k == "abs":
            return np.abs(vals[0])
        a, b = vals
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[k]


class InvariantWatch:
    """CUSUM on the standardized residual of each invariant, over blocks of ticks.

    ``run`` returns scores per invariant and per tag; the per-tick recursion is
    a loop over ticks of array operations across invariants, like the bank's.
    """

    def __init__(
        self,
        expressions: Sequence[str],
        tags: Sequence[str],
        warmup: int = 300,
        alpha: float = 0.002,
        k: float = 0.5,
        h: float = 12.0,
    ) -> None:
        self.nodes = [parse(e, tags) for e in expressions]
        self.n_tags = len(tags)
        self.depth = max([1, *(max_lag(n) for n in self.nodes)])
        m = len(self.nodes)
        self.members = np.zeros((m, self.n_tags), dtype=bool)
        for i, node in enumerate(self.nodes):
            self.members[i, sorted(tags_of(node))] = True
        self.warmup, self.alpha, self.k, self.h = float(warmup), float(alpha), float(k), float(h)
        self.history = np.full((self.depth, self.n_tags), np.nan)
        self.history_ts = np.full(self.depth, np.nan)
        self.count = np.zeros(m)
        self.mean = np.zeros(m)
        self.var = np.zeros(m)
        self.s_hi = np.zeros(m)
        self.s_lo = np.zeros(m)

    def residuals(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Residual of every invariant for each row (NaN where an input is missing); moves the history."""
        Xv = np.where(valid, X, np.nan)
        H = np.vstack([self.history, Xv])
        T = np.r_[self.history_ts, ts]
        R = (
            np.stack([evaluate(n, H, T, self.depth) for n in self.nodes], axis=1)
            if self.nodes
            else np.empty((len(X), 0))
        )
        self.history = H[-self.depth :].copy()
        self.history_ts = T[-self.depth :].copy()
        return R

    def run(self, X: np.ndarray, ts: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (ticks, invariants) and (ticks, tags) of a block; learns from ticks it does not flag."""
        R = self.residuals(np.asarray(X, dtype=np.float64), np.asarray(ts, dtype=np.float64), valid)
        out = np.zeros(R.shape)
        for i in range(R.shape[0]):
            r = R[i]
            ok = np.isfinite(r)
            warm = ok & (self.count >= self.warmup)
            sd = np.sqrt(np.maximum(self.var, 1e-18))
            z = np.where(warm, (r - self.mean) / sd, 0.0)
            self.s_hi = np.where(warm, np.maximum(0.0, self.s_hi + z - self.k), self.s_hi)
            self.s_lo = np.where(warm, np.maximum(0.0, self.s_lo - z - self.k), self.s_lo)
            stat = np.maximum(self.s_hi, self.s_lo) / self.h
            out[i] = 1.0 - np.exp2(-stat)
            learn = ok & (out[i] < 0.5)
            a = np.maximum(self.alpha, 1.0 / (self.count + 1.0))
            d = np.where(learn, r - self.mean, 0.0)
            self.mean += np.where(learn, a * d, 0.0)
            self.var = np.where(learn, (1 - a) * (self.var + a * d * d), self.var)
            self.count += learn
        tag_scores = (
            (out[:, :, None] * self.members[None]).max(axis=1) if out.shape[1] else np.zeros((len(X), self.n_tags))
        )
        return out, tag_scores
