"""Look-ahead check (the idea of freqtrade's lookahead-analysis): recompute S2's
indicators and S4's signals on the data **truncated** at many cut points and report
every value that changes once the future is removed.

A causal pipeline gives, for every bar t of a truncated run, exactly the value the
full run gave at t. Anything that reads a later row -- ``close.shift(-1)``, a centred
window, a sentiment join on the wrong side, an ML label leaking into a feature --
changes some value near the cut, and the check lists it: cut, bar, column, the value
with the whole history and the value without the future.

What is recomputed at each cut (the first ``c`` bars are kept):

- the indicators (``indicators(candles[:c])``, default S2's :func:`~S2.ta.add_indicators`),
  plus the higher-timeframe columns the rules read (``rsi14_4h`` ...: resampled from the
  truncated candles, :func:`S2.informative.ensure_informative`);
- the ML score when ``ml_fn`` is given (e.g. S4's walk-forward, :func:`S4.ml_score.ml_scores`),
  otherwise the ``ml`` frame truncated at the last kept bar is used as an input;
- the sentiment join (S4's as-of join) on the sentiment rows published at or before
  the **open** of the last kept bar -- S4's contract is that bar t sees sentiment as
  of its open, so anything later is the future for that bar;
- the rules (:func:`S4.signals.signals_frame`): ``entry``, ``exit``, ``signal``, ``rule``.

Cut points: evenly spread lengths plus the bars where the full run signalled (the
truncated data then ends exactly at the signal, as freqtrade does), plus "drop the
last bar". Every derived column (everything but the raw candle columns) is compared
on every kept row; floats with ``rtol`` (default 1e-9), NaN equal to NaN.

>>> import pandas as pd
>>> from S1.offline import simulate_candles
>>> from S4.rules import parse_rules
>>> candles = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-11")
>>> rules = parse_rules("entry: {col: rsi14, op: crosses_above, value: 30}\\nexit: {col: rsi14, op: '>', value: 70}")
>>> lookahead_check(candles, rules, cuts=8).passed
True
>>> leaky = lambda df: add_default_indicators(df).assign(rsi14=lambda d: d["rsi14"].shift(-1))
>>> rep = lookahead_check(candles, rules, indicators=leaky, cuts=8)
>>> rep.passed, "rsi14" in rep.by_column().index
(False, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from S1.datasets import Dataset
from S1.errors import UserError

MAX_RECORDED = 5_000
#: Raw inputs (never derived, so never compared).
INPUT_COLUMNS = ("open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
                 "taker_buy_base", "taker_buy_quote")


def add_default_indicators(candles: pd.DataFrame, config=None) -> pd.DataFrame:
    """S2's indicators with ``config`` (default: S2/config.yaml)."""
    from S2.ta import add_indicators, load_config

    return add_indicators(candles, config=config if config is not None else load_config())


def pipeline(candles: pd.DataFrame, rules, *, indicators: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
             sentiment: pd.DataFrame | None = None, ml: pd.DataFrame | None = None,
             ml_fn: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """candles -> indicators -> (ML) -> joins + rules: the frame S4 writes as ``_signals``."""
    from S2.informative import ensure_informative
    from S4.signals import signals_frame

    ta = (indicators or add_default_indicators)(candles)
    ta = ensure_informative(ta, rules.required_columns())  # rsi14_4h ... rebuilt from these candles
    if ml_fn is not None and rules.uses_ml:
        ml = ml_fn(ta)
    return signals_frame(ta, rules, sentiment=sentiment, ml=ml)


@dataclass
class LookaheadReport:
    """Result of :func:`lookahead_check`."""

    cuts: list[pd.Timestamp]
    columns: list[str]
    changes: pd.DataFrame              # cut, time, column, full, truncated (first MAX_RECORDED)
    n_changes: int
    rows_compared: int
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.n_changes == 0

    def by_column(self) -> pd.DataFrame:
        """Changes per column: count and the earliest bar that changed."""
        if self.changes.empty:
            return pd.DataFrame(columns=["changes", "first_time", "first_cut"]).rename_axis("column")
        g = self.changes.groupby("column", sort=False)
        return pd.DataFrame({"changes": g.size(), "first_time": g["time"].min(), "first_cut": g["cut"].min()})

    def to_dict(self) -> dict[str, Any]:
        from S5.metrics import to_jsonable

        head = self.changes.head(200).astype({"full": str, "truncated": str}) if len(self.changes) else self.changes
        return to_jsonable({
            "passed": self.passed, "n_changes": self.n_changes, "rows_compared": self.rows_compared,
            "cuts": [c.isoformat() for c in self.cuts], "columns": self.columns, "notes": self.notes,
            "by_column": {str(k): {"changes": int(v["changes"]), "first_time": str(v["first_time"])}
                          for k, v in self.by_column().iterrows()},
            "changes": [{k: (str(v) if k in ("cut", "time") else v) for k, v in r.items()}
                        for r in head.to_dict("records")],
        })


def choose_cuts(n: int, signal_bars: np.ndarray, *, cuts: int, min_rows: int) -> np.ndarray:
    """Lengths to keep: half evenly spread over ``[min_rows, n - 1]``, half ending at
    signal bars (spread over them), and ``n - 1`` (drop only the last bar)."""
    if n - 1 < min_rows:
        raise UserError(f"{n} bars are too few for the look-ahead check (needs more than {min_rows})",
                        "use a longer window (more --days)")
    cuts = max(int(cuts), 2)
    even = np.linspace(min_rows, n - 1, num=max(cuts // 2, 1)).round().astype(np.int64)
    sig = np.asarray(signal_bars, dtype=np.int64) + 1
    sig = sig[(sig >= min_rows) & (sig <= n - 1)]
    if len(sig) > cuts - len(even):
        sig = sig[np.linspace(0, len(sig) - 1, num=max(cuts - len(even), 0)).round().astype(np.int64)]
    return np.unique(np.r_[even, sig, n - 1])


def _default_min_rows(rules, indicators) -> int:
    base = 100
    if indicators is None:
        from S2.ta import load_config, warmup_rows

        base = max(warmup_rows(load_config()).values()) + 2
    return base + int(rules.lookback()) + 1


def _comparable(s: pd.Series) -> tuple[np.ndarray, bool]:
    """(values, is_float) of a column for comparison."""
    if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        return s.astype(object).where(s.notna(), None).to_numpy(dtype=object), False
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=bool), False
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return s.to_numpy(dtype="datetime64[ns]").astype(np.int64), False
    return s.to_numpy(dtype=np.float64, na_value=np.nan), True


def _diff_mask(a: np.ndarray, b: np.ndarray, is_float: bool, rtol: float, atol: float) -> np.ndarray:
    if is_float:
        both_nan = np.isnan(a) & np.isnan(b)
        with np.errstate(invalid="ignore"):
            close = np.isclose(a, b, rtol=rtol, atol=atol)
        return ~(close | both_nan)
    return np.array([x != y for x, y in zip(a, b)], dtype=bool) if a.dtype == object else a != b


def lookahead_check(candles: pd.DataFrame, rules, *, indicators: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                    sentiment: pd.DataFrame | None = None, ml: pd.DataFrame | None = None,
                    ml_fn: Callable[[pd.DataFrame], pd.DataFrame] | None = None, cuts: int = 40,
                    min_rows: int | None = None, rtol: float = 1e-9, atol: float = 0.0,
                    progress: bool = False) -> LookaheadReport:
    """Run the pipeline on the full candles and on ``cuts`` truncations; compare."""
    from S4.rules import RuleSet

    if not isinstance(rules, RuleSet):
        raise UserError(f"rules must be a RuleSet, got {type(rules).__name__}",
                        "load it with S4.rules.load_rules('S4/rules.yaml')")
    if not isinstance(candles, pd.DataFrame) or not isinstance(candles.index, pd.DatetimeIndex):
        raise UserError("candles must be a DataFrame indexed by UTC open time",
                        "read them with S1.datasets.read_candles")
    kw = dict(indicators=indicators, ml_fn=ml_fn)
    full = pipeline(candles, rules, sentiment=sentiment, ml=ml, **kw)
    n = len(full)
    columns = [c for c in full.columns if c not in INPUT_COLUMNS]
    if min_rows is None:
        min_rows = min(_default_min_rows(rules, indicators), max(n - 2, 1))
    signal_bars = np.flatnonzero(full["signal"].to_numpy() != 0)
    lengths = choose_cuts(n, signal_bars, cuts=cuts, min_rows=min_rows)
    full_vals = {c: _comparable(full[c]) for c in columns}
    records: list[dict[str, Any]] = []
    n_changes = 0
    rows = 0
    notes: list[str] = []
    if ml is not None and ml_fn is None and rules.uses_ml:
        notes.append("ml_proba taken from the ML file (truncated), not recomputed: pass --recompute-ml to refit")
    iterator = lengths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(lengths, desc="look-ahead cuts", unit="cut")
    idx = full.index
    for c in iterator:
        last_open = idx[c - 1]
        sent_c = sentiment[sentiment.index <= last_open] if sentiment is not None else None
        ml_c = ml[ml.index <= last_open] if ml is not None else None
        part = pipeline(candles.iloc[:c], rules, sentiment=sent_c, ml=ml_c, **kw)
        rows += c
        missing = [col for col in columns if col not in part.columns]
        for col in missing:
            n_changes += 1
            records.append({"cut": last_open, "time": last_open, "column": col, "full": "present",
                            "truncated": "missing"})
        for col in columns:
            if col in missing:
                continue
            a, is_float = full_vals[col]
            b, _ = _comparable(part[col])
            a = a[:c]
            diff = _diff_mask(a, b, is_float, rtol, atol)
            if diff.any():
                where = np.flatnonzero(diff)
                n_changes += len(where)
                for i in where[: max(0, MAX_RECORDED - len(records))]:
                    records.append({"cut": last_open, "time": idx[i], "column": col,
                                    "full": _py(a[i]), "truncated": _py(b[i])})
    changes = pd.DataFrame(records, columns=["cut", "time", "column", "full", "truncated"])
    return LookaheadReport([idx[c - 1] for c in lengths], columns, changes, n_changes, rows, notes)


# ------------------------------------------------------------------------- files
@dataclass
class LookaheadRun:
    report: LookaheadReport
    rules_path: str
    path: Any = None


def lookahead_files(dataset: Dataset, rules_path: str, *, cuts: int = 40,
                    recompute_ml: bool = False, rtol: float = 1e-9, progress: bool = True,
                    write: bool = True) -> LookaheadRun:
    """The job behind ``python S5/lookahead_check.py``: the S1 candle file, S2's
    indicator config (from the ``_ta`` file's metadata when present), the sentiment
    and ML files when the rules read them; writes ``reports/<stem>__<rules>_lookahead.json``."""
    import json

    from S1.datasets import (
        atomic_write_text,
        dataset_path,
        history_command,
        read_candles,
        read_metadata,
        read_parquet,
        report_path,
    )
    from S2.ta import IndicatorConfig, load_config
    from S4.rules import load_rules
    from S4.signals import find_sentiment_file, model_command

    candles = read_candles(dataset_path(dataset),
                           how_to_create=history_command(dataset))
    rules = load_rules(rules_path)
    config = load_config()
    ta_path = dataset_path(dataset, "ta")
    if ta_path.exists():
        cfg = read_metadata(ta_path).get("indicators", {}).get("config")
        if cfg:
            config = IndicatorConfig(**cfg)
    sentiment = ml = ml_fn = None
    if rules.uses_sentiment:
        sentiment = read_parquet(find_sentiment_file(dataset.interval,
                                                     candles.index[0] if len(candles) else None,
                                                     symbol=dataset.symbol))
    if rules.uses_ml:
        mp = dataset_path(dataset, "ml")
        if recompute_ml:
            from S4.ml_score import WalkForward, ml_frame, ml_scores

            plan_d = read_metadata(mp).get("plan") if mp.exists() else None
            plan = WalkForward(**plan_d) if plan_d else WalkForward()
            ml_fn = lambda ta: ml_frame(ta, ml_scores(ta, plan))
        else:
            if not mp.exists():
                raise UserError(f"the rules read ml_proba but {mp} does not exist",
                                f"create it first with: {model_command(dataset)} "
                                "(or pass --recompute-ml)")
            ml = read_parquet(mp)
    report = lookahead_check(candles, rules, indicators=lambda df: add_default_indicators(df, config),
                             sentiment=sentiment, ml=ml, ml_fn=ml_fn, cuts=cuts, rtol=rtol, progress=progress)
    run = LookaheadRun(report, str(rules_path))
    if write:
        doc = {"symbol": dataset.symbol, "interval": dataset.interval, "days": dataset.days,
               "rules": str(rules_path),
               "indicator_config": config.to_dict(), **report.to_dict()}
        run.path = report_path(dataset, "lookahead", "json", rules=rules_path)
        atomic_write_text(run.path, json.dumps(doc, indent=2, allow_nan=False, default=str))
    return run


def _py(x):
    if isinstance(x, np.generic):
        return x.item()
    return x


__all__ = [
    "LookaheadReport",
    "LookaheadRun",
    "add_default_indicators",
    "choose_cuts",
    "lookahead_check",
    "lookahead_files",
    "pipeline",
]
