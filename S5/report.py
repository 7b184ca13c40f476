"""HTML reports (plotly, self-contained: plotly.js is embedded, so the file opens offline).

- :func:`backtest_html` -- price with the trades, equity against buy-and-hold,
  drawdown, a monthly returns table and the metrics; the title says *simulated*
  when the input data was made by the simulated market.
- :func:`monthly_returns` -- the table itself (pure pandas; tested).
- :func:`html_page` / :func:`figure_div` -- the page shell shared with the
  optimiser's report (:mod:`S5.optimize_lib`).

>>> import pandas as pd
>>> eq = pd.Series([110.0, 99.0, 121.0], index=pd.to_datetime(["2024-01-31", "2024-02-29", "2024-03-31"], utc=True))
>>> monthly_returns(eq, init_cash=100.0).round(4).loc[2024, ["Jan", "Feb", "Mar", "Year"]].tolist()
[0.1, -0.1, 0.2222, 0.21]
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from S5.metrics import METRIC_FORMATS, format_metric

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_COLORS = {"signal": "#1f77b4", "stop_loss": "#d62728", "take_profit": "#2ca02c", "end_of_test": "#7f7f7f",
           "kill_switch": "#9467bd"}


# ------------------------------------------------------------------------- tables
def monthly_returns(equity: pd.Series, *, init_cash: float) -> pd.DataFrame:
    """Return of each calendar month (UTC) from the equity curve: the last equity of
    the month over the last equity of the month before (``init_cash`` before the
    first). Rows: years; columns: Jan..Dec and ``Year`` (compounded)."""
    if equity.empty:
        return pd.DataFrame(columns=[*MONTHS, "Year"])
    idx = pd.DatetimeIndex(equity.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    s = pd.Series(equity.to_numpy(np.float64), index=idx)
    month_end = s.groupby([idx.year, idx.month]).last()
    prev = np.r_[init_cash, month_end.to_numpy()[:-1]]
    ret = pd.Series(month_end.to_numpy() / prev - 1.0, index=month_end.index)
    table = ret.unstack(level=1)
    table = table.reindex(columns=range(1, 13))
    table.columns = list(MONTHS)
    table.index.name = "year"
    table["Year"] = (1 + table[list(MONTHS)].fillna(0.0)).prod(axis=1) - 1
    return table


def _cell_color(v: float) -> str:
    if not np.isfinite(v):
        return "#ffffff"
    a = min(abs(v) / 0.2, 1.0) * 0.75 + 0.08
    return f"rgba(44,160,44,{a:.2f})" if v >= 0 else f"rgba(214,39,40,{a:.2f})"


def monthly_table_html(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{c}</th>" for c in ["Year", *MONTHS, "Total"])
    rows = []
    for year, r in table.iterrows():
        cells = [f"<th>{year}</th>"]
        for c in [*MONTHS, "Year"]:
            v = float(r[c]) if pd.notna(r[c]) else float("nan")
            text = f"{v:+.1%}" if np.isfinite(v) else ""
            cells.append(f'<td style="background:{_cell_color(v)}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="months"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def metrics_table_html(metrics: dict[str, Any], names: Iterable[str] | None = None) -> str:
    names = list(names or METRIC_FORMATS)
    rows = "".join(f"<tr><th>{html.escape(k.replace('_', ' '))}</th><td>{format_metric(k, metrics.get(k))}</td></tr>"
                   for k in names if k in metrics)
    return f'<table class="metrics">{rows}</table>'


def params_table_html(params: dict[str, Any]) -> str:
    def fmt(v):
        if isinstance(v, dict):
            return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
        return html.escape(str(v))
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{fmt(v)}</td></tr>" for k, v in params.items())
    return f'<table class="params">{rows}</table>'


# -------------------------------------------------------------------------- pages
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px}
.sim{color:#b00;font-weight:600} .note{color:#555;font-size:13px}
.warn{background:#fff4e5;border:1px solid #f0b35b;padding:6px 12px;margin:12px 0;font-size:14px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th{background:#f6f6f6;text-align:left}
.grid{display:flex;gap:32px;flex-wrap:wrap}
"""


def figure_div(fig) -> str:
    """A plotly figure as a ``<div>`` (plotly.js not included: see :func:`html_page`)."""
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def html_page(title: str, body: str, *, subtitle: str = "") -> str:
    """A complete HTML page with plotly.js inlined once (works offline)."""
    from plotly.offline import get_plotlyjs

    sub = f'<p class="note">{subtitle}</p>' if subtitle else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body><h1>{html.escape(title)}</h1>{sub}{body}</body></html>")


def backtest_figure(result, *, title: str = ""):
    """Price + trades, equity vs buy-and-hold, drawdown (one figure, shared time axis)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    bars = result.bars
    idx = bars.index
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.45, 0.35, 0.2],
                        subplot_titles=("Price and trades (fills at the next open)", "Equity", "Drawdown"))
    fig.add_trace(go.Scatter(x=idx, y=bars.close, name="close", line=dict(color="#444", width=1)), row=1, col=1)
    det = result.trade_details
    if len(det):
        fig.add_trace(go.Scatter(x=det["entry_time"], y=det["entry_price"], mode="markers", name="entry",
                                 marker=dict(symbol="triangle-up", size=9, color="#2ca02c"),
                                 text=[f"size {s:.6g}" for s in det["size"]], hoverinfo="x+y+text"), row=1, col=1)
        for reason, part in det.groupby("exit_reason", sort=False):
            fig.add_trace(go.Scatter(
                x=part["exit_time"], y=part["exit_price"], mode="markers", name=f"exit: {reason}",
                marker=dict(symbol="triangle-down", size=9, color=_COLORS.get(str(reason), "#000")),
                text=[f"pnl {p:,.2f} ({r:+.2%})" for p, r in zip(part["pnl"], part["return"])],
                hoverinfo="x+y+text"), row=1, col=1)
    fig.add_trace(go.Scatter(x=idx, y=result.equity.to_numpy(), name="strategy", line=dict(color="#1f77b4")),
                  row=2, col=1)
    fig.add_trace(go.Scatter(x=idx, y=result.buy_and_hold.to_numpy(), name="buy and hold",
                             line=dict(color="#ff7f0e", dash="dot")), row=2, col=1)
    fig.add_trace(go.Scatter(x=idx, y=result.drawdown.to_numpy() * 100, name="drawdown %", fill="tozeroy",
                             line=dict(color="#d62728", width=1)), row=3, col=1)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="quote", row=2, col=1)
    fig.update_yaxes(title_text="%", row=3, col=1)
    fig.update_layout(height=900, title=title or None, hovermode="x unified", margin=dict(l=60, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=1.06))
    return fig


def backtest_html(result, *, title: str, simulated: bool) -> str:
    """The whole backtest report page."""
    if simulated and "simulated" not in title.lower():
        title = f"{title} -- SIMULATED market data"
    sub = ("<span class='sim'>Made from the simulated market (offline mode): not real prices.</span> "
           if simulated else "")
    sub += ("Signals decided on a closed bar fill at the next bar's open; fees and slippage on both sides; "
            "annualised with 365 days.")
    costs = getattr(result, "costs", None)
    if costs is not None:
        from S5.exchange import describe_costs

        sub += " " + html.escape(describe_costs(costs))
        m = result.metrics
        if m.get("entries_skipped") is not None:
            sub += (f" Exchange filters: {m['entries_skipped']:,} entr{'y' if m['entries_skipped'] == 1 else 'ies'} "
                    f"skipped ({m['entries_skipped_min_qty']:,} below minQty, {m['entries_skipped_min_notional']:,} "
                    f"below the minimum notional), {m['entries_rounded']:,} rounded down to the step, "
                    f"{m['exits_below_min_notional']:,} exit(s) below the minimum notional.")
    table = monthly_returns(result.equity, init_cash=result.simulation.init_cash)
    body = [figure_div(backtest_figure(result)),
            "<div class='grid'><div><h2>Metrics</h2>", metrics_table_html(result.metrics),
            "</div><div><h2>Run</h2>", params_table_html(result.params), "</div></div>",
            "<h2>Monthly returns</h2>", monthly_table_html(table)]
    if result.kill_switch:
        trips = "".join(f"<li>{html.escape(t['at'] or '')}: {html.escape(t['reason'])} -- "
                        f"{html.escape(t['detail'])}</li>" for t in result.kill_switch)
        body.append(f"<h2>Kill-switch</h2><ul>{trips}</ul>")
    return html_page(title, "".join(body), subtitle=sub)


__all__ = [
    "backtest_figure",
    "backtest_html",
    "figure_div",
    "html_page",
    "metrics_table_html",
    "monthly_returns",
    "monthly_table_html",
]
