"""The batch runner: YAML validation, filter, plan, derive, continue-on-error summary."""

from __future__ import annotations

import pytest

from S1.batch import main
from S1.batch_runner import expand, load_config
from S1.datasets import Dataset, dataset_path, read_candles, read_metadata
from S1.errors import UserError


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "batch.yaml"
    path.write_text("""
defaults: {source: rest, end: "2023-05-01"}
jobs:
  - symbols: [BTCUSDT, NOPEUSDT]
    intervals: [1h]
    days: [20]
""")
    return path


def test_runs_every_dataset_continues_on_error_and_derives(exchange, config, capsys):
    code = main(["--config", str(config), "--derive", "4h", "1d"])
    out = capsys.readouterr().out
    assert code == 1  # NOPEUSDT failed ...
    assert "btcusdt_1h_20d" in out and "nopeusdt_1h_20d" in out and "FAILED" in out and "unknown symbol" in out
    # ... but BTCUSDT went through, with derived intervals matching the source
    h = read_candles(dataset_path(Dataset("BTCUSDT", "1h", 20)))
    d = read_candles(dataset_path(Dataset("BTCUSDT", "1d", 20)))
    assert read_metadata(dataset_path(Dataset("BTCUSDT", "1d", 20)))["derived_from"] == "1h"
    day = d.index[0].strftime("%Y-%m-%d")
    assert d.loc[day, "high"] == h.loc[day, "high"].max() and d.loc[day, "close"] == h.loc[day, "close"].iloc[-1]
    assert len(read_candles(dataset_path(Dataset("BTCUSDT", "4h", 20)))) == 20 * 6


def test_filter_and_plan_download_nothing(exchange, config, capsys):
    exchange.requests.clear()
    assert main(["--config", str(config), "--filter", "btc", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "btcusdt_1h_20d" in out and "missing" in out and "nope" not in out
    assert exchange.requests == []


def test_bad_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("jobs:\n  - symbols: [BTCUSDT]\n    intervals: [1H]\n")
    with pytest.raises(UserError, match="jobs.0.intervals.*unsupported interval '1H'"):
        load_config(bad)
    bad.write_text("jobs:\n  - symbols: [BTCUSDT]\n    intervals: [1h]\n    shell: rm -rf /\n")
    with pytest.raises(UserError, match="shell"):
        load_config(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_expand_and_filter(config):
    tasks = expand(load_config(config), None)
    assert [t.stem for t in tasks] == ["btcusdt_1h_20d", "nopeusdt_1h_20d"]
    assert [t.stem for t in expand(load_config(config), "^nope")] == ["nopeusdt_1h_20d"]


def test_example_config_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "S1/batch.yaml")
    assert len(expand(cfg)) >= 3
