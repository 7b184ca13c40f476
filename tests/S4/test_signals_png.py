"""The signals PNG (S4/plots.py): the whole window its title names, entry and exit
markers both visible, and a panel for each indicator family the rules read."""

from __future__ import annotations

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def frame_and_rules():
    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators
    from S4.rules import load_rules
    from S4.signals import signals_frame

    rules = load_rules("S4/rules_ta_only.yaml")
    candles = simulate_candles("ETHUSDC", "1h", "2023-01-01", "2023-05-01")   # 2,880 bars: more than 2,000
    return signals_frame(add_indicators(candles), rules), rules


def test_whole_window_markers_and_rule_panels(frame_and_rules):
    from S4.plots import signals_chart

    f, rules = frame_and_rules
    fig = signals_chart(f, title="t", rules=rules)
    ax, *panels = fig.axes
    lo, hi = ax.get_xlim()
    assert mdates.num2date(lo) == f.index[0] and mdates.num2date(hi) == f.index[-1]   # the whole window
    assert "2023-01-01 .. 2023-04-30" in ax.get_title() and f"{len(f):,} bars" in ax.get_title()
    entries, exits = (c for c in ax.collections if c.get_label().startswith(("entry", "exit")))
    e, x = f["entry"].to_numpy(bool), f["exit"].to_numpy(bool)
    assert len(entries.get_offsets()) == e.sum() > 0 and len(exits.get_offsets()) == x.sum() > 0
    # entries under the bar's low, exits over its high: never on top of each other
    assert (entries.get_offsets()[:, 1] < f["low"].to_numpy()[e]).all()
    assert (exits.get_offsets()[:, 1] > f["high"].to_numpy()[x]).all()
    labels = [sorted(t.get_text() for t in p.get_legend().get_texts()) for p in panels]
    assert labels == [["MACD_12_26_9", "MACDh_12_26_9", "MACDs_12_26_9"], ["rsi14"]]
    on_price = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"sma50", "ema21"} <= on_price
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_rules_reading_sentiment_get_its_panel(frame_and_rules):
    from S4.plots import signals_chart

    f, _ = frame_and_rules
    f = f.assign(sentiment_score=np.sin(np.arange(len(f)) / 50.0))
    fig = signals_chart(f, columns=["close", "sentiment_score", "rsi14"])
    assert len(fig.axes) == 3 and any("sentiment_score" in t.get_text()
                                      for t in fig.axes[1].get_legend().get_texts() + fig.axes[2].get_legend().get_texts())
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert isinstance(f.index, pd.DatetimeIndex)
