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


def signals_chart(frame: pd.DataFrame, *, title: str = "", last: int | None = 2000):
    """Close with entry (green ^) and exit (red v) markers; a second panel with
    ``sentiment_score`` / ``ml_proba`` when the frame has them. ``last`` rows only."""
    plt = _plt()
    f = frame.iloc[-last:] if last else frame
    extra = [c for c in ("sentiment_score", "ml_proba") if c in f.columns]
    fig, axes = plt.subplots(1 + bool(extra), 1, figsize=(12, 6 if extra else 4.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1] if extra else [1]}, squeeze=False)
    ax = axes[0, 0]
    ax.plot(f.index, f["close"], lw=0.8, color="#333", label="close")
    for c, color in (("sma50", "#1f77b4"), ("ema21", "#ff7f0e")):
        if c in f.columns:
            ax.plot(f.index, f[c], lw=0.7, color=color, alpha=0.8, label=c)
    e, x = f["entry"].to_numpy(bool), f["exit"].to_numpy(bool)
    ax.scatter(f.index[e], f["close"].to_numpy()[e], marker="^", color="#2ca02c", s=40, zorder=3,
               label=f"entry ({int(e.sum())})")
    ax.scatter(f.index[x], f["close"].to_numpy()[x], marker="v", color="#d62728", s=40, zorder=3,
               label=f"exit ({int(x.sum())})")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    if extra:
        ax2 = axes[1, 0]
        for c in extra:
            ax2.plot(f.index, f[c], lw=0.8, label=c)
        ax2.axhline(0.5 if extra == ["ml_proba"] else 0.0, color="#999", lw=0.6)
        ax2.legend(loc="upper left", fontsize=8)
        ax2.grid(alpha=0.3)
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
