"""Walk-forward optimisation: optimise on a window, trade the next unseen window, roll on.

The bars are cut into ``n_folds`` consecutive **test windows** that end at the last
bar. Fold ``k`` searches the rule file's params (Optuna TPE, :func:`S5.optimizer.search`)
on its **train window**, which ends ``gap`` bars before its test window starts, then
backtests the chosen params **once** on the test window:

- ``rolling``: every train window has the same length (the oldest bars drop out);
- ``anchored`` (expanding): every train window starts at the first train bar and grows.

Window lengths: ``train`` / ``test`` in bars (``720``) or as a duration (``30d``,
``12h``, ``2w``, ``90m``) converted with the interval. Left out, they are derived
from the bars at hand: ``test = (bars - gap) / (n_folds + r)`` with
``r = train_frac / (1 - train_frac)`` (the default 0.7 gives a train window 2.33x a
test window), and the train window takes the rest. Bars before the first train
window (when both lengths are given) are not used.

Honesty, by construction and by test:

- the objective of fold ``k`` is given the rows before its train window's end only
  (rules evaluated on them, backtest on the train window);
- the test window's result is the backtest, starting flat with the initial cash, of
  the chosen params on that window, with the rules evaluated on the rows up to the
  window's end (S4 is causal; indicators and rule state need the past) -- no later
  row is passed in (``tests/S5/test_walkforward.py`` recomputes it from a frame cut
  at the window's end);
- the **stitched** out-of-sample curve compounds the test windows: fold ``k+1`` starts
  with fold ``k``'s final equity; a position still open at a window's end is closed
  at its last close (costs paid), so nothing of a later window leaks back.

Seeds: fold ``k``'s TPE sampler is seeded with ``seed + k`` (plus the finished-trial
offset of a resumed study), so the same command gives the same folds and params.
Each fold is its own Optuna study (``<study name>_fold<k>of<n>``): a stopped run
resumes with the folds already done.

>>> import pandas as pd
>>> idx = pd.date_range("2024-01-01", periods=1000, freq="h", tz="UTC")
>>> plan = WalkForwardConfig(n_folds=4, mode="rolling", test="100").plan(idx, "1h")
>>> [(f.train_start, f.train_end, f.test_start, f.test_end) for f in plan.folds][:2]
[(0, 600, 600, 700), (100, 700, 700, 800)]
>>> WalkForwardConfig(n_folds=4, mode="anchored", train="10d", test="5d", gap=2).plan(idx, "1h").folds[-1]
Fold(k=3, train_start=278, train_end=878, test_start=880, test_end=1000)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError
from S5.engine import BacktestResult
from S5.metrics import compute_metrics, to_jsonable
from S5.optimizer import (
    REPORT_METRICS,
    OptimizeConfig,
    _Data,
    _segment_backtest,
    _study,
    fingerprint,
    search,
)

WF_MODES = ("rolling", "anchored")
MIN_TRAIN_BARS = 50
MIN_TEST_BARS = 20
MAX_FOLDS = 100
_UNITS = {"m": "min", "h": "h", "d": "D", "w": "W"}
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*([mhdw]?)\s*$")


# --------------------------------------------------------------------------- config
def parse_window(value: Any, *, option: str) -> int | pd.Timedelta | None:
    """``None``, a bar count (``720`` / ``"720"``) or a duration (``"30d"``, ``"12h"``,
    ``"2w"``, ``"90m"``) -> ``None``, ``int`` bars or a ``Timedelta``.

    >>> parse_window("30d", option="--wf-test"), parse_window(720, option="--wf-test")
    (Timedelta('30 days 00:00:00'), 720)
    """
    if value is None:
        return None
    if isinstance(value, pd.Timedelta):
        td = value
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        td = int(value)
    else:
        m = _WINDOW_RE.match(str(value))
        if not m:
            raise UserError(f"{option} {value!r} is not a bar count or a duration",
                            f"use bars (e.g. {option} 720) or a duration with m/h/d/w (e.g. {option} 30d)")
        num, unit = int(m.group(1)), m.group(2)
        td = pd.Timedelta(num, unit=_UNITS[unit]) if unit else num
    if (isinstance(td, int) and td <= 0) or (isinstance(td, pd.Timedelta) and td <= pd.Timedelta(0)):
        raise UserError(f"{option} must be positive, got {value!r}", f"e.g. {option} 30d or {option} 720")
    return td


@dataclass(frozen=True)
class Fold:
    """Bar positions (half-open): train ``[train_start, train_end)``, test ``[test_start, test_end)``."""

    k: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    def times(self, index: pd.DatetimeIndex) -> dict[str, pd.Timestamp]:
        return {"train_from": index[self.train_start], "train_to": index[self.train_end - 1],
                "test_from": index[self.test_start], "test_to": index[self.test_end - 1]}


@dataclass(frozen=True)
class Plan:
    """The folds of a walk-forward on ``n`` bars (``index``: their open times)."""

    folds: tuple[Fold, ...]
    index: pd.DatetimeIndex
    mode: str
    train_bars: int
    test_bars: int
    gap: int

    @property
    def n(self) -> int:
        return len(self.index)

    @property
    def first_bar(self) -> int:
        """The first bar any fold uses (earlier bars are left out)."""
        return self.folds[0].train_start

    def fold_dict(self, f: Fold) -> dict[str, Any]:
        t = f.times(self.index)
        return {"fold": f.k + 1, "train_bars": f.train_end - f.train_start, "test_bars": f.test_end - f.test_start,
                "train": [t["train_from"].isoformat(), t["train_to"].isoformat()],
                "test": [t["test_from"].isoformat(), t["test_to"].isoformat()],
                "positions": [f.train_start, f.train_end, f.test_start, f.test_end]}

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "folds": len(self.folds), "bars": self.n, "train_bars": self.train_bars,
                "test_bars": self.test_bars, "gap_bars": self.gap, "unused_bars": self.first_bar,
                "windows": [self.fold_dict(f) for f in self.folds]}


@dataclass(frozen=True)
class WalkForwardConfig:
    """How to cut the bars into folds (frozen, checked on creation; the lengths that
    depend on the data are checked by :meth:`plan`).

    ``train`` / ``test``: bars or a duration (see :func:`parse_window`); ``None``
    derives them (module docstring). ``gap``: bars left out between each train window
    and its test window (an embargo; 0 = the test starts at the next bar).
    ``train_frac``: the train share of ``train + test`` when ``train`` is not given.
    """

    n_folds: int = 5
    mode: str = "rolling"
    train: Any = None
    test: Any = None
    gap: int = 0
    train_frac: float = 0.7

    def __post_init__(self) -> None:
        n = self.n_folds
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= MAX_FOLDS:
            raise UserError(f"--walk-forward must be a whole number of folds from 2 to {MAX_FOLDS}, got {n!r}",
                            "e.g. --walk-forward 5")
        if self.mode not in WF_MODES:
            raise UserError(f"unknown --wf-mode {self.mode!r}",
                            "use rolling (fixed-length train windows) or anchored (expanding from the first bar)")
        object.__setattr__(self, "train", parse_window(self.train, option="--wf-train"))
        object.__setattr__(self, "test", parse_window(self.test, option="--wf-test"))
        g = self.gap
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 0:
            raise UserError(f"--wf-gap must be a whole number of bars >= 0, got {g!r}", "e.g. --wf-gap 24")
        if not (isinstance(self.train_frac, (int, float)) and 0.3 <= self.train_frac <= 0.95):
            raise UserError(f"--train-frac {self.train_frac!r} is out of range",
                            "use a share from 0.3 to 0.95 (with --walk-forward: the train share of train + test)")

    def _bars(self, value, interval: str, option: str) -> int | None:
        if value is None or isinstance(value, int):
            return value
        from S1.intervals import interval_ms

        if interval == "1M":
            raise UserError(f"{option} as a duration needs a fixed bar length; 1M bars have none",
                            f"give {option} in bars, e.g. {option} 12")
        bar = pd.Timedelta(milliseconds=interval_ms(interval))
        bars, rest = divmod(value, bar)
        if rest != pd.Timedelta(0) or bars < 1:
            raise UserError(f"{option} {value} is not a whole number of {interval} bars",
                            f"use a multiple of {interval}, or give bars (e.g. {option} {max(1, int(bars))})")
        return int(bars)

    def plan(self, index: pd.DatetimeIndex, interval: str) -> Plan:
        """The folds on these bars (a :class:`UserError` naming the fix when they do not fit)."""
        n, k, g = len(index), int(self.n_folds), int(self.gap)
        train = self._bars(self.train, interval, "--wf-train")
        test = self._bars(self.test, interval, "--wf-test")
        usable = n - g
        if test is None:
            if train is None:
                r = self.train_frac / (1.0 - self.train_frac)
                test = int(usable // (k + r))
            else:
                test = (usable - train) // k
        if train is None:
            train = usable - k * test
        need = train + g + k * test
        how = ("use fewer --walk-forward folds, shorter --wf-train/--wf-test windows, a smaller --wf-gap, "
               "or more --days")
        what = f"--walk-forward {k} ({self.mode}) on {n:,} bars"
        if test < MIN_TEST_BARS:
            raise UserError(f"{what} leaves {test:,} bars per test window (needs >= {MIN_TEST_BARS})", how)
        if self.train is None and train < MIN_TRAIN_BARS:
            raise UserError(f"{what}: {k} test windows of {test:,} bars + gap {g:,} leave {max(train, 0):,} bars "
                            f"for the train window (needs >= {MIN_TRAIN_BARS})", how)
        if need > n or train < MIN_TRAIN_BARS:
            raise UserError(f"{what}: train {train:,} + gap {g:,} + {k} x test {test:,} = {need:,} bars "
                            f"(needs a train window >= {MIN_TRAIN_BARS} bars and a total <= {n:,})", how)
        first_test = n - k * test
        anchor = first_test - g - train
        folds = []
        for j in range(k):
            ts = first_test + j * test
            te = ts - g
            folds.append(Fold(j, anchor if self.mode == "anchored" else te - train, te, ts, ts + test))
        return Plan(tuple(folds), index, self.mode, train, test, g)

    def as_dict(self) -> dict[str, Any]:
        return {"n_folds": int(self.n_folds), "mode": self.mode, "train": _show(self.train),
                "test": _show(self.test), "gap": int(self.gap), "train_frac": self.train_frac}


def _show(v) -> Any:
    return None if v is None else (int(v) if isinstance(v, int) else str(v))


# -------------------------------------------------------------------------- results
@dataclass
class FoldResult:
    """One fold: the chosen params and the four backtests."""

    fold: Fold
    best_params: dict[str, Any]
    best_value: float
    counts: dict[str, int]
    in_sample: BacktestResult
    out_of_sample: BacktestResult
    default_in_sample: BacktestResult
    default_out_of_sample: BacktestResult
    study_name: str | None = None


@dataclass
class Stitched:
    """Test windows chained into one account: ``equity`` (UTC open times), the ``fold``
    (1-based) of each bar, the trades (pnl and fees in the chained account's money)
    and the metrics of :mod:`S5.metrics` on the whole curve."""

    equity: pd.Series
    fold: np.ndarray
    trades: pd.DataFrame
    metrics: dict[str, Any]


def stitch(results: list[BacktestResult], *, init_cash: float) -> Stitched:
    """Chain the test-window backtests: window ``k`` (which started with ``init_cash``)
    is scaled by the chained equity at the end of window ``k-1`` over ``init_cash``
    (returns compound; a window's bar returns are unchanged). The metrics are computed
    on the chained curve and the scaled trades, as for a single backtest.

    >>> import pandas as pd
    >>> from S5.engine import Costs, run_backtest
    >>> t = pd.date_range("2024-01-01", periods=9, freq="h", tz="UTC")
    >>> f = pd.DataFrame({"open": 10.0, "high": 13.0, "low": 7.0, "close": [10.0, 11, 12, 10, 10, 10, 10, 10, 8],
    ...                   "entry": [True, False, False] * 3, "exit": False}, index=t)
    >>> parts = [run_backtest(f.iloc[i:i + 3], interval="1h", costs=Costs(0, 0), init_cash=100.0) for i in (0, 3, 6)]
    >>> [round(float(p.metrics["total_return"]), 4) for p in parts]   # bought at the 2nd open, closed at the end
    [0.2, 0.0, -0.2]
    >>> s = stitch(parts, init_cash=100.0)
    >>> round(float(s.metrics["total_return"]), 4), s.fold.tolist()   # 1.2 x 1.0 x 0.8 - 1
    (-0.04, [1, 1, 1, 2, 2, 2, 3, 3, 3])
    """
    if not results:
        raise UserError("nothing to stitch", "run at least one fold")
    scale = 1.0
    eq, folds, pos, trades = [], [], [], []
    for j, r in enumerate(results):
        e = r.equity.to_numpy(np.float64)
        eq.append(e * scale)
        folds.append(np.full(len(e), j + 1, dtype=np.int64))
        pos.append(np.asarray(r.in_position if r.in_position is not None else np.zeros(len(e), bool), dtype=bool))
        t = r.trades.copy()
        t["pnl"] = t["pnl"] * scale
        t["fees"] = t["fees"] * scale
        t["size"] = t["size"] * scale
        t.insert(0, "fold", j + 1)
        trades.append(t)
        scale *= float(e[-1]) / init_cash
    equity = np.concatenate(eq)
    index = results[0].equity.index.append([r.equity.index for r in results[1:]])
    tr = pd.concat(trades, ignore_index=True)
    metrics = compute_metrics(equity, init_cash=init_cash, periods_per_year=results[0].bars.periods_per_year,
                              trade_pnl=tr["pnl"].to_numpy(np.float64), trade_return=tr["return"].to_numpy(np.float64),
                              trade_fees=tr["fees"].to_numpy(np.float64), in_position=np.concatenate(pos),
                              first_open=float(results[0].bars.open[0]), last_close=float(results[-1].bars.close[-1]))
    metrics = {k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v) for k, v in metrics.items()}
    metrics.update(start=index[0].isoformat(), end=index[-1].isoformat(), bars=len(index), folds=len(results))
    return Stitched(pd.Series(equity, index=index.rename("open_time"), name="equity"), np.concatenate(folds),
                    tr, metrics)


def param_stability(params: list[dict[str, Any]], space: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per searched param: its value in each fold and how much it moves.

    Numeric params: mean, std (ddof=0), min, max, ``spread`` = std / (high - low) of the
    search range (0 = the same value every fold; ~0.29 = as spread as uniform draws),
    ``edge_folds`` = folds whose value sits on the range's low or high (the range may be
    too narrow there). Choices: the most frequent value and its share. ``verdict``:
    stable (spread < 0.1 or one choice in >= 80 % of folds), unstable (spread > 0.25 or
    a mode share < 50 %), moderate otherwise.

    >>> space = {"lo": {"type": "int", "low": 20, "high": 40, "step": 1, "log": False}}
    >>> row = param_stability([{"lo": 30}, {"lo": 31}, {"lo": 40}], space).loc["lo"]
    >>> int(row["edge_folds"]), round(float(row["spread"]), 3), row["verdict"]
    (1, 0.225, 'moderate')
    """
    rows = {}
    for name, s in space.items():
        vals = [p.get(name) for p in params]
        row: dict[str, Any] = {"values": vals}
        if "choices" in s:
            ser = pd.Series([str(v) for v in vals])
            counts = ser.value_counts()
            share = float(counts.iloc[0] / len(ser))
            row.update(kind="choice", mode=counts.index[0], mode_share=share, distinct=int(ser.nunique()),
                       verdict="stable" if share >= 0.8 else "unstable" if share < 0.5 else "moderate")
        else:
            a = np.asarray(vals, dtype=np.float64)
            width = float(s["high"]) - float(s["low"])
            spread = float(a.std() / width) if width > 0 else 0.0
            edge = int(np.sum(np.isclose(a, s["low"]) | np.isclose(a, s["high"])))
            row.update(kind=s["type"], low=s["low"], high=s["high"], mean=float(a.mean()), std=float(a.std()),
                       min=float(a.min()), max=float(a.max()), spread=spread, edge_folds=edge,
                       distinct=len(np.unique(a)),
                       verdict="stable" if spread < 0.1 else "unstable" if spread > 0.25 else "moderate")
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


@dataclass
class WalkForwardResult:
    """Every fold, the stitched out-of-sample curves (chosen params and the rule
    file's defaults) and the parameter stability table."""

    plan: Plan
    config: OptimizeConfig
    wf: WalkForwardConfig
    folds: list[FoldResult]
    stitched: Stitched
    default_stitched: Stitched
    stability: pd.DataFrame
    default_params: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)

    @property
    def latest_params(self) -> dict[str, Any]:
        """The last fold's params: chosen on the most recent train window."""
        return dict(self.folds[-1].best_params)

    def fold_table(self) -> pd.DataFrame:
        """One row per fold: windows, trials, params (``param_<name>``), in-sample
        (``is_``), out-of-sample (``oos_``) and the defaults' out-of-sample (``default_oos_``) metrics."""
        rows = []
        for fr in self.folds:
            f = fr.fold
            row: dict[str, Any] = {"fold": f.k + 1, **f.times(self.plan.index),
                                   "train_bars": f.train_end - f.train_start, "test_bars": f.test_end - f.test_start,
                                   "trials_complete": fr.counts.get("complete", 0),
                                   "trials_pruned": fr.counts.get("pruned", 0),
                                   "objective_in_sample": fr.best_value,
                                   "objective_out_of_sample": _num(fr.out_of_sample.metrics.get(self.config.objective))}
            row.update({f"param_{k}": v for k, v in fr.best_params.items()})
            for prefix, res in (("is_", fr.in_sample), ("oos_", fr.out_of_sample),
                                ("default_oos_", fr.default_out_of_sample)):
                row.update({prefix + m: _num(res.metrics.get(m)) for m in REPORT_METRICS})
            rows.append(row)
        return pd.DataFrame(rows).set_index("fold")

    def aggregate(self) -> dict[str, Any]:
        """Fold-level figures a quant reads first: mean in- vs out-of-sample objective,
        share of profitable test windows, folds where the chosen params beat the defaults
        out of sample, and the walk-forward efficiency (stitched out-of-sample CAGR over
        the mean in-sample CAGR; Pardo's ratio: ~1 = the in-sample edge survived)."""
        obj = self.config.objective
        ins = np.array([fr.best_value for fr in self.folds], dtype=np.float64)
        oos = np.array([_num(fr.out_of_sample.metrics.get(obj)) for fr in self.folds], dtype=np.float64)
        d_oos = np.array([_num(fr.default_out_of_sample.metrics.get(obj)) for fr in self.folds], dtype=np.float64)
        ret = np.array([_num(fr.out_of_sample.metrics.get("total_return")) for fr in self.folds], dtype=np.float64)
        is_cagr = np.array([_num(fr.in_sample.metrics.get("cagr")) for fr in self.folds], dtype=np.float64)
        mean_is_cagr = float(np.nanmean(is_cagr)) if np.isfinite(is_cagr).any() else float("nan")
        st_cagr = _num(self.stitched.metrics.get("cagr"))
        eff = st_cagr / mean_is_cagr if np.isfinite(mean_is_cagr) and mean_is_cagr > 0 else float("nan")
        return {"objective": obj, "mean_objective_in_sample": _nanmean(ins),
                "mean_objective_out_of_sample": _nanmean(oos),
                "median_objective_out_of_sample": float(np.nanmedian(oos)) if np.isfinite(oos).any() else None,
                "profitable_test_windows": int(np.sum(ret > 0)), "folds": len(self.folds),
                "beats_defaults_out_of_sample": int(np.sum(np.nan_to_num(oos, nan=-np.inf)
                                                           > np.nan_to_num(d_oos, nan=-np.inf))),
                "mean_cagr_in_sample": mean_is_cagr, "stitched_cagr_out_of_sample": st_cagr,
                "walk_forward_efficiency": eff}

    def summary(self) -> dict[str, Any]:
        """The JSON document (strict JSON once passed through :func:`to_jsonable`)."""
        folds = []
        for fr in self.folds:
            d = self.plan.fold_dict(fr.fold)
            d.update(study_name=fr.study_name, trials=fr.counts, best_params=fr.best_params,
                     objective_in_sample=fr.best_value,
                     in_sample={m: fr.in_sample.metrics.get(m) for m in REPORT_METRICS},
                     out_of_sample={m: fr.out_of_sample.metrics.get(m) for m in REPORT_METRICS},
                     defaults_in_sample={m: fr.default_in_sample.metrics.get(m) for m in REPORT_METRICS},
                     defaults_out_of_sample={m: fr.default_out_of_sample.metrics.get(m) for m in REPORT_METRICS})
            folds.append(d)
        stab = self.stability.drop(columns=["values"]).to_dict(orient="index")
        return to_jsonable({
            "kind": "walk_forward", "objective": self.config.objective, "walk_forward": self.wf.as_dict(),
            "plan": {k: v for k, v in self.plan.as_dict().items() if k != "windows"},
            "trials_per_fold": self.config.n_trials, "min_trades": self.config.min_trades, "seed": self.config.seed,
            "costs": self.config.costs.as_dict(),
            "init_cash": self.config.init_cash, "search_space": self.space, "default_params": self.default_params,
            "latest_params": self.latest_params, "aggregate": self.aggregate(),
            "stitched_out_of_sample": self.stitched.metrics,
            "defaults_stitched_out_of_sample": self.default_stitched.metrics,
            "parameter_stability": stab, "folds": folds,
            "method": "each fold: params chosen on its train window only (Optuna TPE, seed + fold index), "
                      "backtested once on the following test window starting flat; the stitched curve compounds "
                      "the test windows (a position open at a window's end is closed there)",
        })


def _num(v) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _nanmean(a: np.ndarray) -> float | None:
    return float(np.nanmean(a)) if np.isfinite(a).any() else None


# ---------------------------------------------------------------------------- kernel
def walk_forward(frame: pd.DataFrame, rules, *, interval: str, config: OptimizeConfig = OptimizeConfig(),
                 wf: WalkForwardConfig = WalkForwardConfig(), storage: str | None = None,
                 study_name: str | None = None, market: dict[str, Any] | None = None,
                 progress: bool = True, workers: int = 1, scheduler: str | None = None) -> WalkForwardResult:
    """Optimise on each fold's train window, test the chosen params on its test window.

    ``frame``: the ``_ta`` frame with any sentiment / ML columns the rules read joined
    (:func:`S4.signals.load_rule_inputs`). ``config``: objective, trials **per fold**,
    minimum trades on each train window, seed, costs, cash, risk (``train_frac`` is
    not used: ``wf`` cuts the bars). ``storage`` / ``study_name``: as for
    :func:`S5.optimizer.optimize`; the fold studies are ``<study_name>_fold<k>of<n>``
    (``storage=None``: in memory).

    ``workers`` / ``scheduler``: the folds' searches (independent studies, seeded ``seed + k``)
    run in N local processes or on a Dask cluster (:func:`S1.fanout.fan_out`); the backtests of
    the chosen params, the stitching and the tables are then done here, in fold order, so the
    result equals the sequential run's (tested). Workers on other machines need a shared
    ``storage`` (PostgreSQL) for the fold studies to be resumable from here.

    >>> from S1.offline import simulate_candles
    >>> from S2.ta import add_indicators
    >>> from S4.rules import parse_rules
    >>> ta = add_indicators(simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-03-01"))
    >>> rules = parse_rules("params: {lo: {value: 30, low: 20, high: 45}}\\n"
    ...                     "entry: {col: rsi14, op: crosses_above, param: lo}\\nexit: {col: rsi14, op: '>', value: 65}")
    >>> res = walk_forward(ta, rules, interval="1h", config=OptimizeConfig(n_trials=6, min_trades=2),
    ...                    wf=WalkForwardConfig(n_folds=3), progress=False)
    >>> len(res.folds), res.stitched.equity.index[0] == ta.index[res.plan.folds[0].test_start]
    (3, True)
    """
    from S1.fanout import check_scheduler, fan_out
    from S4.evaluate import prepare_arrays

    check_scheduler(scheduler, workers)
    space = rules.param_space()
    if not space:
        raise UserError("the rule file has no searchable params (no low/high or choices)",
                        "give params ranges, e.g. rsi_buy: {value: 30, low: 20, high: 40}")
    plan = wf.plan(frame.index, interval)
    data = _Data(frame, prepare_arrays(frame, rules), None, interval)  # type: ignore[arg-type]
    n_folds = len(plan.folds)
    jobs = [_FoldJob(data, rules, config, f, plan.fold_dict(f), wf.as_dict(), n_folds, storage,
                     f"{study_name}_fold{f.k + 1}of{n_folds}" if study_name else None, market or {})
            for f in plan.folds]
    folds: list[FoldResult] = []
    if scheduler is not None or (workers > 1 and n_folds > 1):
        if storage is not None:
            from S5.trial_loop import open_storage

            open_storage(storage, heartbeat=config.heartbeat)  # the schema exists before the workers race to it
        searched = fan_out(_search_fold, jobs, scheduler=scheduler, workers=workers)
        for job, found in zip(jobs, searched, strict=True):
            folds.append(_finish_fold(job, found))
        return _result(plan, config, wf, folds, rules, space)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_folds, desc="walk-forward folds", unit="fold")
    try:
        for job in jobs:
            fr = _finish_fold(job, _search_fold(job))
            folds.append(fr)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"oos {config.objective} {_num(fr.out_of_sample.metrics.get(config.objective)):.3g}")
    finally:
        if bar is not None:
            bar.close()
    return _result(plan, config, wf, folds, rules, space)


@dataclass(frozen=True)
class _FoldJob:
    """One fold's search, as sent to a worker process or a Dask worker (pickled)."""

    data: _Data
    rules: Any
    config: OptimizeConfig
    fold: Fold
    window: dict[str, Any]
    wf: dict[str, Any]
    n_folds: int
    storage: str | None
    name: str | None
    market: dict[str, Any]


def _search_fold(job: _FoldJob) -> tuple[str, Any, Any, Any]:
    """The Optuna search of one fold on its train window: ``("ok", params, value, counts)``, or
    ``("error", problem, fix, None)`` for a :class:`UserError` (raised again, with the fold, by the caller)."""
    from dataclasses import replace

    config, f, space = job.config, job.fold, job.rules.param_space()
    window = {"walk_forward": job.wf, "fold": job.window}
    fp = fingerprint(job.rules, objective=config.objective, split=_Window(window), config=config, market=job.market)
    try:
        study = _study(job.storage, job.name, fp, replace(config, seed=config.seed + f.k),
                       description={"objective": config.objective, "split": window, "market": job.market,
                                    "search_space": space})
        best, counts = search(job.data, job.rules, study, config, f.train_start, f.train_end, progress=False,
                              storage=job.storage)
    except UserError as exc:
        return "error", exc.problem, exc.fix, None
    return "ok", dict(best.params), float(best.value), dict(counts)


def _finish_fold(job: _FoldJob, found: tuple[str, Any, Any, Any]) -> FoldResult:
    """The four backtests of a searched fold (chosen params and defaults, train and test windows)."""
    from S4.evaluate import evaluate_arrays

    data, rules, config, f = job.data, job.rules, job.config, job.fold
    status, a, b, counts = found
    if status != "ok":
        t = f.times(data.frame.index)
        raise UserError(f"fold {f.k + 1}/{job.n_folds} (train {t['train_from']:%Y-%m-%d %H:%M}.."
                        f"{t['train_to']:%Y-%m-%d %H:%M}): {a}", b)
    space = rules.param_space()
    best_rules = rules.with_params(**{k: v for k, v in a.items() if k in space})
    best_params = {k: best_rules.param(k) for k in space}  # checked values (no 0.30000000000000004)
    train_past = {k: v[:f.train_end] for k, v in data.arrays.items()}
    test_past = {k: v[:f.test_end] for k, v in data.arrays.items()}  # nothing after the test window
    ins = _segment_backtest(data, best_rules, config, f.train_start, f.train_end,
                            signals=evaluate_arrays(train_past, best_rules, f.train_end))
    oos = _segment_backtest(data, best_rules, config, f.test_start, f.test_end,
                            signals=evaluate_arrays(test_past, best_rules, f.test_end))
    d_sig = evaluate_arrays(test_past, rules, f.test_end)
    d_ins = _segment_backtest(data, rules, config, f.train_start, f.train_end, signals=d_sig)
    d_oos = _segment_backtest(data, rules, config, f.test_start, f.test_end, signals=d_sig)
    return FoldResult(f, best_params, float(b), counts, ins, oos, d_ins, d_oos, job.name)


def _result(plan: Plan, config: OptimizeConfig, wf: WalkForwardConfig, folds: list[FoldResult], rules,
            space) -> WalkForwardResult:
    stitched = stitch([fr.out_of_sample for fr in folds], init_cash=config.init_cash)
    d_stitched = stitch([fr.default_out_of_sample for fr in folds], init_cash=config.init_cash)
    stability = param_stability([fr.best_params for fr in folds], space)
    return WalkForwardResult(plan, config, wf, folds, stitched, d_stitched, stability, rules.params, space)


@dataclass(frozen=True)
class _Window:
    """Adapter: :func:`S5.optimizer.fingerprint` reads ``split.as_dict()``."""

    doc: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.doc


__all__ = [
    "MIN_TEST_BARS",
    "MIN_TRAIN_BARS",
    "WF_MODES",
    "Fold",
    "FoldResult",
    "Plan",
    "Stitched",
    "WalkForwardConfig",
    "WalkForwardResult",
    "param_stability",
    "parse_window",
    "stitch",
    "walk_forward",
]
