"""Reports of :func:`S6.stress_analysis.run_stress`: JSON summary, HTML (plotly, through
the shared page builder :func:`S1.report_page.html_page`: plotly.js loaded once per
reports folder, works offline) and PNG (matplotlib). Every file is written
atomically (temp file + rename), so a failed run never leaves half a report.
Made from the simulated market, every one of them says SIMULATED (the JSON's
``simulated``, the HTML title and banner, the PNG title and a watermark).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from S6.stress_analysis import StressResult

BANDS = (5, 25, 50, 75, 95)


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf with None and numpy scalars with Python ones (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


SIMULATED_LABEL = "SIMULATED market data"


def _sim(result: StressResult) -> bool:
    return bool(result.summary.get("simulated", False))


def title(result: StressResult) -> str:
    """``Stress tests -- BTCUSDT 1h 365d (5000 paths, seed 7)`` (+ ``-- SIMULATED market data``)."""
    s = result.summary
    t = f"Stress tests -- {s['symbol']} {s['interval']} {s['days']}d ({s['paths']} paths, seed {s['seed']})"
    if s.get("rules_file"):
        t += f" -- {s['rules_file']}"
    return f"{t} -- {SIMULATED_LABEL}" if _sim(result) else t


def write_json(result: StressResult, path: Path) -> Path:
    from S1.datasets import atomic_write_text

    doc = {"simulated": _sim(result), **json_safe(result.summary)}
    return atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False))


def _bands(paths: np.ndarray) -> np.ndarray:
    return np.percentile(paths, BANDS, axis=0) if paths.size else np.empty((len(BANDS), 0))


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.1%}"


def _yes_no(x) -> str:
    return "-" if x is None else ("yes" if x else "no") if isinstance(x, (bool, np.bool_)) else str(x)


def _money(x) -> str:
    return "-" if x is None else f"{x:,.2f}"


def summary_rows(result: StressResult) -> list[tuple[str, str, str, str]]:
    """(scenario, final equity p5/p50/p95, max drawdown p50/p95, ruin) rows for tables."""
    s = result.summary
    rows = []
    for name in ("bootstrap", "shuffle", "shock"):
        d = s.get(name)
        if not d:
            continue
        fe, dd = d["final_equity"], d["max_drawdown"]
        rows.append((name, f"{_money(fe['p5'])} / {_money(fe['p50'])} / {_money(fe['p95'])}",
                     f"{_pct(dd['p50'])} / {_pct(dd['p95'])}", f"{_pct(d['prob_ruin'])}"))
    return rows


def build_figure(result: StressResult):
    """The plotly figure (2 x 2): equity fan, drawdown and final-equity histograms, worst moves."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = result.summary
    init = s["initial_equity"]
    fig = make_subplots(rows=2, cols=2, subplot_titles=(
        "Equity by trade: bootstrap bands (5-95 %, 25-75 %) and the backtest",
        "Max drawdown distribution", "Final equity distribution (bootstrap)",
        "Worst historical moves: loss in R with the stop filled / gapped through"))
    b = _bands(result.bootstrap.sample) * init
    x = np.arange(b.shape[1])
    for lo, hi, alpha in ((0, 4, 0.15), (1, 3, 0.3)):
        fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[b[hi], b[lo][::-1]], fill="toself",
                                 fillcolor=f"rgba(31,119,180,{alpha})", line=dict(width=0), hoverinfo="skip",
                                 name=f"bootstrap p{BANDS[lo]}-p{BANDS[hi]}"), row=1, col=1)
    if b.size:
        fig.add_trace(go.Scatter(x=x, y=b[2], name="bootstrap median", line=dict(color="#1f77b4")), row=1, col=1)
    fig.add_trace(go.Scatter(x=np.arange(len(result.historical_path)), y=result.historical_path * init,
                             name="backtest", line=dict(color="black", width=2)), row=1, col=1)
    ruin = s["ruin_level"] * init
    fig.add_hline(y=ruin, line=dict(color="red", dash="dot"), annotation_text="ruin", row=1, col=1)
    for stats, color in ((result.bootstrap, "#1f77b4"), (result.shuffle, "#ff7f0e"), (result.shock, "#d62728")):
        if stats is not None:
            fig.add_trace(go.Histogram(x=stats.max_dd * 100, name=f"max DD % ({stats.method}"
                                       f"{' + shock' if stats is result.shock else ''})", opacity=0.55,
                                       marker_color=color, nbinsx=60), row=1, col=2)
    kill = s["config"]["kill_switch"]["max_drawdown"]
    if kill:
        fig.add_vline(x=kill * 100, line=dict(color="red", dash="dot"), annotation_text="kill-switch", row=1, col=2)
    fig.add_trace(go.Histogram(x=result.bootstrap.final * init, name="final equity (bootstrap)", nbinsx=60,
                               marker_color="#2ca02c", opacity=0.7), row=2, col=1)
    fig.add_vline(x=result.historical_path[-1] * init, line=dict(color="black"), annotation_text="backtest = every reshuffle",
                  row=2, col=1)
    for win, df in result.moves.items():
        if "loss_R_gapped" not in df:
            continue
        labels = [f"{win} {t:%Y-%m-%d %H:%M}" for t in df["start"]]
        # side by side (offset / width): the figure's overlay mode (for the histograms) would
        # otherwise hide the "stop honoured" bar behind the longer "gapped" one
        fig.add_trace(go.Bar(x=labels, y=df["loss_R_stop"], offset=-0.4, width=0.4, marker_color="#1f77b4",
                             name=f"{win}: stop honoured, or held to the window end (R)"), row=2, col=2)
        fig.add_trace(go.Bar(x=labels, y=df["loss_R_gapped"], offset=0.0, width=0.4, marker_color="#d62728",
                             name=f"{win}: gapped to the low (R)"), row=2, col=2)
    fig.update_layout(barmode="overlay", height=950, title=title(result),
                      legend=dict(orientation="h", yanchor="top", y=-0.08, xanchor="left", x=0),
                      margin=dict(l=60, r=20, t=80, b=120))
    fig.update_xaxes(title_text="trade #", row=1, col=1)
    fig.update_xaxes(title_text="max drawdown %", row=1, col=2)
    fig.update_yaxes(title_text="loss (R)", row=2, col=2)
    fig.update_xaxes(tickangle=-40, tickfont=dict(size=10), row=2, col=2)
    return fig


def _moves_table(result: StressResult) -> str:
    out = []
    for win, df in result.moves.items():
        out.append(f"<h3>Worst {html.escape(win)} moves</h3><table><tr><th>start (UTC)</th><th>move</th>"
                   "<th>stop hit</th><th>loss at stop (R / % equity)</th><th>gapped to the low (R / % equity)</th>"
                   "<th>largest backtest exposure, no stop</th></tr>")
        for r in df.to_dict("records"):
            out.append(
                f"<tr><td>{r['start']:%Y-%m-%d %H:%M}</td><td>{_pct(r['move'])}</td><td>{_yes_no(r.get('stop_hit'))}</td>"
                f"<td>{r.get('loss_R_stop', float('nan')):.2f} / {_pct(r.get('loss_pct_stop'))}</td>"
                f"<td>{r.get('loss_R_gapped', float('nan')):.2f} / {_pct(r.get('loss_pct_gapped'))}</td>"
                f"<td>{_pct(r['loss_pct_max_exposure'])}</td></tr>")
        out.append("</table>")
    return "\n".join(out)


def write_html(result: StressResult, path: Path, *, standalone: bool | None = None) -> Path:
    """The HTML report (shared page builder; plotly.js once per reports folder, or
    embedded with ``standalone``/``TOOLKIT_REPORTS_STANDALONE=1``)."""
    from S1.report_page import figure_div, html_page, write_page

    s = result.summary
    rows = "".join(f"<tr><th>{a}</th><td>{b}</td><td>{c}</td><td>{d}</td></tr>" for a, b, c, d in summary_rows(result))
    h = s["historical"]
    trip = h.get("kill_switch_first_trip")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in s["notes"])
    body = f"""<p>{h['trades']} trades, initial equity {_money(s['initial_equity'])}, backtest final {_money(h['final_equity'])},
max drawdown {_pct(h['max_drawdown_trades'])} (trade by trade){
    f", {_pct(h['max_drawdown_bars'])} (bar by bar)" if 'max_drawdown_bars' in h else ''}; largest exposure
{_pct(h['max_exposure'])} of equity. Ruin = equity at or below {_pct(s['ruin_level'])} of the start.
Kill-switch on the backtest: {html.escape(trip['reason'] + ' at ' + trip['at']) if trip else 'never tripped'}.</p>
<table><thead><tr><th>scenario</th><th>final equity p5 / p50 / p95</th><th>max drawdown p50 / p95</th><th>P(ruin)</th></tr></thead>
<tbody>{rows}</tbody></table>{figure_div(build_figure(result).update_layout(title=None))}{_moves_table(result)}<ul>{notes}</ul>"""
    page = html_page(title(result), body, simulated=_sim(result), standalone=standalone, folder=Path(path).parent)
    return write_page(path, page)


def write_png(result: StressResult, path: Path) -> Path:
    """The same four panels as a PNG (matplotlib, Agg)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from S1.datasets import atomic_write_bytes

    s = result.summary
    init = s["initial_equity"]
    fig, ax = plt.subplots(2, 2, figsize=(13, 9))
    b = _bands(result.bootstrap.sample) * init
    if b.size:
        x = np.arange(b.shape[1])
        ax[0, 0].fill_between(x, b[0], b[4], alpha=0.15, color="C0", label="bootstrap p5-p95")
        ax[0, 0].fill_between(x, b[1], b[3], alpha=0.3, color="C0", label="bootstrap p25-p75")
        ax[0, 0].plot(x, b[2], color="C0", lw=1, label="bootstrap median")
    ax[0, 0].plot(result.historical_path * init, color="black", lw=1.5, label="backtest")
    ax[0, 0].axhline(s["ruin_level"] * init, color="red", ls=":", label="ruin")
    ax[0, 0].set(title="Equity by trade", xlabel="trade #")
    ax[0, 0].legend(fontsize=8)
    for stats, color, label in ((result.bootstrap, "C0", "bootstrap"), (result.shuffle, "C1", "shuffle"),
                                (result.shock, "C3", "bootstrap + shock")):
        if stats is not None:
            ax[0, 1].hist(stats.max_dd * 100, bins=60, alpha=0.5, color=color, label=label)
    kill = s["config"]["kill_switch"]["max_drawdown"]
    if kill:
        ax[0, 1].axvline(kill * 100, color="red", ls=":", label="kill-switch")
    ax[0, 1].set(title="Max drawdown (%)")
    ax[0, 1].legend(fontsize=8)
    ax[1, 0].hist(result.bootstrap.final * init, bins=60, color="C2", alpha=0.7)
    ax[1, 0].axvline(result.historical_path[-1] * init, color="black", label="backtest (= every reshuffle)")
    ax[1, 0].set(title="Final equity (bootstrap)")
    ax[1, 0].legend(fontsize=8)
    labels, stop_r, gap_r = [], [], []
    for win, df in result.moves.items():
        if "loss_R_gapped" not in df:
            continue
        labels += [f"{win} {t:%m-%d %Hh}" for t in df["start"]]
        stop_r += list(df["loss_R_stop"])
        gap_r += list(df["loss_R_gapped"])
    if labels:
        x = np.arange(len(labels))
        ax[1, 1].bar(x - 0.2, stop_r, 0.4, color="#1f77b4", label="stop honoured (or held to the window end)")
        ax[1, 1].bar(x + 0.2, gap_r, 0.4, color="#d62728", label="gapped to the window low")
        ax[1, 1].set_xticks(x, labels, fontsize=7, rotation=45, ha="right")
        ax[1, 1].axhline(1.0, color="grey", ls=":")
        ax[1, 1].legend(fontsize=8)
    else:
        ax[1, 1].text(0.5, 0.5, "no candle data", ha="center", va="center")
    ax[1, 1].set(title="Worst moves: loss in R")
    sim = _sim(result)
    fig.suptitle(title(result), color="#b00000" if sim else "black", fontweight="bold" if sim else "normal")
    if sim:
        fig.text(0.5, 0.5, "SIMULATED", fontsize=90, color="#b00000", alpha=0.08, ha="center", va="center",
                 rotation=30, transform=fig.transFigure)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Title": title(result), "Description": (
        "made from the simulated market (offline mode): not real prices" if sim else "stress tests")})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
