"""Vectorised evaluation of a :class:`~S4.rules.RuleSet` on a bar frame.

Two layers (vectorbt style):

- array kernels: :func:`prepare_arrays` (columns -> float64 arrays, once),
  :func:`condition_masks` (every rule as a boolean array, numpy),
  :func:`position_kernel` (numba: flat/long state machine with the cooldown),
  :func:`evaluate_arrays` (all of it, numpy in, numpy out -- for S5's optimiser loop);
- the pandas wrapper :func:`evaluate` (``DataFrame -> DataFrame``, index kept).

Semantics (long-only; one decision per closed bar; rows are bars in time order):

- A condition at bar t reads values at t and, with ``bars_ago``/crosses, earlier
  rows only -- never a later one. ``crosses_above``: ``a[t] > b[t]`` and
  ``a[t-1] <= b[t-1]``; ``crosses_below`` mirrors it.
- Missing values (NaN: indicator warm-up, no sentiment yet, no ML model yet) make a
  condition *unknown*; groups use three-valued (Kleene) logic, so ``not`` of an
  unknown stays unknown, ``any`` is true if one known branch is true, ``all`` is
  false if one known branch is false. A rule fires only when it is known true.
- Position: start flat. Flat -> ``entry`` when an entry rule fires, no exit rule
  fires on that bar (exit wins a tie) and the cooldown has passed; long -> ``exit``
  when an exit rule fires. After an exit at bar t, entries are ignored at bars
  t+1 .. t+cooldown.
- ``signal`` = 1 on entry bars, -1 on exit bars, 0 otherwise; ``rule`` names the
  first entry (or exit) rule, in file order, that fired on that bar (NaN on holds).

>>> import pandas as pd
>>> from S4.rules import parse_rules
>>> rules = parse_rules("entry: {col: close, op: crosses_above, value: 10}\\n"
...                     "exit: {col: close, op: crosses_below, value: 10}")
>>> frame = pd.DataFrame({"close": [9, 11, 12, 9, 8, 11]},
...                      index=pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC"))
>>> out = evaluate(frame, rules)
>>> out["signal"].tolist(), out["rule"].tolist()
([0, 1, 0, -1, 0, 1], [nan, 'entry', nan, 'exit', nan, 'entry'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
import pandas as pd

from S1.errors import UserError
from S4.rules import COMPARISONS, ML_COLUMNS, SENTIMENT_COLUMNS, Column, Condition, Group, RuleSet

OUTPUT_COLUMNS = ("entry", "exit", "signal", "rule")


# ----------------------------------------------------------------------------- kernels
@numba.njit(cache=True, nogil=True)
def position_kernel(entry_raw: np.ndarray, exit_raw: np.ndarray, cooldown: int):  # pragma: no cover - jit
    """Flat/long state machine. Returns ``(entry, exit)`` boolean arrays: the bars
    where a flat position opens and where a long position closes."""
    n = entry_raw.shape[0]
    entry = np.zeros(n, dtype=np.bool_)
    exit_ = np.zeros(n, dtype=np.bool_)
    long = False
    blocked_until = -1
    for i in range(n):
        if long:
            if exit_raw[i]:
                exit_[i] = True
                long = False
                blocked_until = i + cooldown
        elif entry_raw[i] and not exit_raw[i] and i > blocked_until:
            entry[i] = True
            long = True
    return entry, exit_


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` moved k rows later (row t holds a[t-k]); the first k rows are NaN."""
    if k == 0:
        return a
    out = np.empty_like(a)
    if k >= len(a):
        out[:] = np.nan
        return out
    out[:k] = np.nan
    out[k:] = a[:-k]
    return out


class _Ctx:
    """Per-evaluation cache of shifted columns and their missing masks."""

    __slots__ = ("_cache", "arrays", "n", "rules")

    def __init__(self, arrays: Mapping[str, np.ndarray], rules: RuleSet, n: int):
        self.arrays, self.rules, self.n = arrays, rules, n
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def column(self, col: Column, extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(values, known) of a column operand, ``extra`` more rows back."""
        k = int(self.rules.resolve(col.bars_ago)) + extra
        mul = float(self.rules.resolve(col.mul))
        key = (col.name, k, mul)
        hit = self._cache.get(key)
        if hit is None:
            a = _shift(self.arrays[col.name], k)
            if mul != 1.0:
                a = a * mul
            hit = (a, ~np.isnan(a))
            self._cache[key] = hit
        return hit

    def operand(self, x, extra: int = 0):
        if isinstance(x, Column):
            return self.column(x, extra)
        return float(self.rules.resolve(x)), None


def _compare(op: str, a, b) -> np.ndarray:
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    return a == b


def _and_known(*masks) -> np.ndarray | None:
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


def _condition(c: Condition, ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    a, ka = ctx.column(c.left)
    b, kb = ctx.operand(c.right)
    if c.op in COMPARISONS:
        known = _and_known(ka, kb)
        return _compare(c.op, a, b) & known, known
    a1, ka1 = ctx.column(c.left, 1)
    b1, kb1 = ctx.operand(c.right, 1)
    known = _and_known(ka, kb, ka1, kb1)
    if c.op == "crosses_above":
        val = (a > b) & (a1 <= b1)
    else:
        val = (a < b) & (a1 >= b1)
    return val & known, known


def _node(node, ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    """``(true, known)`` of a node in Kleene logic; ``true`` implies ``known``."""
    if isinstance(node, Condition):
        return _condition(node, ctx)
    assert isinstance(node, Group)
    if node.kind == "not":
        t, k = _node(node.children[0], ctx)
        return k & ~t, k
    parts = [_node(c, ctx) for c in node.children]
    if node.kind == "all":
        all_true = parts[0][0].copy()
        any_false = parts[0][1] & ~parts[0][0]
        for t, k in parts[1:]:
            all_true &= t
            any_false |= k & ~t
        return all_true, all_true | any_false
    any_true = parts[0][0].copy()
    all_false = parts[0][1] & ~parts[0][0]
    for t, k in parts[1:]:
        any_true |= t
        all_false &= k & ~t
    return any_true, any_true | all_false


def prepare_arrays(frame: pd.DataFrame, columns: Iterable[str] | RuleSet) -> dict[str, np.ndarray]:
    """The named columns of ``frame`` as contiguous float64 arrays (booleans -> 0/1,
    missing -> NaN). Pass a RuleSet to take its :meth:`~S4.rules.RuleSet.required_columns`.
    Do it once and call :func:`evaluate_arrays` many times (S5's optimiser)."""
    if isinstance(columns, RuleSet):
        columns = columns.required_columns()
    columns = list(columns)
    check_frame(frame, columns)
    out = {}
    for c in columns:
        s = frame[c]
        try:
            out[c] = np.ascontiguousarray(s.to_numpy(dtype=np.float64, na_value=np.nan))
        except (TypeError, ValueError):
            raise UserError(f"column {c!r} is not numeric ({s.dtype})",
                            "rules compare numbers: use a numeric column") from None
    return out


def check_frame(frame: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise a one-line :class:`UserError` unless ``frame`` has ``columns`` and rows in time order."""
    if not isinstance(frame, pd.DataFrame):
        raise UserError(f"expected a DataFrame of bars, got {type(frame).__name__}",
                        "pass the _ta frame (index open_time) or a candle frame with indicators")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        fix = f"available columns: {', '.join(map(str, frame.columns))}"
        if any(c in SENTIMENT_COLUMNS for c in missing):
            fix = "join the sentiment first (S4.signals.join_sentiment) -- " + fix
        elif any(c in ML_COLUMNS for c in missing):
            fix = "join the ML score first (S4.signals.join_ml, made by python S4/model.py) -- " + fix
        raise UserError(f"the frame lacks the column(s) {missing} that the rules read", fix)
    idx = frame.index
    if not (idx.is_monotonic_increasing and idx.is_unique):
        raise UserError("the frame's rows are not in strictly increasing time order",
                        "sort and deduplicate: frame = frame[~frame.index.duplicated()].sort_index()")


def condition_masks(arrays: Mapping[str, np.ndarray], rules: RuleSet, n: int | None = None, *,
                    short: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One boolean row per rule: ``(entry_masks[n_entry, n], exit_masks[n_exit, n])`` --
    where each rule fires (known true) before positions and cooldown are applied
    (``short=True``: the ``short_entry`` / ``short_exit`` rules instead)."""
    if n is None:
        n = len(next(iter(arrays.values()))) if arrays else 0
    ctx = _Ctx(arrays, rules, n)
    entry_rules, exit_rules = (rules.short_entry, rules.short_exit) if short else (rules.entry, rules.exit)
    ent = np.zeros((len(entry_rules), n), dtype=bool)
    ext = np.zeros((len(exit_rules), n), dtype=bool)
    for i, r in enumerate(entry_rules):
        ent[i] = _node(r.node, ctx)[0]
    for i, r in enumerate(exit_rules):
        ext[i] = _node(r.node, ctx)[0]
    return ent, ext


def _first_true(masks: np.ndarray) -> np.ndarray:
    """Index of the first row of ``masks`` that is true per column (-1 if none)."""
    if masks.shape[0] == 0:
        return np.full(masks.shape[1], -1, dtype=np.int16)
    first = masks.argmax(axis=0).astype(np.int16)
    first[~masks.any(axis=0)] = -1
    return first


@dataclass(frozen=True)
class Signals:
    """Numpy result of :func:`evaluate_arrays` (all arrays of length n)."""

    entry: np.ndarray        # bool: a flat position opens at this bar
    exit: np.ndarray         # bool: a long position closes at this bar
    signal: np.ndarray       # int64: 1 / -1 / 0
    rule_code: np.ndarray    # int16: index into rule_names, -1 on holds
    rule_names: tuple[str, ...]
    entry_raw: np.ndarray    # bool: some entry rule fired (before position/cooldown)
    exit_raw: np.ndarray     # bool: some exit rule fired


def evaluate_arrays(arrays: Mapping[str, np.ndarray], rules: RuleSet, n: int | None = None) -> Signals:
    """Evaluate ``rules`` on prepared arrays (see :func:`prepare_arrays`): numpy only."""
    if n is None:
        n = len(next(iter(arrays.values()))) if arrays else 0
    ent, ext = condition_masks(arrays, rules, n)
    entry_raw = ent.any(axis=0)
    exit_raw = ext.any(axis=0)
    cooldown = int(rules.resolve(rules.cooldown))
    entry, exit_ = position_kernel(entry_raw, exit_raw, cooldown)
    signal = entry.astype(np.int64) - exit_.astype(np.int64)
    code = np.full(n, -1, dtype=np.int16)
    if entry.any():
        code[entry] = _first_true(ent[:, entry])
    if exit_.any():
        code[exit_] = _first_true(ext[:, exit_]) + len(rules.entry)
    return Signals(entry, exit_, signal, code, rules.rule_names, entry_raw, exit_raw)


def evaluate(frame: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """``entry`` (bool), ``exit`` (bool), ``signal`` (int64: 1 buy, -1 sell, 0 hold) and
    ``rule`` (categorical: the rule that fired, NaN on holds), index identical to ``frame``.

    ``frame`` must hold every column of ``rules.required_columns()`` (join sentiment /
    ML first, see :mod:`S4.signals`), rows in increasing time order.
    """
    if not isinstance(rules, RuleSet):
        raise UserError(f"rules must be a RuleSet, got {type(rules).__name__}",
                        "load it first: rules = S4.rules.load_rules('S4/rules.yaml')")
    arrays = prepare_arrays(frame, rules)
    res = evaluate_arrays(arrays, rules, len(frame))
    return to_frame(res, frame.index)


@lru_cache(maxsize=256)
def _rule_dtype(names: tuple[str, ...]) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(list(names))


def to_frame(res: Signals, index: pd.Index) -> pd.DataFrame:
    """The pandas form of :func:`evaluate_arrays`' result."""
    rule = pd.Categorical.from_codes(res.rule_code, dtype=_rule_dtype(tuple(res.rule_names)), validate=False)
    return pd.DataFrame({"entry": res.entry, "exit": res.exit, "signal": res.signal, "rule": rule},
                        index=index, copy=False)


@dataclass(frozen=True)
class Decision:
    """What to do at the close of one bar, given the live position (see :func:`decide`)."""

    signal: int            # 1 buy, -1 sell, 0 hold
    rule: str | None       # the rule that fired (None on hold)
    time: pd.Timestamp | None

    @property
    def action(self) -> str:
        return {1: "buy", -1: "sell", 0: "hold"}[self.signal]


def decide(frame: pd.DataFrame, rules: RuleSet, *, long: bool, bars_since_exit: int | None = None) -> Decision:
    """The rules' decision for the **last row** of ``frame`` given the position: which
    rules fire there, handed to the one decision function :func:`S4.decide.decide`
    (the one S5's backtest and S7's engine call; without stops, sizing or kill-switch
    here -- use :mod:`S4.decide` for those). Same semantics as :func:`evaluate`: when ``long``, sell if an exit rule
    fires; when flat, buy if an entry rule fires, no exit rule fires, and the last exit
    was more than ``cooldown`` bars ago (``bars_since_exit``: bars since the exit bar,
    ``None`` = never exited). ``frame`` must hold enough history for the indicators and
    ``bars_ago`` look-backs (at least ``rules.lookback() + 1`` rows after the warm-up).

    >>> from S4.rules import parse_rules
    >>> r = parse_rules("entry: {col: close, op: '>', value: 10}\\nexit: {col: close, op: '<', value: 5}\\n"
    ...                 "cooldown: 3")
    >>> f = pd.DataFrame({"close": [4.0, 12.0]}, index=pd.date_range("2024-01-01", periods=2, freq="h", tz="UTC"))
    >>> decide(f, r, long=False).action, decide(f, r, long=True).action, decide(f, r, long=False, bars_since_exit=2).action
    ('buy', 'hold', 'hold')
    """
    if not isinstance(rules, RuleSet):
        raise UserError(f"rules must be a RuleSet, got {type(rules).__name__}",
                        "load it first: rules = S4.rules.load_rules('S4/rules.yaml')")
    if len(frame) == 0:
        raise UserError("the frame has no rows", "pass the closed bars up to now (indicators included)")
    from S4.decide import ENTER, EXIT, Bar, Policy, Position
    from S4.decide import decide as decide_action

    arrays = prepare_arrays(frame, rules)
    ent, ext = condition_masks(arrays, rules, len(frame))
    e, x = ent[:, -1], ext[:, -1]
    when = frame.index[-1]
    bar = Bar(high=np.nan, low=np.nan, close=np.nan, time=when,
              entry_rule=rules.entry[int(np.argmax(e))].name if e.any() else None,
              exit_rule=rules.exit[int(np.argmax(x))].name if x.any() else None)
    action = decide_action(bar, position=Position(qty=1.0, entry_price=np.nan) if long else None,
                           policy=Policy.from_rules(rules, use_stops=False), bars_since_exit=bars_since_exit)
    if action.kind == EXIT:
        return Decision(-1, action.rule, when)
    if action.kind == ENTER:
        return Decision(1, action.rule, when)
    return Decision(0, None, when)


__all__ = [
    "OUTPUT_COLUMNS",
    "Decision",
    "Signals",
    "check_frame",
    "condition_masks",
    "decide",
    "evaluate",
    "evaluate_arrays",
    "position_kernel",
    "prepare_arrays",
    "to_frame",
]
