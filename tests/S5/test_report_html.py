"""The backtest HTML as a person reads it: the trades table equals the trades file,
exit-reason and duration statistics add up, buy-and-hold beside the strategy, the
rules file in the title, the small-sample warning, readable settings, and plotly.js
once per reports folder (or embedded on request)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from S1.datasets import Dataset, dataset_path, read_parquet, write_parquet

RULES = "S4/rules_ta_only.yaml"


@pytest.fixture
def backtest_run(settings_env, sim_signals):
    from S5.backtest_files import backtest_files

    meta = {"simulated": True, "signals": {"rules_file": RULES, "params": {"rsi_buy": 40}}}
    write_parquet(sim_signals, dataset_path(Dataset("ETHUSDC", "1h", 90), "signals"), metadata=meta)
    return backtest_files(Dataset("ETHUSDC", "1h", 90))


def _rows(page: str) -> list[list[str]]:
    table = re.search(r"<table class='trades'>.*?<tbody>(.*?)</tbody>", page, flags=re.S).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table)]


def test_trades_table_equals_the_trades_file(backtest_run):
    page = backtest_run.paths["html"].read_text()
    trades = read_parquet(dataset_path(Dataset("ETHUSDC", "1h", 90), "trades")).sort_values("entry_time", kind="stable")
    rows = _rows(page)
    assert len(rows) == len(trades) > 0
    assert f"Trades ({len(trades)})" in page
    for cells, t in zip(rows, trades.itertuples(index=False)):
        assert cells[1] == t.side
        assert cells[2] == f"{t.entry_time:%Y-%m-%d %H:%M}" and cells[4] == f"{t.exit_time:%Y-%m-%d %H:%M}"
        assert float(cells[3].replace(",", "")) == pytest.approx(t.entry_price, rel=1e-5)
        assert float(cells[5].replace(",", "")) == pytest.approx(t.exit_price, rel=1e-5)
        assert float(cells[6]) == pytest.approx(t.size, rel=1e-5)
        assert cells[7] == f"{t.pnl:,.2f}"
        d = t.exit_time - t.entry_time
        assert cells[9].startswith(f"{d.days}d" if d.days else f"{d.seconds // 3600}h")
    det = backtest_run.result.trade_details.sort_values("entry_time", kind="stable")
    assert [c[11] for c in rows] == det["exit_reason"].astype(str).tolist()
    assert all(c[10] for c in rows)                     # decided bar by bar: each trade names its entry rule


def test_exit_reason_and_duration_stats_add_up(backtest_run):
    from S5.report import duration_stats, exit_reason_stats, trade_rows

    trades = trade_rows(backtest_run.result)
    er = exit_reason_stats(trades)
    assert er["trades"].sum() == len(trades) and er["total_pnl"].sum() == pytest.approx(trades["pnl"].sum())
    du = duration_stats(trades)
    assert du.loc["all", "trades"] == len(trades)
    assert du.loc["winners", "trades"] + du.loc["losers", "trades"] == int((trades["pnl"] != 0).sum())
    assert du.loc["all", "max"] == (trades["exit_time"] - trades["entry_time"]).max()
    page = backtest_run.paths["html"].read_text()
    for reason in er.index:
        assert f"<th>{reason}</th>" in page


def test_page_says_what_a_reader_needs(backtest_run):
    from S5.report import buy_and_hold_metrics

    res = backtest_run.result
    page = backtest_run.paths["html"].read_text()
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert "rules_ta_only.yaml" in title and "SIMULATED" in title
    n = res.metrics["n_trades"]
    assert n < 30 and f"Only {n} closed trades" in page                  # the small-sample warning
    bh = buy_and_hold_metrics(res)
    assert bh["total_return"] == pytest.approx(res.metrics["buy_and_hold_return"])
    assert bh["final_equity"] == pytest.approx(float(res.buy_and_hold.iloc[-1]))
    assert "Strategy vs buy and hold" in page and "Rolling Sharpe" in page and "Trade returns" in page
    settings = page.split("<h2>Run settings</h2>")[1]
    cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", settings)
    assert "None" not in cells and "False" not in cells and "True" not in cells
    assert "risk / sizing / method" in cells and cells[cells.index("risk / sizing / method") + 1] == "atr"


def test_many_trades_no_warning(sim_signals):
    from S5.engine import run_backtest
    from S5.report import backtest_html

    frame = sim_signals.copy()
    frame["entry"] = (pd.Series(range(len(frame)), index=frame.index) % 12 == 0).to_numpy()
    frame["exit"] = (pd.Series(range(len(frame)), index=frame.index) % 12 == 6).to_numpy()
    res = run_backtest(frame, interval="1h")
    assert res.metrics["n_trades"] >= 30
    page = backtest_html(res, title="t", simulated=False, standalone=True)
    assert "closed trades</b>: too few" not in page and "SIMULATED" not in page


def test_plotly_js_once_per_reports_folder(backtest_run, settings_env, monkeypatch):
    from plotly.offline import get_plotlyjs_version

    from S5.report import ensure_plotlyjs, html_page

    js = settings_env.reports_dir / "plotly.min.js"
    assert js.exists() and f"plotly.js v{get_plotlyjs_version()}" in js.read_text()[:200]
    before = js.stat().st_mtime_ns
    html_page("again", "<p>x</p>")
    assert js.stat().st_mtime_ns == before                              # written once, not per page
    js.write_text("/* plotly.js v0.0.1 */")                             # another version: replaced
    ensure_plotlyjs()
    assert f"plotly.js v{get_plotlyjs_version()}" in js.read_text()[:200]
    pages = list(settings_env.reports_dir.glob("*.html"))
    assert pages and all(p.stat().st_size < 2_000_000 for p in pages)
    assert list(settings_env.reports_dir.glob("*.js")) == [js]
    monkeypatch.setenv("TOOLKIT_REPORTS_STANDALONE", "1")
    page = html_page("standalone", "<p>x</p>")
    assert "<script src=" not in page and len(page) > 3_000_000        # self-contained on request


def test_page_opens_offline_in_a_browser(backtest_run, settings_env, tmp_path):
    """Headless Chromium draws the charts from the shared plotly.min.js (skips without chromium)."""
    import shutil
    import subprocess

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed")
    page = backtest_run.paths["html"]
    text = page.read_text().replace(
        "</body>", "<script>document.title = 'plots:' + document.querySelectorAll('.js-plotly-plot').length"
                   "</script></body>")

    def dom(folder):
        probe = folder / "probe.html"
        probe.write_text(text)
        r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                            "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
        return r.stdout, re.search(r"<title>(.*?)</title>", r.stdout).group(1)

    out, title = dom(page.parent)
    assert re.fullmatch(r"plots:[1-9]\d*", title), out[:500]
    assert '<p class="warn">plotly.min.js is not next to this file' not in out
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    out, title = dom(moved)                                     # copied away from its plotly.min.js: it says so
    assert title == "plots:0" and '<p class="warn">plotly.min.js is not next to this file' in out


def test_page_builder_doctests():
    import doctest

    import S1.report_page
    import S5.report

    for mod in (S1.report_page, S5.report):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0


def test_walkforward_report_has_no_repeated_columns_and_one_number_format(settings_env, sim_ta):
    from S4.rules import load_rules
    from S5.optimizer import OptimizeConfig
    from S5.walkforward_files import walkforward_html
    from S5.walkforward_search import WalkForwardConfig, walk_forward

    res = walk_forward(sim_ta, load_rules(RULES), interval="1h", config=OptimizeConfig(n_trials=3, min_trades=1,
                                                                                       objective="sharpe"),
                       wf=WalkForwardConfig(n_folds=2, test="300"), progress=False)
    page = walkforward_html(res, title="wf", simulated=True)
    fold_table = page.split("In-sample vs out-of-sample")[1].split("Parameter stability")[0]
    head = re.findall(r"<th>(.*?)</th>", fold_table.split("</tr>")[0])
    assert len(head) == len(set(head)) and sum("sharpe" in h for h in head) == 2, head
    cells = re.findall(r"<td>(-?\d[\d,]*\.\d+)</td>", fold_table)
    assert cells and all(len(c.split(".")[1]) == 3 for c in cells)     # plain numbers: 3 decimals throughout
    assert "class='banner'>SIMULATED" in page
    import json as _json
    figs = [_json.loads(m) for m in re.findall(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', page, flags=re.S)]
    assert figs                                                          # the bar chart's legend sits above it
    layouts = re.findall(r'"legend":\{"orientation":"h","yanchor":"bottom","y":1\.0\d', page)
    assert len(layouts) >= 3
