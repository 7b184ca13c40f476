"""The Plotly figures of the S7 dashboard that S2 does not already draw (the
indicator chart is :func:`S2.charts.indicator_chart`): a backtest's equity over its
drawdown, and a sentiment series over its item counts.

>>> t = pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC", name="open_time")
>>> fig = sentiment_figure(pd.DataFrame({"sentiment_score": [0.1, -0.2, 0.3], "n_items": [1, 0, 2]}, index=t))
>>> [(tr.name, tr.yaxis) for tr in fig.data], fig.layout.yaxis.range
([('sentiment score', 'y'), ('items', 'y2')], (-1.05, 1.05))
"""

from __future__ import annotations

import pandas as pd

from S7.dashboard_backtest import Backtest, drawdown

EQUITY_COLOR, BH_COLOR, DD_COLOR = "#1565c0", "#9e9e9e", "#c62828"
SCORE_COLOR, ITEMS_COLOR = "#6a1b9a", "#90a4ae"


def equity_figure(bt: Backtest, *, height: int = 520):
    """Equity (and buy-and-hold when the price file is there) over the drawdown, one time axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = f"{bt.ref.symbol} {bt.ref.interval} {bt.ref.days}d" + (" (simulated market)" if bt.ref.simulated else "")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.72, 0.28],
                        subplot_titles=[f"{title}: equity", "drawdown"])
    if bt.equity is not None and len(bt.equity):
        fig.add_trace(go.Scatter(x=bt.equity.index, y=bt.equity.to_numpy(), name="equity",
                                 line={"color": EQUITY_COLOR, "width": 1.6}), row=1, col=1)
        if bt.buy_and_hold is not None:
            fig.add_trace(go.Scatter(x=bt.buy_and_hold.index, y=bt.buy_and_hold.to_numpy(), name="buy and hold",
                                     line={"color": BH_COLOR, "width": 1.2, "dash": "dot"}), row=1, col=1)
        dd = drawdown(bt.equity, bt.init_cash)
        fig.add_trace(go.Scatter(x=dd.index, y=-dd.to_numpy(), name="drawdown", fill="tozeroy",
                                 line={"color": DD_COLOR, "width": 1}), row=2, col=1)
        fig.update_yaxes(tickformat=".0%", row=2, col=1)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 60, "b": 10}, hovermode="x unified",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.04, "x": 0})
    return fig


def sentiment_figure(frame: pd.DataFrame, *, simulated: bool | None = None, height: int = 380):
    """``sentiment_score`` (line, fixed [-1, 1] axis) over ``n_items`` (bars in their own
    panel below, one time axis): the counts never cover the score line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    items = "n_items" in frame.columns
    fig = make_subplots(rows=2 if items else 1, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        row_heights=[0.75, 0.25] if items else [1.0])
    fig.add_trace(go.Scatter(x=frame.index, y=frame["sentiment_score"].to_numpy(), name="sentiment score",
                             line={"color": SCORE_COLOR, "width": 1.5}), row=1, col=1)
    fig.add_hline(y=0, line={"color": "#757575", "width": 1, "dash": "dash"}, row=1, col=1)
    fig.update_yaxes(range=[-1.05, 1.05], title_text="score", row=1, col=1)
    if items:
        fig.add_trace(go.Bar(x=frame.index, y=frame["n_items"].to_numpy(), name="items", marker_color=ITEMS_COLOR,
                             marker_line_width=0), row=2, col=1)
        fig.update_yaxes(title_text="items", rangemode="tozero", row=2, col=1)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, hovermode="x unified", bargap=0,
                      title="sentiment score" + (" (simulated market)" if simulated else ""), showlegend=False)
    return fig


__all__ = ["equity_figure", "sentiment_figure"]
