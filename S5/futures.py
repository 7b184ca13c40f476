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
- **Liquidation** (:meth:`BracketTable.liquidation_price`, Binance's isolated rule): the position
  is liquidated when its margin balance (margin + unrealised P&L) falls to the maintenance margin
  ``notional x maintMarginRatio - cum`` of the leverage bracket holding the notional (at that
  price). The brackets are THE one lookup of S5 and S7 (:func:`resolve_brackets`):
  ``--maint-margin-rate`` when given, else the exchange's ``GET /fapi/v1/leverageBracket`` answer
  cached by an S7 USD-M testnet session (``data/<symbol>_leverage_brackets.json``, its date in the
  origin), else the built-in first bracket (:data:`FIRST_BRACKET_MMR`, ``cum`` 0) with one
  ``note:`` line; the origin is recorded in the backtest's params (``maint_margin_origin``).
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

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from S1.datasets import Dataset
from S1.errors import UserError

log = logging.getLogger(__name__)

MARKETS = ("spot", "usdm")

# ----------------------------------------------------------------- leverage brackets
#: Binance's first leverage bracket per symbol (``GET /fapi/v1/leverageBracket``: ``maintMarginRatio``,
#: ``cum`` = 0 in the first bracket), as published for the main contracts; others: 1 %. Used only when no
#: cached ``leverageBracket`` answer exists (:func:`lookup_brackets`); ``--maint-margin-rate`` overrides both.
FIRST_BRACKET_MMR = {"BTCUSDT": 0.004, "ETHUSDT": 0.005, "BTCUSDC": 0.004, "ETHUSDC": 0.005}
DEFAULT_MMR = 0.01
BUILTIN_ORIGIN = "built-in table (S5.futures.FIRST_BRACKET_MMR)"


def first_bracket_mmr(symbol: str | None) -> float:
    """The maintenance margin rate of ``symbol``'s first bracket (:data:`FIRST_BRACKET_MMR`)."""
    return FIRST_BRACKET_MMR.get((symbol or "").upper(), DEFAULT_MMR)


@dataclass(frozen=True)
class Bracket:
    """One notional bracket of ``GET /fapi/v1/leverageBracket``: for a position notional in
    ``(floor, cap]`` the maintenance margin is ``notional x mmr - cum`` (``cap`` None: no bound)."""

    mmr: float
    cum: float = 0.0
    floor: float = 0.0
    cap: float | None = None
    max_leverage: int | None = None
    number: int = 1

    def __post_init__(self):
        if not 0 <= self.mmr < 1:
            raise UserError(f"maintenance margin rate must be in [0, 1), got {self.mmr!r}",
                            "Binance's first bracket is e.g. 0.004 for BTCUSDT")
        if not (math.isfinite(self.cum) and self.cum >= 0):
            raise UserError(f"maintenance amount (cum) must be >= 0, got {self.cum!r}", "check the bracket")


@dataclass(frozen=True)
class BracketTable:
    """A symbol's leverage brackets (ascending) and where they came from (``origin``).

    ``mmr`` / ``cum`` / ``max_leverage``: the first bracket's (what a session checks ``--leverage``
    against). :meth:`liquidation_price` is Binance's isolated rule with the bracket of the position
    notional *at the liquidation price* (as Binance's own calculator does).

    >>> t = brackets_from_rows("BTCUSDT", [
    ...     {"bracket": 1, "initialLeverage": 125, "notionalFloor": 0, "notionalCap": 50000, "maintMarginRatio": 0.004, "cum": 0},
    ...     {"bracket": 2, "initialLeverage": 100, "notionalFloor": 50000, "notionalCap": 600000, "maintMarginRatio": 0.005, "cum": 50}],
    ...     origin="example")
    >>> t.maintenance(100_000)            # (rate, amount): maintenance margin 100000 x 0.005 - 50 = 450
    (0.005, 50.0)
    >>> round(t.liquidation_price("long", qty=1.0, entry=100_000.0, margin=10_000.0), 4)   # (100000-10000-50)/(1-0.005)
    90402.0101
    """

    symbol: str
    brackets: tuple[Bracket, ...]
    origin: str

    def __post_init__(self):
        if not self.brackets:
            raise UserError(f"no leverage brackets for {self.symbol}", "check the leverageBracket answer")
        object.__setattr__(self, "brackets", tuple(sorted(self.brackets, key=lambda b: b.floor)))

    @property
    def first(self) -> Bracket:
        return self.brackets[0]

    @property
    def mmr(self) -> float:
        return self.first.mmr

    @property
    def cum(self) -> float:
        return self.first.cum

    @property
    def max_leverage(self) -> int | None:
        return self.first.max_leverage

    def for_notional(self, notional: float) -> Bracket:
        """The bracket holding a position notional (beyond the last cap: the last bracket)."""
        for b in self.brackets:
            if b.cap is None or notional <= b.cap:
                return b
        return self.brackets[-1]

    def maintenance(self, notional: float) -> tuple[float, float]:
        """``(maintMarginRatio, cum)`` for a position notional: maintenance margin = ``notional x rate - cum``."""
        b = self.for_notional(notional)
        return b.mmr, b.cum

    def liquidation_price(self, side: str, *, qty: float, entry: float, margin: float) -> float:
        """Binance's isolated liquidation price: the price ``P`` at which ``margin + unrealised P&L ==
        qty x P x mmr - cum`` with the bracket holding the notional ``qty x P`` (one solution: the
        maintenance margin is continuous across brackets through ``cum``)."""
        if len(self.brackets) == 1:
            return liquidation_price(side, qty=qty, entry=entry, margin=margin, mmr=self.first.mmr, cum=self.first.cum)
        for k, b in enumerate(self.brackets):
            p = liquidation_price(side, qty=qty, entry=entry, margin=margin, mmr=b.mmr, cum=b.cum)
            n = qty * p
            if (b.cap is None or n <= b.cap) and (k == 0 or n >= b.floor):
                return p
        b = self.for_notional(qty * entry)      # a table whose cum is not continuous: the entry's bracket
        return liquidation_price(side, qty=qty, entry=entry, margin=margin, mmr=b.mmr, cum=b.cum)

    def check_leverage(self, leverage: float) -> None:
        """One line when ``leverage`` is above the first bracket's ``initialLeverage``."""
        top = self.max_leverage
        if top is not None and leverage > top:
            raise UserError(f"--leverage {leverage:g} is above {self.symbol}'s first bracket ({top}x)",
                            f"use --leverage {top} or less")

    def rows(self) -> list[dict]:
        """The brackets in ``leverageBracket``'s shape (for a cache or a file)."""
        return [{"bracket": b.number, "initialLeverage": b.max_leverage, "notionalFloor": b.floor,
                 "notionalCap": b.cap, "maintMarginRatio": b.mmr, "cum": b.cum} for b in self.brackets]

    def describe(self) -> str:
        """``maintenance margin 0.004 (cum 0) from <origin>``."""
        more = f", {len(self.brackets)} brackets" if len(self.brackets) > 1 else ""
        return f"maintenance margin {self.mmr:g} (cum {self.cum:g}{more}) from {self.origin}"


def builtin_brackets(symbol: str) -> BracketTable:
    """``symbol``'s first bracket from :data:`FIRST_BRACKET_MMR` (``cum`` 0, no cap)."""
    sym = (symbol or "").upper()
    origin = BUILTIN_ORIGIN if sym in FIRST_BRACKET_MMR else BUILTIN_ORIGIN.replace(")", " default)")
    return BracketTable(sym, (Bracket(first_bracket_mmr(sym)),), origin)


def override_brackets(symbol: str, maint_margin_rate: float, maint_amount: float = 0.0) -> BracketTable:
    """One bracket from an explicit rate (``--maint-margin-rate``)."""
    rate = float(maint_margin_rate)
    return BracketTable((symbol or "").upper(), (Bracket(rate, float(maint_amount)),),
                        f"--maint-margin-rate {rate:g} (explicit)")


def brackets_from_rows(symbol: str, rows: list[dict], *, origin: str) -> BracketTable:
    """A table from ``leverageBracket``'s ``brackets`` list (``maintMarginRatio``, ``cum``,
    ``notionalFloor``, ``notionalCap``, ``initialLeverage``, ``bracket``)."""
    def num(r, key):
        return float(r[key]) if r.get(key) is not None else None

    out = [Bracket(float(r["maintMarginRatio"]), float(r.get("cum") or 0.0), num(r, "notionalFloor") or 0.0,
                   num(r, "notionalCap"),
                   int(r["initialLeverage"]) if r.get("initialLeverage") is not None else None,
                   int(r.get("bracket") or k + 1)) for k, r in enumerate(rows)]
    return BracketTable((symbol or "").upper(), tuple(out), origin)


def read_brackets_file(path: str | Path, symbol: str | None = None) -> BracketTable:
    """A cache file (:func:`save_brackets`); ``origin`` names it and its ``fetched_at`` date.
    ValueError / KeyError / TypeError / OSError when unreadable."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    sym = symbol or data.get("symbol") or ""
    if data.get("symbol") and symbol and str(data["symbol"]).upper() != symbol.upper():
        raise ValueError(f"it holds {data['symbol']}, not {symbol.upper()}")
    origin = data.get("origin") or f"cached leverageBracket of {data.get('fetched_at', '?')} ({path})"
    return brackets_from_rows(sym, data["brackets"], origin=origin)


def save_brackets(symbol: str, rows: list[dict], *, source: str, path: str | Path | None = None,
                  origin: str | None = None) -> Path:
    """Cache a ``leverageBracket`` answer: ``data/<symbol>_leverage_brackets.json``
    (:func:`S1.datasets.leverage_brackets_path`; atomic) with its source and UTC date (``path``:
    elsewhere; ``origin``: kept as the table's origin when read back, e.g. the parity check's copy)."""
    from S1.datasets import atomic_write_text, leverage_brackets_path

    path = Path(path) if path is not None else leverage_brackets_path(symbol)
    body = {"symbol": symbol.upper(), "source": source, "fetched_at": pd.Timestamp.now(tz="UTC").isoformat(),
            "brackets": rows}
    if origin is not None:
        body["origin"] = origin
    atomic_write_text(path, json.dumps(body, indent=1))
    return path


def cached_brackets(symbol: str) -> BracketTable | None:
    """The cached ``leverageBracket`` answer of ``symbol`` (an S7 USD-M testnet session stores it), if usable."""
    from S1.datasets import leverage_brackets_path

    path = leverage_brackets_path(symbol)
    if not path.exists():
        return None
    try:
        return read_brackets_file(path, symbol)
    except (ValueError, KeyError, IndexError, TypeError, OSError, UserError) as exc:
        log.warning("leverage bracket cache %s not usable (%s)", path, exc)
        return None


def lookup_brackets(symbol: str, *, why: str | None = None) -> BracketTable:
    """THE maintenance-margin lookup of S5 and S7: ``symbol``'s cached ``leverageBracket`` answer
    (``data/<symbol>_leverage_brackets.json``), else :func:`builtin_brackets` with one printed
    ``note:`` line (``why``: the reason given there, default: no cache)."""
    cached = cached_brackets(symbol)
    if cached is not None:
        return cached
    from S1.datasets import leverage_brackets_path

    table = builtin_brackets(symbol)
    why = why or (f"no cached leverage brackets ({leverage_brackets_path(symbol)}; an S7 USD-M testnet "
                   "session stores them)")
    print(f"note: {why}: liquidation uses the {table.origin} maintenance margin rate {table.mmr:g} "
          f"for {table.symbol}", flush=True)
    return table


def resolve_brackets(symbol: str, maint_margin_rate: float | None = None) -> BracketTable:
    """``--maint-margin-rate`` when given (:func:`override_brackets`), else :func:`lookup_brackets`."""
    if maint_margin_rate is not None:
        return override_brackets(symbol, maint_margin_rate)
    return lookup_brackets(symbol)


@dataclass(frozen=True)
class FuturesSpec:
    """A USD-M run: leverage, the maintenance margin (``brackets``: a :class:`BracketTable`;
    ``maint_margin_rate`` / ``maint_amount`` are its first bracket's -- without ``brackets``, one
    bracket is made of them), the funding history (``funding_times`` ns UTC, ``funding_rates``,
    ``funding_marks`` -- NaN: unknown)."""

    leverage: float = 1.0
    maint_margin_rate: float = DEFAULT_MMR
    maint_amount: float = 0.0
    funding_times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    funding_rates: np.ndarray = field(default_factory=lambda: np.empty(0))
    funding_marks: np.ndarray = field(default_factory=lambda: np.empty(0))
    liquidation: bool = True
    brackets: BracketTable | None = None
    _memo: list = field(default_factory=lambda: [None, None], compare=False, repr=False)

    def __post_init__(self):
        if not (math.isfinite(self.leverage) and 1 <= self.leverage <= 125):
            raise UserError(f"leverage must be from 1 to 125, got {self.leverage!r}", "e.g. --leverage 3")
        if not 0 <= self.maint_margin_rate < 1:
            raise UserError(f"maint_margin_rate must be in [0, 1), got {self.maint_margin_rate!r}",
                            "Binance's first bracket is e.g. 0.004 for BTCUSDT")
        if not (len(self.funding_times) == len(self.funding_rates) == len(self.funding_marks)):
            raise ValueError("funding times, rates and marks must have the same length")
        if self.brackets is None:
            object.__setattr__(self, "brackets", BracketTable(
                "", (Bracket(float(self.maint_margin_rate), float(self.maint_amount)),),
                f"maint_margin_rate {self.maint_margin_rate:g}, cum {self.maint_amount:g}"))
        else:
            object.__setattr__(self, "maint_margin_rate", self.brackets.mmr)
            object.__setattr__(self, "maint_amount", self.brackets.cum)

    @classmethod
    def for_symbol(cls, symbol: str | None, *, leverage: float = 1.0, funding: pd.DataFrame | None = None,
                   maint_margin_rate: float | None = None, brackets: BracketTable | None = None,
                   liquidation: bool = True) -> FuturesSpec:
        """The spec of ``symbol`` with ``funding`` (an S1 funding frame: index ``funding_time`` UTC,
        ``funding_rate``, ``mark_price``; None: no funding) and its maintenance margin:
        ``maint_margin_rate`` (an explicit override), else ``brackets`` (:func:`lookup_brackets`),
        else :func:`builtin_brackets` (no file read here)."""
        t, r, m = _funding_arrays(funding)
        if maint_margin_rate is not None:
            brackets = override_brackets(symbol or "", maint_margin_rate)
        elif brackets is None:
            brackets = builtin_brackets(symbol or "")
        return cls(float(leverage), brackets.mmr, brackets.cum, t, r, m, bool(liquidation), brackets)

    @property
    def maint_origin(self) -> str:
        """Where the maintenance margin came from (the exchange's cache and its date, the built-in table, ...)."""
        return self.brackets.origin

    def liquidation_price(self, side: str, *, qty: float, entry: float, margin: float) -> float:
        """:meth:`BracketTable.liquidation_price` (remembered for the open position)."""
        key = (side, qty, entry, margin)
        if self._memo[0] != key:
            self._memo[:] = [key, self.brackets.liquidation_price(side, qty=qty, entry=entry, margin=margin)]
        return self._memo[1]

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
    [--maint-margin-rate R] [--detail 1m]``): the funding history is read from
    ``data/<symbol>_funding.parquet``, the maintenance margin from :func:`resolve_brackets` (the
    explicit rate, else the cached ``leverageBracket`` answer, else the built-in table with one note)."""
    if market not in MARKETS:
        raise UserError(f"unknown market {market!r}", f"use one of {', '.join(MARKETS)}")
    out: dict = {"market": market}
    if market == "usdm":
        fr = load_funding(dataset.symbol, frame.index[0], frame.index[-1]) if funding else None
        table = resolve_brackets(dataset.symbol, maint_margin_rate)
        table.check_leverage(leverage)
        out["futures"] = FuturesSpec.for_symbol(dataset.symbol, leverage=leverage, funding=fr, brackets=table)
    elif leverage != 1.0:
        raise UserError("--leverage needs --market usdm", "spot trading has no leverage: add --market usdm")
    if detail:
        from S5.detail import Detail

        out["detail"] = Detail.load(dataset, detail)
    return out


__all__ = ["BUILTIN_ORIGIN", "DEFAULT_MMR", "FIRST_BRACKET_MMR", "MARKETS", "Bracket", "BracketTable", "FuturesSpec",
           "brackets_from_rows", "builtin_brackets", "cached_brackets", "decided_kwargs", "first_bracket_mmr",
           "funding_payment", "liquidation_price", "load_funding", "lookup_brackets", "override_brackets",
           "read_brackets_file", "resolve_brackets", "save_brackets", "side_sign"]
