"""The file job behind ``python S5/optimize.py ... --walk-forward N`` and its HTML report.

Outputs for ``--symbol ETHUSDC --interval 1h --days 365 --rules S4/rules.yaml``
(names from :func:`S1.datasets.report_path`; each file written atomically, only
after every fold was computed -- a failed run leaves the previous files intact):

- ``reports/ethusdc_1h_365d__rules_walkforward.html``: fold timeline, stitched
  out-of-sample equity (chosen params vs the rule file's defaults vs buy-and-hold,
  fold boundaries marked) and drawdown, in- vs out-of-sample objective per fold,
  params per fold, the fold table, the stitched metrics and the stability table;
- ``reports/ethusdc_1h_365d__rules_walkforward.json``: the summary
  (:meth:`S5.walkforward_search.WalkForwardResult.summary`, strict JSON);
- ``reports/ethusdc_1h_365d__rules_walkforward_folds.parquet``: one row per fold
  (:meth:`~S5.walkforward_search.WalkForwardResult.fold_table`);
- ``reports/ethusdc_1h_365d__rules_walkforward_equity.parquet``: UTC ``open_time``
  index, ``equity`` (stitched, chosen params), ``fold``, ``defaults_equity``,
  ``buy_and_hold`` (same initial cash, from the first test bar's open, no fees).
"""

from __future__ import annotations

import html as _html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.datasets import Dataset
from S5.exchange import describe_costs
from S5.metrics import format_metric, to_jsonable
from S5.optimizer import REPORT_METRICS, OptimizeConfig, default_storage, redact_url
from S5.walkforward_search import WalkForwardConfig, WalkForwardResult, walk_forward

#: Fold-table columns shown in the report and the terminal (beside the params).
FOLD_METRICS = ("total_return", "sharpe", "max_drawdown", "n_trades")


def equity_table(res: WalkForwardResult) -> pd.DataFrame:
    """The stitched curves on the test bars (the ``_equity.parquet`` file)."""
    st, d = res.stitched, res.default_stitched
    close = np.concatenate([np.asarray(fr.out_of_sample.bars.close, dtype=np.float64) for fr in res.folds])
    first_open = float(res.folds[0].out_of_sample.bars.open[0])
    return pd.DataFrame({"equity": st.equity.to_numpy(np.float64), "fold": st.fold,
                         "defaults_equity": d.equity.to_numpy(np.float64),
                         "buy_and_hold": res.config.init_cash * close / first_open},
                        index=st.equity.index.rename("open_time"))


# ---------------------------------------------------------------------------- HTML
def _figures(res: WalkForwardResult):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    idx = res.plan.index
    timeline = go.Figure()
    for f in res.plan.folds:
        t = f.times(idx)
        y = f"fold {f.k + 1}"
        timeline.add_trace(go.Scatter(x=[t["train_from"], t["train_to"]], y=[y, y], mode="lines",
                                      line=dict(color="#1f77b4", width=14), name="train", legendgroup="train",
                                      showlegend=f.k == 0))
        timeline.add_trace(go.Scatter(x=[t["test_from"], t["test_to"]], y=[y, y], mode="lines",
                                      line=dict(color="#ff7f0e", width=14), name="test (unseen)",
                                      legendgroup="test", showlegend=f.k == 0))
    timeline.update_yaxes(autorange="reversed")
    timeline.update_layout(height=150 + 28 * len(res.plan.folds), margin=dict(l=60, r=20, t=50, b=30),
                           legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))

    eq = equity_table(res)
    curves = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.05, row_heights=[0.7, 0.3],
                           subplot_titles=("Stitched out-of-sample equity", "Drawdown"))
    for col, name, style in (("equity", "walk-forward (params chosen per fold)", dict(color="#1f77b4")),
                             ("defaults_equity", "rule file defaults", dict(color="#2ca02c", dash="dash")),
                             ("buy_and_hold", "buy and hold", dict(color="#ff7f0e", dash="dot"))):
        curves.add_trace(go.Scatter(x=eq.index, y=eq[col], name=name, line=style), row=1, col=1)
    v = eq["equity"].to_numpy()
    peak = np.maximum.accumulate(np.r_[res.config.init_cash, v])[1:]
    curves.add_trace(go.Scatter(x=eq.index, y=(v / peak - 1) * 100, name="drawdown %", fill="tozeroy",
                                line=dict(color="#d62728", width=1)), row=2, col=1)
    for f in res.plan.folds[1:]:
        curves.add_vline(x=idx[f.test_start], line=dict(color="#999", width=1, dash="dot"))
    curves.update_layout(height=650, hovermode="x unified", margin=dict(l=60, r=20, t=80, b=40),
                         legend=dict(orientation="h", yanchor="bottom", y=1.06, xanchor="left", x=0))

    obj = res.config.objective
    labels = [f"fold {fr.fold.k + 1}" for fr in res.folds]
    objective = go.Figure([
        go.Bar(x=labels, y=[fr.best_value for fr in res.folds], name="in-sample (train, chosen)"),
        go.Bar(x=labels, y=[fr.out_of_sample.metrics.get(obj) for fr in res.folds], name="out-of-sample (test)"),
        go.Bar(x=labels, y=[fr.default_out_of_sample.metrics.get(obj) for fr in res.folds],
               name="defaults out-of-sample"),
    ])
    objective.update_layout(barmode="group", height=400, yaxis_title=obj, margin=dict(l=60, r=20, t=60, b=40),
                            legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))

    params = go.Figure()
    for name, s in res.space.items():
        vals = [fr.best_params.get(name) for fr in res.folds]
        if "choices" in s:
            ch = [str(c) for c in s["choices"]]
            y = [ch.index(str(v)) / max(1, len(ch) - 1) for v in vals]
        else:
            width = float(s["high"]) - float(s["low"])
            y = [(float(v) - float(s["low"])) / width if width else 0.5 for v in vals]
        params.add_trace(go.Scatter(x=labels, y=y, mode="lines+markers", name=name,
                                    text=[f"{name}={v}" for v in vals], hoverinfo="text+x"))
    params.update_layout(height=400, yaxis=dict(title="place in the search range (0 low, 1 high)",
                                                range=[-0.05, 1.05]), margin=dict(l=80, r=20, t=60, b=40),
                         legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    return timeline, curves, objective, params


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{_html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<{'th' if j == 0 else 'td'}>{c}</{'th' if j == 0 else 'td'}>"
                                    for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def walkforward_html(res: WalkForwardResult, *, title: str, simulated: bool, standalone: bool | None = None,
                     folder: Path | None = None) -> str:
    """The whole walk-forward report page (same shell as the optimiser's)."""
    from S5.report import figure_div, html_page

    if simulated and "simulated" not in title.lower():
        title += " -- SIMULATED market data"
    cfg, plan, obj = res.config, res.plan, res.config.objective
    agg = res.aggregate()
    p = plan.as_dict()
    intro = (f"<p class='note'>{'<span class=sim>Simulated market data (offline mode): not real prices.</span> ' if simulated else ''}"
             f"<b>{p['folds']} {p['mode']} folds</b>: train {p['train_bars']:,} bars"
             f"{' (the first; later ones expand)' if p['mode'] == 'anchored' else ''}, gap {p['gap_bars']:,}, "
             f"test {p['test_bars']:,} bars each; {p['unused_bars']:,} early bars unused. Each fold maximises "
             f"<b>{obj}</b> with {cfg.n_trials} Optuna trials (TPE, seed {cfg.seed} + fold index) on its train "
             f"window only (trials with fewer than {cfg.min_trades} trades are pruned), then backtests the chosen "
             f"params once on the following test window, starting flat with {cfg.init_cash:,.0f}. The stitched "
             f"curve compounds the test windows (a position open at a window's end is closed there). "
             f"{_html.escape(describe_costs(cfg.costs))}</p>")
    names = list(REPORT_METRICS)
    st_rows = [[m.replace("_", " "), format_metric(m, res.stitched.metrics.get(m)),
                format_metric(m, res.default_stitched.metrics.get(m))] for m in names]
    agg_rows = [
        [f"mean {obj}: in-sample (train) / out-of-sample (test)",
         f"{format_metric(obj, agg['mean_objective_in_sample'])} / "
         f"{format_metric(obj, agg['mean_objective_out_of_sample'])}"],
        ["profitable test windows", f"{agg['profitable_test_windows']} of {agg['folds']}"],
        [f"folds where the chosen params beat the defaults out of sample ({obj})",
         f"{agg['beats_defaults_out_of_sample']} of {agg['folds']}"],
        ["walk-forward efficiency (stitched OOS CAGR / mean in-sample CAGR)",
         format_metric("walk_forward_efficiency", agg["walk_forward_efficiency"])],
    ]
    fold_metrics = [m for m in FOLD_METRICS if m != obj]  # the objective has its own IS / OOS columns
    fold_rows = []
    for fr in res.folds:
        t = fr.fold.times(plan.index)
        cells = [str(fr.fold.k + 1), f"{t['train_from']:%Y-%m-%d %H:%M} .. {t['train_to']:%Y-%m-%d %H:%M}",
                 f"{t['test_from']:%Y-%m-%d %H:%M} .. {t['test_to']:%Y-%m-%d %H:%M}",
                 ", ".join(f"{_html.escape(k)}={_html.escape(str(v))}" for k, v in fr.best_params.items()),
                 f"{fr.counts.get('complete', 0)}/{sum(fr.counts.values())}",
                 format_metric(obj, fr.best_value), format_metric(obj, fr.out_of_sample.metrics.get(obj))]
        for m in fold_metrics:
            cells += [format_metric(m, fr.in_sample.metrics.get(m)), format_metric(m, fr.out_of_sample.metrics.get(m))]
        fold_rows.append(cells)
    fold_head = ["fold", "train (UTC)", "test (UTC)", "chosen params", "complete trials", f"{obj} IS (objective)",
                 f"{obj} OOS (objective)"]
    for m in fold_metrics:
        fold_head += [f"{m.replace('_', ' ')} IS", f"{m.replace('_', ' ')} OOS"]
    stab_rows = []
    for name, r in res.stability.iterrows():
        if r["kind"] == "choice":
            move = f"mode {_html.escape(str(r['mode']))} in {r['mode_share']:.0%} of folds"
            rng = ""
        else:
            move = (f"mean {r['mean']:.4g}, std {r['std']:.3g}, spread {r['spread']:.1%} of the range, "
                    f"on an edge in {int(r['edge_folds'])} fold(s)")
            rng = f"{r['low']} .. {r['high']}"
        stab_rows.append([_html.escape(str(name)), rng, ", ".join(_html.escape(str(v)) for v in r["values"]),
                          move, str(res.default_params.get(name, "")), f"<b>{r['verdict']}</b>"])
    timeline, curves, objective, params = _figures(res)
    body = [intro, "<h2>Folds</h2>", figure_div(timeline),
            "<h2>Stitched out-of-sample result</h2>", figure_div(curves),
            "<div class='grid'><div>",
            _table(["metric", "walk-forward (OOS, stitched)", "rule defaults (OOS, stitched)"], st_rows),
            "</div><div>", _table(["fold summary", "value"], agg_rows), "</div></div>",
            f"<h2>In-sample vs out-of-sample {obj} per fold</h2>", figure_div(objective),
            _table(fold_head, fold_rows),
            "<h2>Parameter stability across folds</h2>", figure_div(params),
            _table(["param", "search range", "value per fold", "movement", "rule file default", "verdict"],
                   stab_rows),
            ("<p class='note'>spread = standard deviation across folds / width of the search range (0: the same "
             "value every fold; ~29 %: as scattered as random draws); stable &lt; 10 %, unstable &gt; 25 %. "
             "A value on the range's edge suggests widening the range. The last fold's params (chosen on the most "
             f"recent train window) are: {_html.escape(json.dumps(res.latest_params))}.</p>")]
    return html_page(title, "".join(body), simulated=simulated, standalone=standalone, folder=folder)




# ---------------------------------------------------------------------------- files
@dataclass
class WalkForwardRun:
    result: WalkForwardResult
    simulated: bool
    paths: dict[str, Path]
    storage: str | None
    summary: dict[str, Any]


def walkforward_paths(dataset: Dataset, rules_path: str | Path) -> dict[str, Path]:
    from S1.datasets import report_path

    return {"json": report_path(dataset, "walkforward", "json", rules=rules_path),
            "folds": report_path(dataset, "walkforward_folds", "parquet", rules=rules_path),
            "equity": report_path(dataset, "walkforward_equity", "parquet", rules=rules_path),
            "html": report_path(dataset, "walkforward", "html", rules=rules_path)}


def walkforward_files(dataset: Dataset, rules_path: str | Path, *,
                      config: OptimizeConfig = OptimizeConfig(), wf: WalkForwardConfig = WalkForwardConfig(),
                      storage: str | None = None, study_name: str | None = None, progress: bool = True,
                      report: bool = True, memory: bool = False, workers: int = 1,
                      scheduler: str | None = None) -> WalkForwardRun:
    """Read the inputs (:func:`S4.signals.load_rule_inputs`), check the fold plan,
    run :func:`S5.walkforward_search.walk_forward`, then write the JSON, the two Parquet
    files and (``report``) the HTML. ``memory=True`` keeps the studies in memory.
    ``workers`` / ``scheduler``: the folds' searches fan out (local processes / a Dask
    cluster); the files are written here, once, after every fold is back."""
    from S1.datasets import atomic_write_text, dataset_stem, write_parquet
    from S4.rules import load_rules
    from S4.signals import load_rule_inputs

    rules = load_rules(rules_path)  # fail fast on the file itself, before reading data
    inputs = load_rule_inputs(dataset, rules, rules_path=rules_path)
    frame, simulated, sources = inputs
    plan = wf.plan(frame.index, dataset.interval)  # bad windows fail here, before any trial
    if not rules.param_space():
        from S1.errors import UserError

        raise UserError("the rule file has no searchable params (no low/high or choices)",
                        "give params ranges, e.g. rsi_buy: {value: 30, low: 20, high: 40}")
    storage = None if memory else (storage or default_storage())
    if study_name is None:
        study_name = (f"{dataset_stem(dataset)}_{Path(rules_path).stem}_{config.objective}_wf"
                      f"{len(plan.folds)}{plan.mode[0]}_{plan.train_bars}_{plan.test_bars}_{plan.gap}")
    market = {"symbol": dataset.symbol, "interval": dataset.interval, "days": dataset.days,
              "first": frame.index[0].isoformat() if len(frame) else None,
              "last": frame.index[-1].isoformat() if len(frame) else None, "rows": len(frame)}
    res = walk_forward(frame, inputs.rules, interval=dataset.interval, config=config, wf=wf, storage=storage,
                       study_name=study_name, market=market, progress=progress, workers=workers,
                       scheduler=scheduler)
    paths = walkforward_paths(dataset, rules_path)
    latest_command = (f"python S4/decision.py --symbol {dataset.symbol} --interval {dataset.interval} --days "
                      f"{dataset.days} --rules {Path(rules_path).as_posix()} "
                      + " ".join(f"--set {k}={v}" for k, v in res.latest_params.items()))
    summary = to_jsonable({"symbol": dataset.symbol, "interval": dataset.interval, "days": dataset.days,
                           "rules": str(rules_path), "simulated": simulated, "sources": sources,
                           "storage": redact_url(storage) if storage else "memory", "study_name": study_name,
                           **res.summary(), "latest_params_command": latest_command, "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
                           "files": {k: p.name for k, p in paths.items() if k != "html" or report}})
    meta = {"simulated": simulated, "kind": "walk_forward", "rules": str(rules_path),
            "objective": config.objective, "walk_forward": wf.as_dict()}
    folds = res.fold_table()
    folds = folds.assign(**{c: folds[c].astype(str) for c in folds.columns
                            if c.startswith("param_") and folds[c].dtype == object})
    html_text = None
    if report:
        title = (f"{dataset.label}: walk-forward of {Path(rules_path).name} "
                 f"({config.objective}, {len(plan.folds)} {plan.mode} folds)")
        html_text = walkforward_html(res, title=title, simulated=simulated)
    else:
        paths.pop("html")
    atomic_write_text(paths["json"], json.dumps(summary, indent=2, allow_nan=False))
    write_parquet(folds, paths["folds"], metadata=meta)
    write_parquet(equity_table(res), paths["equity"], metadata=meta)
    if html_text is not None:
        from S1.report_page import write_page

        write_page(paths["html"], html_text)
    return WalkForwardRun(res, simulated, paths, storage, summary)


__all__ = [
    "FOLD_METRICS",
    "WalkForwardRun",
    "equity_table",
    "walkforward_files",
    "walkforward_html",
    "walkforward_paths",
]
