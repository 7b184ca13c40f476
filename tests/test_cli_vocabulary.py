"""One option vocabulary (issue 21): every script's ``--help`` shows its defaults and ends with real
examples naming the script the way the README runs it; old option spellings still work for one
release and say they are deprecated; choice options reject unknown values; outputs derived from a
rule file carry its name."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from S1 import cli

SCRIPTS = ["S1/historical.py", "S1/streamer.py", "S1/batch.py", "S1/query.py", "S1/funding.py",
           "S2/indicators.py", "S2/preview.py", "S3/sentiment.py", "S3/news.py", "S3/classify.py",
           "S3/evaluate.py", "S3/train_classifier.py", "S4/decision.py", "S4/model.py", "S5/backtest.py",
           "S5/optimize.py", "S5/lookahead_check.py", "S5/compare.py", "S5/parity.py", "S5/portfolio.py",
           "S6/risk.py", "S6/stress.py", "S7/executor.py", "S7/pipeline.py", "S7/portfolio_executor.py",
           "S8/service.py"]


class _Captured(Exception):
    pass


def capture_parser(script: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a script's ``main`` builds (its parse_args is stopped before anything runs)."""
    seen: list[argparse.ArgumentParser] = []

    def grab(self, args=None, namespace=None):
        seen.append(self)
        raise _Captured

    monkeypatch.setattr(cli.ArgumentParser, "parse_args", grab)
    mod = importlib.import_module(script[:-3].replace("/", "."))
    with pytest.raises(_Captured):
        mod.main([])
    monkeypatch.undo()
    return seen[0]


def _subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [p]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                out += _subparsers(sp)
    return out


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_defaults_and_ends_with_examples(script, monkeypatch):
    parser = capture_parser(script, monkeypatch)
    text = parser.format_help()
    assert parser.prog == f"python {script}"
    tail = text.rstrip().split("examples:\n")
    assert len(tail) == 2, f"{script} --help has no examples block"
    examples = [ln.strip() for ln in tail[1].splitlines() if ln.strip().startswith("python ")]
    assert 2 <= len(examples) <= 3 and all(e.startswith(f"python {script}") for e in examples), examples
    for p in _subparsers(parser):
        fmt = p._get_formatter()
        for a in p._actions:
            if (a.option_strings and a.help is not argparse.SUPPRESS and a.default not in (None, False, [], ())
                    and a.default is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)):
                assert "default" in fmt._get_help_string(a).lower(), f"{script} {a.option_strings} hides its default"


@pytest.mark.parametrize("script", SCRIPTS)
def test_choice_options_reject_unknown_values(script, monkeypatch):
    parser = capture_parser(script, monkeypatch)
    checked = 0
    for p in _subparsers(parser):
        for a in p._actions:
            if a.choices and not isinstance(a, argparse._SubParsersAction):
                with pytest.raises(argparse.ArgumentError):
                    p._get_values(a, ["__nope__"])
                checked += 1
    if script in ("S7/pipeline.py", "S7/executor.py", "S1/historical.py", "S6/risk.py", "S5/backtest.py"):
        assert checked > 0    # --skip, --order-type, --source, --method, --fee-model … were checked


OLD_SPELLINGS = [
    ("S5/backtest.py", ["--fees", "0.002"], "fee", 0.002, "--fee"),
    ("S5/backtest.py", ["--slippage", "0.0005"], "slippage_bps", 5.0, "--slippage-bps"),
    ("S5/backtest.py", ["--init-cash", "500"], "cash", 500.0, "--cash"),
    ("S5/backtest.py", ["--no-report"], "no_html", True, "--no-html"),
    ("S5/optimize.py", ["--fees", "0.002"], "fee", 0.002, "--fee"),
    ("S5/optimize.py", ["--init-cash", "500"], "cash", 500.0, "--cash"),
    ("S5/parity.py", ["--init-cash", "700"], "cash", 700.0, "--cash"),
    ("S7/executor.py", ["--balance", "5"], "cash", 5.0, "--cash"),
    ("S7/executor.py", ["--risk-config", "S6/risk.yaml"], "risk", "S6/risk.yaml", "--risk"),
    ("S4/decision.py", ["--no-plot"], "no_png", True, "--no-png"),
    ("S4/model.py", ["--no-plot"], "no_png", True, "--no-png"),
    ("S6/stress.py", ["--config", "S6/risk.yaml"], "config", Path("S6/risk.yaml"), "--risk"),
]
REQUIRED = {"S5/backtest.py": ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"],
            "S5/optimize.py": ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"],
            "S5/parity.py": ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"],
            "S7/executor.py": ["--symbol", "BTCUSDT"],
            "S4/decision.py": ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"],
            "S4/model.py": ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"],
            "S6/stress.py": ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"]}


@pytest.mark.parametrize("script,argv,dest,value,new", OLD_SPELLINGS)
def test_old_spellings_still_work_and_say_deprecated(script, argv, dest, value, new, monkeypatch, capsys):
    parser = capture_parser(script, monkeypatch)
    args = parser.parse_args(REQUIRED[script] + argv)
    assert getattr(args, dest) == pytest.approx(value) if isinstance(value, float) else getattr(args, dest) == value
    err = capsys.readouterr().err
    assert f"deprecated: {argv[0]} is now {new}" in err


def test_new_spellings_are_silent_and_share_units(monkeypatch, capsys):
    from S1.options import slippage_fraction

    bt = capture_parser("S5/backtest.py", monkeypatch).parse_args(
        REQUIRED["S5/backtest.py"] + ["--fee", "0.002", "--slippage-bps", "5", "--cash", "500", "--no-html"])
    ex = capture_parser("S7/executor.py", monkeypatch).parse_args(
        ["--symbol", "BTCUSDT", "--fee", "0.002", "--slippage-bps", "5", "--cash", "500"])
    assert (bt.fee, bt.slippage_bps, bt.cash) == (ex.fee, ex.slippage_bps, ex.cash) == (0.002, 5.0, 500.0)  # same units
    assert slippage_fraction(bt) == pytest.approx(0.0005)
    assert bt.rules.endswith("S4/rules.yaml") and ex.rules.endswith("S4/rules.yaml")   # one default
    assert capsys.readouterr().err == ""


def test_fee_as_a_percentage_is_refused(monkeypatch):
    p = capture_parser("S5/backtest.py", monkeypatch)
    with pytest.raises(SystemExit) as e:
        p.parse_args(REQUIRED["S5/backtest.py"] + ["--fee", "10"])
    assert e.value.code == 2


def test_order_type_values_are_one_vocabulary(monkeypatch):
    ex = capture_parser("S7/executor.py", monkeypatch).parse_args(["--symbol", "BTCUSDT", "--order-type", "LIMIT"])
    assert ex.order_type == "limit"


# ----------------------------------------------------------------- rules names in outputs
def test_rule_derived_names_carry_the_rules_and_parse_back(tmp_path):
    from S1.datasets import Dataset, RULE_KINDS, dataset_path, parse_dataset_name, report_path

    for kind in sorted(RULE_KINDS):
        a = dataset_path(Dataset("BTCUSDT", "1h", 365), kind, rules="S4/rules.yaml", data_dir=tmp_path)
        b = dataset_path(Dataset("BTCUSDT", "1h", 365), kind, rules="S4/rules_ta_only.yaml", data_dir=tmp_path)
        assert a != b and "__rules_" in a.name and "__rules_ta_only_" in b.name
    parsed = parse_dataset_name(dataset_path(Dataset("ETHUSDC", "4h", 90), "trades", rules="S4/rules_ta_only.yaml",
                                             data_dir=tmp_path))
    assert (parsed.symbol, parsed.interval, parsed.days, parsed.kind, parsed.rules) == \
        ("ETHUSDC", "4h", 90, "trades", "rules_ta_only")
    assert parsed.path("equity").name == "ethusdc_4h_90d__rules_ta_only_equity.parquet"
    assert parse_dataset_name("ethusdc_4h_90d__rules_ta.parquet") is None      # ta is not rule-derived
    assert report_path(Dataset("BTCUSDT", "1h", 30), "backtest", "png", rules="x/My Rules.yml",
                       reports=tmp_path).name == "btcusdt_1h_30d__my_rules_backtest.png"
    assert report_path(Dataset("BTCUSDT", "1h", 30), "ml_folds", "png", reports=tmp_path).name == "btcusdt_1h_30d_ml_folds.png"


def test_files_of_the_older_convention_are_still_read(tmp_path, capsys):
    from S1.datasets import Dataset, LEGACY, dataset_path, existing_dataset_path

    legacy = dataset_path(Dataset("BTCUSDT", "1h", 30), "signals", rules=LEGACY, data_dir=tmp_path)
    assert legacy.name == "btcusdt_1h_30d_signals.parquet"
    legacy.write_bytes(b"x")
    got = existing_dataset_path(Dataset("BTCUSDT", "1h", 30), "signals", data_dir=tmp_path)
    assert got == legacy and "written before outputs carried the rules name" in capsys.readouterr().err
    new = dataset_path(Dataset("BTCUSDT", "1h", 30), "signals", data_dir=tmp_path)
    new.write_bytes(b"y")
    assert existing_dataset_path(Dataset("BTCUSDT", "1h", 30), "signals", data_dir=tmp_path) == new
    # another rules file never falls back to the default rules' file
    other = existing_dataset_path(Dataset("BTCUSDT", "1h", 30), "signals", rules="S4/rules_ta_only.yaml", data_dir=tmp_path)
    assert other.name == "btcusdt_1h_30d__rules_ta_only_signals.parquet" and not other.exists()
