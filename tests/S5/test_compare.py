"""``python S5/compare.py`` and :mod:`S5.run_catalog`: the runs on disk side by side,
read from the files real S5 runs write (and from older, thinner files)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, read_parquet, report_path, write_parquet

RULES = "S4/rules_ta_only.yaml"


@pytest.fixture
def runs_on_disk(settings_env, sim_signals, sim_ta):
    """Two real backtests (ETHUSDC, BTCUSDT-named copy) and a real optimisation."""
    from S5.backtest_files import backtest_files
    from S5.optimize import main as optimize

    meta = {"simulated": True, "signals": {"rules_file": RULES, "params": {"rsi_buy": 40}}}
    for sym in ("ETHUSDC", "BTCUSDT"):
        write_parquet(sim_signals, dataset_path(Dataset(sym, "1h", 90), "signals"), metadata=meta)
        backtest_files(Dataset(sym, "1h", 90))
    write_parquet(sim_ta, dataset_path(Dataset("ETHUSDC", "1h", 90), "ta"), metadata={"simulated": True})
    assert run(optimize, ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--rules", RULES,
                          "--trials", "4", "--min-trades", "2"]) == 0
    return settings_env


def test_catalog_metrics_are_the_files_metrics(runs_on_disk):
    from S5.run_catalog import COMPARE_METRICS, load_catalog

    cat = load_catalog()
    by = {(r.kind, r.symbol, r.sample): r for r in cat.runs}
    assert set(by) == {("backtest", "ETHUSDC", "full"), ("backtest", "BTCUSDT", "full"),
                       ("optimize", "ETHUSDC", "in-sample"), ("optimize", "ETHUSDC", "out-of-sample")}
    bt = json.loads(dataset_path(Dataset("ETHUSDC", "1h", 90), "backtest").read_text())
    opt = json.loads(report_path(Dataset("ETHUSDC", "1h", 90), "optimize", "json", rules=RULES).read_text())
    for run_, metrics in ((by["backtest", "ETHUSDC", "full"], bt["metrics"]),
                          (by["optimize", "ETHUSDC", "in-sample"], opt["in_sample"]),
                          (by["optimize", "ETHUSDC", "out-of-sample"], opt["out_of_sample"])):
        row = run_.row()
        for m in COMPARE_METRICS:
            assert row[m] == (None if metrics.get(m) is None else pytest.approx(metrics[m])), m
        assert run_.rules == RULES and run_.simulated is True and run_.interval == "1h" and run_.days == 90
    assert by["optimize", "ETHUSDC", "in-sample"].window.split("..")[1] == \
        by["optimize", "ETHUSDC", "out-of-sample"].window.split("..")[0]               # the split date
    assert by["backtest", "ETHUSDC", "full"].sizing.startswith("atr")                  # S6/risk.yaml's sizing
    assert "fee 0.1%" in by["backtest", "ETHUSDC", "full"].costs


def test_rules_name_comes_from_the_json_not_the_file_name(runs_on_disk):
    from S5.run_catalog import load_catalog

    src = dataset_path(Dataset("ETHUSDC", "1h", 90), "backtest")
    doc = json.loads(src.read_text())
    doc["params"]["rules_file"] = "my/rules_momentum.yaml"
    (src.parent / "ethusdc_1h_90d__rules_momentum_backtest.json").write_text(json.dumps(doc))
    cat = load_catalog().filter(rules="rules_momentum")
    assert [r.rules for r in cat.runs] == ["my/rules_momentum.yaml"]


def _backtest_doc(rules_file: str, sharpe: float) -> str:
    return json.dumps({"symbol": "BTCUSDT", "interval": "1h", "days": 30, "params": {"rules_file": rules_file},
                       "metrics": {"sharpe": sharpe, "n_trades": 40}})


def test_rules_filter_is_the_rules_name_not_a_substring(settings_env, capsys):
    """``--rules rules`` is S4/rules.yaml: it must not list the runs of rules_ta_only (or my_rules)."""
    from S5.run_catalog import load_catalog

    d = settings_env.data_dir
    d.mkdir(parents=True, exist_ok=True)
    for token, rules_file, sharpe in (("rules", "S4/rules.yaml", 1.0), ("rules_ta_only", "S4/rules_ta_only.yaml", 2.0),
                                      ("my_rules", "elsewhere/my_rules.yaml", 3.0)):
        (d / f"btcusdt_1h_30d__{token}_backtest.json").write_text(_backtest_doc(rules_file, sharpe))
    cat = load_catalog()
    assert [r.rules for r in cat.filter(rules="rules").runs] == ["S4/rules.yaml"]
    assert [r.rules for r in cat.filter(rules="S4/rules.yaml").runs] == ["S4/rules.yaml"]
    assert [r.rules for r in cat.filter(rules="S4/rules_ta_only.yaml").runs] == ["S4/rules_ta_only.yaml"]
    assert [r.rules for r in cat.filter(rules="rules_ta_only").runs] == ["S4/rules_ta_only.yaml"]
    assert cat.filter(rules="ta_only").runs == []                   # a part of a name is not a name
    out_csv = settings_env.data_dir / "runs.csv"
    assert _compare(["--rules", "rules", "--no-html", "--csv", str(out_csv)]) == 0
    assert pd.read_csv(out_csv)["rules"].tolist() == ["S4/rules.yaml"]
    capsys.readouterr()
    assert _compare(["--rules", "!!!", "--no-html"]) == 2        # no rule file can have that name: one line
    assert "cannot name outputs after the rules file" in capsys.readouterr().err


def test_runs_saved_under_the_older_names_are_still_listed(settings_env, capsys):
    """Optimiser and walk-forward files named ``<stem>_<kind>_<rules>`` (before ``<stem>__<rules>_<kind>``)
    are read, with one note each naming the new name; a re-run under the new name replaces them."""
    from S5.run_catalog import load_catalog

    reports = settings_env.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    opt = {"symbol": "BTCUSDT", "interval": "1h", "days": 30, "rules": "S4/rules_ta_only.yaml",
           "in_sample": {"sharpe": 2.0}, "out_of_sample": {"sharpe": 0.5}}
    (reports / "btcusdt_1h_30d_optimize_rules_ta_only.json").write_text(json.dumps(opt))
    wf = {"symbol": "BTCUSDT", "interval": "1h", "days": 30, "rules": "S4/rules.yaml",
          "stitched_out_of_sample": {"sharpe": 0.7}}
    (reports / "btcusdt_1h_30d_walkforward_rules.json").write_text(json.dumps(wf))
    idx = pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC", name="open_time")
    write_parquet(pd.DataFrame({"equity": [1.0, 2.0, 3.0]}, index=idx),
                  reports / "btcusdt_1h_30d_walkforward_rules_equity.parquet")
    cat = load_catalog()
    assert sorted((r.kind, r.sample, r.metrics["sharpe"]) for r in cat.runs) == [
        ("optimize", "in-sample", 2.0), ("optimize", "out-of-sample", 0.5),
        ("walk_forward", "out-of-sample (stitched)", 0.7)]
    [wf_run] = [r for r in cat.runs if r.kind == "walk_forward"]
    assert wf_run.equity().tolist() == [1.0, 2.0, 3.0]
    assert len(cat.notes) == 2 and all(n.startswith("note: reading ") for n in cat.notes)
    assert any("btcusdt_1h_30d__rules_ta_only_optimize.json" in n for n in cat.notes)
    assert any("btcusdt_1h_30d__rules_walkforward.json" in n for n in cat.notes)
    assert _compare(["--no-html"]) == 0
    assert capsys.readouterr().err.count("note: reading ") == 2
    # a re-run writes the new name: the old file is no longer listed twice
    (reports / "btcusdt_1h_30d__rules_ta_only_optimize.json").write_text(json.dumps({**opt, "in_sample": {"sharpe": 9.0}}))
    cat = load_catalog()
    assert sorted(r.metrics["sharpe"] for r in cat.runs if r.kind == "optimize") == [0.5, 9.0]
    assert len(cat.notes) == 1


def test_older_files_missing_keys_show_blanks(settings_env):
    from S5.run_catalog import COLUMNS, compare_html, load_catalog, rich_table

    d = settings_env.data_dir
    d.mkdir(parents=True, exist_ok=True)
    (d / "ethusdc_1h_30d_backtest.json").write_text(json.dumps({"metrics": {"sharpe": 0.5}}))
    (d / "btcusdt_1h_30d_backtest.json").write_text("{not json")
    settings_env.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings_env.reports_dir / "x_1h_30d_optimize_r.json").write_text(json.dumps({"symbol": "X"}))
    cat = load_catalog()
    [r] = cat.runs
    row = r.row()
    assert row["sharpe"] == 0.5 and row["symbol"] is None and row["total_return"] is None
    assert list(cat.table().columns) == list(COLUMNS)
    assert [p.name for p, _ in cat.skipped] == ["btcusdt_1h_30d_backtest.json"]
    page = compare_html(cat)
    assert "None" not in re.sub(r"<script.*?</script>", "", page, flags=re.S) and "0.500" in page
    assert rich_table(cat).row_count == 1


def test_compare_overlays_one_normalised_curve_per_run_with_equity(runs_on_disk):
    from S5.run_catalog import curves_figure, load_catalog

    cat = load_catalog()
    with_equity = [r for r in cat.runs if r.equity_path is not None]
    assert len(with_equity) == 2                                   # the two backtests; optimisations have none
    curves = cat.curves()
    assert len(curves) == len(with_equity)
    for r in with_equity:
        eq = read_parquet(r.equity_path)["equity"]
        s = curves[r.label]
        assert s.iloc[0] == pytest.approx(1.0) and s.iloc[-1] == pytest.approx(eq.iloc[-1] / eq.iloc[0])
    fig = curves_figure(curves)
    assert [t.name for t in fig.data] == list(curves)


def _compare(argv):
    from S5.compare import main

    return run(main, argv)


def test_cli_filters_sorts_and_writes_html_and_csv(runs_on_disk, tmp_path, capsys):
    out_csv = tmp_path / "runs.csv"
    assert _compare(["--sort", "sharpe", "--csv", str(out_csv)]) == 0
    table = pd.read_csv(out_csv)
    sharpe = table["sharpe"].dropna().tolist()
    assert len(table) == 4 and sharpe == sorted(sharpe, reverse=True)
    page = (runs_on_disk.reports_dir / "compare.html").read_text()
    assert "SIMULATED" in page and page.count("rules_ta_only") >= 4
    assert "<script src='plotly.min.js'" in page and (runs_on_disk.reports_dir / "plotly.min.js").exists()
    assert _compare(["--symbol", "btcusdt", "--no-html", "--csv", str(out_csv)]) == 0
    assert pd.read_csv(out_csv)["symbol"].tolist() == ["BTCUSDT"]
    assert _compare(["--kind", "optimize", "--no-html", "--csv", str(out_csv)]) == 0
    assert sorted(pd.read_csv(out_csv)["sample"]) == ["in-sample", "out-of-sample"]
    capsys.readouterr()
    assert _compare(["--interval", "4h"]) == 2
    err = capsys.readouterr().err
    assert "none of the 4 run(s) on disk matches" in err and err.count("\n") == 1


def test_nothing_on_disk_names_the_command(settings_env, capsys):
    assert _compare([]) == 2
    assert "python S5/backtest.py" in capsys.readouterr().err


def test_dashboard_compare_view(runs_on_disk, monkeypatch):
    """The dashboard's "Runs side by side" section: the same catalog, one curve per run with equity."""
    import sys
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from S5.run_catalog import load_catalog
    from S7.dashboard_compare import compare_data

    table, curves = compare_data(sort="sharpe")
    assert len(table) == len(load_catalog().runs) == 4 and len(curves) == 2
    only_bt, _ = compare_data(kinds=["backtest"], symbols=["BTCUSDT"])
    assert only_bt["run"].tolist() == ["BTCUSDT 1h 90d rules_ta_only backtest"]

    app = Path(__file__).resolve().parents[2] / "S7" / "dashboard.py"
    monkeypatch.setattr(sys, "argv", ["dashboard.py"])
    at = AppTest.from_file(str(app), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Runs side by side" in [h.value for h in at.header]
    shown = [d.value for d in at.dataframe if {"run", "sample", "sharpe"} <= set(d.value.columns)]
    assert len(shown) == 1 and len(shown[0]) == 4
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    overlay = [s for s in specs if "normalised" in json.dumps(s.get("layout", {}).get("title", ""))]
    assert len(overlay) == 1 and len(overlay[0]["data"]) == 2


def test_parity_files_are_listed(settings_env):
    from S5.run_catalog import load_catalog

    d = settings_env.data_dir
    d.mkdir(parents=True, exist_ok=True)
    trade = {"side": "long", "entry_time": "2024-01-01T00:00:00+00:00", "exit_time": "2024-01-02T00:00:00+00:00",
             "entry_price": 100.0, "exit_price": 101.0, "qty": 1.0, "exit_reason": "signal:x"}
    doc = {"backtest": [trade, trade], "paper": [trade], "mismatches": [{"trade": 1, "field": "missing"}],
           "ok": False, "settings": {"symbol": "BTCUSDT", "interval": "1h", "days": 30, "fee": 0.001,
                                     "slippage": 0.0, "start": "2024-01-01T00:00:00+00:00",
                                     "end": "2024-01-31T00:00:00+00:00", "rules_file": "S4/rules_ta_only.yaml"}}
    (d / "btcusdt_1h_30d_parity.json").write_text(json.dumps(doc))
    [r] = load_catalog().runs
    assert (r.kind, r.symbol, r.days, r.rules, r.window) == ("parity", "BTCUSDT", 30, "S4/rules_ta_only.yaml",
                                                             "2024-01-01..2024-01-31")
    assert r.sample == "1 difference(s) with paper trading" and r.metrics["n_trades"] == 2


def test_walk_forward_run_is_its_stitched_out_of_sample(settings_env, sim_ta):
    from S5.optimize import main as optimize
    from S5.run_catalog import load_catalog

    write_parquet(sim_ta, dataset_path(Dataset("ETHUSDC", "1h", 90), "ta"), metadata={"simulated": True})
    assert run(optimize, ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--rules", RULES,
                          "--trials", "3", "--min-trades", "1", "--walk-forward", "2", "--wf-test", "300"]) == 0
    doc = json.loads(report_path(Dataset("ETHUSDC", "1h", 90), "walkforward", "json", rules=RULES).read_text())
    [r] = load_catalog().runs
    assert (r.kind, r.sample, r.rules) == ("walk_forward", "out-of-sample (stitched)", RULES)
    assert r.row()["sharpe"] == pytest.approx(doc["stitched_out_of_sample"]["sharpe"])
    assert r.window == f"{doc['folds'][0]['test'][0][:10]}..{doc['folds'][-1]['test'][1][:10]}"
    eq = read_parquet(report_path(Dataset("ETHUSDC", "1h", 90), "walkforward_equity", "parquet", rules=RULES))["equity"]
    assert r.equity().iloc[-1] == pytest.approx(eq.iloc[-1])
