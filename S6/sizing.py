"""Position sizing: pure functions that take scalars *or* numpy arrays (broadcast).

Kernels (no config, no caps unless asked):

- :func:`fixed_fraction_size` -- notional = fraction x equity.
- :func:`atr_stop_size` -- risk R of equity with the stop k x ATR away:
  ``size = R * equity / (k * ATR)``; :func:`risk_size` for any stop distance.
- :func:`kelly_fraction` / :func:`kelly_stats` / :func:`kelly_size` -- Kelly from the
  win rate p and payoff ratio b (average win / average loss): ``f* = p - (1 - p) / b``,
  scaled (half-Kelly ...) and capped, applied to the position's notional; it
  refuses to size from too few trades.
- :func:`stop_price` / :func:`take_profit_price` -- exit levels.

:func:`size_position` applies a :class:`~S6.config.RiskConfig` (method, caps, stops).

Scalars are strict (NaN or a non-positive value raises :class:`SizingError`); in
arrays NaN propagates (e.g. the ATR warm-up of a backtest) while non-positive
values still raise.

>>> atr_stop_size(equity=10_000, atr=350, risk=0.01, k=2)        # 100 / 700
0.14285714285714285
>>> fixed_fraction_size(equity=10_000, price=40_000, fraction=0.1)
0.025
>>> round(kelly_fraction(win_rate=0.55, payoff=1.5), 12)          # 0.55 - 0.45 / 1.5
0.25
>>> kelly_fraction(win_rate=0.55, payoff=1.5, fraction=0.5, cap=0.1)
0.1
>>> atr_stop_size(equity=10_000, atr=np.array([350.0, np.nan, 700.0]), risk=0.01, k=2)
array([0.14285714,        nan, 0.07142857])
>>> stop_price(entry=43_000, atr=350, k=2), take_profit_price(entry=43_000, stop=42_300, rr=2)
(42300.0, 44400.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from S1.errors import UserError
from S6.config import RiskConfig

Number = float | np.ndarray


class SizingError(UserError, ValueError):
    """Input that cannot be sized (bad numbers, too few trades for Kelly ...)."""


# ------------------------------------------------------------------ validation
def _num(name: str, x, *, positive: bool = True, allow_zero: bool = False, hint: str = "") -> Number:
    """``x`` as float (scalar) or float64 array, checked up front."""
    scalar = np.ndim(x) == 0
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise SizingError(f"{name} must be a number, got {x!r}", hint or f"pass --{name.replace('_', '-')} as a number") from None
    if scalar and not np.isfinite(a):
        raise SizingError(f"{name} is {float(a)}", hint or f"pass a finite {name}")
    if positive:
        bad = (a < 0) if allow_zero else (a <= 0)
        if np.any(bad & ~np.isnan(a)):
            sign = ">= 0" if allow_zero else "> 0"
            raise SizingError(f"{name} must be {sign}, got {float(a) if scalar else 'values ' + str(a[bad][:3])}",
                              hint or f"pass a positive {name}")
    if not scalar and np.any(np.isinf(a)):
        raise SizingError(f"{name} contains infinite values", "replace them with NaN or finite numbers")
    return float(a) if scalar else a


def _out(x, *inputs) -> Number:
    return float(x) if all(np.ndim(i) == 0 for i in inputs) else np.asarray(x, dtype=np.float64)


def _cap(size, *, equity, price, max_fraction):
    if max_fraction is None:
        return size
    if price is None:
        raise SizingError("max_fraction needs the price", "pass price= together with max_fraction=")
    mf = _num("max_fraction", max_fraction)
    return np.minimum(size, mf * equity / _num("price", price))


# --------------------------------------------------------------------- kernels
def fixed_fraction_size(*, equity: Number, price: Number, fraction: Number) -> Number:
    """Quantity whose notional is ``fraction`` of ``equity``: ``fraction * equity / price``.

    >>> fixed_fraction_size(equity=np.array([1000.0, 2000.0]), price=50.0, fraction=0.5)
    array([10., 20.])
    """
    e, p = _num("equity", equity), _num("price", price)
    f = _num("fraction", fraction)
    if np.any(np.asarray(f) > 1):
        raise SizingError("fraction must be <= 1 (spot, no leverage)", "pass a share of equity such as 0.1")
    return _out(f * e / p, equity, price, fraction)


def risk_size(*, equity: Number, risk: Number, stop_distance: Number, price: Number | None = None,
              max_fraction: float | None = None) -> Number:
    """Quantity that loses ``risk`` x ``equity`` when price moves ``stop_distance`` against it.

    >>> risk_size(equity=10_000, risk=0.02, stop_distance=50)
    4.0
    >>> risk_size(equity=10_000, risk=0.02, stop_distance=1, price=100, max_fraction=1.0)  # capped
    100.0
    """
    e = _num("equity", equity)
    r = _num("risk", risk, hint="pass a share of equity such as 0.01 (1 %)")
    if np.any(np.asarray(r) >= 1):
        raise SizingError("risk must be < 1 (a share of equity, 0.01 = 1 %)", "pass e.g. --risk 0.01")
    d = _num("stop_distance", stop_distance, hint="the stop must be away from the entry")
    size = _cap(r * e / d, equity=e, price=price, max_fraction=max_fraction)
    return _out(size, equity, risk, stop_distance, *(x for x in (price,) if x is not None))


def atr_stop_size(*, equity: Number, atr: Number, risk: Number, k: Number,
                  price: Number | None = None, max_fraction: float | None = None) -> Number:
    """ATR stop sizing: ``risk * equity / (k * atr)`` (optionally capped at
    ``max_fraction * equity / price``). See the module examples."""
    a = _num("atr", atr, hint="pass the ATR in price units (e.g. --atr 350); it must be > 0")
    kk = _num("k", k, hint="pass the stop distance in ATRs, e.g. --k 2")
    size = risk_size(equity=equity, risk=risk, stop_distance=a * kk, price=price, max_fraction=max_fraction)
    return _out(size, equity, atr, risk, k, *(x for x in (price,) if x is not None))


def kelly_fraction(*, win_rate: Number, payoff: Number, fraction: float = 1.0, cap: float = 1.0) -> Number:
    """Fractional, capped Kelly: ``clip(fraction * (p - (1 - p) / b), 0, cap)``.

    ``payoff`` b = average win / average loss (``inf`` when there were no losses).
    A negative edge gives 0 (do not trade).

    >>> kelly_fraction(win_rate=0.4, payoff=1.0)
    0.0
    >>> kelly_fraction(win_rate=np.array([0.5, 0.6]), payoff=2.0, fraction=0.5)
    array([0.125, 0.2  ])
    """
    p = np.asarray(_num("win_rate", win_rate, allow_zero=True), dtype=np.float64)
    if np.any(p > 1):
        raise SizingError("win_rate must be within [0, 1]", "pass a share of winning trades such as 0.55")
    b = np.asarray(payoff, dtype=np.float64)
    if np.any(b < 0):
        raise SizingError("payoff must be >= 0 (average win / average loss)", "pass e.g. --payoff 1.5")
    if not 0 < fraction <= 1 or not 0 < cap <= 1:
        raise SizingError("fraction and cap must be within (0, 1]", "e.g. fraction=0.5 (half-Kelly), cap=0.25")
    with np.errstate(divide="ignore", invalid="ignore"):
        loss_term = np.where(p >= 1, 0.0, (1 - p) / b)
        f = p - loss_term
    f = np.where(np.isnan(p) | np.isnan(b), np.nan, np.clip(fraction * f, 0.0, cap))
    return _out(f, win_rate, payoff)


def kelly_stats(returns) -> tuple[float, float, int]:
    """``(win_rate, payoff, n)`` from closed-trade returns (or PnLs): wins are > 0,
    losses < 0, payoff = mean win / |mean loss| (``inf`` without losses, 0 without wins).

    >>> kelly_stats([0.02, -0.01, 0.04, -0.01])
    (0.5, 3.0, 4)
    """
    r = np.asarray(returns, dtype=np.float64)
    r = r[~np.isnan(r)]
    n = int(r.size)
    if n == 0:
        return float("nan"), float("nan"), 0
    wins, losses = r[r > 0], r[r < 0]
    win_rate = wins.size / n
    if losses.size == 0:
        payoff = float("inf")
    elif wins.size == 0:
        payoff = 0.0
    else:
        payoff = float(wins.mean() / -losses.mean())
    return float(win_rate), payoff, n


def kelly_size(*, equity: Number, price: Number, win_rate: Number, payoff: Number, n_trades: Number,
               min_trades: int = 30, fraction: float = 0.5, cap: float = 0.25,
               on_few_trades: Literal["raise", "nan"] = "raise") -> Number:
    """Quantity with notional ``kelly_fraction(...) * equity``.

    Too few trades (``n_trades < min_trades``) raise :class:`SizingError`, or give
    NaN with ``on_few_trades="nan"`` (rolling statistics in a backtest).

    >>> round(kelly_size(equity=10_000, price=100, win_rate=0.55, payoff=1.5, n_trades=40), 9)  # 0.125 x 10k / 100
    12.5
    >>> try:
    ...     kelly_size(equity=10_000, price=100, win_rate=0.55, payoff=1.5, n_trades=12)
    ... except SizingError as exc:
    ...     print(exc.problem)
    Kelly needs at least 30 closed trades, got 12
    """
    n = np.asarray(n_trades, dtype=np.float64)
    few = n < min_trades
    if on_few_trades == "raise" and np.any(few):
        got = int(np.min(n))
        raise SizingError(f"Kelly needs at least {min_trades} closed trades, got {got}",
                          "run a longer backtest or use the atr or fixed method")
    e, p = _num("equity", equity), _num("price", price)
    f = kelly_fraction(win_rate=win_rate, payoff=payoff, fraction=fraction, cap=cap)
    size = np.where(few, np.nan, np.asarray(f) * e / p)
    return _out(size, equity, price, win_rate, payoff, n_trades)


def stop_price(*, entry: Number, atr: Number | None = None, k: float | None = None,
               stop_pct: float | None = None, side: Literal["long", "short"] = "long") -> Number:
    """Stop level: ``entry -/+ stop_pct * entry`` when ``stop_pct`` is given, else ``entry -/+ k * atr``."""
    e = _num("entry", entry)
    sign = _side(side)
    if stop_pct is not None:
        s = _num("stop_pct", stop_pct)
        if s >= 1:
            raise SizingError("stop_pct must be < 1", "e.g. 0.02 for a 2 % stop")
        return _out(e - sign * s * e, entry)
    if atr is None or k is None:
        raise SizingError("a stop needs atr and k, or stop_pct", "pass --atr (and --k) or set stops.stop_loss_pct")
    d = _num("atr", atr) * _num("k", k)
    out = e - sign * d
    if np.any(np.asarray(out) <= 0):
        raise SizingError("the stop is at or below zero (k x ATR >= price)", "use a smaller --k or check --atr")
    return _out(out, entry, atr)


def take_profit_price(*, entry: Number, stop: Number | None = None, rr: float | None = None,
                      take_pct: float | None = None, side: Literal["long", "short"] = "long") -> Number | None:
    """Take-profit at ``rr`` x the stop distance or at ``take_pct`` from the entry; None if neither."""
    e = _num("entry", entry)
    sign = _side(side)
    if take_pct is not None:
        return _out(e + sign * _num("take_pct", take_pct) * e, entry)
    if rr is None:
        return None
    if stop is None:
        raise SizingError("take_profit_rr needs the stop", "compute the stop first")
    dist = sign * (e - np.asarray(stop, dtype=np.float64))
    if np.any(dist <= 0):
        raise SizingError("the stop is on the wrong side of the entry", "a long's stop is below its entry")
    return _out(e + sign * _num("rr", rr) * dist, entry, stop)


def _side(side: str) -> int:
    if side not in ("long", "short"):
        raise SizingError(f"side must be 'long' or 'short', got {side!r}", "spot trading is long only")
    return 1 if side == "long" else -1


# ------------------------------------------------------------ config wrapper
@dataclass(frozen=True)
class SizeResult:
    """Output of :func:`size_position` (fields are arrays when the inputs were)."""

    method: str
    size: Number            #: base-asset quantity (not yet rounded to exchange filters)
    notional: Number        #: size x price
    fraction: Number        #: notional / equity
    stop: Number | None
    take_profit: Number | None
    risk_amount: Number | None  #: loss at the stop, quote currency (fees excluded)
    capped: Number          #: True where max_position_fraction limited the size
    kelly: Number | None = None  #: Kelly fraction used (kelly method)


def size_position(*, equity: Number, price: Number, config: RiskConfig | None = None,
                  atr: Number | None = None, win_rate: Number | None = None, payoff: Number | None = None,
                  n_trades: Number | None = None, method: str | None = None,
                  side: Literal["long", "short"] = "long") -> SizeResult:
    """Size one position (or arrays of them) with a :class:`RiskConfig`.

    ``fixed`` and ``kelly`` give the notional directly; ``atr`` risks
    ``sizing.risk_per_trade`` of equity at the stop (``stops.stop_loss_pct`` of the
    price when set, else ``stops.atr_k`` x ATR). Every method is capped at
    ``sizing.max_position_fraction`` of equity. Stops and take-profits follow ``stops``.

    >>> r = size_position(equity=10_000, price=43_000, atr=350)     # default: atr, R=1 %, k=2
    >>> round(r.size, 8), r.stop, r.take_profit, round(r.risk_amount, 2)
    (0.14285714, 42300.0, 44400.0, 100.0)
    """
    cfg = config or RiskConfig()
    sz, st = cfg.sizing, cfg.stops
    method = method or sz.method
    e, p = _num("equity", equity), _num("price", price)
    has_stop_basis = st.stop_loss_pct is not None or atr is not None
    stop = (stop_price(entry=p, atr=atr, k=st.atr_k, stop_pct=st.stop_loss_pct, side=side)
            if has_stop_basis else None)
    kelly = None
    if method == "fixed":
        raw = fixed_fraction_size(equity=e, price=p, fraction=sz.fixed_fraction)
    elif method == "atr":
        if stop is None:
            raise SizingError("the atr method needs an ATR (or stops.stop_loss_pct)",
                              "pass --atr with the current ATR in price units")
        raw = risk_size(equity=e, risk=sz.risk_per_trade, stop_distance=np.abs(p - np.asarray(stop)))
    elif method == "kelly":
        if win_rate is None or payoff is None or n_trades is None:
            raise SizingError("the kelly method needs win_rate, payoff and n_trades",
                              "pass --win-rate, --payoff and --n-trades (or a backtest's trades)")
        kelly = kelly_fraction(win_rate=win_rate, payoff=payoff, fraction=sz.kelly_fraction, cap=sz.kelly_cap)
        raw = kelly_size(equity=e, price=p, win_rate=win_rate, payoff=payoff, n_trades=n_trades,
                         min_trades=sz.kelly_min_trades, fraction=sz.kelly_fraction, cap=sz.kelly_cap)
    else:
        raise SizingError(f"unknown sizing method {method!r}", "use fixed, atr or kelly")
    limit = sz.max_position_fraction * e / p
    size = np.minimum(raw, limit)
    capped = np.asarray(raw) > np.asarray(limit)
    take = (take_profit_price(entry=p, stop=stop, rr=st.take_profit_rr, take_pct=st.take_profit_pct, side=side)
            if (stop is not None or st.take_profit_pct is not None) else None)
    risk_amount = None if stop is None else np.asarray(size) * np.abs(p - np.asarray(stop))
    ins = [equity, price] + [x for x in (atr, win_rate, payoff, n_trades) if x is not None]
    o = lambda x: None if x is None else _out(x, *ins)  # noqa: E731
    return SizeResult(method=method, size=o(size), notional=o(np.asarray(size) * p),
                      fraction=o(np.asarray(size) * p / e), stop=o(stop), take_profit=o(take),
                      risk_amount=o(risk_amount),
                      capped=bool(capped) if np.ndim(capped) == 0 else capped, kelly=o(kelly))
