"""Interactive Plotly charts of an indicator frame (the Streamlit preview uses them;
notebooks can too). Pure functions: frame in, ``plotly.graph_objects.Figure`` out.

>>> from S1.offline import simulate_candles
>>> from S2.ta import add_indicators
>>> ta = add_indicators(simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-10"))
>>> fig = indicator_chart(ta, sma=True, ema=False, bbands=False, name="BTC")
>>> [t.name for t in fig.data][:3]
['BTC', 'SMA 50', 'volume']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from S1.errors import UserError
from S2.ta import find_columns

UP, DOWN = "#26a69a", "#ef5350"
SMA_COLORS = ["#ff9800", "#8d6e63", "#ffca28"]
EMA_COLORS = ["#ab47bc", "#26c6da", "#d81b60"]

#: panel name -> relative height
PANELS = {"price": 0.40, "volume": 0.1, "rsi": 0.13, "macd": 0.15, "atr": 0.11, "natr": 0.11}


def indicator_chart(ta: pd.DataFrame, *, sma: bool = True, ema: bool = True, bbands: bool = True,
                    panels: tuple[str, ...] = ("volume", "rsi", "macd", "atr", "natr"), name: str = "price",
                    height: int = 1100) -> go.Figure:
    """Candlesticks (+ SMA/EMA/Bollinger overlays when toggled on) with volume, RSI
    (30/70 zones), MACD (+ histogram), ATR and NATR % panels below (any subset, in
    :data:`PANELS` order), one shared time axis. Indicator columns are found
    whatever their lengths; a panel whose columns are missing is left out."""
    unknown = [p for p in panels if p not in PANELS or p == "price"]
    if unknown:
        raise UserError(f"unknown chart panel(s) {unknown}",
                        f"use some of {[p for p in PANELS if p != 'price']}")
    missing = [c for c in ("open", "high", "low", "close") if c not in ta.columns]
    if missing or not isinstance(ta.index, pd.DatetimeIndex):
        raise UserError(f"chart needs an open_time index and open/high/low/close (missing {missing})",
                        "pass a candle or indicator frame")
    found = find_columns(ta.columns)
    have = {"volume": "volume" in ta.columns, "rsi": bool(found.rsi), "macd": found.macd is not None,
            "atr": bool(found.atr), "natr": bool(found.natr)}
    rows = ["price"] + [p for p in PANELS if p in panels and have[p]]
    titles = {"price": name, "volume": "volume", "rsi": f"RSI {found.rsi[0][3:]}" if found.rsi else "",
              "macd": "MACD " + "/".join(found.macd[0].split("_")[1:]) if found.macd else "",
              "atr": "ATR " + ", ".join(c[3:] for c in found.atr),
              "natr": "NATR " + ", ".join(c[4:] for c in found.natr) + " (% of close)"}
    heights = np.array([PANELS[r] for r in rows])
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.035,
                        row_heights=list(heights / heights.sum()), subplot_titles=[titles[r] for r in rows])
    x = ta.index
    row = {r: i + 1 for i, r in enumerate(rows)}

    fig.add_trace(go.Candlestick(x=x, open=ta["open"], high=ta["high"], low=ta["low"], close=ta["close"],
                                 name=name, increasing_line_color=UP, decreasing_line_color=DOWN),
                  row=1, col=1)
    if bbands and found.bbands:
        lo, mid, up = found.bbands[:3]
        label = "BB " + found.bbands[1][4:].replace("_", " x")
        band = dict(color="#64b5f6", width=1)
        fig.add_trace(go.Scatter(x=x, y=ta[up], name=f"{label} upper", line=band, legendgroup="bb"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=ta[lo], name=f"{label} lower", line=band, legendgroup="bb",
                                 fill="tonexty", fillcolor="rgba(144,202,249,0.18)"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=ta[mid], name=f"{label} mid", line={**band, "dash": "dot"},
                                 legendgroup="bb"), row=1, col=1)
    if sma:
        for c, color in zip(found.sma, SMA_COLORS * 4):
            fig.add_trace(go.Scatter(x=x, y=ta[c], name=f"SMA {c[3:]}", line=dict(color=color, width=1.3)),
                          row=1, col=1)
    if ema:
        for c, color in zip(found.ema, EMA_COLORS * 4):
            fig.add_trace(go.Scatter(x=x, y=ta[c], name=f"EMA {c[3:]}", line=dict(color=color, width=1.3)),
                          row=1, col=1)
    if "volume" in row:
        colors = np.where(ta["close"].to_numpy() >= ta["open"].to_numpy(), UP, DOWN)
        fig.add_trace(go.Bar(x=x, y=ta["volume"], name="volume", marker_color=colors, showlegend=False),
                      row=row["volume"], col=1)
    if "rsi" in row:
        r = row["rsi"]
        for c in found.rsi:
            fig.add_trace(go.Scatter(x=x, y=ta[c], name=f"RSI {c[3:]}",
                                     line=dict(color="#5e35b1", width=1.2)), row=r, col=1)
        # shapes after the traces: plotly skips subplots that are still empty
        fig.add_hrect(y0=70, y1=100, fillcolor=DOWN, opacity=0.12, line_width=0, row=r, col=1)
        fig.add_hrect(y0=0, y1=30, fillcolor=UP, opacity=0.12, line_width=0, row=r, col=1)
        for level in (30, 70):
            fig.add_hline(y=level, line=dict(color="#9e9e9e", width=1, dash="dash"), row=r, col=1)
        fig.update_yaxes(range=[0, 100], tickvals=[30, 50, 70], row=r, col=1)
    if "macd" in row:
        r = row["macd"]
        line, hist, sig = found.macd  # type: ignore[misc]
        h = ta[hist].to_numpy()
        fig.add_trace(go.Bar(x=x, y=h, name="MACD histogram", marker_color=np.where(h >= 0, UP, DOWN)),
                      row=r, col=1)
        fig.add_trace(go.Scatter(x=x, y=ta[line], name="MACD", line=dict(color="#1e88e5", width=1.2)),
                      row=r, col=1)
        fig.add_trace(go.Scatter(x=x, y=ta[sig], name="MACD signal", line=dict(color="#fb8c00", width=1.2)),
                      row=r, col=1)
    if "atr" in row:
        for c, color in zip(found.atr, ["#00897b", "#7cb342", "#3949ab"] * 4):
            fig.add_trace(go.Scatter(x=x, y=ta[c], name=f"ATR {c[3:]}", line=dict(color=color, width=1.2)),
                          row=row["atr"], col=1)
    if "natr" in row:
        for c, color in zip(found.natr, ["#e53935", "#f4511e", "#8e24aa"] * 4):
            fig.add_trace(go.Scatter(x=x, y=ta[c], name=f"NATR {c[4:]} %", line=dict(color=color, width=1.2)),
                          row=row["natr"], col=1)
        fig.update_yaxes(ticksuffix=" %", row=row["natr"], col=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=90, b=10), hovermode="x unified",
                      legend=dict(orientation="h", yanchor="bottom", y=1.03, x=0), bargap=0.1)
    fig.update_xaxes(rangeslider_visible=False)
    return fig
