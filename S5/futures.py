"""USD-M perpetual futures accounting for the bar-by-bar backtest: margin, funding, liquidation.

The decided path (:func:`S5.hooks.decided_path`) keeps a futures book when ``market="usdm"``
(:class:`FuturesSpec`):

- **Wallet** (``cash``): fees and funding are paid from it, each closed trade adds its
  P&L; equity = wallet + the open position's unrealised P&L at the close
  (long ``qty x (close - entry)``, short ``qty x (entry - close)``).
- **Margin** (isolated): ``entry notional / leverage``, fixed at the entry. Sizing is S6's
  (fractions of the equity) capped at ``equity x leverage``.
- **Funding** (Binance's funding-rate history, ``python S1/funding.py --symbol X --days N`` ->
  ``data/<symbol>_funding.parquet``): at each funding time ``T`` a position *open at T*
  (filled at or before ``T`` -- fills happen at bar opens -- and not closed at or before ``T``)
  pays ``qty x mark x rate`` when long and receives it when short (a negative rate reverses
  both). ``mark`` is the file's ``mark_price`` when known, else the open of the bar holding
  ``T``. Payments of a bar are booked right after its opening fills.
- **Liquidation** (:func:`liquidation_price`): the position is liquidated when its margin
  balance (margin + unrealised P&L) falls to the maintenance margin of Binance's first leverage
  bracket (``notional x maint_margin_rate - maint_amount``; the first bracket's ``cum`` is 0).
  Checked on each bar after its opening fills, on the bar's low (long) / high (short) -- the
  last price, not the mark price; a bar opening beyond the level liquidates at its open. The
  whole isolated margin is lost (Binance's insurance fund takes what is left): the trade's
  exit price is the liquidation price (or the gapped open), and the remaining margin balance is
  booked as a ``liquidation_fee``. ``exit_reason`` ``liquidation``.

>>> round(liquidation_price("long", qty=1.0, entry=100.0, margin=10.0, mmr=0.004), 6)   # (100-10)/(1-0.004)
90.361446
>>> round(liquidation_price("short", qty=1.0, entry=100.0, margin=10.0, mmr=0.004), 6)  # (100+10)/(1+0.004)
109.561753
>>> funding_payment("short", qty=2.0, mark=100.0, rate=0.0001)      # a short receives a positive rate
-0.02
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from S1.datasets import Dataset
from S1.errors import UserError

MARKETS = ("spot", "usdm")

#: Binance's first leverage bracket per symbol (``GET /fapi/v1/leverageBracket``: ``maintMarginRatio``,
#: ``cum`` = 0 in the first bracket), as published for the main contracts; others: 1 %. Override with
#: ``maint_margin_rate`` (``--maint-margin-rate``) when the exchange says otherwise.
FIRST_BRACKET_MMR = {"BTCUSDT": 0.004, "ETHUSDT": 0.005, "BTCUSDC": 0.004, "ETHUSDC": 0.005}
DEFAULT_MMR = 0.01


def first_bracket_mmr(symbol: str | None) -> float:
    """The maintenance margin rate of ``symbol``'s first bracket (:data:`FIRST_BRACKET_MMR`)."""
    return FIRST_BRACKET_MMR.get((symbol or "").upper(), DEFAULT_MMR)


@dataclass(frozen=True)
class FuturesSpec:
    """A USD-M run: leverage, the first bracket's maintenance margin, the funding history
    (``funding_times`` ns UTC, ``funding_rates``, ``funding_marks`` -- NaN: unknown)."""

    leverage: float = 1.0
    maint_margin_rate: float = DEFAULT_MMR
    maint_amount: float = 0.0
    funding_times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    funding_rates: np.ndarray = field(default_factory=lambda: np.empty(0))
    funding_marks: np.ndarray = field(default_factory=lambda: np.empty(0))
    liquidation: bool = True

    def __post_init__(self):
        if not (math.isfinite(self.leverage) and 1 <= self.leverage <= 125):
            raise UserError(f"leverage must be from 1 to 125, got {self.leverage!r}", "e.g. --leverage 3")
        if not 0 <= self.maint_margin_rate < 1:
            raise UserError(f"maint_margin_rate must be in [0, 1), got {self.maint_margin_rate!r}",
                            "Binance's first bracket is e.g. 0.004 for BTCUSDT")
        if not (len(self.funding_times) == len(self.funding_rates) == len(self.funding_marks)):
            raise ValueError("funding times, rates and marks must have the same length")

    @classmethod
    def for_symbol(cls, symbol: str | None, *, leverage: float = 1.0, funding: pd.DataFrame | None = None,
                   maint_margin_rate: float | None = None, liquidation: bool = True) -> FuturesSpec:
        """The spec of ``symbol`` (its first bracket) with ``funding`` (an S1 funding frame:
        index ``funding_time`` UTC, ``funding_rate``, ``mark_price``; None: no funding)."""
        t, r, m = _funding_arrays(funding)
        mmr = first_bracket_mmr(symbol) if maint_margin_rate is None else float(maint_margin_rate)
        return cls(float(leverage), mmr, 0.0, t, r, m, bool(liquidation))

    def funding_between(self, start_ns: int, end_ns: int) -> np.ndarray:
        """Indices of the funding times in ``[start_ns, end_ns)``."""
        a, b = np.searchsorted(self.funding_times, [start_ns, end_ns], side="left")
        return np.arange(a, b)


def _funding_arrays(funding: pd.DataFrame | None):
    if funding is None or len(funding) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    if "funding_rate" not in funding.columns:
        raise UserError("the funding frame has no funding_rate column", "make it with python S1/funding.py")
    idx = pd.DatetimeIndex(funding.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    order = np.argsort(idx.as_unit("ns").asi8, kind="stable")
    t = idx.as_unit("ns").asi8[order].astype(np.int64)
    r = funding["funding_rate"].to_numpy(np.float64)[order]
    m = (funding["mark_price"].to_numpy(np.float64)[order] if "mark_price" in funding.columns
         else np.full(len(t), np.nan))
    return t, r, m


def load_funding(symbol: str, start, end) -> pd.DataFrame:
    """``data/<symbol>_funding.parquet`` (``python S1/funding.py``), checked to cover
    ``[start, end]``; a one-line UserError otherwise."""
    from S1.datasets import funding_path, read_parquet

    path = funding_path(symbol)
    fix = f"python S1/funding.py --symbol {symbol.upper()} --days {max(1, (pd.Timestamp(end) - pd.Timestamp(start)).days + 2)}"
    if not path.exists():
        raise UserError(f"no funding history for {symbol.upper()} ({path})", f"download it: {fix} (or --no-funding)")
    df = read_parquet(path)
    if len(df) == 0:
        raise UserError(f"{path} holds no funding", f"download it: {fix}")
    idx = pd.DatetimeIndex(df.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    first, last = idx.min(), idx.max()
    if first > pd.Timestamp(start) + pd.Timedelta(hours=8) or last < pd.Timestamp(end) - pd.Timedelta(hours=9):
        raise UserError(f"{path} covers {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M}, not the backtest's "
                        f"{pd.Timestamp(start):%Y-%m-%d} .. {pd.Timestamp(end):%Y-%m-%d}", f"extend it: {fix}")
    return df


def side_sign(side: str) -> float:
    return -1.0 if side == "short" else 1.0


def funding_payment(side: str, *, qty: float, mark: float, rate: float) -> float:
    """What the position pays at one funding (negative: it receives): ``sign x qty x mark x rate``."""
    return side_sign(side) * qty * mark * rate


def liquidation_price(side: str, *, qty: float, entry: float, margin: float, mmr: float, cum: float = 0.0) -> float:
    """The price at which ``margin + unrealised P&L == qty x price x mmr - cum`` (isolated).

    long: ``(qty x entry - margin - cum) / (qty x (1 - mmr))``;
    short: ``(qty x entry + margin + cum) / (qty x (1 + mmr))``.
    """
    if side == "short":
        return (qty * entry + margin + cum) / (qty * (1.0 + mmr))
    return (qty * entry - margin - cum) / (qty * (1.0 - mmr))




def decided_kwargs(dataset: Dataset, frame: pd.DataFrame, *, market: str = "spot",
                   leverage: float = 1.0, funding: bool = True, maint_margin_rate: float | None = None,
                   detail: str | None = None) -> dict:
    """The ``market`` / ``futures`` / ``detail`` arguments of :func:`S5.engine.run_decided` from
    the command-line choices (``S5/backtest.py --market usdm --leverage N [--no-funding]
    [--detail 1m]``): the funding history is read from ``data/<symbol>_funding.parquet``."""
    if market not in MARKETS:
        raise UserError(f"unknown market {market!r}", f"use one of {', '.join(MARKETS)}")
    out: dict = {"market": market}
    if market == "usdm":
        fr = load_funding(dataset.symbol, frame.index[0], frame.index[-1]) if funding else None
        out["futures"] = FuturesSpec.for_symbol(dataset.symbol, leverage=leverage, funding=fr,
                                                maint_margin_rate=maint_margin_rate)
    elif leverage != 1.0:
        raise UserError("--leverage needs --market usdm", "spot trading has no leverage: add --market usdm")
    if detail:
        from S5.detail import Detail

        out["detail"] = Detail.load(dataset, detail)
    return out


__all__ = ["DEFAULT_MMR", "FIRST_BRACKET_MMR", "MARKETS", "FuturesSpec", "decided_kwargs", "first_bracket_mmr",
           "funding_payment", "liquidation_price", "load_funding", "side_sign"]
