"""The ``sentiment_score`` series: classified news items -> one row per candle.

For the candle that opens at ``t`` (UTC, aligned with the exchange's candles via
:mod:`S1.intervals`), only items with ``published_at < t`` count -- an item
published at 10:37 informs the 1h candle that opens at 11:00, never the one that
opened at 10:00, so a strategy acting at the open of ``t`` never sees the future.

Each item *i* brings its signed ``score`` s_i in [-1, 1] with weight w_i = its
``confidence`` (``unknown`` items weigh 0), decayed with half-life *h*::

    N(t) = sum_i w_i s_i 2^(-(t - p_i)/h)      D(t) = sum_i w_i 2^(-(t - p_i)/h)
    sentiment_score(t) = N(t) / (D(t) + prior_weight)

``prior_weight`` is a neutral pseudo-item: one confident item moves the score only
part of the way, many agreeing items approach their mean, and with no news the
score decays towards 0 with the half-life (|score| <= 1 always). Buckets without
new items are kept (``n_items`` 0) and carry that decayed score; ``evidence`` is D(t).
``n_items`` counts the items that became visible at ``t`` (published in
``[previous open, t)``), ``unknown`` ones excluded, zero-confidence ones included.

>>> t0 = pd.Timestamp("2024-01-01 10:00", tz="UTC")
>>> items = pd.DataFrame({"published_at": [t0 + pd.Timedelta(minutes=37)],
...                       "score": [0.8], "confidence": [1.0]})
>>> s = sentiment_series(items, since=t0, until=t0 + pd.Timedelta(hours=3), interval="1h",
...                      half_life="1h", prior_weight=1.0)
>>> s["n_items"].tolist(), s["sentiment_score"].round(3).tolist()
([0, 1, 0, 0], [0.0, 0.347, 0.222, 0.129])
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from S1.errors import UserError
from S1.intervals import ceil_ms, check_interval, floor_ms, next_open_ms, to_ms

LN2 = np.log(2.0)


def bucket_open_times(start_ms: int, end_ms: int, interval: str) -> np.ndarray:
    """Open times ``t`` of the candles with ``start_ms <= t <= end_ms`` (ms, int64)."""
    first, last = ceil_ms(start_ms, interval), floor_ms(end_ms, interval)
    if last < first:
        return np.empty(0, dtype=np.int64)
    if interval == "1M":
        out, t = [], first
        while t <= last:
            out.append(t)
            t = next_open_ms(t, interval)
        return np.asarray(out, dtype=np.int64)
    step = next_open_ms(0, interval)
    return np.arange(first, last + 1, step, dtype=np.int64)


def decayed_sums(open_ms: np.ndarray, prev_open_ms: int, pub_ms: np.ndarray, value: np.ndarray,
                 weight: np.ndarray, half_life_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernel on arrays: N(t), D(t) at each open time and the count of items that
    became visible at each ``t`` (published in ``[previous open, t)``).
    Items with ``pub >= open_ms[-1]`` are ignored (they inform later candles)."""
    n = len(open_ms)
    N = np.zeros(n)
    D = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    if n == 0:
        return N, D, count
    lam = LN2 / float(half_life_ms)
    k = np.searchsorted(open_ms, pub_ms, side="right")  # first open time strictly after publication
    use = k < n
    k, p, v, w = k[use], pub_ms[use], value[use], weight[use]
    decay = np.exp(-(open_ms[k] - p).astype(np.float64) * lam)
    np.add.at(N, k, w * v * decay)
    np.add.at(D, k, w * decay)
    fresh = (k > 0) | (p >= prev_open_ms)
    count += np.bincount(k[fresh], minlength=n).astype(np.int64)
    gaps = np.diff(open_ms).astype(np.float64)
    alpha = np.exp(-gaps * lam)
    if n > 1 and np.allclose(alpha, alpha[0]):
        N = lfilter([1.0], [1.0, -alpha[0]], N)
        D = lfilter([1.0], [1.0, -alpha[0]], D)
    else:
        for i in range(1, n):
            N[i] += alpha[i - 1] * N[i - 1]
            D[i] += alpha[i - 1] * D[i - 1]
    return N, D, count


def sentiment_series(items: pd.DataFrame, *, since, until, interval: str = "1h", half_life: str = "6h",
                     prior_weight: float = 1.0) -> pd.DataFrame:
    """One row per candle open time in ``[since, until]``: ``sentiment_score``,
    ``n_items``, ``evidence``. ``items`` needs ``published_at`` (UTC), ``score`` and
    ``confidence``; a ``label`` of ``unknown`` gives the item weight 0."""
    check_interval(interval)
    for col in ("published_at", "score", "confidence"):
        if col not in items.columns:
            raise UserError(f"items lack the {col!r} column", "classify them first (S3/classify.py)")
    hl = pd.Timedelta(half_life)
    if hl <= pd.Timedelta(0) or prior_weight <= 0:
        raise UserError("half_life and prior_weight must be positive", "e.g. half_life 6h, prior_weight 1")
    start_ms, end_ms = to_ms(since), to_ms(until)
    if end_ms < start_ms:
        raise UserError(f"--until {until} is before --since {since}", "swap them")
    open_ms = bucket_open_times(start_ms, end_ms, interval)
    pub = pd.to_datetime(items["published_at"], utc=True)
    pub_ms = pd.DatetimeIndex(pub).as_unit("ms").asi8
    value = items["score"].to_numpy(dtype=np.float64)
    weight = items["confidence"].to_numpy(dtype=np.float64)
    ok = np.isfinite(value) & np.isfinite(weight)
    if "label" in items.columns:
        ok &= (items["label"].astype(str) != "unknown").to_numpy()
    # items with confidence 0 are counted in n_items but weigh nothing in the score
    prev = floor_ms(open_ms[0] - 1, interval) if len(open_ms) else 0
    N, D, count = decayed_sums(open_ms, prev, pub_ms[ok], np.clip(value[ok], -1, 1), np.clip(weight[ok], 0, 1),
                               hl.total_seconds() * 1000.0)
    score = np.clip(N / (D + prior_weight), -1.0, 1.0)
    idx = pd.DatetimeIndex(pd.to_datetime(open_ms, unit="ms", utc=True).as_unit("ns"), name="open_time")
    return pd.DataFrame({"sentiment_score": score, "n_items": count, "evidence": D}, index=idx)
