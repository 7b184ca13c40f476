"""Helpers of the S4 tests (plain functions; the fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
#: The example rule files; tests index the first three by position, newer ones (rules_mtf.yaml ...) follow.
_INDEXED = ("rules.yaml", "rules_ml.yaml", "rules_ta_only.yaml")
RULE_FILES = sorted((REPO / "S4").glob("rules*.yaml"), key=lambda p: (p.name not in _INDEXED, p.name))


def make_sentiment(index: pd.DatetimeIndex, *, seed: int = 7, start_offset: int = 24) -> pd.DataFrame:
    """A sentiment frame in S3's layout on the hourly grid of ``index`` (starting
    ``start_offset`` hours after the first candle, so the first candles have none)."""
    rng = np.random.default_rng(seed)
    grid = pd.date_range(index[0] + pd.Timedelta(hours=start_offset), index[-1], freq="1h", tz="UTC",
                         name="open_time")
    n_items = rng.poisson(0.6, len(grid))
    shock = np.where(n_items > 0, rng.normal(0, 0.5, len(grid)), 0.0)
    score = np.zeros(len(grid))
    level = 0.0
    for i, s in enumerate(shock):  # decaying news impulses, like S3's series
        level = level * 0.9 + s * 0.4
        score[i] = np.tanh(level)
    return pd.DataFrame({"sentiment_score": score, "n_items": n_items.astype(np.int64),
                         "evidence": np.abs(score)}, index=grid)


def causal_proba(close: pd.Series) -> np.ndarray:
    """A stand-in ml_proba known at each bar's close (a squashed 12-bar momentum), NaN
    for the first 300 bars like a walk-forward score before its first fold."""
    mom = np.log(close).diff(12).to_numpy()
    p = 1 / (1 + np.exp(-mom * 40))
    p[:300] = np.nan
    return p


def hourly(values: dict, start: str = "2024-01-01") -> pd.DataFrame:
    n = len(next(iter(values.values())))
    idx = pd.date_range(start, periods=n, freq="1h", tz="UTC", name="open_time")
    return pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in values.items()}, index=idx)


def write_market(data_dir: Path, candles: pd.DataFrame, *, symbol: str = "BTCUSDT", interval: str = "1h",
                 days: int = 150, simulated: bool = False) -> Path:
    """Write an S1 candle file and the S2 _ta file for it into ``data_dir``."""
    from S1.datasets import Dataset, dataset_path, write_parquet
    from S2.ta import add_indicators

    meta = {"simulated": simulated, "symbol": symbol, "interval": interval}
    write_parquet(candles, dataset_path(Dataset(symbol, interval, days), data_dir=data_dir), metadata=meta)
    ta = add_indicators(candles)
    return write_parquet(ta, dataset_path(Dataset(symbol, interval, days), "ta", data_dir=data_dir), metadata=meta)


# ------------------------------------------------------------------ reference interpreter
def reference_evaluate(frame: pd.DataFrame, rules) -> pd.DataFrame:
    """A slow, row-by-row interpreter of the rule semantics written independently of
    S4.evaluate (Python scalars, None for unknown), to compare against."""
    from S4.rules import Column, Condition

    cols = {c: frame[c].to_numpy(dtype=float) for c in rules.required_columns()}
    n = len(frame)

    def col_value(col, t):
        k = int(rules.resolve(col.bars_ago))
        if t - k < 0:
            return None
        v = float(cols[col.name][t - k])
        return None if v != v else v * float(rules.resolve(col.mul))

    def operand(x, t):
        if isinstance(x, Column):
            return col_value(x, t)
        return float(rules.resolve(x))

    def cmp(op, a, b):
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b}[op]

    def cond(c, t):
        a, b = col_value(c.left, t), operand(c.right, t)
        if c.op in ("<", "<=", ">", ">=", "=="):
            return None if a is None or b is None else cmp(c.op, a, b)
        if t == 0:
            return None
        a1, b1 = col_value(c.left, t - 1), operand(c.right, t - 1)
        if None in (a, b, a1, b1):
            return None
        if c.op == "crosses_above":
            return a > b and a1 <= b1
        return a < b and a1 >= b1

    def node(nd, t):
        if isinstance(nd, Condition):
            return cond(nd, t)
        vals = [node(ch, t) for ch in nd.children]
        if nd.kind == "not":
            return None if vals[0] is None else not vals[0]
        if nd.kind == "all":
            if any(v is False for v in vals):
                return False
            return True if all(v is True for v in vals) else None
        if any(v is True for v in vals):
            return True
        return False if all(v is False for v in vals) else None

    cooldown = int(rules.resolve(rules.cooldown))
    entry, exit_, signal, rule = [False] * n, [False] * n, [0] * n, [None] * n
    long, last_exit = False, None
    for t in range(n):
        fired_entry = [r.name for r in rules.entry if node(r.node, t) is True]
        fired_exit = [r.name for r in rules.exit if node(r.node, t) is True]
        if long:
            if fired_exit:
                exit_[t], signal[t], rule[t], long, last_exit = True, -1, fired_exit[0], False, t
        elif fired_entry and not fired_exit and (last_exit is None or t - last_exit > cooldown):
            entry[t], signal[t], rule[t], long = True, 1, fired_entry[0], True
    return pd.DataFrame({"entry": entry, "exit": exit_, "signal": signal, "rule": rule}, index=frame.index)
