"""Matplotlib figures of candles and indicators (PNG previews and notebooks).

The functions return :class:`matplotlib.figure.Figure` objects built without
pyplot, so they work headless (no display, no GUI backend) and show exactly once
in a notebook; pass ``fig=plt.figure()`` to draw into a window instead.

>>> from S1.offline import simulate_candles
>>> from S2.ta import add_indicators
>>> ta = add_indicators(simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-15"))
>>> fig = preview_figure(ta, title="BTCUSDT 1h")
>>> [ax.get_ylabel() for ax in fig.axes]
['price', 'RSI 14', 'MACD 12/26/9']
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from S1.datasets import atomic_write_bytes
from S1.errors import UserError
from S2.ta import find_columns

UP, DOWN = "#26a69a", "#ef5350"


def has_display() -> bool:
    """True when a figure window can open (a desktop session, not a headless box or CI)."""
    backend = os.environ.get("MPLBACKEND", "").lower()
    if backend in ("agg", "pdf", "svg", "cairo", "template") or backend.startswith("module://matplotlib_inl"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def select_window(df: pd.DataFrame, *, start=None, end=None, rows: int | None = None) -> pd.DataFrame:
    """Rows with ``start <= open_time <= end`` (UTC dates or timestamps, either may be
    None), then the last ``rows`` of them; a one-line error if nothing is left.

    >>> idx = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")
    >>> len(select_window(pd.DataFrame({"close": 1.0}, index=idx), start="2024-01-02"))
    24
    """
    if rows is not None and (isinstance(rows, bool) or int(rows) < 1):
        raise UserError(f"rows must be a positive number, got {rows!r}", "e.g. --rows 1000")

    def ts(v):
        try:
            t = pd.Timestamp(v)
        except (ValueError, TypeError):
            raise UserError(f"cannot read {v!r} as a date",
                            "use YYYY-MM-DD or YYYY-MM-DD HH:MM (UTC)") from None
        return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")

    out = df
    if start is not None:
        out = out[out.index >= ts(start)]
    if end is not None:
        end_ts = ts(end)
        if isinstance(end, str) and len(end.strip()) <= 10:  # a bare date includes that whole day
            end_ts = end_ts + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
        out = out[out.index <= end_ts]
    if rows is not None:
        out = out.iloc[-int(rows):]
    if out.empty:
        have = f"{df.index[0]:%Y-%m-%d %H:%M} .. {df.index[-1]:%Y-%m-%d %H:%M} UTC" if len(df) else "no rows"
        raise UserError(f"no candles between {start or 'the start'} and {end or 'the end'}",
                        f"pick a range inside the data ({have})")
    return out


def _bar_width(index: pd.DatetimeIndex) -> float:
    """Bar width in days (matplotlib date units): 80 % of the typical candle spacing."""
    if len(index) < 2:
        return 0.8 / 24
    step = np.median(np.diff(index.asi8)) / 86_400e9
    return 0.8 * float(step)


def _bars(ax, x: pd.DatetimeIndex, heights, colors, *, label: str | None = None, alpha: float = 0.8):
    """Vertical bars from 0 to ``heights`` as ONE PolyCollection (a patch per bar is
    ~20x slower to draw with thousands of candles)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.dates import date2num

    h = np.nan_to_num(np.asarray(heights, dtype=np.float64))
    xs = date2num(x.tz_convert(None).to_pydatetime()) if len(x) else np.empty(0)
    half = _bar_width(x) / 2
    zero = np.zeros_like(h)
    verts = np.stack([np.column_stack([xs - half, zero]), np.column_stack([xs - half, h]),
                      np.column_stack([xs + half, h]), np.column_stack([xs + half, zero])], axis=1)
    coll = PolyCollection(verts, facecolors=colors, edgecolors="none", alpha=alpha, label=label)
    ax.add_collection(coll)
    ax.xaxis_date()
    ax.autoscale_view()
    return coll


def preview_figure(ta: pd.DataFrame, *, title: str = "", fig: Figure | None = None) -> Figure:
    """Three panels: 1) close + SMA/EMA + Bollinger Bands, 2) RSI with the 30/70
    zones, 3) MACD, signal and histogram. Columns are found whatever their lengths."""
    if "close" not in ta.columns or not isinstance(ta.index, pd.DatetimeIndex):
        raise UserError("preview needs a frame with an open_time index and a close column",
                        "pass the output of S2.ta.add_indicators")
    found = find_columns(ta.columns)
    fig = fig if fig is not None else Figure(figsize=(13, 9), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 1.4]})
    x = ta.index
    if found.bbands:
        lo, mid, up = (ta[c] for c in found.bbands[:3])
        ax1.fill_between(x, lo, up, color="#90caf9", alpha=0.25, linewidth=0,
                         label=f"Bollinger {found.bbands[1][4:]}")
        ax1.plot(x, up, color="#64b5f6", lw=0.7)
        ax1.plot(x, lo, color="#64b5f6", lw=0.7)
    ax1.plot(x, ta["close"], color="#212121", lw=1.0, label="close")
    for c, color in zip(found.sma, ["#ff9800", "#8d6e63", "#ffca28"]):
        ax1.plot(x, ta[c], color=color, lw=1.1, label=c.upper().replace("SMA", "SMA "))
    for c, color in zip(found.ema, ["#ab47bc", "#26c6da", "#d81b60"]):
        ax1.plot(x, ta[c], color=color, lw=1.1, label=c.upper().replace("EMA", "EMA "))
    ax1.set_ylabel("price")
    ax1.legend(loc="upper left", fontsize=8, ncols=4)
    ax1.set_title(title or "price and indicators")

    if found.rsi:
        col = found.rsi[0]
        ax2.axhspan(70, 100, color=DOWN, alpha=0.10)
        ax2.axhspan(0, 30, color=UP, alpha=0.10)
        ax2.axhline(70, color=DOWN, lw=0.8, ls="--")
        ax2.axhline(30, color=UP, lw=0.8, ls="--")
        ax2.plot(x, ta[col], color="#5e35b1", lw=1.0)
        ax2.set_ylim(0, 100)
        ax2.set_yticks([30, 50, 70])
        ax2.set_ylabel(f"RSI {col[3:]}")
    else:
        ax2.text(0.5, 0.5, "no RSI column", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_ylabel("RSI")

    if found.macd:
        line, hist, sig = (ta[c] for c in found.macd)
        h = hist.to_numpy()
        _bars(ax3, x, h, np.where(h >= 0, UP, DOWN), label="histogram", alpha=0.7)
        ax3.plot(x, line, color="#1e88e5", lw=1.0, label="MACD")
        ax3.plot(x, sig, color="#fb8c00", lw=1.0, label="signal")
        ax3.axhline(0, color="#9e9e9e", lw=0.6)
        ax3.legend(loc="upper left", fontsize=8, ncols=3)
        ax3.set_ylabel("MACD " + "/".join(found.macd[0].split("_")[1:]))
    else:
        ax3.text(0.5, 0.5, "no MACD columns", ha="center", va="center", transform=ax3.transAxes)
        ax3.set_ylabel("MACD")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.25)
    ax3.set_xlabel("open time (UTC)")
    fig.autofmt_xdate()
    return fig


def price_volume_figure(candles: pd.DataFrame, *, title: str = "", fig: Figure | None = None) -> Figure:
    """Close price (line) above volume (bars coloured by the candle's direction)."""
    missing = [c for c in ("close", "volume") if c not in candles.columns]
    if missing:
        raise UserError(f"price/volume plot: missing columns {missing}", "pass a candle frame from S1")
    fig = fig if fig is not None else Figure(figsize=(13, 6), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    x = candles.index
    ax1.plot(x, candles["close"], color="#212121", lw=1.0)
    ax1.set_ylabel("close")
    ax1.set_title(title or "close and volume")
    up = (candles["close"].to_numpy() >= candles["open"].to_numpy() if "open" in candles
          else np.ones(len(x), bool))
    _bars(ax2, x, candles["volume"].to_numpy(), np.where(up, UP, DOWN))
    ax2.set_ylabel("volume")
    ax2.set_xlabel("open time (UTC)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.25)
    fig.autofmt_xdate()
    return fig


def save_png(fig: Figure, path: Path, *, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically (temp file + rename)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(Path(path), buf.getvalue())
