"""The portfolio backtest's HTML page (the shared page builder :mod:`S1.report_page`):
equity vs an equal-weight buy-and-hold of the same symbols, per-symbol contribution,
exposure over time (open positions' value / equity, and their count), the correlation of
the symbols' bar returns, the metrics and the trades."""

from __future__ import annotations

import numpy as np

from S1.report_page import figure_div, html_page, table_html
from S5.metrics import METRIC_FORMATS, format_metric
from S5.portfolio_backtest import PortfolioResult, contributions


def figures(res: PortfolioResult) -> dict:
    import plotly.graph_objects as go

    eq = res.equity
    bh = res.buy_and_hold()
    f_eq = go.Figure([go.Scatter(x=eq.index, y=eq["equity"], name="portfolio equity"),
                      go.Scatter(x=bh.index, y=bh.to_numpy(), name="equal-weight buy-and-hold"),
                      go.Scatter(x=eq.index, y=eq["cash"], name="cash", line=dict(dash="dot"))])
    f_eq.update_layout(title="Equity vs equal-weight buy-and-hold", yaxis_title="quote currency", height=420)
    con = contributions(res)
    f_con = go.Figure([go.Bar(x=con.index.tolist(), y=con["pnl"].to_numpy(), name="pnl")])
    f_con.update_layout(title="Per-symbol contribution (net pnl)", height=360)
    held = eq[res.symbols].sum(axis=1)
    expo = (held / eq["equity"]).to_numpy()
    f_ex = go.Figure([go.Scatter(x=eq.index, y=expo, name="invested share of equity", fill="tozeroy"),
                      go.Scatter(x=eq.index, y=res.open_counts, name="open positions", yaxis="y2")])
    f_ex.update_layout(title="Exposure over time", height=360, yaxis=dict(tickformat=".0%"),
                       yaxis2=dict(overlaying="y", side="right", rangemode="tozero", title="positions"))
    corr = res.closes.pct_change(fill_method=None).corr()
    f_co = go.Figure(go.Heatmap(z=corr.to_numpy(), x=corr.columns.tolist(), y=corr.index.tolist(), zmin=-1, zmax=1,
                                colorscale="RdBu", text=np.round(corr.to_numpy(), 2), texttemplate="%{text}"))
    f_co.update_layout(title="Correlation of bar returns", height=360 + 12 * len(res.symbols))
    return {"equity": f_eq, "contribution": f_con, "exposure": f_ex, "correlation": f_co}


def portfolio_html(res: PortfolioResult, *, title: str, simulated: bool = False, standalone: bool | None = None,
                   folder=None) -> str:
    figs = figures(res)
    met = res.metrics
    mrows = [[k.replace("_", " "), format_metric(k, met[k])] for k in METRIC_FORMATS if k in met]
    mrows += [["symbols", str(len(res.symbols))], ["max open (limit)", f"{met['max_open_positions']} ({res.max_open})"],
              ["minimum cash", f"{met['min_cash']:,.2f}"], ["funding", f"{res.funding:,.2f}"]]
    con = contributions(res)
    crows = [[s, int(r.trades), int(r.wins), f"{r.pnl:,.2f}", f"{r.fees:,.2f}",
              "" if not np.isfinite(r.share) else f"{r.share:.1%}"] for s, r in con.iterrows()]
    skips = ", ".join(f"{k}: {v}" for k, v in sorted(res.skips.items())) or "none"
    t = res.trades
    trows = [[r.symbol, str(r.entry_time), str(r.exit_time), f"{r.size:g}", f"{r.entry_price:,.4f}",
              f"{r.exit_price:,.4f}", f"{r.pnl:,.2f}", f"{r.exit_reason}"] for r in t.itertuples()]
    body = (f"<p class='note'>Ranking of competing entries: {res.params.get('ranking', '')}. "
            f"Entries skipped: {skips}.</p>"
            + figure_div(figs["equity"])
            + "<div class='grid'><div>" + "<h2>Metrics</h2>" + table_html(["metric", "value"], mrows) + "</div><div>"
            + "<h2>Per-symbol contribution</h2>"
            + table_html(["symbol", "trades", "wins", "pnl", "fees", "share"], crows) + "</div></div>"
            + figure_div(figs["contribution"]) + figure_div(figs["exposure"]) + figure_div(figs["correlation"])
            + f"<h2>Trades ({len(t)})</h2><div class='scroll'>"
            + table_html(["symbol", "entry", "exit", "size", "entry price", "exit price", "pnl", "exit reason"],
                         trows, left=[7]) + "</div>")
    return html_page(title, body, subtitle="S5 portfolio backtest: one pot of cash, S4's decision per symbol",
                     simulated=simulated, standalone=standalone, folder=folder)


__all__ = ["figures", "portfolio_html"]
