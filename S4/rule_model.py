"""The rule language's vocabulary and syntax tree: operators, known columns, limits, and the
frozen node types (:class:`Condition`, :class:`Group`, :class:`Rule`, :class:`RuleSet`, ...) that
:mod:`S4.rules_parser` builds from YAML and :mod:`S4.evaluate` evaluates. Pure data: this module
imports neither the parser nor the evaluator (``tests/test_architecture.py`` forbids cycles).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from S1.errors import UserError

# ------------------------------------------------------------------------ vocabulary
COMPARISONS = ("<", "<=", ">", ">=", "==")
CROSSES = ("crosses_above", "crosses_below")
OPERATORS = COMPARISONS + CROSSES
_OP_ALIASES = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}

#: Numeric columns of an S1 candle file (``close_time`` is a timestamp, not a number).
CANDLE_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "trades",
                  "taker_buy_base", "taker_buy_quote")
#: The S2 columns of the default indicator config (other lengths follow the patterns).
DEFAULT_TA_COLUMNS = ("sma50", "ema21", "rsi14", "MACD_12_26_9", "MACDh_12_26_9", "MACDs_12_26_9",
                      "BBL_20_2.0", "BBM_20_2.0", "BBU_20_2.0", "BBB_20_2.0", "BBP_20_2.0", "atr14", "natr14")
TA_PATTERNS = (re.compile(r"^(sma|ema|rsi|atr|natr)\d{1,6}$"),
               re.compile(r"^MACD[hs]?_\d{1,6}_\d{1,6}_\d{1,6}$"),
               re.compile(r"^BB[LMUBP]_\d{1,6}_\d{1,3}\.\d{1,6}$"))
#: Higher-timeframe ("informative") columns of ``S2/indicators.py --informative 4h 1d``: an S2
#: indicator name or one of ``open high low close volume``, then ``_<Binance interval>``
#: (``rsi14_4h``, ``sma50_1d``, ``close_4h``): the last higher-timeframe candle closed by the row's close.
INFORMATIVE_BASES = ("open", "high", "low", "close", "volume")
INFORMATIVE_PATTERN = re.compile(r"^(?P<base>.+)_(?P<interval>1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)$")
#: Columns joined from S3's sentiment file (as-of the candle's open time).
SENTIMENT_COLUMNS = ("sentiment_score", "n_items", "evidence")
#: Column joined from S4/model.py's file.
ML_COLUMNS = ("ml_proba",)

MAX_BARS_AGO = 10_000
MAX_CONDITIONS = 500
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_TOP_KEYS = ("version", "description", "params", "cooldown", "entry", "exit", "short_entry", "short_exit",
             "trailing_stop")
#: ``trailing_stop:`` kinds: ``{atr: K}`` (K x the ATR at the entry decision) or ``{pct: F}`` (F x the price)
TRAILING_KINDS = ("atr", "pct")
_COND_KEYS = ("col", "bars_ago", "op", "value", "param", "other", "name")
_OPERAND_KEYS = ("col", "bars_ago", "mul")
_PARAM_KEYS = ("value", "low", "high", "step", "choices", "type", "log", "description")
_EXPR_HINT = re.compile(r"[()\[\]+*/%&|=<>!`;$]|__|\bimport\b|\blambda\b")


# ----------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ParamRef:
    """A reference to a named param (``{param: name}``)."""

    name: str
    line: int = field(default=0, compare=False)


Number = int | float


@dataclass(frozen=True)
class Column:
    """A column, optionally ``bars_ago`` rows back and multiplied by ``mul``."""

    name: str
    bars_ago: int | ParamRef = 0
    mul: Number | ParamRef = 1


@dataclass(frozen=True)
class Condition:
    """``left op right``: ``right`` is a number, a param reference or another column."""

    left: Column
    op: str
    right: Number | ParamRef | Column
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Group:
    """``all`` / ``any`` of several nodes, or ``not`` of one."""

    kind: str  # "all" | "any" | "not"
    children: tuple[Node, ...]
    line: int = field(default=0, compare=False)


Node = Condition | Group


@dataclass(frozen=True)
class Rule:
    """One named alternative of ``entry`` / ``exit`` / ``short_entry`` / ``short_exit``
    (its name goes in the ``rule`` column)."""

    name: str
    side: str  # "entry" | "exit" | "short_entry" | "short_exit"
    node: Node


@dataclass(frozen=True)
class ParamSpec:
    """A named param: its type, default value and optional search range or choices."""

    name: str
    type: str  # "int" | "float"
    value: Number = field(compare=False)  # the file's default; RuleSet.values holds the current one
    low: Number | None = None
    high: Number | None = None
    step: Number | None = None
    choices: tuple[Number, ...] | None = None
    log: bool = False
    description: str = ""
    bar_count: bool = False  # used as bars_ago / cooldown: a whole number 0..MAX_BARS_AGO
    line: int = field(default=0, compare=False)
    source: str = field(default="<string>", compare=False)

    @property
    def searchable(self) -> bool:
        return self.choices is not None or self.low is not None

    def space(self) -> dict[str, Any]:
        """Search space of this param for an optimiser (see :meth:`RuleSet.param_space`)."""
        if self.choices is not None:
            return {"type": self.type, "choices": list(self.choices)}
        step = self.step if self.step is not None else (1 if self.type == "int" else None)
        return {"type": self.type, "low": self.low, "high": self.high, "step": step, "log": self.log}

    def check(self, value: Any) -> Number:
        """``value`` coerced to this param's type, or a :class:`UserError` saying why not."""
        where = f"param {self.name} ({self.source} line {self.line})"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            try:  # numpy scalars
                import numpy as np

                if isinstance(value, np.generic) and not isinstance(value, np.bool_):
                    return self.check(value.item())
            except ImportError:  # pragma: no cover
                pass
            raise UserError(f"{where}: {value!r} is not a finite number", f"give a {self.type} value")
        if self.type == "int":
            if float(value) != int(value):
                raise UserError(f"{where}: {value!r} is not a whole number", "give an int value such as 14")
            value = int(value)
        else:
            value = float(round(value, 12))  # 0.30000000000000004 (an optimiser's low + k * step) -> 0.3
            if self.low is not None:  # an optimiser's low + k * step may overshoot by a rounding error
                tol = 1e-9 * (self.high - self.low)
                if self.high < value <= self.high + tol:
                    value = float(self.high)
                elif self.low - tol <= value < self.low:
                    value = float(self.low)
        if self.choices is not None:
            if value not in self.choices:
                raise UserError(f"{where}: {value!r} is not one of its choices",
                                f"choose one of {', '.join(map(str, self.choices))}")
        elif self.low is not None:
            if value < self.low:
                raise UserError(f"{where}: {value!r} is below its low {self.low}",
                                f"choose a value from {self.low} to {self.high}")
            if value > self.high:
                raise UserError(f"{where}: {value!r} is above its high {self.high}",
                                f"choose a value from {self.low} to {self.high}")
        if self.bar_count and not (0 <= value <= MAX_BARS_AGO):
            raise UserError(f"{where}: {value!r} is used as a number of bars",
                            f"choose a whole number from 0 to {MAX_BARS_AGO}")
        return value

    def to_dict(self, value: Number | None = None) -> Any:
        v = self.value if value is None else value
        if not self.searchable and not self.description:
            return v
        out: dict[str, Any] = {"value": v}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        elif self.low is not None:
            out.update(low=self.low, high=self.high)
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        out["type"] = self.type
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class RuleSet:
    """A validated strategy: entry and exit rules, cooldown, params with values.

    Frozen: :meth:`with_params` returns a new, re-validated RuleSet. Build one with
    :func:`load_rules` (file) or :func:`parse_rules` (text).
    """

    entry: tuple[Rule, ...]
    exit: tuple[Rule, ...]
    cooldown: int | ParamRef = 0
    param_specs: tuple[ParamSpec, ...] = ()
    values: tuple[tuple[str, Number], ...] = ()
    description: str = ""
    source: str = field(default="<string>", compare=False)
    short_entry: tuple[Rule, ...] = ()
    short_exit: tuple[Rule, ...] = ()
    #: ``("atr", k)`` / ``("pct", f)``: a trailing stop (see :func:`S4.decide.trail`), None: none
    trailing_stop: tuple[str, float] | None = None

    @property
    def has_short(self) -> bool:
        """Whether the file opens short positions (``short_entry:`` rules): USD-M only."""
        return bool(self.short_entry)

    @property
    def has_long(self) -> bool:
        return bool(self.entry)

    # -- params ----------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Number]:
        """Current value of every param, ``{name: value}`` (a fresh dict)."""
        return dict(self.values)

    def param(self, name: str) -> Number:
        for k, v in self.values:
            if k == name:
                return v
        raise KeyError(name)

    def resolve(self, x: Number | ParamRef) -> Number:
        """A number, or the current value of a referenced param."""
        return self.param(x.name) if isinstance(x, ParamRef) else x

    def param_space(self) -> dict[str, dict[str, Any]]:
        """Search space for an optimiser: ``{name: {type, low, high, step, log}}`` or
        ``{name: {type, choices}}`` for every param with a range (fixed params are left out).
        ``type`` is ``'int'`` or ``'float'``; ``step`` is ``None`` for a continuous float."""
        return {p.name: p.space() for p in self.param_specs if p.searchable}

    def with_params(self, **values: Any) -> RuleSet:
        """A copy with some params changed; each value is checked against its range.

        >>> r = parse_rules("params: {n: {value: 3, low: 1, high: 5}}\\n"
        ...                 "entry: {col: close, op: '>', other: {col: close, bars_ago: {param: n}}}")
        >>> r.with_params(n=5).params
        {'n': 5}
        >>> r.with_params(m=1)
        Traceback (most recent call last):
        ...
        S1.errors.UserError: unknown param 'm' -- the rules define: n
        """
        specs = {p.name: p for p in self.param_specs}
        new = dict(self.values)
        for name, value in values.items():
            if name not in specs:
                raise UserError(f"unknown param {name!r}",
                                f"the rules define: {', '.join(specs) or '(no params)'}")
            new[name] = specs[name].check(value)
        return replace(self, values=tuple(new.items()))

    def suggest(self, trial: Any) -> RuleSet:
        """Draw every searchable param from an Optuna ``trial`` and return the RuleSet
        with those values (``trial.suggest_int`` / ``suggest_float`` / ``suggest_categorical``)."""
        drawn: dict[str, Number] = {}
        for name, s in self.param_space().items():
            if "choices" in s:
                drawn[name] = trial.suggest_categorical(name, s["choices"])
            elif s["type"] == "int":
                drawn[name] = trial.suggest_int(name, s["low"], s["high"], step=s["step"], log=s["log"])
            else:
                drawn[name] = trial.suggest_float(name, s["low"], s["high"], step=s["step"], log=s["log"])
        return self.with_params(**drawn)

    # -- structure ---------------------------------------------------------------------
    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.entry + self.exit + self.short_entry + self.short_exit

    @property
    def rule_names(self) -> tuple[str, ...]:
        """Names in ``rule``-column order: entry rules first, then exit rules (then the short ones)."""
        return tuple(r.name for r in self.rules)

    def conditions(self) -> Iterator[Condition]:
        def walk(node: Node) -> Iterator[Condition]:
            if isinstance(node, Condition):
                yield node
            else:
                for c in node.children:
                    yield from walk(c)

        for r in self.rules:
            yield from walk(r.node)

    def required_columns(self) -> tuple[str, ...]:
        """Every column the rules read, sorted (check for ``sentiment_score`` or ``ml_proba``
        to know whether the sentiment or ML file must be joined)."""
        cols = set()
        for c in self.conditions():
            cols.add(c.left.name)
            if isinstance(c.right, Column):
                cols.add(c.right.name)
        return tuple(sorted(cols))

    @property
    def uses_sentiment(self) -> bool:
        return any(c in SENTIMENT_COLUMNS for c in self.required_columns())

    @property
    def uses_ml(self) -> bool:
        return any(c in ML_COLUMNS for c in self.required_columns())

    def lookback(self) -> int:
        """Most rows back any condition reads at the current param values (for warm-up)."""
        most = 0
        for c in self.conditions():
            extra = 1 if c.op in CROSSES else 0
            for col in (c.left, c.right):
                if isinstance(col, Column):
                    most = max(most, int(self.resolve(col.bars_ago)) + extra)
        return most

    # -- output ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data that :func:`parse_rules` reads back into an equal RuleSet."""
        out: dict[str, Any] = {"version": 1}
        if self.description:
            out["description"] = self.description
        if self.param_specs:
            out["params"] = {p.name: p.to_dict(self.param(p.name)) for p in self.param_specs}
        out["cooldown"] = _scalar_out(self.cooldown)
        if self.entry:
            out["entry"] = [_rule_out(r) for r in self.entry]
        if self.exit:
            out["exit"] = [_rule_out(r) for r in self.exit]
        if self.short_entry:
            out["short_entry"] = [_rule_out(r) for r in self.short_entry]
        if self.short_exit:
            out["short_exit"] = [_rule_out(r) for r in self.short_exit]
        if self.trailing_stop is not None:
            out["trailing_stop"] = {self.trailing_stop[0]: self.trailing_stop[1]}
        return out

    def to_yaml(self) -> str:
        """The rules as YAML with the *current* param values (e.g. S5's best trial)."""
        import yaml

        head = f"# {self.description}\n" if self.description and "\n" not in self.description else ""
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)


def _scalar_out(x: Any) -> Any:
    return {"param": x.name} if isinstance(x, ParamRef) else x


def _column_out(c: Column) -> Any:
    if c.bars_ago == 0 and c.mul == 1:
        return c.name
    d: dict[str, Any] = {"col": c.name}
    if c.bars_ago != 0:
        d["bars_ago"] = _scalar_out(c.bars_ago)
    if c.mul != 1:
        d["mul"] = _scalar_out(c.mul)
    return d


def _node_out(n: Node) -> dict[str, Any]:
    if isinstance(n, Group):
        if n.kind == "not":
            return {"not": _node_out(n.children[0])}
        return {n.kind: [_node_out(c) for c in n.children]}
    d: dict[str, Any] = {"col": n.left.name}
    if n.left.bars_ago != 0:
        d["bars_ago"] = _scalar_out(n.left.bars_ago)
    d["op"] = n.op
    if isinstance(n.right, ParamRef):
        d["param"] = n.right.name
    elif isinstance(n.right, Column):
        d["other"] = _column_out(n.right)
    else:
        d["value"] = n.right
    return d


def _rule_out(r: Rule) -> dict[str, Any]:
    return {"name": r.name, **_node_out(r.node)}


# --------------------------------------------------------------------------- parsing
def column_allowed(name: str, columns: Iterable[str] | None = None) -> bool:
    """Whether ``name`` is a column rules may read: one of ``columns`` when given, else
    a candle column, an S2 indicator name (any lengths), a sentiment or the ML column."""
    if columns is not None:
        return name in set(columns)
    return (name in CANDLE_COLUMNS or name in SENTIMENT_COLUMNS or name in ML_COLUMNS
            or any(p.match(name) for p in TA_PATTERNS) or informative_allowed(name))


def informative_allowed(name: str) -> bool:
    """Whether ``name`` is a higher-timeframe column (``rsi14_4h``, ``close_1d`` ...).

    >>> informative_allowed("rsi14_4h"), informative_allowed("close_1M"), informative_allowed("trades_4h")
    (True, True, False)
    """
    m = INFORMATIVE_PATTERN.match(name)
    return bool(m) and (m["base"] in INFORMATIVE_BASES or any(p.match(m["base"]) for p in TA_PATTERNS))


def available_columns(columns: Iterable[str] | None = None) -> list[str]:
    if columns is not None:
        return list(dict.fromkeys(columns))
    return [*CANDLE_COLUMNS, *DEFAULT_TA_COLUMNS, *SENTIMENT_COLUMNS, *ML_COLUMNS]
