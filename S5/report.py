"""HTML reports (plotly): one page builder and one visual style for every report.

- :func:`html_page` -- the page shell every report goes through (backtest,
  optimiser, walk-forward, stress, run comparison, S3 evaluation): one CSS, the
  SIMULATED banner, and plotly.js **loaded once per reports folder**: the page
  references ``plotly.min.js`` next to it (written once by :func:`ensure_plotlyjs`,
  atomically, only when missing or of another version), so a 50 kB report no
  longer carries 4.8 MB of JavaScript. ``standalone=True`` (or the environment
  variable ``TOOLKIT_REPORTS_STANDALONE=1``) embeds plotly.js instead: one file
  to mail around. Both open offline.
- :func:`apply_style` / :func:`figure_div` -- the shared figure style.
- :func:`backtest_html` -- price with the trades, equity against buy-and-hold,
  drawdown, rolling Sharpe, the trade-return histogram, strategy vs buy-and-hold
  metrics, a trades table, exit-reason and duration statistics, the monthly
  returns and readable run settings; the title names the rules file and says
  *simulated* when the input data was made by the simulated market.
- :func:`monthly_returns` -- the monthly table (pure pandas; tested).

>>> import pandas as pd
>>> eq = pd.Series([110.0, 99.0, 121.0], index=pd.to_datetime(["2024-01-31", "2024-02-29", "2024-03-31"], utc=True))
>>> monthly_returns(eq, init_cash=100.0).round(4).loc[2024, ["Jan", "Feb", "Mar", "Year"]].tolist()
[0.1, -0.1, 0.2222, 0.21]
>>> readable_settings({"stops": False, "risk_file": None, "risk": {"sizing": {"method": "atr"}}})
[('stops', 'no'), ('risk file', '(none)'), ('risk / sizing / method', 'atr')]
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.report_page import (  # noqa: F401  (re-exported: the page builder every report uses)
    FONT,
    PLOTLY_FILE,
    STANDALONE_ENV,
    apply_style,
    ensure_plotlyjs,
    figure_div,
    html_page,
    plotly_script,
    standalone_default,
    table_html,
)
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


def _setting_value(v) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_setting_value(x) for x in v) if v else "(none)"
    return str(v)


def readable_settings(params: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(key, value)`` rows for people: nested settings flattened to ``a / b / c``,
    ``None`` shown as ``(none)``, booleans as yes / no, underscores as spaces."""
    rows: list[tuple[str, str]] = []
    for k, v in params.items():
        key = f"{prefix}{str(k).replace('_', ' ')}"
        if isinstance(v, dict) and v:
            rows += readable_settings(v, prefix=f"{key} / ")
        else:
            rows.append((key, _setting_value(v) if not isinstance(v, dict) else "(none)"))
    return rows


def params_table_html(params: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td class='l'>{html.escape(v)}</td></tr>"
                   for k, v in readable_settings(params))
    return f'<table class="params">{rows}</table>'


# ------------------------------------------------------------------------ backtest
def _durations(det: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(det["exit_time"], utc=True) - pd.to_datetime(det["entry_time"], utc=True)


def _fmt_td(td) -> str:
    if td is None or pd.isna(td):
        return ""
    secs = int(pd.Timedelta(td).total_seconds())
    d, rem = divmod(secs, 86_400)
    h, rem = divmod(rem, 3_600)
    m = rem // 60
    return f"{d}d {h:02d}h" if d else f"{h}h {m:02d}m"


def _price(v) -> str:
    return f"{float(v):,.6g}" if v is not None and np.isfinite(float(v)) else ""


def trade_rows(result) -> pd.DataFrame:
    """The trades of the report: entry/exit time and price, side, quantity, P&L,
    return, duration, entry rule (when the decision recorded it) and exit reason."""
    det = result.trade_details.sort_values("entry_time", kind="stable").reset_index(drop=True)
    out = pd.DataFrame({"entry_time": det["entry_time"], "exit_time": det["exit_time"], "side": det["side"],
                        "quantity": det["size"], "entry_price": det["entry_price"], "exit_price": det["exit_price"],
                        "fees": det["fees"], "pnl": det["pnl"], "return": det["return"],
                        "duration": _durations(det) if len(det) else pd.Series(dtype="timedelta64[ns]")})
    rules = [None] * len(det)
    decided = getattr(result, "decided", None)
    dtrades = list(getattr(decided, "trades", None) or [])
    if dtrades and len(dtrades) == len(det):
        dtrades = sorted(dtrades, key=lambda t: pd.Timestamp(t.get("entry_time", t.get("exit_time"))))
        rules = [t.get("entry_rule") for t in dtrades]
    out["entry_rule"] = rules
    out["exit_reason"] = det["exit_reason"].astype(str) if "exit_reason" in det else ""
    return out


def trades_table_html(trades: pd.DataFrame) -> str:
    head = ["#", "side", "entry (UTC)", "entry price", "exit (UTC)", "exit price", "quantity", "P&L", "return",
            "duration", "entry rule", "exit reason"]
    rows = []
    for i, t in enumerate(trades.itertuples(index=False), start=1):
        cls = "win" if t.pnl > 0 else "loss" if t.pnl < 0 else ""
        cells = [str(i), html.escape(str(t.side)), f"{pd.Timestamp(t.entry_time):%Y-%m-%d %H:%M}",
                 _price(t.entry_price), f"{pd.Timestamp(t.exit_time):%Y-%m-%d %H:%M}", _price(t.exit_price),
                 f"{float(t.quantity):.6g}", f"{float(t.pnl):,.2f}", f"{float(t[8]):+.2%}", _fmt_td(t.duration),
                 html.escape(str(t.entry_rule)) if t.entry_rule else "", html.escape(str(t.exit_reason))]
        tds = "".join(f"<td class='{'pnl' if j == 7 else 'l' if j in (1, 10, 11) else ''}'>{c}</td>"
                      for j, c in enumerate(cells))
        rows.append(f"<tr class='{cls}'>{tds}</tr>")
    h = "".join(f"<th>{c}</th>" for c in head)
    return (f"<div class='scroll'><table class='trades'><thead><tr>{h}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def exit_reason_stats(trades: pd.DataFrame) -> pd.DataFrame:
    """Per exit reason: trades, win rate, mean return, total P&L, mean duration."""
    if trades.empty:
        return pd.DataFrame(columns=["trades", "win_rate", "mean_return", "total_pnl", "mean_duration"])
    g = trades.groupby("exit_reason", sort=True)
    return pd.DataFrame({"trades": g.size(), "win_rate": g["pnl"].apply(lambda s: float((s > 0).mean())),
                         "mean_return": g["return"].mean(), "total_pnl": g["pnl"].sum(),
                         "mean_duration": g["duration"].apply(lambda s: s.mean())})


def duration_stats(trades: pd.DataFrame) -> pd.DataFrame:
    """Duration of all / winning / losing trades: count, mean, median, min, max."""
    rows = {}
    for name, part in (("all", trades), ("winners", trades[trades["pnl"] > 0]), ("losers", trades[trades["pnl"] < 0])):
        d = part["duration"]
        rows[name] = {"trades": len(part), "mean": d.mean() if len(d) else None,
                      "median": d.median() if len(d) else None, "min": d.min() if len(d) else None,
                      "max": d.max() if len(d) else None}
    return pd.DataFrame.from_dict(rows, orient="index")


def buy_and_hold_metrics(result) -> dict[str, Any]:
    """The equity metrics of buying at the first open and holding (no fees)."""
    from S5.metrics import equity_metrics

    bh = result.buy_and_hold.to_numpy(np.float64)
    m = equity_metrics(bh, init_cash=result.simulation.init_cash, periods_per_year=result.bars.periods_per_year)
    out = {k: (float(v) if np.ndim(v) == 0 else float(np.asarray(v).ravel()[0])) for k, v in m.items()}
    out["final_equity"] = float(bh[-1]) if len(bh) else None
    out["exposure"] = 1.0
    return out


def rolling_sharpe(equity: pd.Series, *, periods_per_year: float, window: int) -> pd.Series:
    """Annualised Sharpe of the bar returns over the last ``window`` bars."""
    r = equity.astype(np.float64).pct_change()
    sd = r.rolling(window, min_periods=max(2, window // 2)).std()
    return (r.rolling(window, min_periods=max(2, window // 2)).mean() / sd.where(sd > 0)) * np.sqrt(periods_per_year)


#: Below this many closed trades the metrics say little (a rule of thumb, shown as a warning).
MIN_TRADES = 30

COMPARED = ("total_return", "cagr", "sharpe", "sortino", "calmar", "max_drawdown", "longest_drawdown_days",
            "final_equity", "exposure")


def backtest_figure(result, *, title: str = ""):
    """Price + trades, equity vs buy-and-hold, drawdown, rolling Sharpe (one figure,
    shared time axis). Entries are big upward triangles under/at the fill, exits
    downward triangles coloured by reason, and a thin line joins each trade's entry
    to its exit, so a one-bar trade still shows both ends."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    bars = result.bars
    idx = bars.index
    ppy = bars.periods_per_year
    window = max(10, int(round(ppy / 365 * 30)))  # about 30 days of bars
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.035,
                        row_heights=[0.42, 0.26, 0.14, 0.18],
                        subplot_titles=("Price and trades (fills at the next open)", "Equity", "Drawdown",
                                        f"Rolling Sharpe ({window} bars = {window / (ppy / 365):.0f} days, annualised)"))
    fig.add_trace(go.Scatter(x=idx, y=bars.close, name="close", line=dict(color="#555", width=1)), row=1, col=1)
    det = result.trade_details
    if len(det):
        xs, ys = [], []
        for a, b, pa, pb in zip(det["entry_time"], det["exit_time"], det["entry_price"], det["exit_price"]):
            xs += [a, b, None]
            ys += [pa, pb, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="trade (entry to exit)", hoverinfo="skip",
                                 line=dict(color="rgba(60,60,60,0.45)", width=1.5)), row=1, col=1)
        fig.add_trace(go.Scatter(x=det["entry_time"], y=det["entry_price"], mode="markers", name="entry",
                                 marker=dict(symbol="triangle-up", size=13, color="#2ca02c",
                                             line=dict(color="#0b4f0b", width=1)),
                                 text=[f"entry, size {s:.6g}" for s in det["size"]], hoverinfo="x+y+text"),
                      row=1, col=1)
        for reason, part in det.groupby("exit_reason", sort=False):
            fig.add_trace(go.Scatter(
                x=part["exit_time"], y=part["exit_price"], mode="markers", name=f"exit: {reason}",
                marker=dict(symbol="triangle-down", size=11, color=_COLORS.get(str(reason).split(":")[0], "#111"),
                            line=dict(color="#ffffff", width=1.5)),
                text=[f"exit ({reason}): pnl {p:,.2f} ({r:+.2%})" for p, r in zip(part["pnl"], part["return"])],
                hoverinfo="x+y+text"), row=1, col=1)
    fig.add_trace(go.Scatter(x=idx, y=result.equity.to_numpy(), name="strategy", line=dict(color="#1f77b4")),
                  row=2, col=1)
    fig.add_trace(go.Scatter(x=idx, y=result.buy_and_hold.to_numpy(), name="buy and hold",
                             line=dict(color="#ff7f0e", dash="dot")), row=2, col=1)
    fig.add_trace(go.Scatter(x=idx, y=result.drawdown.to_numpy() * 100, name="drawdown %", fill="tozeroy",
                             line=dict(color="#d62728", width=1)), row=3, col=1)
    rs = rolling_sharpe(result.equity, periods_per_year=ppy, window=window)
    rb = rolling_sharpe(result.buy_and_hold, periods_per_year=ppy, window=window)
    fig.add_trace(go.Scatter(x=idx, y=rs.to_numpy(), name="rolling Sharpe: strategy", line=dict(color="#1f77b4",
                                                                                                 width=1)),
                  row=4, col=1)
    fig.add_trace(go.Scatter(x=idx, y=rb.to_numpy(), name="rolling Sharpe: buy and hold",
                             line=dict(color="#ff7f0e", width=1, dash="dot")), row=4, col=1)
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=4, col=1)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="quote", row=2, col=1)
    fig.update_yaxes(title_text="%", row=3, col=1)
    fig.update_yaxes(title_text="Sharpe", row=4, col=1)
    fig.update_layout(height=1050, title=title or None, hovermode="x unified", margin=dict(l=60, r=20, t=90, b=40),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    return apply_style(fig)


def returns_histogram(trades: pd.DataFrame, result):
    """Trade returns (or daily returns when there is no trade) as a histogram."""
    import plotly.graph_objects as go

    if len(trades):
        r = trades["return"].to_numpy(np.float64) * 100
        what = f"Trade returns ({len(r)} trades, after fees)"
        colors = None
    else:
        daily = result.equity.resample("1D").last().pct_change().dropna()
        r = daily.to_numpy(np.float64) * 100
        what = "Daily returns (no closed trade)"
        colors = None
    fig = go.Figure(go.Histogram(x=r, nbinsx=min(60, max(10, len(r) // 2)), marker=dict(color=colors or "#1f77b4"),
                                 name="returns"))
    fig.add_vline(x=0, line=dict(color="#999", width=1))
    fig.update_layout(height=330, title=what, xaxis_title="return %", yaxis_title="count", showlegend=False,
                      bargap=0.05, margin=dict(l=60, r=20, t=50, b=40))
    return fig


def _side_by_side(result) -> str:
    bh = buy_and_hold_metrics(result)
    m = result.metrics
    rows = [[k.replace("_", " "), format_metric(k, m.get(k)), format_metric(k, bh.get(k))]
            for k in COMPARED if k in m or k in bh]
    rows += [[k.replace("_", " "), format_metric(k, m.get(k)), ""]
             for k in METRIC_FORMATS if k in m and k not in COMPARED and not k.startswith("buy_and_hold")]
    return table_html(["metric", "strategy", "buy and hold"], rows, css="metrics", escape=False)


def _stats_html(trades: pd.DataFrame) -> str:
    er = exit_reason_stats(trades)
    er_rows = [[html.escape(str(k)), f"{int(r.trades):,}", f"{r.win_rate:.0%}", f"{r.mean_return:+.2%}",
                f"{r.total_pnl:,.2f}", _fmt_td(r.mean_duration)] for k, r in er.iterrows()]
    du = duration_stats(trades)
    du_rows = [[k, f"{int(r.trades):,}", _fmt_td(r["mean"]), _fmt_td(r["median"]), _fmt_td(r["min"]),
                _fmt_td(r["max"])] for k, r in du.iterrows()]
    return ("<div class='grid'><div><h2>Exits by reason</h2>"
            + table_html(["exit reason", "trades", "win rate", "mean return", "total P&L", "mean duration"], er_rows,
                         escape=False)
            + "</div><div><h2>Trade durations</h2>"
            + table_html(["trades", "count", "mean", "median", "shortest", "longest"], du_rows, escape=False)
            + "</div></div>")


def backtest_html(result, *, title: str, simulated: bool, standalone: bool | None = None,
                  folder: Path | None = None) -> str:
    """The whole backtest report page (written by :mod:`S5.backtest_files` in the reports folder)."""
    rules_file = (result.params or {}).get("rules_file")
    if rules_file and Path(str(rules_file)).name not in title:
        title = f"{title}: {Path(str(rules_file)).name}"
    sub = ("Signals decided on a closed bar fill at the next bar's open; fees and slippage on both sides; "
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
    trades = trade_rows(result)
    n = len(trades)
    body = []
    if n < MIN_TRADES:
        body.append(f"<p class='warn'><b>Only {n} closed trade{'' if n == 1 else 's'}</b>: too few for the metrics "
                    f"to mean much (rule of thumb: at least {MIN_TRADES}). Use a longer window, a shorter interval "
                    "or rules that trade more before trusting these numbers.</p>")
    warning = (result.params or {}).get("risk_warning")
    if warning:
        body.append(f"<p class='warn'>{html.escape(str(warning))}</p>")
    table = monthly_returns(result.equity, init_cash=result.simulation.init_cash)
    body += [figure_div(backtest_figure(result)),
             "<div class='grid'><div><h2>Strategy vs buy and hold</h2>", _side_by_side(result),
             "</div><div>", figure_div(returns_histogram(trades, result)), "</div></div>",
             _stats_html(trades),
             f"<h2>Trades ({n})</h2>",
             trades_table_html(trades) if n else "<p class='note'>No closed trade.</p>",
             "<h2>Monthly returns</h2>", monthly_table_html(table),
             "<h2>Run settings</h2>", params_table_html(result.params or {})]
    if n and trades["entry_rule"].isna().all():
        body.append("<p class='note'>The entry rule of each trade is known only for runs decided bar by bar "
                    "(the default risk settings); this run's engine did not record it.</p>")
    if result.kill_switch:
        trips = "".join(f"<li>{html.escape(t['at'] or '')}: {html.escape(t['reason'])} -- "
                        f"{html.escape(t['detail'])}</li>" for t in result.kill_switch)
        body.append(f"<h2>Kill-switch</h2><ul>{trips}</ul>")
    return html_page(title, "".join(body), subtitle=sub, simulated=simulated, standalone=standalone, folder=folder)




__all__ = [
    "apply_style",
    "backtest_figure",
    "backtest_html",
    "buy_and_hold_metrics",
    "duration_stats",
    "ensure_plotlyjs",
    "exit_reason_stats",
    "figure_div",
    "html_page",
    "metrics_table_html",
    "monthly_returns",
    "monthly_table_html",
    "params_table_html",
    "plotly_script",
    "readable_settings",
    "rolling_sharpe",
    "table_html",
    "trade_rows",
    "trades_table_html",
]
