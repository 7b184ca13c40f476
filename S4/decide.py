"""The one trading decision: a closed bar + the position + the state -> an action.

Backtest (S5) and paper / live trading (S7) both call :func:`decide` on every closed
bar, so both open, close and skip at the same bars for the same reasons:

- **long** (checked in this order): ``stop_loss`` when the bar's low reached the
  stop, ``take_profit`` when its high reached the take-profit (both only with
  ``policy.use_stops``), ``signal:<rule>`` when an exit rule fired, ``kill_switch``
  when the kill-switch forbids positions and ``policy.flatten_on_trip``; else hold;
- **flat**: enter (``rule`` = the first entry rule that fired) when an entry rule
  fired, no exit rule fired on the same bar (exit wins, as in
  :func:`S4.evaluate.evaluate`), the ``cooldown`` after the last exit has passed
  (``bars_since_exit > cooldown``) and the kill-switch allows entries; the ``sizer``
  (when given) then sizes it -- a size it refuses makes the action a ``skip``.

The action is decided at the bar's close and executed at the next price (the next
bar's open); the stop and take-profit are levels at ``fill -/+`` the distances the
sizer returned (:func:`levels`) and are checked on closed bars, like every other exit.
:func:`size_entry` is the sizer both S5 and S7 use (S6's ``size_position``, capped by
the free cash, rounded by the exchange filters).

Reasons are data: ``Action.reason`` is one of :data:`EXIT_REASONS` (``signal`` carries
the rule: ``signal:<rule>``) or :data:`SKIP_REASONS`; ``Action.detail`` says why in words.
``side`` is a field everywhere (long only today).

>>> p = Policy(cooldown=2)
>>> bar = Bar(high=11.0, low=9.0, close=10.0, entry_rule="dip")
>>> decide(bar, position=None, policy=p).kind, decide(bar, position=None, policy=p, bars_since_exit=2).reason
('enter', 'cooldown')
>>> pos = Position(qty=1.0, entry_price=10.5, stop=9.5, take_profit=12.0)
>>> decide(bar, position=pos, policy=p).reason          # low 9 <= stop 9.5
'stop_loss'
>>> decide(Bar(high=11, low=10, close=10, exit_rule="rsi_high"), position=pos, policy=p).reason
'signal:rsi_high'
>>> decide(bar, position=None, policy=p, entries_allowed=False).reason
'kill_switch'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ENTER, EXIT, HOLD, SKIP = "enter", "exit", "hold", "skip"
KINDS = (ENTER, EXIT, HOLD, SKIP)
#: Why a position closes (``signal`` is written ``signal:<rule>``; ``end``: the data ended).
EXIT_REASONS = ("stop_loss", "take_profit", "signal", "kill_switch", "end")
#: Why a fired entry was not taken.
SKIP_REASONS = ("cooldown", "kill_switch", "sizing", "filters")
SIDES = ("long",)


@dataclass(frozen=True)
class Policy:
    """How decisions are taken (frozen; checked on creation)."""

    cooldown: int = 0              #: bars after an exit bar during which entries are ignored
    use_stops: bool = True         #: check the position's stop-loss / take-profit levels
    flatten_on_trip: bool = True   #: close the position when the kill-switch trips
    side: str = "long"

    def __post_init__(self):
        if int(self.cooldown) != self.cooldown or self.cooldown < 0:
            raise ValueError(f"cooldown must be a whole number of bars >= 0, got {self.cooldown!r}")
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r} (spot trading is long only)")

    @classmethod
    def from_rules(cls, rules, *, use_stops: bool = True, flatten_on_trip: bool = True) -> Policy:
        """The policy of an S4 RuleSet (its ``cooldown``)."""
        return cls(cooldown=int(rules.resolve(rules.cooldown)), use_stops=bool(use_stops),
                   flatten_on_trip=bool(flatten_on_trip))


@dataclass(frozen=True)
class Bar:
    """The closed bar the decision is taken on: prices and which rules fired on it
    (the first entry / exit rule in file order, None when none did)."""

    high: float
    low: float
    close: float
    entry_rule: str | None = None
    exit_rule: str | None = None
    time: Any = None


@dataclass(frozen=True)
class Position:
    """The open position (``stop`` / ``take_profit``: price levels, None when not set)."""

    qty: float
    entry_price: float
    stop: float | None = None
    take_profit: float | None = None
    side: str = "long"

    def stop_hit(self, bar: Bar) -> bool:
        return self.stop is not None and bar.low <= self.stop

    def take_profit_hit(self, bar: Bar) -> bool:
        return self.take_profit is not None and bar.high >= self.take_profit


@dataclass(frozen=True)
class Size:
    """What the sizer says about an entry: a quantity (> 0) and the stop / take-profit
    distances from the fill price, or ``refused`` (a :data:`SKIP_REASONS` code) and why."""

    qty: float = 0.0
    stop_distance: float | None = None
    tp_distance: float | None = None
    refused: str | None = None
    detail: str | None = None
    extra: dict = field(default_factory=dict)   #: the caller's details (e.g. the filters' rounded quantity)

    @property
    def ok(self) -> bool:
        return self.refused is None and self.qty > 0


@dataclass(frozen=True)
class Action:
    """The decision for one closed bar."""

    kind: str                      #: enter | exit | hold | skip
    side: str = "long"
    rule: str | None = None        #: the rule that fired (entries, signal exits, skipped entries)
    reason: str | None = None      #: exits: EXIT_REASONS (``signal:<rule>``); skips: SKIP_REASONS
    detail: str | None = None      #: the reason in words
    size: Size | None = None       #: entries (and skips by the sizer)

    @property
    def exit_kind(self) -> str | None:
        """``signal`` / ``stop_loss`` / ... without the rule (None unless an exit)."""
        return None if self.kind != EXIT or self.reason is None else self.reason.split(":", 1)[0]


def decide(bar: Bar, *, position: Position | None, policy: Policy, bars_since_exit: int | None = None,
           entries_allowed: bool = True, sizer: Callable[[Bar], Size] | None = None) -> Action:
    """The action for the closed ``bar`` (see the module docstring).

    ``bars_since_exit``: bars from the last exit's decision bar to this one (None: never
    exited); ``entries_allowed``: the kill-switch's verdict at this bar's close;
    ``sizer``: called for an entry only (``None``: the caller sizes it).
    """
    if position is not None:
        if policy.use_stops and position.stop_hit(bar):
            return Action(EXIT, position.side, reason="stop_loss", detail=f"low {bar.low:g} <= stop {position.stop:g}")
        if policy.use_stops and position.take_profit_hit(bar):
            return Action(EXIT, position.side, reason="take_profit",
                          detail=f"high {bar.high:g} >= take-profit {position.take_profit:g}")
        if bar.exit_rule is not None:
            return Action(EXIT, position.side, rule=bar.exit_rule, reason=f"signal:{bar.exit_rule}")
        if not entries_allowed and policy.flatten_on_trip:
            return Action(EXIT, position.side, reason="kill_switch", detail="the kill-switch tripped")
        return Action(HOLD, position.side)
    if bar.entry_rule is None or bar.exit_rule is not None:
        return Action(HOLD, policy.side)
    rule = bar.entry_rule
    if bars_since_exit is not None and bars_since_exit <= policy.cooldown:
        return Action(SKIP, policy.side, rule=rule, reason="cooldown",
                      detail=f"cooldown ({bars_since_exit} of {policy.cooldown} bars since the last exit)")
    if not entries_allowed:
        return Action(SKIP, policy.side, rule=rule, reason="kill_switch", detail="the kill-switch tripped")
    if sizer is None:
        return Action(ENTER, policy.side, rule=rule)
    size = sizer(bar)
    if not size.ok:
        return Action(SKIP, policy.side, rule=rule, reason=size.refused or "sizing",
                      detail=size.detail or "the size is 0", size=size)
    return Action(ENTER, policy.side, rule=rule, size=size)


def levels(fill_price: float, size: Size | None, filters=None) -> tuple[float | None, float | None]:
    """``(stop, take_profit)`` of a long filled at ``fill_price``: ``fill -/+`` the sizer's
    distances, on the tick grid when ``filters`` (S6 SymbolFilters) are given (the stop
    rounded up -- nearer the entry -- and the take-profit down)."""
    stop = tp = None
    if size is not None and size.stop_distance:
        stop = fill_price - size.stop_distance
        if filters is not None:
            stop = float(filters.round_price(stop, direction="up"))
    if size is not None and size.tp_distance:
        tp = fill_price + size.tp_distance
        if filters is not None:
            tp = float(filters.round_price(tp, direction="down"))
    return stop, tp


def size_entry(*, equity: float, cash: float, price: float, atr: float | None, risk, filters=None,
               fee_buffer: float = 0.003, order_price: float | None = None, order_type: str = "MARKET") -> Size:
    """Size a long entry decided at ``price`` (the bar's close): S6's ``size_position``
    (``risk``: an S6 RiskConfig; ATR sizing needs ``atr``), capped by the free ``cash``
    at ``order_price x (1 + fee_buffer)``, rounded by the exchange ``filters`` (S6
    SymbolFilters; refused when below minQty / MIN_NOTIONAL, or when what is left after
    the commission could not be sold back). The stop / take-profit distances are S6's
    levels at ``price``.

    >>> from S6.config import RiskConfig
    >>> s = size_entry(equity=10_000, cash=10_000, price=100.0, atr=2.0, risk=RiskConfig())
    >>> round(s.qty, 9), s.stop_distance, s.tp_distance      # 1 % of 10 000 / (2 x ATR 2)
    (25.0, 4.0, 8.0)
    """
    from S6.sizing import SizingError, size_position

    if atr is not None and not (math.isfinite(atr) and atr > 0):
        atr = None
    try:
        res = size_position(equity=equity, price=price, config=risk, atr=atr)
    except SizingError as exc:
        return Size(refused="sizing", detail=f"sizing: {exc.problem}")
    qty = float(res.size)
    if not (math.isfinite(qty) and qty > 0):
        return Size(refused="sizing", detail="sizing: the size is 0")
    px = float(order_price) if order_price is not None else price
    cash_cap = cash / (px * (1 + fee_buffer))
    capped = qty > cash_cap
    qty = min(qty, cash_cap)
    stop_d = price - float(res.stop) if res.stop is not None else None
    tp_d = float(res.take_profit) - price if res.take_profit is not None else None
    if filters is None:
        if qty <= 0:
            return Size(refused="sizing", detail="sizing: no free cash")
        return Size(qty, stop_d, tp_d)
    from dataclasses import replace

    check = filters.check_order(qty, px, side="BUY", order_type=order_type)
    if check.ok:
        back = filters.check_order(float(check.qty) * (1 - 2 * fee_buffer), price * 0.99, side="SELL",
                                   order_type="MARKET")
        if not back.ok:
            check = replace(check, ok=False, filter=back.filter,
                            reason=f"too small to be sold back after fees: {back.reason}")
    extra = {"check": check, "capped": capped, "cash": cash}
    if not check.ok:
        return Size(float(check.qty), stop_d, tp_d, refused="filters", detail=check.reason, extra=extra)
    return Size(float(check.qty), stop_d, tp_d, extra=extra)


__all__ = ["EXIT_REASONS", "KINDS", "SKIP_REASONS", "Action", "Bar", "Policy", "Position", "Size", "decide",
           "levels", "size_entry"]
