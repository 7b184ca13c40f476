"""Stress tests of a backtest's trades (computation; plots live in :mod:`S6.stress_report`).

Inputs are the S5 contract files (see :func:`load_backtest`):

- ``data/<stem>_trades.parquet``: ``entry_time``, ``exit_time`` (UTC), ``side``
  ("long"), ``size``, ``entry_price``, ``exit_price``, ``fees``, ``pnl`` (quote,
  after fees), ``return`` (fraction, after fees);
- ``data/<stem>_equity.parquet``: UTC DatetimeIndex, column ``equity``;
- the S1 candle file ``data/<stem>.parquet`` for the worst historical moves.

What is computed:

1. **Resampling** of the per-trade returns *on equity* (``pnl`` / equity before
   the trade, trades in exit order): ``shuffle`` permutes them (same final
   equity, different paths: sequence risk), ``bootstrap`` draws them with
   replacement (different outcomes). Distribution of the max drawdown, the final
   equity, the probability of ruin (equity ever <= ``ruin_level`` x initial) and of
   tripping the configured drawdown kill-switch. Seeded: the same seed gives the
   same numbers. Drawdowns are measured trade by trade (intra-trade dips are not
   in the trades file).
2. **Worst historical moves** over 1 h and 24 h windows of the candles: the
   largest adverse excursion ``min(low) / open - 1`` of non-overlapping windows.
3. **Stops gapped through**: at each worst move a long sized by the risk config
   (stop k x ATR below the entry) is replayed: filled at the stop (or at the open
   of the bar that gaps below it), and -- the stress -- filled at the window's
   lowest price. Losses in R multiples and in % of equity, plus the loss of the
   backtest's largest exposure held through the move without a stop.
4. **Shock**: each bootstrap path also takes the worst 24 h move once, at a random
   trade, at the backtest's largest exposure.

>>> r = np.array([0.1, -0.05, 0.02, -0.1])
>>> s = simulate_paths(r, n_paths=200, method="shuffle", seed=1)
>>> bool(np.allclose(s.final, np.prod(1 + r)))          # a reshuffle keeps the final equity
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from S1.datasets import Dataset
from S1.errors import UserError
from S6.config import RiskConfig
from S6.killswitch import first_trip
from S6.sizing import SizingError, kelly_stats, size_position

log = logging.getLogger(__name__)

TRADE_COLUMNS = ("entry_time", "exit_time", "side", "size", "entry_price", "exit_price", "fees", "pnl", "return")
WINDOWS = {"1h": 3_600_000, "24h": 86_400_000}
CHUNK = 1000          #: paths simulated per block (memory bound; results do not depend on it)
PLOT_PATHS = 1000     #: paths kept for the fan chart


def s5_command(dataset: Dataset) -> str:
    """The S5 command that writes the trades and equity files of a market and window."""
    return f"python S5/backtest.py {dataset.args}"


# ---------------------------------------------------------------- loading
def validate_trades(df: pd.DataFrame, *, what: str = "trades") -> pd.DataFrame:
    """Check the S5 trades contract; returns the trades sorted by exit time."""
    missing = [c for c in TRADE_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{what}: missing columns {missing}",
                        f"the trades file needs {list(TRADE_COLUMNS)} (as written by S5/backtest.py)")
    out = df.copy()
    for c in ("entry_time", "exit_time"):
        t = pd.to_datetime(out[c], utc=True)
        out[c] = t.dt.as_unit("ns")
    for c in ("size", "entry_price", "exit_price", "fees", "pnl", "return"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(np.float64)
    bad = out[["pnl", "return", "entry_price", "exit_price"]].isna().any(axis=1) | out["exit_time"].isna()
    if bad.any():
        raise UserError(f"{what}: {int(bad.sum())} trades with missing pnl/return/prices/exit_time",
                        "re-run the backtest; open trades must not be in the trades file")
    if (out["exit_time"] < out["entry_time"]).any():
        raise UserError(f"{what}: a trade exits before it enters", "check the backtest's trade records")
    return out.sort_values("exit_time", kind="stable").reset_index(drop=True)


def load_equity(path: Path) -> pd.Series:
    """The S5 equity file as a float Series with a UTC DatetimeIndex."""
    from S1.datasets import read_parquet

    df = read_parquet(path)
    if "equity" not in df.columns or not isinstance(df.index, pd.DatetimeIndex):
        raise UserError(f"{path}: expected a UTC DatetimeIndex and an 'equity' column",
                        "re-create it with S5/backtest.py")
    idx = df.index if df.index.tz is not None else df.index.tz_localize("UTC")
    s = pd.Series(df["equity"].to_numpy(np.float64), index=idx.tz_convert("UTC"), name="equity").dropna()
    if s.empty or (s <= 0).all():
        raise UserError(f"{path}: the equity curve is empty or not positive", "re-create it with S5/backtest.py")
    return s.sort_index()


def infer_initial_equity(trades: pd.DataFrame, equity: pd.Series) -> float:
    """The equity before the first trade: the last equity value before its entry, else
    (entry on the first bar) the final equity minus the trades' total pnl."""
    before = equity[equity.index < trades["entry_time"].min()]
    if len(before):
        return float(before.iloc[-1])
    guess = float(equity.iloc[-1] - trades["pnl"].sum())
    return guess if guess > 0 else float(equity.iloc[0])


@dataclass(frozen=True)
class Backtest:
    """A backtest's outputs as the stress tests read them."""

    symbol: str
    interval: str
    days: int
    trades: pd.DataFrame
    equity: pd.Series | None
    initial_equity: float
    trades_path: Path | None = None
    equity_path: Path | None = None
    #: made from the simulated market (the S5 files' metadata says so): every report says SIMULATED
    simulated: bool = False


def load_backtest(dataset: Dataset, *, initial_equity: float | None = None,
                  data_dir: Path | None = None, rules: str | Path | None = None) -> Backtest:
    """Read the S5 files of a market and window. A missing trades file is a
    :class:`UserError` naming the S5 command that creates it; a missing equity file
    falls back to ``initial_equity`` (default 10,000) with a warning."""
    from S1.datasets import existing_dataset_path, read_parquet

    tpath = existing_dataset_path(dataset, "trades", data_dir=data_dir, rules=rules)
    if not tpath.exists():
        raise UserError(f"no backtest trades at {tpath}", f"create them first with: {s5_command(dataset)}")
    trades = validate_trades(read_parquet(tpath), what=str(tpath))
    if trades.empty:
        raise UserError(f"{tpath} holds no trades", "nothing to stress: change the strategy or the window")
    epath = existing_dataset_path(dataset, "equity", data_dir=data_dir, rules=rules, note=False)
    equity = load_equity(epath) if epath.exists() else None
    if initial_equity is None:
        if equity is not None:
            initial_equity = infer_initial_equity(trades, equity)
        else:
            initial_equity = 10_000.0
            log.warning("no equity file %s: assuming an initial equity of %.0f", epath, initial_equity)
    if not np.isfinite(initial_equity) or initial_equity <= 0:
        raise UserError(f"initial equity must be > 0, got {initial_equity}", "pass --initial-equity")
    from S1.datasets import read_metadata

    simulated = any(bool(read_metadata(p).get("simulated", False)) for p in (tpath, epath) if p.exists())
    return Backtest(dataset.symbol, dataset.interval, dataset.days, trades, equity, float(initial_equity),
                    tpath,
                    epath if equity is not None else None, simulated)


# ----------------------------------------------------------- trade returns
def equity_returns(trades: pd.DataFrame, initial_equity: float) -> np.ndarray:
    """Per-trade return on equity: ``pnl / (initial + pnl of the trades closed before)``."""
    pnl = trades["pnl"].to_numpy(np.float64)
    before = initial_equity + np.concatenate([[0.0], np.cumsum(pnl)[:-1]])
    if np.any(before <= 0):
        raise UserError("the equity reached zero during the backtest", "nothing left to resample")
    return pnl / before


def exposures(trades: pd.DataFrame, initial_equity: float) -> np.ndarray:
    """Position notional at entry / equity before the trade."""
    pnl = trades["pnl"].to_numpy(np.float64)
    before = initial_equity + np.concatenate([[0.0], np.cumsum(pnl)[:-1]])
    return np.abs(trades["size"].to_numpy(np.float64) * trades["entry_price"].to_numpy(np.float64)) / before


def max_drawdown(paths: np.ndarray) -> np.ndarray:
    """Max drawdown (fraction of the running peak) of each row (or of a 1-d path).

    >>> float(max_drawdown(np.array([100, 120, 90, 130, 65.0])))
    0.5
    """
    p = np.asarray(paths, dtype=np.float64)
    peak = np.maximum.accumulate(p, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1 - p / peak, 0.0)
    return dd.max(axis=-1)


@dataclass
class PathStats:
    """Outcome of :func:`simulate_paths` (equity in multiples of the initial equity)."""

    method: str
    final: np.ndarray            #: final equity per path
    max_dd: np.ndarray           #: max drawdown per path
    min_equity: np.ndarray       #: lowest equity per path
    sample: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))  #: kept paths (for plots)

    def summary(self, *, ruin_level: float, kill_dd: float | None, initial: float = 1.0) -> dict[str, Any]:
        q = [5, 25, 50, 75, 95]
        out = {
            "paths": int(self.final.size),
            "final_equity": {f"p{p}": float(v) * initial for p, v in zip(q, np.percentile(self.final, q))}
            | {"mean": float(self.final.mean()) * initial},
            "max_drawdown": {f"p{p}": float(v) for p, v in zip(q, np.percentile(self.max_dd, q))}
            | {"mean": float(self.max_dd.mean())},
            "prob_ruin": float(np.mean(self.min_equity <= ruin_level * (1 + 1e-12))),
            "prob_loss": float(np.mean(self.final < 1.0)),
        }
        if kill_dd is not None:
            out["prob_kill_switch_drawdown"] = float(np.mean(self.max_dd >= kill_dd - 1e-12))
        return out


def _factors(returns: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 + returns, 0.0)  # spot: equity cannot go below zero


def _stats_of(factors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    paths = np.cumprod(factors, axis=1)
    paths = np.concatenate([np.ones((paths.shape[0], 1)), paths], axis=1)
    return paths[:, -1], max_drawdown(paths), paths.min(axis=1), paths


def simulate_paths(returns, *, n_paths: int, method: Literal["bootstrap", "shuffle"], seed: int,
                   shock: float | None = None, progress: bool = False) -> PathStats:
    """Resample per-trade returns on equity into ``n_paths`` equity paths starting at 1.

    ``shock`` (a return on equity, e.g. -0.3) is inserted once per path at a random
    position. Deterministic for a given ``(returns, n_paths, method, seed, shock)``.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)):
        raise UserError("need at least one finite trade return", "check the trades file")
    if method not in ("bootstrap", "shuffle"):
        raise UserError(f"unknown resampling method {method!r}", "use bootstrap or shuffle")
    if n_paths < 1:
        raise UserError("n_paths must be >= 1", "pass --paths 5000")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0 if method == "bootstrap" else 1,
                                                         0 if shock is None else 2]))
    n = r.size
    finals, dds, mins, kept = [], [], [], []
    blocks = range(0, n_paths, CHUNK)
    if progress and n_paths * n > 20_000_000:   # only worth a bar when it takes seconds
        from tqdm import tqdm

        blocks = tqdm(blocks, desc=f"{method} paths", unit="block", leave=False)
    for start in blocks:
        m = min(CHUNK, n_paths - start)
        if method == "bootstrap":
            sample = r[rng.integers(0, n, size=(m, n))]
        else:
            sample = rng.permuted(np.broadcast_to(r, (m, n)).copy(), axis=1)
        f = _factors(sample)
        if shock is not None:
            pos = rng.integers(0, n + 1, size=(m, 1))
            f = np.concatenate([f, np.full((m, 1), max(1.0 + shock, 0.0))], axis=1)
            idx = np.arange(n + 1)[None, :]
            src = np.where(idx < pos, idx, np.where(idx == pos, n, idx - 1))
            f = np.take_along_axis(f, src, axis=1)
        final, dd, mn, paths = _stats_of(f)
        finals.append(final), dds.append(dd), mins.append(mn)
        have = sum(len(k) for k in kept)
        if have < PLOT_PATHS:
            kept.append(paths[: PLOT_PATHS - have])
    return PathStats(method, np.concatenate(finals), np.concatenate(dds), np.concatenate(mins),
                     np.concatenate(kept) if kept else np.empty((0, n + 1)))


# --------------------------------------------------------- historical moves
def worst_moves(candles: pd.DataFrame, interval: str, *, window: str = "24h", top: int = 5) -> pd.DataFrame:
    """The ``top`` worst non-overlapping windows of ``window`` (``1h``/``24h``) for a long:
    ``move`` = lowest low in the window / first open - 1, ``close_move`` = last close /
    first open - 1. Windows that span a gap in the candles are skipped. Empty when the
    candles are coarser than the window.
    """
    from S1.intervals import INTERVAL_MS

    cols = ["start", "end", "bars", "open", "low", "close", "move", "close_move", "i"]
    if window not in WINDOWS:
        raise UserError(f"unknown window {window!r}", f"use one of {list(WINDOWS)}")
    if interval not in INTERVAL_MS or INTERVAL_MS[interval] > WINDOWS[window] or WINDOWS[window] % INTERVAL_MS[interval]:
        return pd.DataFrame(columns=cols)
    step = INTERVAL_MS[interval]
    w = WINDOWS[window] // step
    n = len(candles)
    if n < w:
        return pd.DataFrame(columns=cols)
    t = candles.index.as_unit("ns").asi8 // 1_000_000
    o = candles["open"].to_numpy(np.float64)
    low = candles["low"].to_numpy(np.float64)
    c = candles["close"].to_numpy(np.float64)
    lowest = pd.Series(low).rolling(w).min().to_numpy()[w - 1:]          # min over [i, i + w)
    starts = np.arange(n - w + 1)
    contiguous = (t[starts + w - 1] - t[starts]) == (w - 1) * step
    move = np.where(contiguous, lowest / o[starts] - 1, np.nan)
    order = np.argsort(np.where(np.isnan(move), np.inf, move), kind="stable")
    chosen: list[int] = []
    for i in order:
        if np.isnan(move[i]) or len(chosen) >= top:
            break
        if all(abs(int(i) - j) >= w for j in chosen):
            chosen.append(int(i))
    rows = []
    for i in chosen:
        j = i + w - 1
        rows.append({"start": candles.index[i], "end": candles.index[j] + pd.Timedelta(milliseconds=step),
                     "bars": w, "open": o[i], "low": float(lowest[i]), "close": c[j],
                     "move": float(move[i]), "close_move": float(c[j] / o[i] - 1), "i": i})
    return pd.DataFrame(rows, columns=cols)


def gap_replay(candles: pd.DataFrame, moves: pd.DataFrame, *, config: RiskConfig, max_exposure: float,
               kelly: tuple[float, float, int] | None = None) -> pd.DataFrame:
    """Replay a stopped long at each worst move (see the module docstring, point 3)."""
    import talib

    st, fee = config.stops, config.stress.fee_rate
    h, lo, c, o = (candles[k].to_numpy(np.float64) for k in ("high", "low", "close", "open"))
    atr = talib.ATR(h, lo, c, timeperiod=st.atr_period)
    rows = []
    for m in moves.itertuples(index=False):
        i, w = int(m.i), int(m.bars)
        entry = o[i]
        a = atr[i - 1] if i >= 1 else np.nan          # known before the entry
        row = {"start": m.start, "move": m.move, "entry": entry, "atr": float(a),
               "loss_pct_max_exposure": float(max_exposure * -min(m.move, 0.0))}
        stop = entry * (1 - st.stop_loss_pct) if st.stop_loss_pct is not None else (
            entry - st.atr_k * a if np.isfinite(a) else np.nan)
        if not np.isfinite(stop) or stop <= 0:
            rows.append(row | {"stop": np.nan, "stop_hit": False})
            continue
        dist = entry - stop
        hit = np.flatnonzero(lo[i:i + w] <= stop)
        if hit.size:
            j = i + int(hit[0])
            fill_stop = min(stop, o[j])
        else:
            fill_stop = c[i + w - 1]
        fill_gap = float(m.low) if hit.size else fill_stop
        try:
            win_rate, payoff, n = kelly if kelly else (None, None, None)
            qty = float(size_position(equity=1.0, price=entry, atr=a if np.isfinite(a) else None, config=config,
                                      win_rate=win_rate, payoff=payoff, n_trades=n).size)
        except SizingError as exc:
            log.info("gap replay: sizing with %s refused (%s); using the atr method", config.sizing.method, exc.problem)
            qty = float(size_position(equity=1.0, price=entry, atr=a, config=config, method="atr").size)

        def loss(fill: float) -> float:
            return qty * (entry - fill) + fee * qty * (entry + fill)

        row |= {"stop": float(stop), "stop_hit": bool(hit.size), "gapped_open": bool(hit.size and o[i + int(hit[0])] < stop),
                "fill_stop": float(fill_stop), "fill_gapped": float(fill_gap),
                "loss_R_stop": float((entry - fill_stop) / dist), "loss_R_gapped": float((entry - fill_gap) / dist),
                "loss_pct_stop": float(loss(fill_stop)), "loss_pct_gapped": float(loss(fill_gap)),
                "position_fraction": float(qty * entry)}
        rows.append(row)
    return pd.DataFrame(rows)


# -------------------------------------------------------------- the run
@dataclass
class StressResult:
    summary: dict[str, Any]
    historical_path: np.ndarray                 #: trade-by-trade equity (multiples of initial)
    bootstrap: PathStats
    shuffle: PathStats
    shock: PathStats | None
    moves: dict[str, pd.DataFrame]              #: window -> gap replay table
    equity: pd.Series | None


def run_stress(bt: Backtest, candles: pd.DataFrame | None, *, config: RiskConfig, paths: int | None = None,
               seed: int | None = None, ruin_level: float | None = None, top: int | None = None,
               progress: bool = False, simulated: bool = False) -> StressResult:
    """Every stress test on one backtest; ``candles`` may be None (moves skipped).
    ``simulated``: the candles came from the simulated market (the backtest's own
    label, :attr:`Backtest.simulated`, counts too): ``summary["simulated"]``."""
    sc = config.stress
    paths = sc.paths if paths is None else int(paths)
    seed = sc.seed if seed is None else int(seed)
    ruin = sc.ruin_level if ruin_level is None else float(ruin_level)
    top = sc.top_moves if top is None else int(top)
    if not 0 < ruin < 1:
        raise UserError(f"ruin level must be within (0, 1), got {ruin}", "e.g. --ruin 0.5 (equity halves)")
    init = bt.initial_equity
    r = equity_returns(bt.trades, init)
    expo = exposures(bt.trades, init)
    max_expo = float(np.nanmax(expo)) if expo.size else 0.0
    hist = np.concatenate([[1.0], np.cumprod(_factors(r))])
    kill_dd = config.kill_switch.max_drawdown

    boot = simulate_paths(r, n_paths=paths, method="bootstrap", seed=seed, progress=progress)
    shuf = simulate_paths(r, n_paths=paths, method="shuffle", seed=seed, progress=progress)
    kstats = kelly_stats(bt.trades["return"].to_numpy(np.float64))

    moves: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    if candles is not None and len(candles):
        for win in WINDOWS:
            wm = worst_moves(candles, bt.interval, window=win, top=top)
            if wm.empty:
                notes.append(f"no {win} moves: {bt.interval} candles are coarser than {win} or too few")
                continue
            moves[win] = gap_replay(candles, wm, config=config, max_exposure=max_expo, kelly=kstats)
    else:
        notes.append("no candle file: worst-move replay skipped")
    shock_move = None
    for win in ("24h", "1h"):
        if win in moves and len(moves[win]):
            shock_move = float(moves[win]["move"].min())
            break
    shock = None
    if shock_move is not None and max_expo > 0:
        shock = simulate_paths(r, n_paths=paths, method="bootstrap", seed=seed, shock=max_expo * shock_move,
                               progress=progress)

    hist_summary: dict[str, Any] = {
        "trades": int(len(r)), "final_equity": float(hist[-1] * init), "total_return": float(hist[-1] - 1),
        "max_drawdown_trades": float(max_drawdown(hist)), "win_rate": kstats[0], "payoff": kstats[1],
        "max_exposure": max_expo, "median_exposure": float(np.nanmedian(expo)) if expo.size else 0.0,
    }
    if bt.equity is not None:
        hist_summary["max_drawdown_bars"] = float(max_drawdown(bt.equity.to_numpy()))
        gap = float(bt.equity.iloc[-1] - (init + bt.trades["pnl"].sum()))
        if abs(gap) > 0.01 * init:
            notes.append(f"the trades' pnl misses the equity curve's final value by {gap:,.2f} "
                         "(open position at the end, or a different initial equity: see --initial-equity)")
        trip = first_trip(bt.equity.to_numpy(), bt.equity.index, config=config,
                          trade_exit_times=pd.DatetimeIndex(bt.trades["exit_time"]),
                          trade_pnl=bt.trades["pnl"].to_numpy(np.float64))
        hist_summary["kill_switch_first_trip"] = None if trip is None else trip.as_dict()

    def table(df: pd.DataFrame) -> list[dict]:
        return [{k: (v.isoformat() if isinstance(v, pd.Timestamp) else
                     (None if isinstance(v, float) and not np.isfinite(v) else
                      (v.item() if isinstance(v, np.generic) else v)))
                 for k, v in rec.items()} for rec in df.to_dict("records")]

    summary = {
        "symbol": bt.symbol, "interval": bt.interval, "days": bt.days,
        "simulated": bool(simulated or bt.simulated),
        "generated_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "inputs": {"trades": str(bt.trades_path) if bt.trades_path else None,
                   "equity": str(bt.equity_path) if bt.equity_path else None},
        "seed": seed, "paths": paths, "ruin_level": ruin, "initial_equity": init,
        "historical": hist_summary,
        "bootstrap": boot.summary(ruin_level=ruin, kill_dd=kill_dd, initial=init),
        "shuffle": shuf.summary(ruin_level=ruin, kill_dd=kill_dd, initial=init),
        "shock": None if shock is None else {"move": shock_move, "return_on_equity": max_expo * shock_move}
        | shock.summary(ruin_level=ruin, kill_dd=kill_dd, initial=init),
        "worst_moves": {w: table(df) for w, df in moves.items()},
        "notes": notes,
        "config": config.model_dump(),
    }
    return StressResult(summary, hist, boot, shuf, shock, moves, bt.equity)
