"""PNG charts of S4's outputs (matplotlib, headless): the signals on the price and
the walk-forward ML folds against their naive baseline."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Save ``fig`` as PNG atomically (temp file + rename) and close it."""
    from S1.datasets import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())


def _panels(f: pd.DataFrame, columns) -> tuple[list[str], list[list[str]]]:
    """Split the indicator columns the rules read into ones drawn on the price (same
    scale as the close: moving averages, bands) and panels of their own (RSI, the
    MACD family together, sentiment, ML probability, anything else one each)."""
    close = f["close"].to_numpy(np.float64)
    med = float(np.nanmedian(np.abs(close))) if len(close) else 1.0
    on_price, families = [], {}
    for c in dict.fromkeys(columns):
        if c in ("open", "high", "low", "close", "entry", "exit", "signal", "rule") or c not in f.columns:
            continue
        v = pd.to_numeric(f[c], errors="coerce").to_numpy(np.float64)
        if not np.isfinite(v).any():
            continue
        m = float(np.nanmedian(np.abs(v)))
        if med > 0 and 0.5 < m / med < 2.0 and not c.lower().startswith(("rsi", "macd")):
            on_price.append(c)
            continue
        key = "MACD" if c.upper().startswith("MACD") else c.split("_")[0].rstrip("0123456789") or c
        families.setdefault(key, []).append(c)
    return on_price, list(families.values())


def signals_chart(frame: pd.DataFrame, *, title: str = "", last: int | None = None, rules=None,
                  columns: list[str] | None = None):
    """The signals on the price over the **whole window** (``last``: only the last
    rows): entries as green triangles under the bar's low, exits as red triangles
    over its high (both visible when they fall on the same or neighbouring bars),
    the price-scale indicators the rules read on the price, and one panel per other
    indicator family they read (``rules``: an S4 RuleSet, or ``columns``); without
    either, ``sma50`` / ``ema21`` and the ``sentiment_score`` / ``ml_proba`` panel."""
    plt = _plt()
    f = frame.iloc[-last:] if last else frame
    if columns is None and rules is not None:
        columns = list(rules.required_columns())
    if columns is None:
        columns = [c for c in ("sma50", "ema21", "sentiment_score", "ml_proba") if c in f.columns]
        on_price, panels = [c for c in ("sma50", "ema21") if c in f.columns], []
        extra = [c for c in ("sentiment_score", "ml_proba") if c in f.columns]
        if extra:
            panels = [extra]
    else:
        on_price, panels = _panels(f, columns)
    n = 1 + len(panels)
    fig, axes = plt.subplots(n, 1, figsize=(13, 4.8 + 1.9 * len(panels)), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3] + [1] * len(panels)})
    ax = axes[0, 0]
    ax.plot(f.index, f["close"], lw=0.8, color="#333", label="close")
    for c, color in zip(on_price, ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#bcbd22")):
        ax.plot(f.index, f[c], lw=0.8, color=color, alpha=0.85, label=c)
    e, x = f["entry"].to_numpy(bool), f["exit"].to_numpy(bool)
    lo = (f["low"] if "low" in f.columns else f["close"]).to_numpy(np.float64)
    hi = (f["high"] if "high" in f.columns else f["close"]).to_numpy(np.float64)
    span = float(np.nanmax(hi) - np.nanmin(lo)) if len(f) else 0.0
    pad = 0.012 * span
    ax.scatter(f.index[e], lo[e] - pad, marker="^", color="#2ca02c", edgecolors="#0b4f0b", linewidths=0.6,
               s=70, zorder=4, label=f"entry ({int(e.sum())})")
    ax.scatter(f.index[x], hi[x] + pad, marker="v", color="#d62728", edgecolors="#5c0b0b", linewidths=0.6,
               s=70, zorder=4, label=f"exit ({int(x.sum())})")
    if len(f):
        first, final = f.index[0], f.index[-1]
        ax.set_xlim(first, final)
        window = f"{pd.Timestamp(first):%Y-%m-%d} .. {pd.Timestamp(final):%Y-%m-%d}, {len(f):,} bars"
        title = f"{title}\n{window}" if title else window
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    for k, cols in enumerate(panels, start=1):
        axk = axes[k, 0]
        for c in cols:
            if c.upper().startswith("MACDH"):
                v = f[c].to_numpy(np.float64)
                axk.bar(f.index, v, width=(f.index[1] - f.index[0]) if len(f) > 1 else 0.01,
                        color=np.where(v >= 0, "#2ca02c", "#d62728"), alpha=0.5, label=c)
            else:
                axk.plot(f.index, f[c], lw=0.8, label=c)
        name = cols[0].lower()
        if name.startswith("rsi"):
            for level in (30, 70):
                axk.axhline(level, color="#999", lw=0.6, ls="--")
        elif name.startswith("ml_proba"):
            axk.axhline(0.5, color="#999", lw=0.6)
        else:
            axk.axhline(0.0, color="#999", lw=0.6)
        axk.vlines(f.index[e], 0, 1, transform=axk.get_xaxis_transform(), color="#2ca02c", lw=0.5, alpha=0.35)
        axk.vlines(f.index[x], 0, 1, transform=axk.get_xaxis_transform(), color="#d62728", lw=0.5, alpha=0.35)
        axk.legend(loc="upper left", fontsize=8, ncol=3)
        axk.grid(alpha=0.3)
    fig.autofmt_xdate()
    return fig


def fold_chart(table: pd.DataFrame, *, title: str = ""):
    """Per-fold out-of-sample AUC and accuracy next to the majority-class baseline."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(table))
    w = 0.27
    ax.bar(x - w, table["auc"], w, label="AUC (out of sample)", color="#1f77b4")
    ax.bar(x, table["accuracy"], w, label="accuracy", color="#2ca02c")
    ax.bar(x + w, table["baseline_accuracy"], w, label="baseline accuracy (majority class)", color="#aaa")
    ax.axhline(0.5, color="#d62728", lw=0.8, ls="--", label="coin flip")
    labels = [pd.Timestamp(t).strftime("%Y-%m-%d") for t in table["test_from"]] if len(table) else []
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0.3, 0.8)
    ax.set_xlabel("fold (first test bar)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    return fig
