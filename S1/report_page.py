"""The one page builder and visual style of every HTML report (backtest, optimiser,
walk-forward, stress, run comparison, S3 evaluation), so they look alike and load
plotly.js **once per reports folder**: a page references ``plotly.min.js`` beside
it, which :func:`write_page` puts in the page's folder when it writes the page
(:func:`ensure_plotlyjs`: atomically, only when missing or of another plotly.js
version). Building a page writes nothing. ``standalone=True`` or the environment variable
``TOOLKIT_REPORTS_STANDALONE=1`` embeds plotly.js instead (one file to mail
around). Both open offline. It lives in S1 so every sprint can use it.

>>> page = html_page("Demo", "<p>hi</p>", standalone=True, simulated=True)
>>> "SIMULATED" in page.split("</title>")[0], "<script src=" in page
(True, False)
>>> table_html(["a", "b"], [["x", "1"]], left=[1])
"<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><th>x</th><td class='l'>1</td></tr></tbody></table>"
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path


def table_html(head: list[str], rows: list[list[str]], *, css: str = "", escape: bool = True,
               first_is_header: bool = True, left: Iterable[int] = ()) -> str:
    """A plain HTML table in the shared style (cells escaped unless ``escape=False``;
    columns ``left`` are text, left-aligned)."""
    left = set(left)

    def cell(j, c):
        tag = "th" if j == 0 and first_is_header else "td"
        cls = " class='l'" if j in left and tag == "td" else ""
        return f"<{tag}{cls}>{html.escape(str(c)) if escape else c}</{tag}>"
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(cell(j, c) for j, c in enumerate(r)) + "</tr>" for r in rows)
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


# -------------------------------------------------------------------------- pages
#: The one visual style of every report (pages and figures).
FONT = "system-ui,-apple-system,Segoe UI,Roboto,sans-serif"
COLORWAY = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_CSS = """
body{font-family:FONT;margin:24px auto;max-width:1400px;padding:0 16px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #eee;padding-bottom:3px}
.sim{color:#b00;font-weight:600} .note{color:#555;font-size:13px}
.banner{background:#fdecea;border:1px solid #e0a0a0;color:#900;padding:6px 12px;margin:8px 0;font-weight:600}
.warn{background:#fff4e5;border:1px solid #f0b35b;padding:6px 12px;margin:12px 0;font-size:14px}
table{border-collapse:collapse;font-size:13px;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th{background:#f6f6f6;text-align:left}
td.l{text-align:left} table.compare td{white-space:nowrap} table.compare td.l{white-space:normal;min-width:90px}
.grid{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}
.scroll{max-height:480px;overflow:auto;border:1px solid #eee}
.scroll thead th{position:sticky;top:0}
tr.win td.pnl{color:#1a7f1a} tr.loss td.pnl{color:#b00}
""".replace("FONT", FONT)
PLOTLY_FILE = "plotly.min.js"
STANDALONE_ENV = "TOOLKIT_REPORTS_STANDALONE"


def apply_style(fig):
    """The shared figure style: white template, one font and colour cycle, legend
    above the plot (never over the data), unified hover. Explicit layout set by the
    caller after this call wins."""
    fig.update_layout(template="plotly_white", font=dict(family=FONT, size=12), colorway=list(COLORWAY),
                      hoverlabel=dict(namelength=-1))
    if fig.layout.legend.orientation is None:
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    if fig.layout.margin.t is None:  # a titled figure: room for the title above the legend
        fig.update_layout(margin=dict(l=60, r=20, t=100 if fig.layout.title.text else 50, b=40))
    return fig


def figure_div(fig) -> str:
    """A plotly figure as a ``<div>`` in the shared style (plotly.js not included: see :func:`html_page`)."""
    import plotly.io as pio

    apply_style(fig)
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def standalone_default() -> bool:
    """``TOOLKIT_REPORTS_STANDALONE=1`` makes every report embed plotly.js."""
    import os

    return os.environ.get(STANDALONE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def ensure_plotlyjs(folder: Path | None = None) -> Path:
    """``<folder>/plotly.min.js`` (default: the reports folder), written atomically
    only when missing or of another plotly.js version; the path."""
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    from S1.datasets import atomic_write_text, reports_dir

    path = Path(folder if folder is not None else reports_dir()) / PLOTLY_FILE
    tag = f"plotly.js v{get_plotlyjs_version()}"
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as fh:
            if tag in fh.read(200):
                return path
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, get_plotlyjs())


_MISSING_JS = ("<script>if(!window.Plotly){document.addEventListener('DOMContentLoaded',function(){"
               "document.body.insertAdjacentHTML('afterbegin',\"<p class='warn'>" + PLOTLY_FILE +
               " is not next to this file, so the charts are not drawn: open the report from its reports folder, "
               "or re-create it with " + STANDALONE_ENV + "=1 for a self-contained page.</p>\")})}</script>")


_SHARED_SCRIPT = f"<script src='{PLOTLY_FILE}' charset='utf-8'></script>"


def plotly_script(*, standalone: bool | None = None) -> str:
    """The ``<script>`` that loads plotly.js: inline (standalone) or ``plotly.min.js``
    beside the page (put there by :func:`write_page`). Writes nothing."""
    from plotly.offline import get_plotlyjs

    if standalone if standalone is not None else standalone_default():
        return f"<script type='text/javascript'>{get_plotlyjs()}</script>"
    return _SHARED_SCRIPT + _MISSING_JS


def write_page(path: Path | str, page: str) -> Path:
    """Write ``page`` to ``path`` atomically and, when the page loads the shared
    ``plotly.min.js``, make sure that file is in the same folder; the path.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = write_page(d / "a.html", html_page("A", "<p>a</p>", standalone=False))
    >>> sorted(p.name for p in d.iterdir())
    ['a.html', 'plotly.min.js']
    """
    from S1.datasets import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _SHARED_SCRIPT in page:
        ensure_plotlyjs(path.parent)
    return atomic_write_text(path, page)


def html_page(title: str, body: str, *, subtitle: str = "", simulated: bool = False, standalone: bool | None = None,
              folder: Path | None = None) -> str:
    """A complete HTML page in the shared style (a string: nothing is written; write
    it with :func:`write_page`, which puts ``plotly.min.js`` beside it). ``standalone``
    embeds plotly.js instead (default: ``TOOLKIT_REPORTS_STANDALONE``). ``folder`` is
    accepted for older callers and unused. ``simulated`` adds the red SIMULATED banner
    (and to the title)."""
    if simulated and "simulated" not in title.lower():
        title = f"{title} -- SIMULATED market data"
    banner = ("<p class='banner'>SIMULATED market data (offline mode): not real prices.</p>" if simulated else "")
    sub = f'<p class="note">{subtitle}</p>' if subtitle else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style>{plotly_script(standalone=standalone)}</head>"
            f"<body><h1>{html.escape(title)}</h1>{banner}{sub}{body}</body></html>")


__all__ = ["COLORWAY", "FONT", "PLOTLY_FILE", "STANDALONE_ENV", "apply_style", "ensure_plotlyjs", "figure_div",
           "html_page", "plotly_script", "standalone_default", "table_html", "write_page"]
