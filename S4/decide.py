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

**Shorts** (``short_entry:`` / ``short_exit:`` rules, USD-M only -- the callers refuse
them on spot): a short's stop sits *above* the entry (hit when the bar's high reaches
it) and its take-profit *below* (hit when the low reaches it); ``short_exit`` rules
close it. Flat: a long entry needs an ``entry`` rule and no ``exit`` rule, a short one a
``short_entry`` rule and no ``short_exit`` rule; when both sides would enter on one bar
nothing is done (``hold``, the detail says why). **Reversal**: a position whose opposite
entry fires (and the opposite exit does not) is closed (``signal:<rule>``: its own exit
rule when one fired, else the opposite entry rule) and ``Action.reverse`` carries the
opposite entry, executed at the same next open right after the exit. The reversal's
entry is exempt from the cooldown (it is decided on the exit's own bar) but not from
the kill-switch or the sizer (``reverse`` is then the ``skip``). A stop-loss /
take-profit / trailing-stop exit never reverses.

**Trailing stop** (rule file ``trailing_stop: {atr: K}`` or ``{pct: F}``): the position
carries the distance (``Position.trail``: ``("atr", K x ATR at the entry decision)`` or
``("pct", F)``); after every closed bar that does not close it, :func:`trail` moves the
stop to ``high - d`` (long; ``high x (1 - F)``) or ``low + d`` (short; ``low x (1 + F)``)
when that is tighter -- never back. A stop hit after the trail moved it is a
``trailing_stop`` exit (else ``stop_loss``).

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
EXIT_REASONS = ("stop_loss", "take_profit", "trailing_stop", "signal", "kill_switch", "liquidation", "end")
#: Why a fired entry was not taken.
SKIP_REASONS = ("cooldown", "kill_switch", "sizing", "filters")
SIDES = ("long", "short")


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
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")

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
    short_entry_rule: str | None = None
    short_exit_rule: str | None = None


@dataclass(frozen=True)
class Position:
    """The open position (``stop`` / ``take_profit``: price levels, None when not set;
    ``trail``: the trailing stop's ``(kind, distance)``, ``trailing``: the stop was moved by it)."""

    qty: float
    entry_price: float
    stop: float | None = None
    take_profit: float | None = None
    side: str = "long"
    trail: tuple[str, float] | None = None
    trailing: bool = False

    @property
    def is_short(self) -> bool:
        return self.side == "short"

    def stop_hit(self, bar: Bar) -> bool:
        if self.stop is None:
            return False
        return bar.high >= self.stop if self.is_short else bar.low <= self.stop

    def take_profit_hit(self, bar: Bar) -> bool:
        if self.take_profit is None:
            return False
        return bar.low <= self.take_profit if self.is_short else bar.high >= self.take_profit


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
    reverse: Action | None = None  #: a reversal's opposite entry (or its skip), run after this exit

    @property
    def reverses(self) -> bool:
        """An exit followed by the opposite entry at the same next open."""
        return self.reverse is not None and self.reverse.kind == ENTER

    @property
    def exit_kind(self) -> str | None:
        """``signal`` / ``stop_loss`` / ... without the rule (None unless an exit)."""
        return None if self.kind != EXIT or self.reason is None else self.reason.split(":", 1)[0]


def decide(bar: Bar, *, position: Position | None, policy: Policy, bars_since_exit: int | None = None,
           entries_allowed: bool = True, sizer: Callable[[Bar], Size] | None = None) -> Action:
    """The action for the closed ``bar`` (see the module docstring).

    ``bars_since_exit``: bars from the last exit's decision bar to this one (None: never
    exited); ``entries_allowed``: the kill-switch's verdict at this bar's close;
    ``sizer``: called for an entry only (``None``: the caller sizes it); it may take a
    ``side`` keyword (``"long"`` / ``"short"``), else it is called with the bar alone.
    """
    if position is not None:
        side = position.side
        short = position.is_short
        if policy.use_stops and position.stop_hit(bar):
            kind = "trailing_stop" if position.trailing else "stop_loss"
            px, cmp = (bar.high, ">=") if short else (bar.low, "<=")
            return Action(EXIT, side, reason=kind, detail=f"{'high' if short else 'low'} {px:g} {cmp} stop "
                          f"{position.stop:g}")
        if policy.use_stops and position.take_profit_hit(bar):
            px, cmp = (bar.low, "<=") if short else (bar.high, ">=")
            return Action(EXIT, side, reason="take_profit",
                          detail=f"{'low' if short else 'high'} {px:g} {cmp} take-profit {position.take_profit:g}")
        own_exit = bar.short_exit_rule if short else bar.exit_rule
        other = "long" if short else "short"
        other_entry = bar.entry_rule if short else bar.short_entry_rule
        other_exit = bar.exit_rule if short else bar.short_exit_rule
        flip = other_entry is not None and other_exit is None
        if own_exit is not None or flip:
            rule = own_exit if own_exit is not None else other_entry
            out = Action(EXIT, side, rule=rule, reason=f"signal:{rule}")
            if flip:
                rev = _entry(bar, other, other_entry, policy, None, entries_allowed, sizer)
                out = Action(EXIT, side, rule=rule, reason=out.reason, reverse=rev,
                             detail=f"reversal to {other} ({other_entry})")
            return out
        if not entries_allowed and policy.flatten_on_trip:
            return Action(EXIT, side, reason="kill_switch", detail="the kill-switch tripped")
        return Action(HOLD, side)
    long_rule = bar.entry_rule if bar.exit_rule is None else None
    short_rule = bar.short_entry_rule if bar.short_exit_rule is None else None
    if long_rule is not None and short_rule is not None:
        return Action(HOLD, policy.side, detail=f"both a long ({long_rule}) and a short ({short_rule}) entry fired")
    if long_rule is None and short_rule is None:
        return Action(HOLD, policy.side)
    side, rule = ("long", long_rule) if long_rule is not None else ("short", short_rule)
    return _entry(bar, side, rule, policy, bars_since_exit, entries_allowed, sizer)


def _entry(bar: Bar, side: str, rule: str, policy: Policy, bars_since_exit: int | None, entries_allowed: bool,
           sizer) -> Action:
    if bars_since_exit is not None and bars_since_exit <= policy.cooldown:
        return Action(SKIP, side, rule=rule, reason="cooldown",
                      detail=f"cooldown ({bars_since_exit} of {policy.cooldown} bars since the last exit)")
    if not entries_allowed:
        return Action(SKIP, side, rule=rule, reason="kill_switch", detail="the kill-switch tripped")
    if sizer is None:
        return Action(ENTER, side, rule=rule)
    size = _call_sizer(sizer, bar, side)
    if not size.ok:
        return Action(SKIP, side, rule=rule, reason=size.refused or "sizing",
                      detail=size.detail or "the size is 0", size=size)
    return Action(ENTER, side, rule=rule, size=size)


def _call_sizer(sizer, bar: Bar, side: str) -> Size:
    import inspect

    try:
        takes_side = "side" in inspect.signature(sizer).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        takes_side = False
    return sizer(bar, side=side) if takes_side else sizer(bar)


def trail(position: Position | None, bar: Bar) -> Position | None:
    """The position after the closed ``bar`` with its trailing stop moved (see the module
    docstring); unchanged without a trail or when the new level is not tighter.

    >>> p = Position(qty=1.0, entry_price=100.0, stop=95.0, trail=("pct", 0.03))
    >>> trail(p, Bar(high=110.0, low=100.0, close=105.0)).stop        # 110 x 0.97
    106.7
    >>> s = Position(qty=1.0, entry_price=100.0, stop=104.0, side="short", trail=("atr", 2.0))
    >>> trail(s, Bar(high=101.0, low=97.0, close=98.0)).stop         # low 97 + 2
    99.0
    """
    if position is None or position.trail is None:
        return position
    kind, d = position.trail
    if position.is_short:
        level = bar.low * (1.0 + d) if kind == "pct" else bar.low + d
        better = position.stop is None or level < position.stop
    else:
        level = bar.high * (1.0 - d) if kind == "pct" else bar.high - d
        better = position.stop is None or level > position.stop
    if not (better and math.isfinite(level)):
        return position
    from dataclasses import replace

    return replace(position, stop=float(level), trailing=True)


def trail_spec(trailing_stop: tuple[str, float] | None, atr: float | None) -> tuple[str, float] | None:
    """A position's ``trail`` from a rule file's ``trailing_stop`` and the ATR at the entry
    decision (``("atr", k)`` -> ``("atr", k x ATR)``; None when the ATR is unknown)."""
    if trailing_stop is None:
        return None
    kind, v = trailing_stop
    if kind == "pct":
        return ("pct", float(v))
    if atr is None or not (math.isfinite(atr) and atr > 0):
        return None
    return ("atr", float(v) * float(atr))


def bar_rules(rules, ent_code: int, ext_code: int, sent_code: int = -1, sext_code: int = -1) -> dict[str, Any]:
    """The Bar keyword arguments naming the first rule of each kind that fired (codes: the
    index in ``rules.entry`` / ``exit`` / ``short_entry`` / ``short_exit``, -1: none)."""
    def name(seq, k):
        return seq[k].name if k >= 0 else None

    return {"entry_rule": name(rules.entry, ent_code), "exit_rule": name(rules.exit, ext_code),
            "short_entry_rule": name(rules.short_entry, sent_code), "short_exit_rule": name(rules.short_exit, sext_code)}


def levels(fill_price: float, size: Size | None, filters=None, *, side: str = "long"
           ) -> tuple[float | None, float | None]:
    """``(stop, take_profit)`` of a position filled at ``fill_price``: long ``fill -/+`` the
    sizer's distances, short ``fill +/-``; on the tick grid when ``filters`` (S6
    SymbolFilters) are given (both rounded towards the entry).

    >>> levels(100.0, Size(1.0, 4.0, 8.0)), levels(100.0, Size(1.0, 4.0, 8.0), side="short")
    ((96.0, 108.0), (104.0, 92.0))
    """
    sign = -1.0 if side == "short" else 1.0
    toward = ("down", "up") if side == "short" else ("up", "down")
    stop = tp = None
    if size is not None and size.stop_distance:
        stop = fill_price - sign * size.stop_distance
        if filters is not None:
            stop = float(filters.round_price(stop, direction=toward[0]))
    if size is not None and size.tp_distance:
        tp = fill_price + sign * size.tp_distance
        if filters is not None:
            tp = float(filters.round_price(tp, direction=toward[1]))
    return stop, tp


def size_entry(*, equity: float, cash: float, price: float, atr: float | None, risk, filters=None,
               fee_buffer: float = 0.003, order_price: float | None = None, order_type: str = "MARKET",
               side: str = "long") -> Size:
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

    opening, closing = ("SELL", "BUY") if side == "short" else ("BUY", "SELL")
    check = filters.check_order(qty, px, side=opening, order_type=order_type)
    if check.ok:
        back = filters.check_order(float(check.qty) * (1 - 2 * fee_buffer), price * 0.99, side=closing,
                                   order_type="MARKET")
        if not back.ok:
            check = replace(check, ok=False, filter=back.filter,
                            reason=f"too small to be sold back after fees: {back.reason}")
    extra = {"check": check, "capped": capped, "cash": cash}
    if not check.ok:
        return Size(float(check.qty), stop_d, tp_d, refused="filters", detail=check.reason, extra=extra)
    return Size(float(check.qty), stop_d, tp_d, extra=extra)


__all__ = ["EXIT_REASONS", "KINDS", "SIDES", "SKIP_REASONS", "Action", "Bar", "Policy", "Position", "Size",
           "bar_rules", "decide", "levels", "size_entry", "trail", "trail_spec"]
