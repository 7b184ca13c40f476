"""The ML score: walk-forward gradient boosting on TA features -> ``ml_proba``.

``ml_proba[t]`` is the out-of-sample probability that ``close[t + horizon] > close[t]``,
made by a model that never saw bar t's outcome nor anything after bar t.

No look-ahead, by construction (the tests check each point):

- **Features** at row t (:func:`make_features`) use only the indicator row t and
  earlier candles (returns over past bars, trailing rolling windows, the clock).
  S2's indicators are themselves causal.
- **Labels** (:func:`make_labels`): ``y[t] = 1 if close[t+N] > close[t] else 0``, NaN
  for the last N rows. They use closes t..t+N only.
- **Walk-forward** (:class:`WalkForward`): test blocks of ``test_bars`` rows start at
  ``train_bars + N`` and follow each other; the model for a block starting at s is
  fitted on rows ``[.., s - N)`` only -- a gap of N bars, so the last training label
  (row s-N-1) uses close[s-1] at the latest: every training label is known before
  the block's first bar closes. Block boundaries are counted from the first row,
  never from the end, so adding or changing later bars cannot move them: the
  ``ml_proba`` of a bar never changes when the future changes.
- Rows before the first block get NaN ("no model trained yet").

Per fold it reports out-of-sample AUC and accuracy against the naive baseline
(always predict the training fold's majority class).

>>> plan = WalkForward(horizon=4, train_bars=100, test_bars=50)
>>> [(f.train_start, f.train_end, f.test_start, f.test_end) for f in plan.folds(260)]
[(0, 100, 104, 154), (0, 150, 154, 204), (0, 200, 204, 254), (0, 250, 254, 260)]
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from S1.datasets import Dataset
from S1.errors import UserError

log = logging.getLogger(__name__)

#: Trailing windows (bars) of the return features.
RETURN_LAGS = (1, 3, 6, 12, 24)
VOL_WINDOW = 24


# --------------------------------------------------------------------------- features
def make_features(ta: pd.DataFrame) -> pd.DataFrame:
    """Scale-free features known at the close of each bar (index kept).

    From the candles: log returns over the last 1/3/6/12/24 bars, their trailing
    24-bar volatility, the bar's range, volume against its trailing 24-bar mean,
    the taker-buy share, hour of day and weekday (cyclic). From S2's indicators
    (whichever lengths are present): ``close/sma - 1``, ``close/ema - 1``, RSI/100,
    MACD line/histogram/signal divided by close, Bollinger %B and bandwidth, NATR.
    Raw price levels are left out (not comparable across time).
    """
    from S2.ta import find_columns

    if "close" not in ta.columns:
        raise UserError("the frame has no close column", "pass the _ta frame written by S2/indicators.py")
    close = ta["close"].to_numpy(np.float64)
    logc = np.log(close)
    f: dict[str, np.ndarray] = {}
    for k in RETURN_LAGS:
        r = np.full(len(close), np.nan)
        r[k:] = logc[k:] - logc[:-k]
        f[f"ret_{k}"] = r
    r1 = pd.Series(f["ret_1"], index=ta.index)
    f[f"vol_{VOL_WINDOW}"] = r1.rolling(VOL_WINDOW, min_periods=VOL_WINDOW).std().to_numpy()
    if {"high", "low"} <= set(ta.columns):
        f["range"] = (ta["high"].to_numpy(np.float64) - ta["low"].to_numpy(np.float64)) / close
    if "volume" in ta.columns:
        lv = np.log1p(ta["volume"].to_numpy(np.float64))
        f["volume_rel"] = lv - pd.Series(lv).rolling(VOL_WINDOW, min_periods=VOL_WINDOW).mean().to_numpy()
        if "taker_buy_base" in ta.columns:
            vol = ta["volume"].to_numpy(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                f["taker_share"] = np.where(vol > 0, ta["taker_buy_base"].to_numpy(np.float64) / vol, np.nan)
    cols = find_columns(ta.columns)
    for c in cols.sma + cols.ema:
        f[f"close_{c}"] = close / ta[c].to_numpy(np.float64) - 1.0
    for c in cols.rsi:
        f[c] = ta[c].to_numpy(np.float64) / 100.0
    if cols.macd is not None:
        for c in cols.macd:
            f[f"{c}_rel"] = ta[c].to_numpy(np.float64) / close
    if cols.bbands is not None:
        f[cols.bbands[4]] = ta[cols.bbands[4]].to_numpy(np.float64)  # %B
        f[cols.bbands[3]] = ta[cols.bbands[3]].to_numpy(np.float64)  # bandwidth
    for c in cols.natr:
        f[c] = ta[c].to_numpy(np.float64)
    if isinstance(ta.index, pd.DatetimeIndex):
        hour = ta.index.hour.to_numpy() + ta.index.minute.to_numpy() / 60.0
        f["hour_sin"] = np.sin(2 * np.pi * hour / 24)
        f["hour_cos"] = np.cos(2 * np.pi * hour / 24)
        dow = ta.index.day_of_week.to_numpy()
        f["dow_sin"] = np.sin(2 * np.pi * dow / 7)
        f["dow_cos"] = np.cos(2 * np.pi * dow / 7)
    out = pd.DataFrame(f, index=ta.index)
    return out.replace([np.inf, -np.inf], np.nan)


def make_labels(close: np.ndarray, horizon: int) -> np.ndarray:
    """``1.0`` where ``close[t + horizon] > close[t]``, ``0.0`` where not, NaN for the
    last ``horizon`` rows (their outcome is not known yet).

    >>> make_labels(np.array([1.0, 2.0, 1.5, 1.5]), 1).tolist()
    [1.0, 0.0, 0.0, nan]
    """
    close = np.asarray(close, dtype=np.float64)
    _check_int("horizon", horizon, 1)
    y = np.full(len(close), np.nan)
    if len(close) > horizon:
        y[:-horizon] = (close[horizon:] > close[:-horizon]).astype(np.float64)
        bad = ~(np.isfinite(close[horizon:]) & np.isfinite(close[:-horizon]))
        y[:-horizon][bad] = np.nan
    return y


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserError(f"{name} must be a whole number >= {minimum}, got {value!r}",
                        f"e.g. --{name.replace('_', '-')} {max(minimum, 4)}")
    return int(value)


# ----------------------------------------------------------------------- walk-forward
@dataclass(frozen=True)
class Fold:
    """Row ranges (half-open) of one walk-forward fold."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


@dataclass(frozen=True)
class WalkForward:
    """Expanding (or, with ``max_train_bars``, rolling) walk-forward plan in bars,
    anchored at the first row (see the module docstring)."""

    horizon: int = 4
    train_bars: int = 1000
    test_bars: int = 500
    max_train_bars: int | None = None

    def __post_init__(self) -> None:
        _check_int("horizon", self.horizon, 1)
        _check_int("train_bars", self.train_bars, 50)
        _check_int("test_bars", self.test_bars, 1)
        if self.max_train_bars is not None:
            _check_int("max_train_bars", self.max_train_bars, self.train_bars)

    def folds(self, n: int) -> list[Fold]:
        out = []
        start = self.train_bars + self.horizon
        k = 0
        while start < n:
            train_end = start - self.horizon
            train_start = 0 if self.max_train_bars is None else max(0, train_end - self.max_train_bars)
            out.append(Fold(k, train_start, train_end, start, min(start + self.test_bars, n)))
            start += self.test_bars
            k += 1
        return out


FOLD_COLUMNS = ("fold", "train_from", "train_to", "test_from", "test_to", "n_train", "n_test", "up_share_train",
                "auc", "accuracy", "baseline_accuracy", "baseline_class")

DEFAULT_MODEL_PARAMS: dict[str, Any] = {
    "max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 40,
    "l2_regularization": 1.0, "early_stopping": False, "random_state": 0,
}


@dataclass
class WalkForwardResult:
    """``proba`` (NaN where no model applied), ``fold`` (fold index, -1), the fold table
    and pooled out-of-sample scores."""

    proba: np.ndarray
    fold: np.ndarray
    labels: np.ndarray
    folds: pd.DataFrame
    overall: dict[str, float] = field(default_factory=dict)
    features: tuple[str, ...] = ()


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(y) == 0 or len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def walk_forward(features: pd.DataFrame, labels: np.ndarray, plan: WalkForward, *,
                 model_params: dict[str, Any] | None = None, progress: bool = False,
                 threads: int = 1) -> WalkForwardResult:
    """Fit one HistGradientBoostingClassifier per fold on the past, predict the fold's
    test block. Training rows with a missing label or a missing feature are skipped.

    ``threads`` caps scikit-learn's OpenMP threads (default 1): on a busy 2-core machine
    two spinning OpenMP threads made one fit 15x slower than one thread (measured).
    """
    from threadpoolctl import threadpool_limits

    _check_int("threads", threads, 1)
    with threadpool_limits(limits=threads, user_api="openmp"):
        return _walk_forward(features, labels, plan, model_params=model_params, progress=progress)


def _walk_forward(features: pd.DataFrame, labels: np.ndarray, plan: WalkForward, *,
                  model_params: dict[str, Any] | None, progress: bool) -> WalkForwardResult:
    from sklearn.ensemble import HistGradientBoostingClassifier

    params = {**DEFAULT_MODEL_PARAMS, **(model_params or {})}
    X = features.to_numpy(np.float64)
    y = np.asarray(labels, dtype=np.float64)
    n = len(X)
    if len(y) != n:
        raise ValueError("features and labels differ in length")
    proba = np.full(n, np.nan)
    fold_of = np.full(n, -1, dtype=np.int64)
    folds = plan.folds(n)
    rows = []
    iterator = folds
    if progress:
        from tqdm import tqdm

        iterator = tqdm(folds, desc="walk-forward folds", unit="fold")
    complete = np.isfinite(X).all(axis=1)
    idx = features.index
    for f in iterator:
        tr = np.arange(f.train_start, f.train_end)
        tr = tr[np.isfinite(y[tr]) & complete[tr]]
        te = np.arange(f.test_start, f.test_end)
        row = {"fold": f.index, "train_from": idx[f.train_start], "train_to": idx[f.train_end - 1],
               "test_from": idx[f.test_start], "test_to": idx[f.test_end - 1], "n_train": len(tr)}
        y_tr = y[tr]
        if len(tr) < 50 or len(np.unique(y_tr)) < 2:
            log.warning("fold %d: %d usable training rows (one class only or too few): skipped", f.index, len(tr))
            rows.append({**row, "n_test": 0, "up_share_train": float(np.mean(y_tr)) if len(tr) else np.nan,
                         "auc": np.nan, "accuracy": np.nan, "baseline_accuracy": np.nan, "baseline_class": -1})
            continue
        model = HistGradientBoostingClassifier(**params)
        model.fit(X[tr], y_tr.astype(np.int64))
        p = model.predict_proba(X[te])[:, list(model.classes_).index(1)]
        proba[te] = p
        fold_of[te] = f.index
        scored = np.isfinite(y[te])
        y_te, p_te = y[te][scored], p[scored]
        majority = int(np.mean(y_tr) >= 0.5)
        rows.append({**row, "n_test": int(scored.sum()), "up_share_train": float(np.mean(y_tr)),
                     "auc": _auc(y_te, p_te),
                     "accuracy": float(np.mean((p_te >= 0.5) == (y_te == 1))) if len(y_te) else np.nan,
                     "baseline_accuracy": float(np.mean(y_te == majority)) if len(y_te) else np.nan,
                     "baseline_class": majority})
    table = pd.DataFrame(rows, columns=FOLD_COLUMNS)
    scored = np.isfinite(proba) & np.isfinite(y)
    overall = {"auc": _auc(y[scored], proba[scored]),
               "accuracy": float(np.mean((proba[scored] >= 0.5) == (y[scored] == 1))) if scored.any() else np.nan,
               "baseline_accuracy": float(np.nansum(table["baseline_accuracy"] * table["n_test"])
                                          / max(1, table.loc[table["baseline_accuracy"].notna(), "n_test"].sum())),
               "n_scored": int(scored.sum()), "n_folds": int(table["auc"].notna().sum() if len(table) else 0)}
    return WalkForwardResult(proba, fold_of, y, table, overall, tuple(features.columns))


def ml_scores(ta: pd.DataFrame, plan: WalkForward, *, model_params: dict[str, Any] | None = None,
              progress: bool = False, threads: int = 1) -> WalkForwardResult:
    """Features, labels and walk-forward predictions for an indicator frame."""
    feats = make_features(ta)
    labels = make_labels(ta["close"].to_numpy(np.float64), plan.horizon)
    return walk_forward(feats, labels, plan, model_params=model_params, progress=progress, threads=threads)


def ml_frame(ta: pd.DataFrame, res: WalkForwardResult) -> pd.DataFrame:
    """The ``_ml`` file's frame: ``ml_proba`` and ``ml_fold`` on the candles' index."""
    return pd.DataFrame({"ml_proba": res.proba, "ml_fold": res.fold}, index=ta.index.rename("open_time"))


@dataclass
class ModelRun:
    path: Any
    result: WalkForwardResult
    plan: WalkForward
    simulated: bool
    metadata: dict[str, Any]
    plot: Any = None


def train_ml(dataset: Dataset, *, plan: WalkForward | None = None,
             model_params: dict[str, Any] | None = None, progress: bool = True, write: bool = True,
             plot: bool = True, threads: int = 1) -> ModelRun:
    """The job behind ``python S4/model.py``: read the ``_ta`` file, run the walk-forward,
    write ``dataset_path(..., "ml")`` atomically (and a per-fold PNG under reports/)."""
    import sklearn

    from S1.datasets import dataset_path, read_metadata, report_path, write_parquet
    from S4.signals import read_ta_file

    plan = plan or WalkForward()
    ta, ta_path = read_ta_file(dataset)
    if not plan.folds(len(ta)):
        raise UserError(f"{ta_path.name} has {len(ta):,} rows, too few for the walk-forward plan (the first "
                        f"test block starts at row {plan.train_bars + plan.horizon:,})",
                        "load more --days or lower --train-bars")
    res = ml_scores(ta, plan, model_params=model_params, progress=progress, threads=threads)
    meta_ta = read_metadata(ta_path)
    simulated = bool(meta_ta.get("simulated", False))
    folds_json = res.folds.assign(**{c: res.folds[c].astype(str) for c in
                                     ("train_from", "train_to", "test_from", "test_to")}).to_dict("records")
    meta = {"kind": "ml", "simulated": simulated, "source_file": ta_path.name, "source_rows": len(ta),
            "plan": asdict(plan), "model": "sklearn HistGradientBoostingClassifier",
            "model_params": {**DEFAULT_MODEL_PARAMS, **(model_params or {})}, "sklearn": sklearn.__version__,
            "features": list(res.features), "label": f"close[t+{plan.horizon}] > close[t]",
            "folds": folds_json, "overall": res.overall,
            "rule": "ml_proba[t] comes from a model fitted on rows < test_start - horizon (labels known before "
                    "the fold's first bar closes); NaN before the first fold",
            "created_at": pd.Timestamp.now(tz="UTC").isoformat()}
    run = ModelRun(None, res, plan, simulated, meta)
    if write:
        run.path = write_parquet(ml_frame(ta, res), dataset_path(dataset, "ml"), metadata=meta)
        if plot:
            from S4.plots import fold_chart, save_png

            run.plot = save_png(fold_chart(res.folds, title=f"{dataset.label}: walk-forward "
                                           f"ML (horizon {plan.horizon})" + (" [simulated]" if simulated else "")),
                                report_path(dataset, "ml_folds", "png"))
    return run


def fold_lines(table: pd.DataFrame) -> str:
    """The per-fold table as aligned text for the terminal."""
    cols = ["fold", "test_from", "test_to", "n_train", "n_test", "auc", "accuracy", "baseline_accuracy"]
    t = table[cols].copy()
    for c in ("test_from", "test_to"):
        t[c] = pd.to_datetime(t[c]).dt.strftime("%Y-%m-%d %H:%M")
    return t.to_string(index=False, float_format=lambda v: f"{v:.3f}")


__all__ = [
    "DEFAULT_MODEL_PARAMS",
    "Fold",
    "ModelRun",
    "WalkForward",
    "WalkForwardResult",
    "fold_lines",
    "make_features",
    "make_labels",
    "ml_frame",
    "ml_scores",
    "train_ml",
    "walk_forward",
]
