"""Independent numpy implementations of the textbook indicator definitions (plain
loops and two-pass statistics, no TA-Lib): the yardstick of tests/S2/test_ta.py."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def sma(x: np.ndarray, n: int) -> np.ndarray:
    out = _nan(len(x))
    out[n - 1:] = sliding_window_view(x, n).mean(axis=1)
    return out


def ema(x: np.ndarray, n: int) -> np.ndarray:
    """alpha = 2/(n+1); the first value is the SMA of the first n inputs (leading NaNs skipped)."""
    out = _nan(len(x))
    start = int(np.argmax(~np.isnan(x)))
    alpha = 2.0 / (n + 1)
    e = float(np.mean(x[start:start + n]))
    out[start + n - 1] = e
    for i in range(start + n, len(x)):
        e = alpha * x[i] + (1 - alpha) * e
        out[i] = e
    return out


def wilder(values: np.ndarray, n: int, first: int) -> np.ndarray:
    """Wilder smoothing of values[first:]: mean of the first n, then (prev*(n-1)+v)/n."""
    out = _nan(len(values))
    avg = float(np.mean(values[first:first + n]))
    out[first + n - 1] = avg
    for i in range(first + n, len(values)):
        avg = (avg * (n - 1) + values[i]) / n
        out[i] = avg
    return out


def rsi(close: np.ndarray, n: int) -> np.ndarray:
    """Wilder RSI = 100 - 100 / (1 + avg gain / avg loss); 100 when there is no loss,
    50 when there is neither gain nor loss."""
    change = np.r_[np.nan, np.diff(close)]
    gain, loss = np.where(change > 0, change, 0.0), np.where(change < 0, -change, 0.0)
    ag, al = wilder(gain, n, 1), wilder(loss, n, 1)
    out = _nan(len(close))
    for i in range(n, len(close)):
        if ag[i] == 0 and al[i] == 0:
            out[i] = 50.0
        elif al[i] == 0:
            out[i] = 100.0
        else:
            out[i] = 100.0 - 100.0 / (1.0 + ag[i] / al[i])
    return out


def macd(close: np.ndarray, fast: int, slow: int, signal: int):
    line = ema(close, fast) - ema(close, slow)
    sig = ema(line, signal)
    return line, line - sig, sig


def bbands(close: np.ndarray, n: int, k: float):
    mid = sma(close, n)
    std = _nan(len(close))
    std[n - 1:] = sliding_window_view(close, n).std(axis=1, ddof=0)  # population, two-pass
    upper, lower = mid + k * std, mid - k * std
    bandwidth = (upper - lower) / mid * 100
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(upper > lower, (close - lower) / (upper - lower), 0.5)
    percent[np.isnan(mid)] = np.nan
    return lower, mid, upper, bandwidth, percent


def true_range(high, low, close) -> np.ndarray:
    prev = np.r_[np.nan, close[:-1]]
    tr = np.maximum(high - low, np.maximum(np.abs(high - prev), np.abs(low - prev)))
    tr[0] = np.nan  # needs a previous close
    return tr


def atr(high, low, close, n: int) -> np.ndarray:
    return wilder(true_range(high, low, close), n, 1)


def natr(high, low, close, n: int) -> np.ndarray:
    return atr(high, low, close, n) / close * 100
