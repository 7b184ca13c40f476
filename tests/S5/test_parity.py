"""Backtest / paper-trading parity (S5/parity.py, S5.parity_check): the S5 decided
backtest proven equal to S4's decision function bar by bar and to the vectorised
signals, and the S7 dry-run replay of the same candles giving the same trades -- on
real BTCUSDT 1h (skipped without ../shared) and on the simulated market, with every
example rule file, stops on and off. Plus: the checker can fail, the command's files
and exit codes, the loud line when the backtest runs without the paper-trading risk."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.S4.helpers import RULE_FILES, causal_proba, make_sentiment

REPO = Path(__file__).resolve().parents[2]
SYMBOL = "BTCUSDT"


def _features(candles: pd.DataFrame) -> pd.DataFrame:
    """Every column the example rule files read: S2 indicators (+ 4h / 1d), as-of
    sentiment, a causal ml_proba (as tests/S4 builds them)."""
    from S2.informative import add_informative
    from S2.ta import add_indicators
    from S4.signals import join_sentiment

    ta = add_indicators(candles)
    out = add_informative(join_sentiment(ta, make_sentiment(ta.index)), ["4h", "1d"])
    return out.assign(ml_proba=causal_proba(out["close"]))


@pytest.fixture(scope="module")
def real_frame(request) -> pd.DataFrame:
    shared = request.getfixturevalue("shared_dir")
    from S1.kline_files import sniff_and_read

    files = sorted((shared / "data/klines/binance_dump").glob("BTCUSDT-1h-2023-0*.csv"))
    if not files:
        pytest.skip("no BTCUSDT-1h-2023-0*.csv in ../shared")
    candles = pd.concat([sniff_and_read(p, "1h") for p in files[:3]]).sort_index()   # Jan-Mar 2023
    return _features(candles)


@pytest.fixture(scope="module")
def real_filters(request):
    shared = request.getfixturevalue("shared_dir")
    from S6.filters import read_exchange_info_file, symbol_filters

    return symbol_filters(read_exchange_info_file(shared / "data/api/rest_exchangeInfo_2021-10-12.json"), SYMBOL)


@pytest.fixture(scope="module")
def sim_frame() -> pd.DataFrame:
    from S1.local.simulated import simulate_candles

    return _features(simulate_candles(SYMBOL, "1h", "2023-01-01", "2023-05-01"))


def _generic_filters(frame):
    from S1.offline import simulated_symbol_info
    from S6.filters import SymbolFilters

    return SymbolFilters.from_symbol_info(simulated_symbol_info(SYMBOL, float(frame["close"].iloc[-1])))


def _risk():
    from S6.config import RiskConfig

    return RiskConfig.load(REPO / "S6" / "risk.yaml")


def _check(res, *, rules_name: str) -> None:
    assert res.mismatches == [], (rules_name, res.mismatches[:5])
    assert res.line() == f"{len(res.backtest)} trades, 0 mismatches"
    assert len(res.backtest) == len(res.paper)
    usdm = {"funding", "pnl"} if res.settings.get("market") == "usdm" else set()
    for t in res.paper:
        assert set(t) == {"side", "entry_time", "exit_time", "entry_price", "exit_price", "qty", "exit_reason"} | usdm
        assert pd.Timestamp(t["entry_time"]).tzinfo is not None and t["entry_time"] <= t["exit_time"]


# ------------------------------------------------------------ S5 == S4.decide == S4.evaluate
@pytest.mark.parametrize("data", ["sim", "real"])
def test_decided_backtest_equals_the_decision_loop_and_vectorbt(request, data):
    """vectorbt's portfolio from the decided orders reproduces the loop's own book:
    same trades (bars, prices, quantities, pnl) and the same equity at every close."""
    from S4.rules import load_rules
    from S5.costs import Costs
    from S5.engine import run_decided

    frame = request.getfixturevalue(f"{data}_frame")
    filters = request.getfixturevalue("real_filters") if data == "real" else _generic_filters(frame)
    rules = load_rules(REPO / "S4" / "rules_ta_only.yaml")
    res = run_decided(frame, rules=rules, interval="1h", risk=_risk(), costs=Costs(fees=0.001, slippage=0.0005),
                      filters=filters)
    loop = res.decided.trades
    det = res.trade_details
    assert len(loop) == len(det) > 3
    np.testing.assert_array_equal([t["entry_bar"] for t in loop], det["entry_bar"].to_numpy())
    np.testing.assert_array_equal([t["exit_bar"] for t in loop], det["exit_bar"].to_numpy())
    np.testing.assert_allclose([t["qty"] for t in loop], det["size"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose([t["entry_price"] for t in loop], det["entry_price"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose([t["exit_price"] for t in loop], det["exit_price"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose([t["pnl"] for t in loop], det["pnl"].to_numpy(), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(res.decided.equity, res.equity.to_numpy(), rtol=1e-10)
    assert list(det["exit_reason"]) == [t["exit_reason"] for t in loop]


@pytest.mark.parametrize("data", ["sim", "real"])
def test_all_in_without_stops_trades_the_vectorised_signals(request, data):
    """With no stops and no kill-switch the decided backtest enters and exits exactly
    where S4.evaluate's vectorised signals do (the fast path), one bar later at the open."""
    from S4.evaluate import evaluate
    from S4.rules import load_rules
    from S5.costs import Costs
    from S5.engine import run_backtest, run_decided
    from S5.parity_check import all_in_risk

    frame = request.getfixturevalue(f"{data}_frame")
    for path in RULE_FILES:
        rules = load_rules(path)
        if rules.has_short:     # the vectorised signals are long only (short rules: see test_long_short_parity)
            continue
        sig = frame.join(evaluate(frame, rules))
        fast = run_backtest(sig, interval="1h", costs=Costs(fees=0.001, slippage=0.0))
        slow = run_decided(frame, rules=rules, interval="1h", risk=all_in_risk(), costs=Costs(fees=0.001, slippage=0.0),
                           use_stops=False)
        a, b = fast.trade_details, slow.trade_details
        assert len(a) > 0, path.name
        np.testing.assert_array_equal(a["entry_time"].to_numpy(), b["entry_time"].to_numpy(), err_msg=path.name)
        np.testing.assert_array_equal(a["exit_time"].to_numpy(), b["exit_time"].to_numpy(), err_msg=path.name)
        np.testing.assert_allclose(a["entry_price"], b["entry_price"], rtol=1e-12)


# -------------------------------------------------------------------------- S5 == S7
@pytest.mark.parametrize("stops", [True, False], ids=["stops", "no-stops"])
@pytest.mark.parametrize("rules_path", RULE_FILES, ids=[p.name for p in RULE_FILES])
@pytest.mark.parametrize("data", ["sim", "real"])
def test_paper_replay_reproduces_the_backtest(request, data, rules_path, stops):
    from S4.rules import load_rules
    from S5.parity_check import run_parity

    frame = request.getfixturevalue(f"{data}_frame")
    filters = request.getfixturevalue("real_filters") if data == "real" else _generic_filters(frame)
    rules = load_rules(rules_path)
    market = "usdm" if rules.has_short else "spot"      # spot refuses short rules
    res = run_parity(frame, rules, symbol=SYMBOL, interval="1h", risk=_risk(), use_stops=stops, filters=filters,
                     market=market)
    _check(res, rules_name=rules_path.name)
    assert len(res.backtest) > 0, f"{rules_path.name} should trade on this data"
    assert res.settings["stops"] is stops


def _funding(frame, seed=3):
    """8-hourly funding rates over the frame (a made-up history: signs both ways)."""
    t = pd.date_range(frame.index[0].floor("8h"), frame.index[-1], freq="8h", tz="UTC", name="funding_time")
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"funding_rate": rng.normal(0.0001, 0.0003, len(t)), "mark_price": np.nan}, index=t)


@pytest.mark.parametrize("data", ["sim", "real"])
def test_long_short_parity_usdm(request, data):
    """USD-M: longs, shorts, reversals, trailing stops, funding and liquidation -- the backtest
    and the S7 futures dry-run agree trade for trade (funding paid per trade included)."""
    from S4.rules import load_rules, parse_rules
    from S5.futures import FuturesSpec
    from S5.parity_check import run_parity

    frame = request.getfixturevalue(f"{data}_frame")
    filters = request.getfixturevalue("real_filters") if data == "real" else _generic_filters(frame)
    spec = FuturesSpec.for_symbol(SYMBOL, leverage=3, funding=_funding(frame))
    res = run_parity(frame, load_rules(REPO / "S4" / "rules_long_short.yaml"), symbol=SYMBOL, interval="1h",
                     risk=_risk(), filters=filters, market="usdm", futures=spec)
    _check(res, rules_name="rules_long_short.yaml")
    assert {t["side"] for t in res.backtest} == {"long", "short"}
    assert any(t["funding"] != 0 for t in res.backtest)
    busy = parse_rules("entry: {name: up, col: rsi14, op: crosses_above, value: 55}\n"
                       "short_entry: {name: down, col: rsi14, op: crosses_below, value: 45}\n"
                       "trailing_stop: {pct: 0.01}\n")
    res = run_parity(frame, busy, symbol=SYMBOL, interval="1h", risk=_risk(), filters=filters, market="usdm",
                     futures=spec)
    _check(res, rules_name="busy long/short")
    reasons = {t["exit_reason"] for t in res.backtest}
    assert "trailing_stop" in reasons and any(r.startswith("signal:") for r in reasons), reasons
    assert any(a["exit_time"] == b["entry_time"] for a, b in zip(res.backtest, res.backtest[1:]))   # reversals
    hot = FuturesSpec.for_symbol(SYMBOL, leverage=60, funding=_funding(frame))
    res = run_parity(frame, busy, symbol=SYMBOL, interval="1h", risk=_risk().replace(stops={"stop_loss_pct": 0.5}),
                     filters=filters, market="usdm", futures=hot, use_stops=False, slippage=0.0)   # the path that liquidates
    _check(res, rules_name="liquidations")
    assert "liquidation" in {t["exit_reason"] for t in res.backtest}


@pytest.mark.parametrize("data", ["sim", "real"])
def test_spot_trailing_stop_parity(request, data):
    """A long-only rule file with a trailing stop on spot: S7's engine moves the stored stop
    after every candle as the backtest does; both exit on the same candles."""
    from S4.rules import parse_rules
    from S5.parity_check import run_parity

    frame = request.getfixturevalue(f"{data}_frame")
    filters = request.getfixturevalue("real_filters") if data == "real" else _generic_filters(frame)
    rules = parse_rules("entry: {col: rsi14, op: crosses_above, value: 50}\n"
                        "exit: {col: rsi14, op: crosses_below, value: 30}\ntrailing_stop: {atr: 1.5}\n")
    res = run_parity(frame, rules, symbol=SYMBOL, interval="1h", risk=_risk(), filters=filters)
    _check(res, rules_name="spot trailing stop")
    assert "trailing_stop" in {t["exit_reason"] for t in res.backtest}


@pytest.mark.parametrize("data", ["sim", "real"])
def test_parity_with_stops_and_take_profits_firing(request, data):
    """Tight levels so that stop-losses and take-profits do close trades, all in, and the
    kill-switch off: both sides still agree trade for trade."""
    from S4.rules import parse_rules
    from S5.parity_check import run_parity

    frame = request.getfixturevalue(f"{data}_frame")
    filters = request.getfixturevalue("real_filters") if data == "real" else _generic_filters(frame)
    risk = _risk().replace(sizing={"method": "fixed", "fixed_fraction": 0.5},
                           stops={"stop_loss_pct": 0.004, "take_profit_pct": 0.006, "take_profit_rr": None},
                           kill_switch={"max_drawdown": None, "daily_loss_limit": None, "max_consecutive_losses": None})
    rules = parse_rules("entry: {col: rsi14, op: crosses_above, value: 50}\n"
                        "exit: {col: rsi14, op: crosses_below, value: 30}\ncooldown: 2\n")
    res = run_parity(frame, rules, symbol=SYMBOL, interval="1h", risk=risk, use_stops=True, filters=filters)
    _check(res, rules_name="tight stops")
    reasons = {t["exit_reason"] for t in res.backtest}
    assert {"stop_loss", "take_profit"} <= reasons, reasons


def test_all_in_parity_and_the_kill_switch(sim_frame):
    """risk=None (all in, no stops) and the default risk file with a kill-switch that
    trips: blocked entries and the flattening happen on the same bars on both sides."""
    from S4.rules import parse_rules
    from S5.parity_check import run_parity

    rules = parse_rules("entry: {col: rsi14, op: crosses_above, value: 50}\n"
                        "exit: {col: rsi14, op: crosses_below, value: 50}\n")
    filters = _generic_filters(sim_frame)
    res = run_parity(sim_frame, rules, symbol=SYMBOL, interval="1h", risk=None, filters=filters)
    _check(res, rules_name="all in")
    assert len(res.backtest) > 10 and res.settings["stops"] is False
    tight = _risk().replace(kill_switch={"max_drawdown": 0.02, "daily_loss_limit": None,
                                         "max_consecutive_losses": 3, "flatten_on_trip": True})
    res = run_parity(sim_frame, rules, symbol=SYMBOL, interval="1h", risk=tight, filters=filters)
    _check(res, rules_name="kill-switch")
    assert res.paper_info["orders"].get("BLOCKED", 0) > 0                  # the kill-switch did trip
    assert res.settings["backtest_skips"].get("kill_switch", 0) == res.paper_info["orders"]["BLOCKED"]


# ------------------------------------------------------------------- the checker can fail
def test_a_perturbed_trade_list_is_reported():
    from S5.parity_check import compare_trades

    t = {"side": "long", "entry_time": "2023-01-02T03:00:00+00:00", "exit_time": "2023-01-02T09:00:00+00:00",
         "entry_price": 16_600.5, "exit_price": 16_700.25, "qty": 0.12345, "exit_reason": "signal:x"}
    good = [t, dict(t, entry_time="2023-01-03T03:00:00+00:00", exit_time="2023-01-03T05:00:00+00:00")]
    assert compare_trades(good, [dict(x) for x in good]) == []
    assert compare_trades(good, [dict(good[0], qty=0.12345 * (1 + 1e-10)), good[1]]) == []   # within 1e-9
    cases = {"qty": dict(t, qty=0.12346), "exit_time": dict(t, exit_time="2023-01-02T10:00:00+00:00"),
             "entry_price": dict(t, entry_price=16_600.5 * (1 + 5e-9)), "exit_reason": dict(t, exit_reason="stop_loss")}
    for field, bad in cases.items():
        out = compare_trades(good, [bad, good[1]])
        assert [m["field"] for m in out] == [field] and out[0]["trade"] == 0
    missing = compare_trades(good, good[:1])
    assert [(m["trade"], m["field"]) for m in missing] == [(1, "missing")]
    assert missing[0]["paper"] is None


def test_doctests_of_the_parity_module():
    import S5.parity_check

    r = doctest.testmod(S5.parity_check, optionflags=doctest.ELLIPSIS)
    assert r.attempted > 0 and r.failed == 0


# ----------------------------------------------------------------------- the command
@pytest.fixture
def market_files(settings_env):
    """The S1 candles and the S2 _ta file of 60 days of the simulated market."""
    from S1.local.simulated import simulate_candles
    from tests.S4.helpers import write_market

    candles = simulate_candles(SYMBOL, "1h", "2023-01-01", "2023-03-02")
    write_market(settings_env.data_dir, candles, symbol=SYMBOL, days=60, simulated=True)
    return settings_env


def test_command_usdm_long_short(market_files, capsys):
    """python S5/parity.py --market usdm: the long/short file, funding from the S1 funding file;
    on spot the same file is refused in one line."""
    from S1.cli import run
    from S1.datasets import funding_path, write_parquet
    from S5.parity import main

    argv = ["--symbol", SYMBOL, "--interval", "1h", "--days", "60", "--rules", "S4/rules_long_short.yaml"]
    assert run(main, argv) == 2
    err = capsys.readouterr().err
    assert "short_entry" in err and "--market usdm" in err and err.count("\n") == 1
    assert run(main, argv + ["--market", "usdm"]) == 2                       # no funding file yet
    assert "python S1/funding.py --symbol BTCUSDT" in capsys.readouterr().err
    t = pd.date_range("2023-01-01", "2023-03-03", freq="8h", tz="UTC", name="funding_time")
    write_parquet(pd.DataFrame({"funding_rate": 0.0001, "mark_price": np.nan}, index=t), funding_path(SYMBOL))
    assert run(main, argv + ["--market", "usdm", "--leverage", "2"]) == 0
    out = capsys.readouterr().out
    import re

    m = re.search(r"(\d+) trades, 0 mismatches", out)
    assert m and int(m.group(1)) > 0 and "wrote" in out, out


def test_command_writes_both_lists_and_fails_on_a_difference(market_files, capsys, monkeypatch):
    from S1.cli import run
    from S1.datasets import Dataset, parity_path
    from S5 import parity_check
    from S5.parity import main

    argv = ["--symbol", SYMBOL, "--interval", "1h", "--days", "60", "--rules", "S4/rules_ta_only.yaml"]
    assert run(main, argv) == 0
    out = capsys.readouterr().out
    path = parity_path(Dataset(SYMBOL, "1h", 60), rules="S4/rules_ta_only.yaml")
    assert path.name == "btcusdt_1h_60d__rules_ta_only_parity.json" and path.exists()
    doc = json.loads(path.read_text())
    n = len(doc["backtest"])
    assert n > 0 and compare_ok(doc)
    assert f"{n} trades, 0 mismatches" in out and "simulated" in out
    assert set(doc["backtest"][0]) == {"side", "entry_time", "exit_time", "entry_price", "exit_price", "qty",
                                       "exit_reason"}
    assert doc["settings"]["risk_file"] == "S6/risk.yaml" and doc["risk_warning"] is None

    real_run_paper = parity_check.run_paper

    def perturbed(*a, **kw):
        got = real_run_paper(*a, **kw)
        got["trades"][0]["exit_time"] = "2099-01-01T00:00:00+00:00"
        return got

    monkeypatch.setattr(parity_check, "run_paper", perturbed)
    assert run(main, argv) == 1
    out = capsys.readouterr().out
    assert f"{n} trades, 1 mismatches" in out and "exit_time" in out
    assert json.loads(path.read_text())["ok"] is False


def compare_ok(doc) -> bool:
    from S5.parity_check import compare_trades

    return compare_trades(doc["backtest"], doc["paper"]) == []


def test_module_form_with_risk_none_is_loud(market_files):
    env = {**os.environ, "DATA_DIR": str(market_files.data_dir), "REPORTS_DIR": str(market_files.reports_dir),
           "TOOLKIT_ENV_FILE": os.environ["TOOLKIT_ENV_FILE"]}
    proc = subprocess.run([sys.executable, "-m", "S5.parity", "--symbol", SYMBOL, "--interval", "1h", "--days", "60",
                           "--rules", "S4/rules_ta_only.yaml", "--risk", "none"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: RISK OFF: --risk none" in proc.stdout and " 0 mismatches" in proc.stdout
    doc = json.loads((market_files.data_dir / "btcusdt_1h_60d__rules_ta_only_parity.json").read_text())
    assert doc["risk_warning"].startswith("RISK OFF") and doc["settings"]["stops"] is False


def test_backtest_default_risk_is_paper_trading_and_none_is_loud(settings_env, capsys):
    """S5/backtest.py trades with S6/risk.yaml by default, decided as S7 does; --risk none
    prints one loud line and records it in the JSON."""
    from S1.cli import run
    from S1.datasets import Dataset, dataset_path, write_parquet
    from S1.local.simulated import simulate_candles
    from S4.rules import load_rules
    from S4.signals import signals_frame
    from S5.backtest import main

    rules = load_rules(REPO / "S4" / "rules_ta_only.yaml")
    frame = signals_frame(_features(simulate_candles(SYMBOL, "1h", "2023-01-01", "2023-02-01")), rules)
    write_parquet(frame, dataset_path(Dataset(SYMBOL, "1h", 31), "signals"),
                  metadata={"simulated": True, "signals": {"rules_yaml": rules.to_yaml(), "params": rules.params}})
    base = ["--symbol", SYMBOL, "--interval", "1h", "--days", "31", "--no-report"]
    assert run(main, base) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out
    doc = json.loads(dataset_path(Dataset(SYMBOL, "1h", 31), "backtest").read_text())
    assert doc["params"]["decision"].startswith("S4.decide") and doc["params"]["risk"]["sizing"]["method"] == "atr"
    assert doc["params"]["risk_file"] == "S6/risk.yaml" and doc["params"]["risk_warning"] is None
    assert run(main, [*base, "--risk", "none"]) == 0
    out = capsys.readouterr().out
    assert sum("WARNING: RISK OFF" in line for line in out.splitlines()) == 1
    doc = json.loads(dataset_path(Dataset(SYMBOL, "1h", 31), "backtest").read_text())
    assert doc["params"]["risk_warning"].startswith("RISK OFF") and "decision" not in doc["params"]
    assert run(main, [*base, "--no-stops"]) == 0
    assert "WARNING: STOPS OFF" in capsys.readouterr().out


# ------------------------------------------------------------------------ with slippage
@pytest.mark.parametrize("stops", [True, False], ids=["stops", "no-stops"])
@pytest.mark.parametrize("data", ["sim", "real"])
def test_parity_with_slippage_on_the_tick_grid(request, data, stops):
    """5 bp of slippage: S7's simulator moves a MARKET fill 5 bp against the trader and onto
    the tick grid (BUY up, SELL down); the backtest fills the same way (one shared function,
    S5.costs.fill_price), so both sides still agree trade for trade, and every fill price
    sits on the tick grid."""
    from decimal import Decimal

    from S4.rules import load_rules
    from S5.parity_check import run_parity

    frame = request.getfixturevalue(f"{data}_frame")
    filters = request.getfixturevalue("real_filters") if data == "real" else _generic_filters(frame)
    rules = load_rules(REPO / "S4" / "rules_ta_only.yaml")
    res = run_parity(frame, rules, symbol=SYMBOL, interval="1h", risk=_risk(), use_stops=stops, filters=filters,
                     slippage=0.0005)
    _check(res, rules_name="rules_ta_only.yaml, 5 bp")
    assert len(res.backtest) > 3 and res.settings["slippage"] == 0.0005
    tick = filters.tick_size
    opens = frame["open"]
    for t in res.backtest:
        for px in (t["entry_price"], t["exit_price"]):
            assert (Decimal(repr(px)) - filters.min_price) % tick == 0, px
        # against the trader: a buy pays at least 5 bp over the open, never a tick more
        o = float(opens.loc[pd.Timestamp(t["entry_time"])])
        assert o * 1.0005 <= t["entry_price"] < o * 1.0005 + float(tick) + 1e-9
        if t["exit_reason"] != "end":
            o = float(opens.loc[pd.Timestamp(t["exit_time"])])
            assert o * 0.9995 - float(tick) - 1e-9 < t["exit_price"] <= o * 0.9995


def test_parity_with_slippage_end_of_test_and_usdm(sim_frame):
    """5 bp: a position still open at the last candle is closed at the slipped last close on both
    sides (exit reason ``end``), and the USD-M dry run (longs and shorts) slips as the backtest does."""
    from S4.rules import load_rules
    from S5.futures import FuturesSpec
    from S5.parity_check import run_parity

    filters = _generic_filters(sim_frame)
    rules = load_rules(REPO / "S4" / "rules_ta_only.yaml")
    full = run_parity(sim_frame, rules, symbol=SYMBOL, interval="1h", risk=_risk(), filters=filters,
                      slippage=0.0005)
    _check(full, rules_name="5 bp")
    long_one = max(full.backtest, key=lambda t: pd.Timestamp(t["exit_time"]) - pd.Timestamp(t["entry_time"]))
    cut = sim_frame.loc[:pd.Timestamp(long_one["entry_time"]) + pd.Timedelta(hours=1)]
    res = run_parity(cut, rules, symbol=SYMBOL, interval="1h", risk=_risk(), filters=filters, slippage=0.0005)
    _check(res, rules_name="5 bp, open at the end")
    last = res.backtest[-1]
    assert last["exit_reason"] == "end"
    assert last["exit_price"] == pytest.approx(float(cut["close"].iloc[-1]) * 0.9995, abs=float(filters.tick_size))
    assert last["exit_price"] <= float(cut["close"].iloc[-1]) * 0.9995
    spec = FuturesSpec.for_symbol(SYMBOL, leverage=2)
    res = run_parity(sim_frame, load_rules(REPO / "S4" / "rules_long_short.yaml"), symbol=SYMBOL, interval="1h",
                     risk=_risk(), filters=filters, market="usdm", futures=spec, slippage=0.0005)
    _check(res, rules_name="usdm 5 bp")
    assert {t["side"] for t in res.backtest} == {"long", "short"}
    short = next(t for t in res.backtest if t["side"] == "short")
    o = float(sim_frame["open"].loc[pd.Timestamp(short["entry_time"])])
    assert short["entry_price"] <= o * 0.9995                     # a short sells: slipped down
