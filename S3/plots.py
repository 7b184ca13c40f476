"""A look at the sentiment series: ``sentiment_score`` (line, -1..1) over the number of
new items per candle (bars), as an HTML page (plotly; the shared page builder
:func:`S1.report_page.html_page`, SIMULATED when the items came from the simulated feed).

>>> import pandas as pd
>>> idx = pd.date_range("2024-01-01", periods=3, freq="1h", tz="UTC", name="open_time")
>>> s = pd.DataFrame({"sentiment_score": [0, .3, .2], "n_items": [0, 2, 0], "evidence": [0, 1, .8]}, index=idx)
>>> len(sentiment_figure(s).data)
2
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from S1.datasets import sentiment_report_path  # noqa: F401  (the one place that names files)


def sentiment_figure(series: pd.DataFrame, *, title: str = "News sentiment"):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=series.index, y=series["sentiment_score"], name="sentiment_score",
                             line={"width": 1.5, "color": "#1f77b4"}), row=1, col=1)
    fig.add_trace(go.Bar(x=series.index, y=series["n_items"], name="new items", marker_color="#999"),
                  row=2, col=1)
    fig.add_hline(y=0, line={"width": 1, "color": "#555", "dash": "dot"}, row=1, col=1)
    fig.update_yaxes(range=[-1, 1], title_text="score", row=1, col=1)
    fig.update_yaxes(title_text="items", row=2, col=1)
    fig.update_layout(title=f"{title} (value at open time t uses items published before t)",
                      height=600, template="plotly_white", showlegend=False, margin={"l": 60, "r": 20, "t": 60})
    return fig


def write_sentiment_html(series: pd.DataFrame, path: Path, *, title: str = "News sentiment",
                         simulated: bool = False) -> Path:
    from S1.report_page import figure_div, html_page, write_page

    path = Path(path)
    fig = sentiment_figure(series, title=title)
    page = html_page(title, figure_div(fig.update_layout(title=None)), simulated=simulated, folder=path.parent,
                     subtitle="The value at open time t uses only the items published before t.")
    return write_page(path, page)
