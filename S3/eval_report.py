"""The evaluation table of ``S3/evaluate.py``: as text (markdown), as an HTML
page (``reports/sentiment_eval_<classifier>_<date>.html``, plotly.js shared in its folder, opens offline)
and as JSON beside it (every figure, the evaluated row indices, the prompt hash).

>>> fmt_cost(None), fmt_cost(0.01234), fmt_latency(None, None)
('unknown', '$0.0123', '—')
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from S1.datasets import atomic_write_text, reports_dir

#: Only what the shared style (S1.report_page) lacks.
_EXTRA_CSS = "<style>ul.note{padding-left:18px}</style>"


def fmt_cost(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.4f}"


def fmt_latency(p50: float | None, p95: float | None) -> str:
    return "—" if p50 is None else f"{p50:.2f} / {p95:.2f}"


def eval_report_path(slug: str, date: str, ext: str = "html", *, reports: Path | None = None) -> Path:
    """``reports/sentiment_eval_<slug>_<date>.<ext>`` (slug made file-name safe)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", slug).strip("-") or "eval"
    return (Path(reports) if reports is not None else reports_dir()) / f"sentiment_eval_{safe}_{date}.{ext}"


def _row_cells(r: dict) -> list[str]:
    pc = r["per_class"]
    llm = r.get("llm") or {}
    cells = [r["classifier"], str(r["n"]), f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}"]
    cells += [f"{pc[c]['precision']:.2f} / {pc[c]['recall']:.2f}" for c in ("bearish", "neutral", "bullish")]
    cells.append(str(r["unknown"]))
    if llm:
        cells += [f"{llm['tokens_in']} / {llm['tokens_out']}", fmt_cost(llm["cost_usd"]), str(llm["requests"]),
                  str(llm["retries"]), fmt_latency(llm["latency_p50_s"], llm["latency_p95_s"]),
                  f"{llm['cache_hits']}/{llm['items']}"]
    else:
        cells += ["—", "$0 (offline)", "—", "—", "—", "—"]
    return cells


HEADER = ["classifier", "n", "accuracy", "macro-F1", "P / R bearish", "P / R neutral", "P / R bullish", "unknown",
          "tokens in / out", "cost", "requests", "retries", "latency p50 / p95 s", "cache hits"]


def confusion_text(r: dict) -> str:
    cols = list(next(iter(r["confusion"].values())))
    lines = [f"{'':14}" + "".join(f"{'pred ' + c:>15}" for c in cols)]
    for t, row in r["confusion"].items():
        lines.append(f"{'true ' + t:14}" + "".join(f"{row[c]:>15}" for c in cols))
    return "\n".join(lines)


def _price_text(llm: dict) -> str:
    price = llm.get("price")
    if not price:
        return f"no price for {llm['model']!r}: cost unknown"
    return (f"price {price['input']}/{price['output']} USD per 1M tokens in/out as of "
            f"{price.get('as_of', '?')}")


def table_text(report: dict) -> str:
    """The markdown table, the protocols and the confusion matrices."""
    out = [(f"{report['labels_file']}: {report['rows_total']} rows; evaluated {report['selection']['n']} "
            f"({report['selection']['how']})"),
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(_row_cells(r)) + " |" for r in report["results"]]
    for r in report["results"]:
        out += ["", f"{r['classifier']}: {r['protocol']}", confusion_text(r)]
        llm = r.get("llm")
        if llm:
            out.append(f"prompt {llm['prompt']} sha256 {llm['prompt_hash']}; {_price_text(llm)}"
                       f"; {llm['failed_requests']} failed request(s), {llm['invalid_replies']} invalid "
                       f"replies, {llm['replies_without_usage']} replies without usage")
    return "\n".join(out)


def _confusion_html(r: dict) -> str:
    cols = list(next(iter(r["confusion"].values())))
    total = max(1, r["n"])
    head = "".join(f"<th>pred {html.escape(c)}</th>" for c in cols)
    body = []
    for t, row in r["confusion"].items():
        cells = []
        for c in cols:
            a = 0.08 + 0.7 * row[c] / total * 3
            color = f"rgba(44,160,44,{min(a, .85):.2f})" if c == t else f"rgba(214,39,40,{min(a, .85):.2f})"
            cells.append(f'<td style="background:{color}">{row[c]}</td>')
        body.append(f"<tr><th>true {html.escape(t)}</th>{''.join(cells)}</tr>")
    return (f"<div><h3 style='font-size:14px'>{html.escape(r['classifier'])}</h3>"
            f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _figure_html(report: dict) -> str:
    import plotly.graph_objects as go

    from S1.report_page import figure_div

    names = [r["classifier"] for r in report["results"]]
    fig = go.Figure([go.Bar(name="accuracy", x=names, y=[r["accuracy"] for r in report["results"]]),
                     go.Bar(name="macro-F1", x=names, y=[r["macro_f1"] for r in report["results"]])])
    fig.update_layout(barmode="group", height=380, yaxis={"range": [0, 1]}, margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return figure_div(fig)


MEANING = [
    ("accuracy: share of rows whose predicted label equals the human label; macro-F1: the unweighted mean "
     "of the three classes' F1, so the rare bearish class counts as much as bullish (majority class: 0.22)."),
    ("P / R: precision (of the rows predicted as that class, the share truly in it) and recall (of the rows "
     "truly in it, the share found). An LLM item that stayed unknown counts as wrong."),
    ("Offline rows are measured on the same rows as the LLM. Their protocols differ (below): the trained "
     "model's figures are out-of-fold; the lexicon's band was tuned on half of CryptoLin."),
    ("tokens and cost: summed from each reply's usage and priced with S3/prices.yaml (the date is the price's "
     "as_of); a model without a price shows unknown. Cache hits cost nothing: a re-run of the same sample, "
     "model and prompt makes no request."),
    ("latency: client-side seconds per answered request (p50 / p95), queueing behind max_concurrency excluded. "
     "retries: requests repeated after a 429/5xx/timeout/invalid reply."),
]


def report_html(report: dict, *, standalone: bool | None = None, folder: Path | None = None) -> str:
    """The page (the shared page builder :func:`S1.report_page.html_page`: plotly.js
    once in ``folder``, the folder the page is written to, or embedded)."""
    from S1.report_page import html_page

    sel = report["selection"]
    rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _row_cells(r)) + "</tr>"
                        for r in report["results"])
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    protocols = "".join(f"<li><b>{html.escape(r['classifier'])}</b>: {html.escape(r['protocol'])}</li>"
                        for r in report["results"])
    prompts = "".join(f"<li>{html.escape(r['llm']['model'])}: prompt <b>{html.escape(r['llm']['prompt'])}</b> "
                      f"sha256 <code>{html.escape(r['llm']['prompt_hash'])}</code>; {html.escape(_price_text(r['llm']))}"
                      f"</li>" for r in report["results"] if r.get("llm"))
    meaning = "".join(f"<li>{html.escape(m)}</li>" for m in MEANING)
    sub = (f"{html.escape(report['labels_file'])} (sha256 {report['labels_sha256'][:12]}), {report['rows_total']} "
           f"rows; evaluated {sel['n']} ({html.escape(sel['how'])}); {html.escape(report['created_at'])}")
    body = (f'<p class="note">{sub}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>"
            f"{'<ul class=note>' + prompts + '</ul>' if prompts else ''}"
            f"<h2>Accuracy and macro-F1</h2>{_figure_html(report)}"
            f"<h2>Confusion matrices (rows: human label)</h2><div class='grid'>"
            f"{''.join(_confusion_html(r) for r in report['results'])}</div>"
            f"<h2>How each row was measured</h2><ul class='note'>{protocols}</ul>"
            f"<h2>What the figures mean</h2><ul class='note'>{meaning}</ul>")
    title = f"Sentiment classifiers on labelled headlines — {report['classifier']}"
    return html_page(title, _EXTRA_CSS + body, standalone=standalone, folder=folder)


def write_report(report: dict, html_path: Path) -> tuple[Path, Path]:
    """Write the HTML page and the JSON beside it (atomically); return both paths."""
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = html_path.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(report, indent=1, default=str))
    from S1.report_page import write_page

    write_page(html_path, report_html(report, folder=html_path.parent))
    return html_path, json_path
