"""What a fill costs and which quantities the exchange accepts: fee models, BNB discount,
lot-size / min-notional rules, the :class:`Costs` every backtest takes, the one default
slippage (:data:`DEFAULT_SLIPPAGE`) and the one fill price after slippage and the tick
(:func:`fill_price`, used by the backtest and by S7's simulator alike).

The one home of these concepts: :mod:`S5.engine` (vectorbt), :mod:`S5.hooks` (S6 sizing),
:mod:`S5.exchange` (command-line options, exchangeInfo lookup) and S7 all import them from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from S1.errors import UserError
from S1.options import DEFAULT_FEE, DEFAULT_SLIPPAGE_BPS

FEE_MODELS = ("taker", "maker", "mixed")
#: The one default slippage per side as the fraction the engine takes (5 bp = 0.0005): S1/options.py's
#: ``DEFAULT_SLIPPAGE_BPS`` (the ``--slippage-bps`` default of every script: backtest, optimiser, parity,
#: the S7 executor's dry run and its replays).
DEFAULT_SLIPPAGE = round(DEFAULT_SLIPPAGE_BPS / 1e4, 12)
#: Binance spot: paying the commission in BNB takes 25 % off.
BNB_DISCOUNT = 0.25


def _f(x, default: float) -> float:
    return default if x is None else float(x)


@dataclass(frozen=True)
class LotRules:
    """Quantity filters of one symbol as floats (``nan``/``inf``/0 = not enforced).

    ``step`` / ``min_qty`` / ``max_qty``: ``LOT_SIZE``; ``market_*``: ``MARKET_LOT_SIZE``
    (0 on most spot symbols = same as LOT_SIZE); ``min_notional``: ``MIN_NOTIONAL`` or
    ``NOTIONAL`` (``min_notional_market``: whether it applies to MARKET orders);
    ``tick`` / ``min_price``: ``PRICE_FILTER.tickSize`` / ``minPrice`` (the grid a slipped
    fill price is moved onto, see :func:`fill_price`).
    """

    symbol: str
    step: float
    min_qty: float = 0.0
    max_qty: float = math.inf
    market_step: float = 0.0
    market_min_qty: float = 0.0
    market_max_qty: float = math.inf
    min_notional: float = 0.0
    min_notional_market: bool = True
    tick: float = math.nan
    source: str = ""
    min_price: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.step) and self.step > 0):
            raise UserError(f"{self.symbol}: LOT_SIZE stepSize {self.step!r} must be a positive number",
                            "check the exchangeInfo file (or use --exchange-filters off)")
        for name in ("min_qty", "market_step", "market_min_qty", "min_notional"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise UserError(f"{self.symbol}: {name} {v!r} must be 0 or more", "check the exchangeInfo file")

    @classmethod
    def from_filters(cls, f, *, source: str = "") -> LotRules:
        """From an :class:`S6.filters.SymbolFilters` (Decimals -> floats; None -> not enforced)."""
        if f.step_size is None:
            raise UserError(f"{f.symbol} has no LOT_SIZE stepSize in exchangeInfo",
                            "pass another --exchange-info file or use --exchange-filters off")
        return cls(symbol=f.symbol, step=float(f.step_size), min_qty=_f(f.min_qty, 0.0),
                   max_qty=_f(f.max_qty, math.inf), market_step=_f(f.market_step_size, 0.0),
                   market_min_qty=_f(f.market_min_qty, 0.0), market_max_qty=_f(f.market_max_qty, math.inf),
                   min_notional=_f(f.min_notional, 0.0), min_notional_market=bool(f.min_notional_market),
                   tick=_f(f.tick_size, math.nan), source=source, min_price=_f(f.min_price, 0.0))

    def entry_limits(self, *, market: bool) -> tuple[float, float, float, float]:
        """``(step, min_qty, max_qty, min_notional)`` an entry must meet.

        The step is the coarser of LOT_SIZE and MARKET_LOT_SIZE (when set) whatever the
        entry's type: the position is later sold whole, possibly by a MARKET order (a stop,
        the end-of-test close), so it must sit on both grids. ``market``: the entry is a
        MARKET order (MARKET_LOT_SIZE limits and ``applyToMarket`` of the notional apply).
        """
        step = max(self.step, self.market_step)
        min_qty = max(self.min_qty, self.market_min_qty) if market else self.min_qty
        max_qty = min(self.max_qty, self.market_max_qty) if market else self.max_qty
        min_notional = self.min_notional if (not market or self.min_notional_market) else 0.0
        return step, min_qty, max_qty, min_notional

    def round_qty(self, qty: float) -> float:
        """``qty`` rounded down to the (entry) step, in floats: ``floor(qty / step) * step``."""
        step = max(self.step, self.market_step)
        return math.floor(qty / step) * step

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def price_grid(filters) -> tuple[float | None, float]:
    """``(tick, base)`` of the PRICE_FILTER grid of an S6 ``SymbolFilters`` or a :class:`LotRules`
    (``(None, 0.0)``: no grid known -- prices are not rounded)."""
    if filters is None:
        return None, 0.0
    if isinstance(filters, LotRules):
        tick, base = filters.tick, filters.min_price
    else:
        tick, base = getattr(filters, "tick_size", None), getattr(filters, "min_price", None)
    tick = None if tick is None else float(tick)
    if tick is None or not (math.isfinite(tick) and tick > 0):
        return None, 0.0
    return tick, float(base or 0.0)


def _decimals(x: float) -> int:
    from decimal import Decimal

    return max(0, -Decimal(repr(float(x))).normalize().as_tuple().exponent)


def fill_price(price, *, buy, slippage: float, tick: float | None = None, base: float = 0.0):
    """The price of a MARKET fill: ``price`` moved ``slippage`` (a fraction) against the trader
    -- a buy pays ``price x (1 + slippage)``, a sell gets ``price x (1 - slippage)`` -- and,
    when the symbol's tick is known, onto the PRICE_FILTER grid ``base + k x tick`` in the same
    direction (a buy rounds **up**, a sell **down**: never better than the slipped price).
    Without slippage the price is returned as it is (a traded price is on the grid already).

    The one definition of a slipped fill: S5's backtests (:mod:`S5.hooks`, :mod:`S5.engine`,
    :mod:`S5.portfolio_backtest`) and S7's simulator (:mod:`S7.matching`, the USD-M dry run)
    all call it, so paper trading fills at the backtest's prices exactly. ``price`` and ``buy``
    are numbers or NumPy arrays (broadcast); the result is a float or an array of floats, each
    the float nearest to its decimal grid value (``repr`` gives that decimal).

    >>> fill_price(16600.5, buy=True, slippage=0.0005, tick=0.01)     # 16608.80025 -> up
    16608.81
    >>> fill_price(16600.5, buy=False, slippage=0.0005, tick=0.01)    # 16592.19975 -> down
    16592.19
    >>> fill_price(100.0, buy=True, slippage=0.0005, tick=0.01)       # 100.05 is on the grid
    100.05
    >>> fill_price(16600.5, buy=True, slippage=0.0005)                # no tick known
    16608.80025
    >>> fill_price(np.array([100.0, 100.0]), buy=np.array([True, False]), slippage=0.001, tick=0.25).tolist()
    [100.25, 99.75]
    """
    p = np.asarray(price, dtype=np.float64)
    b = np.asarray(buy, dtype=bool)
    scalar = p.ndim == 0 and b.ndim == 0
    if not slippage:
        out = np.broadcast_to(p, np.broadcast_shapes(p.shape, b.shape)).astype(np.float64)
        return float(out) if scalar else out
    out = p * np.where(b, 1.0 + slippage, 1.0 - slippage)
    if tick is not None and math.isfinite(tick) and tick > 0:
        # in integer units of the tick's last decimal: exact grid arithmetic, one final division
        d = min(_decimals(tick), 12)
        scale = 10.0 ** d
        t_u, b_u = round(tick * scale), round(float(base or 0.0) * scale)
        k = (out * scale - b_u) / t_u
        near = np.rint(k)
        on_grid = np.abs(k - near) <= np.maximum(1e-6, 1e-12 * np.abs(k))   # float noise of an exact grid value
        k = np.where(on_grid, near, np.where(b, np.ceil(k), np.floor(k)))
        out = (b_u + k * t_u) / scale
    return float(out) if scalar else out


def costs_warning(*, fee: float, slippage_bps: float, fee_asset: str = "quote",
                  who: str = "the executor's dry run") -> str | None:
    """One loud line when ``fee`` / ``slippage_bps`` / ``fee_asset`` differ from the backtest's
    (None when they are the same), e.g. for ``python S7/executor.py --dry-run --slippage-bps 0``.
    The backtest books the commission in the quote asset (``fee_asset="quote"``).

    >>> costs_warning(fee=0.001, slippage_bps=5) is None
    True
    >>> print(costs_warning(fee=0.001, slippage_bps=0))
    COSTS DIFFER FROM THE BACKTEST: the executor's dry run fills with slippage 0 bp (backtest default 5 bp); S5/backtest.py and S5/parity.py compare with the same --fee / --slippage-bps and quote-asset fees only
    >>> print(costs_warning(fee=0.001, slippage_bps=5, fee_asset="received"))  # doctest: +ELLIPSIS
    COSTS DIFFER FROM THE BACKTEST: ... fills with the commission in the asset received (the backtest books it in the quote asset); ...
    """
    diffs = []
    if not math.isclose(float(fee), DEFAULT_FEE, rel_tol=1e-12, abs_tol=1e-15):
        diffs.append(f"fee {float(fee):g} (backtest default {DEFAULT_FEE:g})")
    if not math.isclose(float(slippage_bps), DEFAULT_SLIPPAGE_BPS, rel_tol=1e-12, abs_tol=1e-12):
        diffs.append(f"slippage {float(slippage_bps):g} bp (backtest default {DEFAULT_SLIPPAGE_BPS:g} bp)")
    if fee_asset != "quote":
        diffs.append(f"the commission in the asset {fee_asset} (the backtest books it in the quote asset)")
    if not diffs:
        return None
    return (f"COSTS DIFFER FROM THE BACKTEST: {who} fills with {', '.join(diffs)}; S5/backtest.py and "
            "S5/parity.py compare with the same --fee / --slippage-bps and quote-asset fees only")


def fee_rates(fees: float, maker_fee: float | None, bnb_discount: bool) -> tuple[float, float]:
    """``(maker, taker)`` per side after the optional BNB discount."""
    k = 1.0 - BNB_DISCOUNT if bnb_discount else 1.0
    return (fees if maker_fee is None else maker_fee) * k, fees * k


@dataclass(frozen=True)
class Costs:
    """Trading costs per side and the exchange's quantity rules.

    ``fees``: the taker fee (fraction of the notional; also the maker fee unless
    ``maker_fee`` is given); ``slippage``: fraction of the price, against the trader;
    ``fee_model``: ``taker`` (every fill pays taker -- the default, a single fee),
    ``mixed`` (entries and signal exits are S7's LIMIT orders: maker; stops,
    kill-switch flattening and the end-of-test close: taker) or ``maker`` (every fill
    maker); ``bnb_discount``: 25 % off both rates; ``lot``: an :class:`S5.exchange.LotRules`
    (None: quantities are not rounded and no entry is refused).

    >>> Costs(fees=0.001, slippage=0.0005)
    Costs(fees=0.001, slippage=0.0005)
    >>> c = Costs(fees=0.001, maker_fee=0.0002, fee_model="mixed", bnb_discount=True)
    >>> round(c.maker_rate, 8), round(c.taker_rate, 8), round(c.entry_rate, 8)
    (0.00015, 0.00075, 0.00015)
    >>> Costs(fees=0.5)
    Traceback (most recent call last):
    ...
    S1.errors.UserError: fees 0.5 is out of range -- use a fraction per side from 0 to 0.05, e.g. --fee 0.001 (0.1 %)
    """

    fees: float = DEFAULT_FEE
    slippage: float = DEFAULT_SLIPPAGE
    maker_fee: float | None = None
    fee_model: str = "taker"
    bnb_discount: bool = False
    lot: Any = None

    def __post_init__(self) -> None:
        for name, limit in (("fees", 0.05), ("slippage", 0.05), ("maker_fee", 0.05)):
            v = getattr(self, name)
            if v is None and name == "maker_fee":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not np.isfinite(v) \
                    or not 0 <= v <= limit:
                if name == "slippage":   # the command line takes basis points (S1/options.py)
                    raise UserError(f"slippage {v!r} is out of range",
                                    f"use from 0 to {limit * 1e4:g} bp per side, e.g. --slippage-bps 5 (0.05 %)")
                flag = {"fees": "fee", "maker_fee": "maker-fee"}[name]
                raise UserError(f"{name} {v!r} is out of range",
                                f"use a fraction per side from 0 to {limit}, e.g. --{flag} 0.001 (0.1 %)")
            object.__setattr__(self, name, float(v))
        if self.fee_model not in FEE_MODELS:
            raise UserError(f"unknown fee model {self.fee_model!r}", f"use one of {', '.join(FEE_MODELS)}")
        if self.lot is not None and not isinstance(self.lot, LotRules):
            raise UserError(f"lot must be an S5.exchange.LotRules, got {type(self.lot).__name__}",
                            "build it with LotRules.from_filters(S6 SymbolFilters)")
        object.__setattr__(self, "bnb_discount", bool(self.bnb_discount))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k, d in (("maker_fee", None), ("fee_model", "taker"),
                                                                   ("bnb_discount", False), ("lot", None))
                        if getattr(self, k) != d)
        return f"Costs(fees={self.fees!r}, slippage={self.slippage!r}{extra})"

    @property
    def maker_rate(self) -> float:
        """Maker fee per side after the BNB discount."""
        return fee_rates(self.fees, self.maker_fee, self.bnb_discount)[0]

    @property
    def taker_rate(self) -> float:
        """Taker fee per side after the BNB discount."""
        return fee_rates(self.fees, self.maker_fee, self.bnb_discount)[1]

    @property
    def entry_rate(self) -> float:
        """Fee rate of an entry (LIMIT in the mixed / maker models)."""
        return self.taker_rate if self.fee_model == "taker" else self.maker_rate

    @property
    def single_rate(self) -> float | None:
        """The one fee rate every fill pays, or None when it depends on the order."""
        if self.fee_model == "taker" or self.maker_rate == self.taker_rate:
            return self.taker_rate
        return self.maker_rate if self.fee_model == "maker" else None

    @property
    def tick_grid(self) -> tuple[float | None, float]:
        """``(tick, base)`` slipped fills are rounded to (``lot``'s PRICE_FILTER; None: not rounded)."""
        return price_grid(self.lot)

    def fill(self, price, *, buy, grid: tuple[float | None, float] | None = None):
        """:func:`fill_price` with this run's slippage, on ``grid`` (default :attr:`tick_grid`)."""
        tick, base = self.tick_grid if grid is None else grid
        return fill_price(price, buy=buy, slippage=self.slippage, tick=tick, base=base)

    @property
    def is_plain(self) -> bool:
        """Only ``fees`` and ``slippage`` (the behaviour before fee models and filters)."""
        return self.fee_model == "taker" and not self.bnb_discount and self.lot is None

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data (run params, study fingerprints)."""
        return {"fees": self.fees, "slippage": self.slippage, "fee_model": self.fee_model,
                "maker_fee": self.maker_rate, "taker_fee": self.taker_rate, "bnb_discount": self.bnb_discount,
                "exchange_filters": self.lot.as_dict() if self.lot is not None else "off"}
