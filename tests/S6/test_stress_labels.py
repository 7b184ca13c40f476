"""Stress outputs made from simulated inputs say SIMULATED: the JSON, the HTML (title
and banner) and the PNG (title, stored in the file's metadata too); real inputs do not."""

from __future__ import annotations

import json

import pytest
from PIL import Image


def _run(sim_backtest, *, candles_sim=False, trades_sim=False):
    from S1.datasets import Dataset, dataset_path, read_parquet, report_path, write_parquet
    from S6.stress import main

    for kind, flag in ((None, candles_sim), ("trades", trades_sim), ("equity", trades_sim)):
        p = dataset_path(Dataset("BTCUSDT", "1h", 90), **({"kind": kind} if kind else {}))
        write_parquet(read_parquet(p), p, metadata={"simulated": flag})
    assert main(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "90", "--paths", "200", "--seed", "1"]) == 0
    doc = json.loads(dataset_path(Dataset("BTCUSDT", "1h", 90), kind="stress").read_text())
    page = report_path(Dataset("BTCUSDT", "1h", 90), "stress", "html").read_text()
    png = Image.open(report_path(Dataset("BTCUSDT", "1h", 90), "stress", "png"))
    return doc, page, png.text


@pytest.mark.parametrize("candles_sim,trades_sim", [(True, False), (False, True)])
def test_simulated_inputs_label_every_output(sim_backtest, capsys, candles_sim, trades_sim):
    doc, page, png = _run(sim_backtest, candles_sim=candles_sim, trades_sim=trades_sim)
    assert doc["simulated"] is True
    assert "SIMULATED" in page.split("</title>")[0] and "class='banner'>SIMULATED" in page
    assert "SIMULATED" in png["Title"] and "simulated" in png["Description"]
    assert "SIMULATED market data" in capsys.readouterr().out


def test_real_inputs_are_not_labelled(sim_backtest, capsys):
    doc, page, png = _run(sim_backtest)
    assert doc["simulated"] is False
    assert "SIMULATED" not in page and "SIMULATED" not in png["Title"]
    assert "SIMULATED" not in capsys.readouterr().out


def test_stop_honoured_bars_are_not_hidden(sim_backtest):
    """Both bar series of the worst-moves panel sit side by side (own offset), so the
    shorter 'stop honoured' bar is never drawn under the 'gapped' one."""
    from S1.datasets import Dataset, dataset_path, read_candles
    from S6.config import RiskConfig
    from S6.stress_analysis import load_backtest, run_stress
    from S6.stress_report import build_figure

    bt = load_backtest(Dataset("BTCUSDT", "1h", 90))
    res = run_stress(bt, read_candles(dataset_path(Dataset("BTCUSDT", "1h", 90))), config=RiskConfig(), paths=200, seed=1)
    bars = [t for t in build_figure(res).data if t.type == "bar"]
    stop = [b for b in bars if "stop honoured" in b.name]
    gap = [b for b in bars if "gapped" in b.name]
    assert stop and gap
    for a, b in zip(stop, gap):
        assert a.offset + a.width <= b.offset + 1e-9                     # a's bar ends where b's begins
