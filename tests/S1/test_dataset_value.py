"""``S1.datasets.Dataset``: the one value for a market and window (issue 15), and the one
``<stem>__<rules>_<kind>`` naming of every rule-derived output, research outputs included (issue 21)."""

from __future__ import annotations

import argparse
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest

from S1.datasets import (
    Dataset,
    best_rules_path,
    dataset_path,
    existing_dataset_path,
    export_path,
    history_command,
    indicators_command,
    parity_path,
    parse_dataset_name,
    renamed_research_path,
    report_path,
)
from S1.errors import UserError

D = Path("data")
R = Path("reports")


def test_normalised_once_equal_and_hashable():
    a, b = Dataset("eth/usdc", "1h", 365), Dataset("ETHUSDC", "1h", 365.0)
    assert a == b and hash(a) == hash(b) and {a, b} == {a}
    assert (a.symbol, a.interval, a.days, a.exchange) == ("ETHUSDC", "1h", 365, None)
    assert isinstance(b.days, int)
    assert Dataset("BTCUSDT", "1h", 30, exchange="binance") == Dataset("BTCUSDT", "1h", 30)   # no prefix
    assert Dataset("BTCUSDT", "1h", 30, exchange=" OKX ").exchange == "okx"
    with pytest.raises(FrozenInstanceError):
        a.days = 1  # type: ignore[misc]


@pytest.mark.parametrize("args, problem, fix", [
    (("BTC USDT!", "1h", 30), "invalid symbol", "BTCUSDT"),
    (("BTCUSDT", "1H", 30), "unsupported interval '1H'", "did you mean '1h'?"),
    (("BTCUSDT", "1h", 0), "--days must be a positive whole number of days, got 0", "--days 365"),
    (("BTCUSDT", "1h", -5), "got -5", "--days 365"),
    (("BTCUSDT", "1h", 1.5), "got 1.5", "--days 365"),
    (("BTCUSDT", "1h", True), "got True", "--days 365"),
    (("BTCUSDT", "1h", "a week"), "got 'a week'", "--days 365"),
])
def test_invalid_values_say_how_to_fix(args, problem, fix):
    with pytest.raises(UserError) as e:
        Dataset(*args)
    assert problem in e.value.problem and fix in e.value.fix


def test_invalid_exchange_is_refused():
    with pytest.raises(UserError, match="invalid exchange"):
        Dataset("BTCUSDT", "1h", 30, exchange="okx_swap")      # "_" would break the file-name parts


def test_from_args_reads_an_argparse_namespace():
    ns = argparse.Namespace(symbol="btc/usdt", interval="4h", days=90)
    assert Dataset.from_args(ns) == Dataset("BTCUSDT", "4h", 90)
    ns.exchange = "okx"
    assert Dataset.from_args(ns).exchange == "okx"
    assert Dataset.from_args(ns, exchange=False).exchange is None
    with pytest.raises(UserError, match="--days must be"):
        Dataset.from_args(argparse.Namespace(symbol="BTCUSDT", interval="1h", days=0))


def test_stem_label_args_and_replace():
    ds = Dataset("BTCUSDT", "1M", 730, exchange="okx-swap")
    assert ds.stem == "okx-swap_btcusdt_1mo_730d"                 # 1M is spelled 1mo in file names
    assert ds.label == "okx-swap:BTCUSDT 1M 730d"
    assert Dataset("BTCUSDT", "1h", 30).args == "--symbol BTCUSDT --interval 1h --days 30"
    assert replace(ds, interval="1d").stem == "okx-swap_btcusdt_1d_730d"
    with pytest.raises(UserError):
        replace(ds, days=0)                                       # replace() validates too


def test_path_builders_take_the_value_and_match_the_loose_form():
    ds = Dataset("ETHUSDC", "1h", 365)
    for kind in ("candles", "ta", "signals", "ml", "trades", "equity", "backtest", "stress"):
        for rules in (None, "S4/rules_ta_only.yaml"):
            p = dataset_path(ds, kind, rules=rules, data_dir=D)
            assert p == ds.path(kind, rules=rules, data_dir=D)
            assert p == dataset_path("eth/usdc", "1h", 365, kind, rules=rules, data_dir=D)   # the loose form
            assert p == dataset_path(ds, kind=kind, rules=rules, data_dir=D)
            parsed = parse_dataset_name(p.name)
            assert parsed.dataset == ds and parsed.path(kind).name == p.name
    okx = Dataset("BTCUSDT", "1h", 30, exchange="okx")
    assert dataset_path(okx, data_dir=D) == dataset_path("BTCUSDT", "1h", 30, exchange="okx", data_dir=D)
    assert report_path(ds, "backtest", rules="S4/rules.yaml", reports=R) == \
        report_path("ETHUSDC", "1h", 365, "backtest", "html", reports=R)
    assert parity_path(ds, data_dir=D).name == "ethusdc_1h_365d__rules_parity.json"
    assert export_path(ds, "csv", gzip=True, data_dir=D).name == "ethusdc_1h_365d.csv.gz"
    assert existing_dataset_path(ds, "signals", data_dir=D, note=False) == dataset_path(ds, "signals", data_dir=D)


def test_mixed_or_incomplete_call_forms_are_refused():
    ds = Dataset("ETHUSDC", "1h", 365)
    with pytest.raises(TypeError):
        dataset_path("ETHUSDC", "1h")                             # no days
    with pytest.raises(TypeError):
        dataset_path(ds, "ta", "signals")                         # two kinds
    with pytest.raises(TypeError):
        dataset_path(ds, exchange="okx")                          # the value already names its exchange
    with pytest.raises(ValueError, match="unknown dataset kind"):
        dataset_path(ds, "tta")


def test_commands_name_the_dataset():
    ds = Dataset("btc/usdt", "1h", 30)
    assert history_command(ds) == "python S1/historical.py --symbol BTCUSDT --interval 1h --days 30"
    assert indicators_command(ds) == "python S2/indicators.py --symbol BTCUSDT --interval 1h --days 30"
    assert history_command(replace(ds, exchange="okx-swap-mark")) == (
        "python S1/historical.py --exchange okx --market swap --price mark --symbol BTCUSDT --interval 1h --days 30")


@pytest.mark.parametrize("kind, ext, old", [
    ("optimize", "json", "btcusdt_1h_30d_optimize_rules_ta_only.json"),
    ("optimize", "html", "btcusdt_1h_30d_optimize_rules_ta_only.html"),
    ("walkforward", "json", "btcusdt_1h_30d_walkforward_rules_ta_only.json"),
    ("walkforward", "html", "btcusdt_1h_30d_walkforward_rules_ta_only.html"),
    ("walkforward_folds", "parquet", "btcusdt_1h_30d_walkforward_rules_ta_only_folds.parquet"),
    ("walkforward_equity", "parquet", "btcusdt_1h_30d_walkforward_rules_ta_only_equity.parquet"),
    ("lookahead", "json", "btcusdt_1h_30d_lookahead_rules_ta_only.json"),
])
def test_research_outputs_carry_the_rules_name_the_one_way(kind, ext, old):
    new = report_path(Dataset("BTCUSDT", "1h", 30), kind, ext, rules="S4/rules_ta_only.yaml", reports=R)
    assert new.name == f"btcusdt_1h_30d__rules_ta_only_{kind}.{ext}"
    assert renamed_research_path(R / old) == new                   # the older name -> the current one
    assert renamed_research_path(new) is None                      # a current name is not an older one


def test_best_rules_file_and_its_older_name():
    new = best_rules_path(Dataset("ETHUSDC", "1h", 365), "S4/rules.yaml", data_dir=D)
    assert new.as_posix() == "data/ethusdc_1h_365d__rules_best.yaml"
    assert renamed_research_path(D / "ethusdc_1h_365d_best_rules.yaml") == new
    assert best_rules_path(Dataset("ETHUSDC", "1h", 365), "rules", data_dir=D) == new   # a token works too
    assert renamed_research_path(D / "ethusdc_1h_365d_backtest.json") is None           # not a research output


def test_a_script_rejects_bad_days_in_one_line(capsys):
    from S1.cli import run
    from S4.decision import main

    assert run(main, ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--days must be a positive whole number of days, got 0" in err
