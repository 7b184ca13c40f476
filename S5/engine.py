"""The backtest engine: a vectorbt portfolio from decided signals, executed at the next open.

Two layers (vectorbt style):

- :func:`simulate` -- arrays in, arrays out, one column or thousands at once
  (``entries``/``exits`` of shape ``(n,)`` or ``(n, m)``). It builds the execution
  timeline, calls ``vbt.Portfolio.from_signals`` once and returns equity, positions
  and closed trades per column (:class:`Simulation`).
- :func:`run_backtest` -- the pandas wrapper used by ``S5/backtest.py``, the optimiser,
  S7 and the notebooks: a signals frame in, a :class:`BacktestResult` out (equity
  Series, the trades frame of the S6 contract, metrics). The S6 hooks are explicit
  arguments: ``size`` (fraction of equity per entry, an array, or a callable fed with
  a first pass -- Kelly), ``sl_stop`` / ``tp_stop`` (fractions of the fill price per
  decision bar) and ``kill_switch`` (an S6 ``KillSwitchConfig``); ``risk=RiskConfig``
  builds all of them from ``S6/risk.yaml`` (see :mod:`S5.hooks`).

Execution model (the tests check each point by hand):

- A signal decided on the **closed** bar t fills at bar t+1's **open**; buys pay
  ``open * (1 + slippage)``, sells get ``open * (1 - slippage)``; the fee is
  ``fees x notional`` on each side. Entries spend ``size`` of the cash, fees included
  (``size=1``: all in). Long only, one position at a time.
- Equity is valued at each bar's close. The open position is closed at the last
  bar's close (slippage and fee paid) so every trade in the file is closed; an entry
  that would fill on the last bar is skipped.
- Stops (when given): a stop-loss / take-profit at ``fill x (1 -/+ stop)`` is live
  from the fill onwards, **including the rest of the entry bar**; a bar opening
  beyond the level fills at its open (gap), otherwise at the level (stop-market:
  slippage applies); when both levels sit inside one bar the stop-loss is assumed
  first (conservative). A signal exit at an open has priority over a stop inside
  that bar. To get these semantics out of vectorbt each bar becomes two rows when
  stops are on: an "open" row (open = high = low = close = the bar's open, where
  signals fill) and a "rest of bar" row (the real high, low, close).
- Time: ``interval`` gives the explicit bar length (``S1.intervals.pandas_freq``);
  annualisation uses 365 days (:mod:`S5.metrics`).

vectorbt 1.2 declares its ``simulate_from_signals_nb`` kernel without numba's
``cache=True``, so every new process re-compiled it (~10-20 s). :func:`enable_numba_cache`
registers a cached twin of the same Python function (same code, compiled once per
machine, stored beside vectorbt or under ``NUMBA_CACHE_DIR``).

>>> import pandas as pd
>>> t = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
>>> f = pd.DataFrame({"open": [100.0, 100, 110, 120], "high": [101.0, 111, 121, 121],
...                   "low": [99.0, 99, 109, 119], "close": [100.0, 110, 120, 120],
...                   "entry": [True, False, False, False], "exit": [False, True, False, False]}, index=t)
>>> res = run_backtest(f, interval="1h", costs=Costs(fees=0.0, slippage=0.0), init_cash=1000.0)
>>> res.trades[["entry_price", "exit_price", "size", "pnl"]].round(6).values.tolist()   # decided at 0, filled at 1
[[100.0, 110.0, 10.0, 100.0]]
>>> res.equity.tolist()
[1000.0, 1100.0, 1100.0, 1100.0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError
from S5 import metrics as M
from S5.bars import PRICE_COLUMNS, Bars, bars_per_year  # noqa: F401  (part of the engine's API)
from S5.costs import Costs
from S5.kernels import equity_from_orders_nb

TRADE_COLUMNS = ("entry_time", "exit_time", "side", "size", "entry_price", "exit_price", "fees", "pnl", "return")

_TWIN = None


# ------------------------------------------------------------------------- vectorbt
def enable_numba_cache() -> bool:
    """Swap vectorbt's uncached ``simulate_from_signals_nb`` for a ``cache=True`` twin
    (identical code). Idempotent; returns True when it patched now."""
    global _TWIN
    import numba
    import vectorbt.portfolio.nb as pnb

    if _TWIN is not None and pnb.simulate_from_signals_nb is _TWIN:
        return False
    original = pnb.simulate_from_signals_nb
    py_func = getattr(original, "py_func", None)
    if py_func is None:  # a future vectorbt may change this; then leave it alone
        return False
    if type(getattr(original, "_cache", None)).__name__ not in ("NullCache", "NoneType"):
        _TWIN = original  # a later vectorbt caches it already
        return False
    _TWIN = numba.njit(cache=True)(py_func)
    pnb.simulate_from_signals_nb = _TWIN
    return True


def vbt():
    """vectorbt, imported on first use, with :func:`enable_numba_cache` applied."""
    import vectorbt

    enable_numba_cache()
    return vectorbt


# ----------------------------------------------------------------------------- input
@dataclass
class Simulation:
    """Array result of :func:`simulate` (``m`` columns; ``n`` bars).

    ``trades`` is a dict of arrays over closed trades (all columns): ``col``,
    ``entry_bar``, ``exit_bar``, ``size``, ``entry_price``, ``exit_price``,
    ``entry_fees``, ``exit_fees``, ``pnl``, ``return``, ``exit_row_kind``
    (0 signal at an open, 1 inside a bar (stop), 2 end-of-test close).
    ``open_trades`` counts positions left open (only with ``close_at_end=False``).
    """

    equity: np.ndarray          # (n, m) at each bar's close
    in_position: np.ndarray     # (n, m) bool, position open at the bar's close
    trades: dict[str, np.ndarray]
    open_trades: np.ndarray     # (m,)
    portfolio: Any              # the vectorbt Portfolio (on the execution rows)
    rows_per_bar: int           # 1, or 2 when stops split each bar
    init_cash: float
    close_at_end: bool
    order_stats: dict[str, np.ndarray] | None = None   # exchange filters: skipped / rounded orders per column

    @property
    def n_cols(self) -> int:
        return self.equity.shape[1]


def _as_2d_signal(a, n: int, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "biuf":
            raise UserError(f"{name} must be booleans, got dtype {arr.dtype}", f"pass {name} as a bool array")
        arr = np.nan_to_num(arr.astype(np.float64)) != 0
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise UserError(f"{name} has shape {np.shape(a)} but there are {n} bars",
                        f"pass one {name} value per bar (or an (n, m) array for m combinations)")
    return arr


def _as_2d_param(a, n: int, m: int, name: str, *, default: float) -> np.ndarray:
    """A per-decision-bar parameter as an (n, 1) or (n, m) float array."""
    if a is None:
        return np.full((n, 1), default)
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return np.full((n, 1), float(arr))
    if arr.ndim == 1:
        if arr.shape[0] == n:
            return arr[:, None]
        if arr.shape[0] == m:
            return np.broadcast_to(arr[None, :], (n, m))
    if arr.ndim == 2 and arr.shape[0] == n and arr.shape[1] in (1, m):
        return arr
    raise UserError(f"{name} has shape {arr.shape}; expected a number, ({n},), ({m},) or ({n}, {m})",
                    f"pass {name} per bar or per column")


def simulate(bars: Bars, entries, exits, *, costs: Costs = Costs(), init_cash: float = 10_000.0,
             size=1.0, sl_stop=None, tp_stop=None, close_at_end: bool = True,
             with_index: bool = True, market_exits=None, size_type: str = "percent",
             grid: tuple[float | None, float] | None = None) -> Simulation:
    """Run the portfolio for decided ``entries``/``exits`` (bool, ``(n,)`` or ``(n, m)``).

    ``size``: fraction of cash spent per entry, fees included (scalar, per bar or per
    column; NaN or <= 0 skips the entry; ``size_type="amount"``: the quantity of the base
    asset instead, as :func:`run_decided` passes it). ``sl_stop``/``tp_stop``: fractions of the
    fill price, read at the decision bar (None or NaN: no stop). Every argument
    describes the bar where the signal was **decided**; the engine moves it to the fill.

    ``costs.fee_model`` sets the fee of each fill (see :class:`Costs`); ``market_exits``
    (bool per decision bar, e.g. the kill-switch's flattening) marks exits S7 sends as
    MARKET orders (taker in the ``mixed`` model). ``costs.lot`` (exchange filters):
    vectorbt then counts in lots of the step (prices x step, ``size_granularity=1``, so
    rounding down is exact integer arithmetic and a whole position is always sold
    again), entries below ``min_qty`` / the minimum notional at their fill price are
    refused (``min_size``), ``max_size`` caps them; ``Simulation.order_stats`` counts
    skipped and rounded orders. The order records handed back are in units again.

    Slipped fills at an open (and the end-of-test close) sit on the symbol's tick grid as S7
    fills them (:func:`S5.costs.fill_price`: buys round up, sells down) when a grid is known:
    ``grid=(tick, base)``, else ``costs.lot``'s PRICE_FILTER. Stop fills inside a bar (vectorbt's
    stop-market, the risk-hooks path) are slipped but not moved onto the grid.
    """
    if not isinstance(bars, Bars):
        raise UserError(f"bars must be an S5.engine.Bars, got {type(bars).__name__}",
                        "build it with Bars.from_frame(frame, interval)")
    if not (np.isfinite(init_cash) and init_cash > 0):
        raise UserError(f"init_cash must be positive, got {init_cash!r}", "e.g. --init-cash 10000")
    if size_type not in ("percent", "amount"):
        raise UserError(f"size_type must be 'percent' or 'amount', got {size_type!r}", "use one of the two")
    n = len(bars)
    ent = _as_2d_signal(entries, n, "entries")
    ext = _as_2d_signal(exits, n, "exits")
    m = max(ent.shape[1], ext.shape[1])
    if ent.shape[1] not in (1, m) or ext.shape[1] not in (1, m):
        raise UserError(f"entries ({ent.shape[1]} columns) and exits ({ext.shape[1]}) do not match",
                        "pass the same number of columns")
    sz = _as_2d_param(size, n, m, "size", default=1.0)
    sl = _as_2d_param(sl_stop, n, m, "sl_stop", default=np.nan)
    tp = _as_2d_param(tp_stop, n, m, "tp_stop", default=np.nan)
    for name, a in (("sl_stop", sl), ("tp_stop", tp)):
        if np.any(a[np.isfinite(a)] <= 0):
            raise UserError(f"{name} must be a positive fraction of the fill price", "e.g. 0.02 for 2 %")
    use_stops = bool(np.isfinite(sl).any() or np.isfinite(tp).any())
    k = 2 if use_stops else 1
    rows = k * n + (1 if close_at_end else 0)
    fill_rows = np.arange(n) * k                  # where bar i's open fills happen
    o, h, lo, c = bars.open, bars.high, bars.low, bars.close

    close_v = np.empty(rows)
    price = np.empty(rows)
    open_v, high_v, low_v = np.empty(rows), np.empty(rows), np.empty(rows)
    if use_stops:
        for arr, a_row, b_row in ((close_v, o, c), (price, o, c), (open_v, o, o), (high_v, o, h), (low_v, o, lo)):
            arr[0:2 * n:2] = a_row
            arr[1:2 * n:2] = b_row
    else:
        close_v[:n], price[:n], open_v[:n], high_v[:n], low_v[:n] = c, o, o, h, lo
    if close_at_end:
        close_v[-1] = price[-1] = open_v[-1] = high_v[-1] = low_v[-1] = c[-1]

    def to_rows(a: np.ndarray, fill, dtype) -> np.ndarray:
        out = np.full((rows, a.shape[1]), fill, dtype=dtype)
        out[fill_rows[1:]] = a[:-1]
        return out

    E = to_rows(ent & np.isfinite(sz) & (sz > 0), False, np.bool_)
    X = to_rows(ext, False, np.bool_)
    if close_at_end:
        E[fill_rows[-1]] = False
        X[-1] = True
    if E.shape[1] != m:
        E = np.ascontiguousarray(np.broadcast_to(E, (rows, m)))
    if X.shape[1] != m:
        X = np.ascontiguousarray(np.broadcast_to(X, (rows, m)))
    S = np.ascontiguousarray(to_rows(np.where(np.isfinite(sz), sz, 0.0), 0.0, np.float64))
    SL = np.ascontiguousarray(to_rows(sl, np.nan, np.float64))
    TP = np.ascontiguousarray(to_rows(tp, np.nan, np.float64))
    fees_arg = _fee_rows(costs, E, X, market_exits, to_rows, n)
    lot_kw: dict[str, Any] = {}
    step = 1.0
    limits = None
    tick, base = costs.tick_grid if grid is None else grid
    price_arg: np.ndarray = price
    slip_arg: Any = costs.slippage
    buy_px = price * (1.0 + costs.slippage)
    if tick is not None and costs.slippage > 0:   # slipped fills on the tick grid, as S7 fills (one function)
        buy_px = costs.fill(price, buy=True, grid=(tick, base))
        sell_px = costs.fill(price, buy=False, grid=(tick, base))
        price_arg = np.where(E & ~X, buy_px[:, None], sell_px[:, None])
        slip_arg = 0.0
        if use_stops:   # the rest-of-bar rows: vectorbt's stop-market fills keep their own slippage
            price_arg[1:2 * n:2] = price[1:2 * n:2, None]
            slip_arg = np.zeros((rows, 1))
            slip_arg[1:2 * n:2] = costs.slippage
    if costs.lot is not None:
        limits = costs.lot.entry_limits(market=costs.fee_model == "taker")
        step, min_q, max_q, min_not = limits
        # minimum lots of an entry at each open: minQty, and MIN_NOTIONAL at the entry's fill price
        fill_px = buy_px
        min_lots = np.maximum(1.0, np.maximum(min_q, min_not / fill_px) / step)
        lot_kw = dict(size_granularity=1.0, max_size=max_q / step,
                      min_size=np.ascontiguousarray(np.where(E & ~X, min_lots[:, None], 0.0)))

    v = vbt()
    col2 = lambda a: np.ascontiguousarray((a if a.ndim == 2 else a[:, None]) * step if step != 1.0 else
                                          (a if a.ndim == 2 else a[:, None]))
    close_arg: Any = col2(close_v)
    freq = bars.freq
    if with_index and m == 1:
        close_arg = pd.DataFrame(close_arg, index=_row_index(bars, k, close_at_end), columns=["strategy"])
    if use_stops:
        freq = pd.Timedelta(pd.tseries.frequencies.to_offset("31D" if bars.interval == "1M" else freq)) / 2
    max_orders = int(2 * E.sum() + 2 * m + 8)
    pf = v.Portfolio.from_signals(
        close_arg, E, X, price=col2(price_arg), open=col2(open_v), high=col2(high_v), low=col2(low_v),
        size=S / step if size_type == "amount" and step != 1.0 else S, size_type=size_type, direction="longonly", accumulate=False,
        fees=fees_arg, slippage=slip_arg, init_cash=float(init_cash),
        sl_stop=SL, tp_stop=TP, use_stops=use_stops, stop_entry_price="fillprice",
        stop_exit_price="stopmarket", upon_stop_exit="close", upon_long_conflict="exit",
        max_orders=max_orders, freq=freq, **lot_kw)
    # -- equity and positions at each bar's close, replayed from the order records -------
    orders = pf.orders.values
    orders = orders[np.lexsort((orders["idx"], orders["col"]))]
    if step != 1.0:  # lots -> units of the base asset
        orders = orders.copy()
        orders["size"] *= step
        orders["price"] /= step
    bar_rows = fill_rows + (k - 1)
    if close_at_end:
        bar_rows = bar_rows.copy()
        bar_rows[-1] = rows - 1
    eq_t, held_t = equity_from_orders_nb(orders["col"], orders["idx"], orders["size"], orders["price"],
                                         orders["fees"], orders["side"], close_v, bar_rows.astype(np.int64),
                                         float(init_cash), m)
    equity, held = eq_t.T, held_t.T      # (n, m), column-major: the metrics reduce along bars
    # -- trades: long only, all in / all out, so each buy pairs with the next sell --------
    trades, open_counts = trades_from_orders(orders, m)
    row_to_bar = np.minimum(np.arange(rows) // k, n - 1)
    exit_row = trades.pop("exit_row")
    kind = (exit_row % k == 1).astype(np.int64) if k == 2 else np.zeros(len(exit_row), dtype=np.int64)
    if close_at_end:
        kind[exit_row == rows - 1] = 2
    trades["entry_bar"] = row_to_bar[trades.pop("entry_row")]
    trades["exit_bar"] = row_to_bar[exit_row]
    trades["exit_row_kind"] = kind
    stats = None
    if limits is not None:
        stats = _order_stats(orders, E, X, S, fees_arg, held, equity, fill_rows, buy_px[fill_rows], k,
                             float(init_cash), limits)
    return Simulation(equity, held, trades, open_counts, pf, k, float(init_cash), close_at_end, stats)


def _fee_rows(costs: Costs, E: np.ndarray, X: np.ndarray, market_exits, to_rows, n: int):
    """The fee rate of each execution row: a number when every fill pays the same, else
    maker where a LIMIT order is due at an open (an entry, or a signal exit not in
    ``market_exits``) and taker elsewhere (stops, MARKET exits, the end-of-test row)."""
    rate = costs.single_rate
    if rate is not None:
        return rate
    limit = E & ~X
    if market_exits is None:
        limit |= X
    else:
        mx = to_rows(_as_2d_signal(market_exits, n, "market_exits"), False, np.bool_)
        limit |= X & ~mx
    limit[-1] = False  # the end-of-test close (or, without it, nothing fills there)
    return np.ascontiguousarray(np.where(limit, costs.maker_rate, costs.taker_rate))


ORDER_STATS = ("entries_skipped", "entries_skipped_min_qty", "entries_skipped_min_notional", "entries_rounded",
               "exits_below_min_notional")


def _order_stats(orders, E, X, S, fees, held, equity, fill_rows, fill_price, k, init_cash, limits
                 ) -> dict[str, np.ndarray]:
    """Per column: entries refused by the filters (an entry due while flat that produced no
    buy; the reason is recomputed from the quantity it would have had), entries whose
    quantity was rounded down, and sells whose notional is below the minimum (the
    backtest still sells -- S7 would hold the position)."""
    step, min_q, max_q, min_not = limits
    n, m = held.shape
    ef, xf = E[fill_rows], X[fill_rows]
    held_prev = np.zeros((n, m), dtype=bool)
    held_prev[1:] = held[:-1]
    attempt = ef & ~xf & ~held_prev
    buy = orders["side"] == 0
    bcol, bbar = orders["col"][buy].astype(np.int64), (orders["idx"][buy] // k).astype(np.int64)
    bought = np.zeros((n, m), dtype=bool)
    bought[bbar, bcol] = True
    si, sc = np.nonzero(attempt & ~bought)

    def raw_qty(bars_, cols_):
        cash = np.where(bars_ == 0, init_cash, equity[np.maximum(bars_ - 1, 0), cols_])  # flat: equity = cash
        rows = fill_rows[bars_]
        frac = S[rows, cols_ if S.shape[1] > 1 else 0]
        fee = fees if np.ndim(fees) == 0 else fees[rows, cols_ if fees.shape[1] > 1 else 0]
        return frac * cash / ((1.0 + fee) * fill_price[bars_])

    q = np.minimum(np.floor(raw_qty(si, sc) / step) * step, max_q)
    by_qty = (q <= 0) | (q < min_q * (1 - 1e-9))
    by_notional = ~by_qty & (q * fill_price[si] < min_not * (1 + 1e-9))
    rounded = raw_qty(bbar, bcol) - orders["size"][buy] > 1e-9 * orders["size"][buy]
    sell = ~buy
    low_exit = orders["size"][sell] * orders["price"][sell] < min_not
    count = lambda cols, mask: np.bincount(cols[mask], minlength=m)[:m].astype(np.int64)
    return {"entries_skipped": np.bincount(sc, minlength=m)[:m].astype(np.int64),
            "entries_skipped_min_qty": count(sc, by_qty), "entries_skipped_min_notional": count(sc, by_notional),
            "entries_rounded": count(bcol, rounded),
            "exits_below_min_notional": count(orders["col"][sell].astype(np.int64), low_exit)}


def trades_from_orders(orders: np.ndarray, n_cols: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Closed round trips from vectorbt order records sorted by (column, row): each buy
    and the sell after it in the same column (the engine never adds to a position).
    pnl and return follow vectorbt's trade records: ``pnl = size x (exit - entry) -
    fees``, ``return = pnl / (size x entry)``. Also returns the open trades per column."""
    col, side = orders["col"], orders["side"]
    buy = side == 0
    same_next = np.r_[col[1:] == col[:-1], False]
    sell_next = np.r_[~buy[1:], False]
    entry = np.flatnonzero(buy & same_next & sell_next)
    exit_ = entry + 1
    if int((~buy).sum()) != len(entry):  # every sell closes the buy before it
        raise RuntimeError("unexpected order sequence")  # pragma: no cover - guarded by the engine's settings
    size = orders["size"][entry]
    if not np.allclose(size, orders["size"][exit_], rtol=1e-9, atol=0):
        raise RuntimeError("a sell did not close the whole position")  # pragma: no cover
    ep, xp = orders["price"][entry], orders["price"][exit_]
    ef, xf = orders["fees"][entry], orders["fees"][exit_]
    pnl = size * (xp - ep) - ef - xf
    open_counts = np.bincount(col[buy & ~(same_next & sell_next)], minlength=n_cols)[:n_cols]
    return ({"col": col[entry].astype(np.int64), "entry_row": orders["idx"][entry].astype(np.int64),
             "exit_row": orders["idx"][exit_].astype(np.int64), "size": size, "entry_price": ep, "exit_price": xp,
             "entry_fees": ef, "exit_fees": xf, "pnl": pnl, "return": pnl / (size * ep)}, open_counts)


def _row_index(bars: Bars, k: int, close_at_end: bool) -> pd.DatetimeIndex:
    """Times of the execution rows: opens (and, with stops, the bar's close instant)."""
    step = pd.tseries.frequencies.to_offset(bars.freq)
    ends = bars.index + step
    if k == 1:
        idx = bars.index
    else:
        rest = ends - pd.Timedelta(milliseconds=1)
        idx = pd.DatetimeIndex(np.column_stack([bars.index.asi8, rest.as_unit(bars.index.unit).asi8]).ravel(),
                               tz="UTC").as_unit(bars.index.unit)
    if close_at_end:
        idx = idx.append(pd.DatetimeIndex([ends[-1]]).as_unit(idx.unit))
    # tz-naive (UTC): vectorbt turns a tz-aware index into Python objects on every portfolio (25 ms/run)
    return idx.tz_convert("UTC").tz_localize(None).rename("time_utc")


def simulation_metrics(sim: Simulation, bars: Bars) -> dict[str, np.ndarray]:
    """Every metric per column of a (grid) simulation, as arrays of length m."""
    t = sim.trades
    out = M.compute_metrics(sim.equity, init_cash=sim.init_cash, periods_per_year=bars.periods_per_year,
                            trade_pnl=t["pnl"], trade_return=t["return"],
                            trade_fees=t["entry_fees"] + t["exit_fees"], in_position=sim.in_position,
                            first_open=float(bars.open[0]), last_close=float(bars.close[-1]),
                            trade_col=t["col"])
    if sim.order_stats is not None:
        out.update(sim.order_stats)
    return out


# --------------------------------------------------------------------------- pandas
EXIT_REASONS = {0: "signal", 1: "stop", 2: "end_of_test"}


@dataclass
class BacktestResult:
    """A single backtest: what ``S5/backtest.py`` writes and S6/S7 read."""

    equity: pd.Series                  # UTC open times -> equity at the bar's close
    trades: pd.DataFrame               # the S6 contract, TRADE_COLUMNS exactly
    metrics: dict[str, Any]
    params: dict[str, Any]
    bars: Bars
    simulation: Simulation
    trade_details: pd.DataFrame        # + entry_bar, exit_bar, exit_reason (report)
    kill_switch: list[dict] = field(default_factory=list)
    in_position: np.ndarray | None = None
    costs: Costs | None = None         # fees, slippage, fee model and exchange filters of the run
    decided: Any = None                # run_decided: the S5.hooks.DecidedPath behind the orders

    @property
    def portfolio(self):
        """The vectorbt Portfolio (its rows are the execution timeline, see the module doc)."""
        return self.simulation.portfolio

    @property
    def buy_and_hold(self) -> pd.Series:
        """Equity of buying at the first open with the same initial cash (no fees)."""
        return pd.Series(self.simulation.init_cash * self.bars.close / self.bars.open[0], index=self.bars.index,
                         name="buy_and_hold")

    @property
    def drawdown(self) -> pd.Series:
        v = self.equity.to_numpy()
        peak = np.maximum.accumulate(np.r_[self.simulation.init_cash, v])[1:]
        return pd.Series(v / peak - 1.0, index=self.equity.index, name="drawdown")


def _single_trades(sim: Simulation, bars: Bars, exits_original: np.ndarray | None = None,
                   kill_exit_bars: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    t = sim.trades
    idx = bars.index
    entry_time = idx[t["entry_bar"]]
    exit_time = idx[t["exit_bar"]]
    frame = pd.DataFrame({
        "entry_time": entry_time, "exit_time": exit_time,
        "side": pd.array(["long"] * len(t["pnl"]), dtype="string"),
        "size": t["size"], "entry_price": t["entry_price"], "exit_price": t["exit_price"],
        "fees": t["entry_fees"] + t["exit_fees"], "pnl": t["pnl"], "return": t["return"],
    })
    kind = t["exit_row_kind"]
    reason = np.array([EXIT_REASONS[int(x)] for x in kind], dtype=object)
    decided = t["exit_bar"] - 1
    was_signal = np.ones(len(kind), dtype=bool)
    if exits_original is not None:
        was_signal = (decided >= 0) & np.asarray(exits_original, dtype=bool)[np.clip(decided, 0, None)]
    by_kill = np.zeros(len(kind), dtype=bool)
    if kill_exit_bars is not None and len(kill_exit_bars):
        by_kill = np.isin(decided, kill_exit_bars) & ~was_signal
    at_open = kind == 0
    stopped = (kind == 1) | (at_open & ~was_signal & ~by_kill)  # inside a bar, or a gap through the level
    reason[stopped] = np.where(t["exit_price"][stopped] >= t["entry_price"][stopped], "take_profit", "stop_loss")
    reason[at_open & by_kill] = "kill_switch"
    details = frame.assign(entry_bar=t["entry_bar"], exit_bar=t["exit_bar"], exit_reason=reason)
    return frame, details


def run_backtest(frame: pd.DataFrame, *, interval: str, costs: Costs = Costs(), init_cash: float = 10_000.0,
                 entries=None, exits=None, size=None, sl_stop=None, tp_stop=None, kill_switch=None,
                 flatten_on_trip: bool | None = None, risk=None, close_at_end: bool = True,
                 params: dict[str, Any] | None = None) -> BacktestResult:
    """Backtest one signals frame (``entry``/``exit`` columns, decided at each bar's close).

    Hooks (explicit; ``risk`` fills the ones left ``None`` from an S6 ``RiskConfig``):

    - ``size``: fraction of equity spent per entry (fees included), a number, an array
      per bar, or a callable ``size(first_pass: BacktestResult) -> array`` (Kelly uses
      the first pass's closed trades);
    - ``sl_stop`` / ``tp_stop``: fractions of the fill price, numbers or per-bar arrays;
    - ``kill_switch``: an S6 ``KillSwitchConfig``; entries are refused from the bar it
      trips (and, with ``flatten_on_trip``, the position is closed at the next open).
    """
    bars = Bars.from_frame(frame, interval)
    n = len(bars)
    if entries is None and "entry" not in frame.columns or exits is None and "exit" not in frame.columns:
        raise UserError("the frame has no entry/exit columns", "pass the _signals file written by S4/decision.py")
    ent = np.asarray(frame["entry"] if entries is None else entries)
    ext = np.asarray(frame["exit"] if exits is None else exits)
    ent = _as_2d_signal(ent, n, "entries")[:, 0]
    ext = _as_2d_signal(ext, n, "exits")[:, 0]
    risk_info: dict[str, Any] = {}
    if risk is not None:
        from S5.hooks import risk_hooks

        hooks = risk_hooks(frame, risk, bars=bars, costs=costs)
        size = hooks.size if size is None else size
        sl_stop = hooks.sl_stop if sl_stop is None else sl_stop
        tp_stop = hooks.tp_stop if tp_stop is None else tp_stop
        kill_switch = hooks.kill_switch if kill_switch is None else kill_switch
        flatten_on_trip = hooks.flatten_on_trip if flatten_on_trip is None else flatten_on_trip
        risk_info = hooks.describe()
    flatten_on_trip = bool(flatten_on_trip) if flatten_on_trip is not None else True

    def run(e, x, sz, market_exits=None) -> Simulation:
        return simulate(bars, e, x, costs=costs, init_cash=init_cash, size=sz, sl_stop=sl_stop, tp_stop=tp_stop,
                        close_at_end=close_at_end, market_exits=market_exits)

    if callable(size):
        first = _wrap(run(ent, ext, 1.0), bars, ext, None, {}, [])
        size = size(first)
    sz = 1.0 if size is None else size
    sim = run(ent, ext, sz)
    trips: list[dict] = []
    kill_bars = np.empty(0, dtype=np.int64)
    if kill_switch is not None:
        sim, trips, kill_bars = _apply_kill_switch(run, sim, bars, ent, ext, sz, kill_switch, flatten_on_trip)
    run_params = {"interval": interval, "fees": costs.fees, "slippage": costs.slippage,
                  **({} if costs.is_plain else costs.as_dict()),
                  "init_cash": float(init_cash), "close_at_end": close_at_end, "year_days": M.YEAR_DAYS,
                  "execution": "signal at bar t's close -> fill at bar t+1's open",
                  "stops": sim.rows_per_bar == 2, **risk_info, **(params or {})}
    return _wrap(sim, bars, ext, kill_bars, run_params, trips, costs)


def run_decided(frame: pd.DataFrame, *, rules, interval: str, risk, costs: Costs = Costs(),
                init_cash: float = 10_000.0, filters=None, use_stops: bool = True,
                flatten_on_trip: bool | None = None, params: dict[str, Any] | None = None,
                market: str = "spot", futures=None, detail=None) -> BacktestResult:
    """Backtest ``frame`` the way paper trading (S7) trades it: S4's one decision
    function on every closed bar (:func:`S5.hooks.decided_path`: entries and exits of
    ``rules``, the stop-loss / take-profit of ``risk`` checked on closed bars and filled
    at the next open, the cooldown, the kill-switch, S6 sizing capped by the cash and
    rounded by the exchange ``filters``), then the decided orders through vectorbt
    (quantities as amounts). ``frame`` holds the candles and every column the rules read.

    ``result.params["decisions"]`` counts the entries skipped by reason; the trade
    details carry the decision's ``exit_reason`` (``signal:<rule>``, ``stop_loss``,
    ``take_profit``, ``trailing_stop``, ``kill_switch``, ``liquidation``, ``end``), the
    ``side`` and (USD-M) the ``funding`` each trade paid.

    ``market="usdm"`` (USD-M perpetuals, shorts allowed; ``futures``: an
    :class:`S5.futures.FuturesSpec` -- leverage, funding, liquidation): the decided path's own
    futures book is the result (:func:`path_simulation`; vectorbt has no funding or
    liquidation) -- on long-only rules without funding it equals the vectorbt execution
    (``tests/S5/test_shorts.py``). Spot refuses rule files with short rules.
    """
    from dataclasses import replace

    from S5.costs import price_grid
    from S5.hooks import decided_path, load_risk

    cfg = load_risk(risk)
    bars = Bars.from_frame(frame, interval)
    path = decided_path(frame, rules, risk=cfg, interval=interval, costs=costs, init_cash=init_cash,
                        filters=filters, use_stops=use_stops, flatten_on_trip=flatten_on_trip, market=market,
                        futures=futures, detail=detail)
    if market == "spot":
        run_costs = replace(costs, lot=None) if costs.lot is not None and filters is not None else costs
        sim = simulate(bars, path.entries, path.exits, costs=run_costs, init_cash=init_cash, size=path.amounts,
                       size_type="amount", market_exits=path.market_exits,
                       grid=price_grid(filters) if filters is not None else None)
    else:
        sim = path_simulation(path, bars, init_cash)
    run_params = {"interval": interval, "fees": costs.fees, "slippage": costs.slippage,
                  **({} if costs.is_plain else costs.as_dict()),
                  "init_cash": float(init_cash), "close_at_end": True, "year_days": M.YEAR_DAYS,
                  "execution": "S4.decide on bar t's close -> fill at bar t+1's open; stops checked on closed bars",
                  "decision": "S4.decide (same as S7)", "stops": bool(use_stops),
                  "risk": {"sizing": cfg.sizing.model_dump(), "stops": cfg.stops.model_dump(),
                           "kill_switch": cfg.kill_switch.model_dump()},
                  "decisions": {"entries": int(path.entries.sum()), "exits": int(path.exits.sum()),
                                "skipped": dict(path.skips)},
                  **(params or {})}
    if market != "spot":
        fs = path_futures_params(futures)
        run_params.update(market=market, **fs)
    else:
        run_params["market"] = "spot"
    res = _wrap(sim, bars, path.exits, None, run_params, path.trips, costs)
    reasons = [t["exit_reason"] for t in path.trades]
    if len(reasons) == len(res.trade_details):
        res.trade_details["exit_reason"] = reasons
        sides = pd.array([t["side"] for t in path.trades], dtype="string")
        res.trades["side"] = sides
        res.trade_details["side"] = sides
        res.trade_details["funding"] = [float(t.get("funding", 0.0)) for t in path.trades]
        res.trade_details["entry_rule"] = [t.get("entry_rule") for t in path.trades]
    if market != "spot":
        res.metrics["funding_paid"] = float(sum(t.get("funding", 0.0) for t in path.trades))
        res.metrics["liquidations"] = int(sum(t["exit_reason"] == "liquidation" for t in path.trades))
        res.metrics["short_trades"] = int(sum(t["side"] == "short" for t in path.trades))
    res.decided = path
    return res


def path_futures_params(futures) -> dict[str, Any]:
    from S5.futures import FuturesSpec

    f = futures or FuturesSpec()
    return {"leverage": f.leverage, "maint_margin_rate": f.maint_margin_rate, "maint_amount": f.maint_amount,
            "maint_margin_origin": f.maint_origin, "leverage_brackets": len(f.brackets.brackets),
            "funding_events": len(f.funding_times),
            "liquidation": f.liquidation,
            "accounting": "S5.futures: wallet + isolated margin, funding at each funding time, liquidation at the "
                          "maintenance margin of the leverage bracket holding the notional (Binance's rule)"}


def path_simulation(path, bars: Bars, init_cash: float) -> Simulation:
    """A :class:`Simulation` from the decided path's own book (USD-M: shorts, funding,
    liquidation): equity at each close, in-position flags, the closed trades."""
    n = len(bars)
    tr = path.trades
    f = lambda k, dt=np.float64: np.array([t[k] for t in tr], dtype=dt)   # noqa: E731
    entry_bar, exit_bar = f("entry_bar", np.int64), f("exit_bar", np.int64)
    held = np.zeros(n, dtype=bool)
    for a, b in zip(entry_bar, exit_bar):
        held[a:b] = True   # open at the closes from the entry bar to before the exit (the end: closed at it)
    size, ep = f("qty"), f("entry_price")
    pnl = f("pnl")
    fees = f("fees")
    entry_fees = f("entry_fee")
    kind = np.array([2 if t["exit_reason"] == "end" else (1 if t["exit_reason"] == "liquidation" else 0)
                     for t in tr], dtype=np.int64)
    trades = {"col": np.zeros(len(tr), dtype=np.int64), "size": size, "entry_price": ep,
              "exit_price": f("exit_price"), "entry_fees": entry_fees, "exit_fees": fees - entry_fees, "pnl": pnl,
              "return": pnl / (size * ep) if len(tr) else np.empty(0), "entry_bar": entry_bar, "exit_bar": exit_bar,
              "exit_row_kind": kind}
    return Simulation(path.equity[:, None].copy(), held[:, None], trades, np.zeros(1, dtype=np.int64), None, 1,
                      float(init_cash), True)


def _wrap(sim: Simulation, bars: Bars, exits_original, kill_bars, params, trips, costs=None) -> BacktestResult:
    equity = pd.Series(sim.equity[:, 0], index=bars.index.rename("open_time"), name="equity")
    trades, details = _single_trades(sim, bars, exits_original, kill_bars)
    met = simulation_metrics(sim, bars)
    metrics = {k: (v[0] if isinstance(v, np.ndarray) else v) for k, v in met.items()}
    metrics["open_trades"] = int(sim.open_trades[0])
    metrics["start"] = bars.index[0].isoformat()
    metrics["end"] = bars.index[-1].isoformat()
    metrics["bars"] = len(bars)
    if trips:
        metrics["kill_switch_trips"] = len(trips)
    return BacktestResult(equity, trades, metrics, params, bars, sim, details, trips, sim.in_position[:, 0], costs)


def _apply_kill_switch(run: Callable, sim: Simulation, bars: Bars, ent, ext, sz, config, flatten: bool,
                       max_iter: int = 100):
    """Re-run with entries refused where the S6 kill-switch has tripped, until the
    mask it computes on the new path is the mask that was applied (a fixed point)."""
    from S6.killswitch import kill_switch_trips

    applied = None
    trips: list = []
    kill_bars = np.empty(0, dtype=np.int64)
    for _ in range(max_iter):
        t = sim.trades
        order = np.argsort(t["exit_bar"], kind="stable")
        allowed, trips = kill_switch_trips(sim.equity[:, 0], bars.index, config=config,
                                           trade_exit_times=bars.index[t["exit_bar"][order]],
                                           trade_pnl=t["pnl"][order])
        if (applied is None and allowed.all()) or (applied is not None and np.array_equal(allowed, applied)):
            break
        applied = allowed
        e2 = ent & allowed
        x2 = ext.copy()
        if flatten:
            prev = np.r_[True, allowed[:-1]]
            kill_bars = np.flatnonzero(prev & ~allowed)
            x2[kill_bars] = True
        mx = np.zeros(len(x2), dtype=bool)
        mx[kill_bars] = ~ext[kill_bars]  # flattening is a MARKET order (a signal exit there stays LIMIT)
        sim = run(e2, x2, sz, mx)
    else:  # pragma: no cover - the mask only moves forward in time
        raise RuntimeError("the kill-switch mask did not settle")
    return sim, [tr.as_dict() for tr in trips], kill_bars


__all__ = [
    "TRADE_COLUMNS",
    "BacktestResult",
    "Bars",
    "Costs",
    "Simulation",
    "bars_per_year",
    "enable_numba_cache",
    "run_backtest",
    "run_decided",
    "simulate",
    "simulation_metrics",
    "trades_from_orders",
    "vbt",
]
