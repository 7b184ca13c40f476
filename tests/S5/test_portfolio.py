"""The portfolio backtest (S5/portfolio_backtest.py): its invariants over the whole output
on real BTCUSDT 1h (../shared, skipped without it) mixed with simulated symbols, and on the
simulated market alone; a one-symbol portfolio equals S5's decided single-symbol backtest
trade for trade; the ranking; symbols with gaps / later starts; the files and the fan-out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from S5.costs import Costs
from S5.portfolio_backtest import prepare_symbol, rank_key, run_portfolio

RULES = "S4/rules_ta_only.yaml"


def _rules():
    from S4.rules import load_rules

    return load_rules(RULES)


def _risk(**ks):
    from S6.config import RiskConfig

    return RiskConfig.load("S6/risk.yaml").replace(kill_switch=ks) if ks else RiskConfig.load("S6/risk.yaml")


def _ta(symbol, start="2023-01-01", end="2023-04-01"):
    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators

    return add_indicators(simulate_candles(symbol, "1h", start, end))


@pytest.fixture(scope="module")
def sim_frames() -> dict[str, pd.DataFrame]:
    """Three simulated markets: one full, one starting a month later, one with a 2-day gap."""
    a = _ta("ETHUSDT")
    b = _ta("BNBUSDT", "2023-02-01")
    c = _ta("SOLUSDT")
    c = c.loc[(c.index < "2023-02-10") | (c.index >= "2023-02-12")]
    return {"ETHUSDT": a, "BNBUSDT": b, "SOLUSDT": c}


@pytest.fixture(scope="module")
def real_btc(request) -> pd.DataFrame:
    from S2.ta import add_indicators

    return add_indicators(request.getfixturevalue("btc_1h_real"))


def _inputs(frames: dict, risk, lookback=24):
    rules = _rules()
    return [prepare_symbol(f, rules, symbol=s, risk=risk, rank_lookback=lookback) for s, f in frames.items()]


def check_invariants(res, frames: dict, max_open: int) -> None:
    eq = res.equity
    # cash never negative, never more positions than allowed
    assert (eq["cash"] >= 0).all()
    assert res.open_counts.max() <= max_open
    # equity = cash + the positions' values, at every bar
    np.testing.assert_allclose(eq["equity"], eq["cash"] + eq[res.symbols].sum(axis=1), rtol=1e-12, atol=1e-9)
    # the books: final equity = start + sum of trade pnl - funding (fills summed in another order: float rounding)
    t = res.trades
    assert res.final_equity == pytest.approx(res.init_cash + t["pnl"].sum() - res.funding, rel=1e-12, abs=1e-8)
    assert (eq[res.symbols].iloc[-1] == 0).all()           # everything closed at the end
    # open positions at each close counted from the trades match the loop's count
    times = eq.index
    live = np.zeros(len(times), dtype=np.int64)
    for r in t.itertuples():
        live += (times >= r.entry_time) & (times < r.exit_time)
    assert np.array_equal(live, res.open_counts)
    # a symbol trades only on bars it has; no two trades of one symbol overlap
    for s, g in t.groupby("symbol"):
        idx = frames[s].index
        assert g["entry_time"].isin(idx).all() and g["exit_time"].isin(idx).all()
        g = g.sort_values("entry_time")
        assert (g["entry_time"].to_numpy()[1:] >= g["exit_time"].to_numpy()[:-1]).all()
    np.testing.assert_allclose(t["pnl"], t["size"] * (t["exit_price"] - t["entry_price"]) - t["fees"],
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("max_open", [1, 2])
def test_invariants_simulated(sim_frames, max_open):
    res = run_portfolio(_inputs(sim_frames, _risk()), risk=_risk(), interval="1h", max_open=max_open)
    assert len(res.trades) > 10
    check_invariants(res, sim_frames, max_open)
    if max_open == 1:
        assert res.skips.get("max_open", 0) > 0           # the limit did bind


@pytest.mark.parametrize("max_open", [1, 2, 3])
def test_invariants_real_btc_with_simulated(real_btc, sim_frames, max_open):
    frames = {"BTCUSDT": real_btc, **sim_frames}
    risk = _risk()
    res = run_portfolio(_inputs(frames, risk), risk=risk, interval="1h", max_open=max_open,
                        costs=Costs(fees=0.001, slippage=0.0005))
    check_invariants(res, frames, max_open)
    assert set(res.trades["symbol"]) >= {"BTCUSDT"}


def test_all_in_sizing_keeps_cash_non_negative(sim_frames):
    """Sizes that want the whole equity: capped by the free cash (minus what pending entries reserved)."""
    risk = _risk().replace(sizing={"method": "fixed", "fixed_fraction": 1.0, "max_position_fraction": 1.0})
    res = run_portfolio(_inputs(sim_frames, risk), risk=risk, interval="1h", max_open=3)
    check_invariants(res, sim_frames, 3)
    assert res.equity["cash"].min() < 0.05 * res.init_cash     # the cash was really used up


def _single(frame, risk, costs, filters=None):
    from S5.hooks import decided_path

    return decided_path(frame, _rules(), risk=risk, interval="1h", costs=costs, filters=filters)


@pytest.mark.parametrize("source", ["simulated", "real"])
def test_one_symbol_equals_the_decided_backtest(source, request, sim_frames):
    frame = request.getfixturevalue("real_btc") if source == "real" else sim_frames["SOLUSDT"]
    risk = _risk(max_drawdown=0.05)            # the kill-switch too (it trips on this data)
    costs = Costs(fees=0.001, slippage=0.0005)
    ref = _single(frame, risk, costs)
    res = run_portfolio(_inputs({"X": frame}, risk), risk=risk, interval="1h", max_open=1, costs=costs)
    assert len(ref.trades) > 5
    assert len(res.trades) == len(ref.trades)
    for mine, theirs in zip(res.trades.to_dict("records"), ref.trades):
        for k in ("entry_time", "exit_time", "entry_price", "exit_price", "fees", "pnl", "exit_reason", "entry_rule"):
            assert mine[k] == theirs[k], (k, mine, theirs)
        assert mine["size"] == theirs["qty"]
    np.testing.assert_array_equal(res.equity["equity"].to_numpy(), ref.equity)
    assert res.skips == {k: v for k, v in ref.skips.items()}
    assert res.trips == ref.trips


def test_one_symbol_equals_run_decided_with_filters(real_btc, request):
    """Against S5's default backtest (S5.engine.run_decided through vectorbt) with the real exchange filters."""
    from S5.engine import run_decided
    from S6.filters import read_exchange_info_file, symbol_filters

    shared = request.getfixturevalue("shared_dir")
    filters = symbol_filters(read_exchange_info_file(shared / "data/api/rest_exchangeInfo_2021-10-12.json"),
                             "BTCUSDT")
    risk, costs = _risk(), Costs(fees=0.001, slippage=0.0005)
    ref = run_decided(real_btc, rules=_rules(), interval="1h", risk=risk, costs=costs, filters=filters)
    inp = prepare_symbol(real_btc, _rules(), symbol="BTCUSDT", risk=risk, filters=filters)
    res = run_portfolio([inp], risk=risk, interval="1h", max_open=1, costs=costs)
    a, b = res.trades, ref.trades
    assert len(a) == len(b) > 5
    assert (a["entry_time"].to_numpy() == b["entry_time"].to_numpy()).all()
    assert (a["exit_time"].to_numpy() == b["exit_time"].to_numpy()).all()
    np.testing.assert_allclose(a["size"], b["size"], rtol=1e-12)
    np.testing.assert_allclose(a["pnl"], b["pnl"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.equity["equity"].to_numpy(), ref.equity.to_numpy(), rtol=1e-9)


def _flat(symbol, n, *, entry_at, rise):
    """A hand-built market: constant prices with a rise before the entry bar (the ranking score)."""
    t = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="open_time")
    c = np.full(n, 100.0)
    c[entry_at - 3:] = 100.0 * (1 + rise)
    return pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "atr14": 1.0,
                         "go": np.isin(np.arange(n), [entry_at]).astype(float)}, index=t)


def _go_rules():
    from S4.rules import parse_rules

    return parse_rules("version: 1\nentry:\n  - {name: go, col: go, op: '>', value: 0}\n"
                       "exit:\n  - {name: never, col: go, op: '<', value: -1}\n", source="test",
                       columns=["open", "high", "low", "close", "atr14", "go"])


def test_ranking_prefers_the_higher_trailing_return_then_the_name():
    risk = _risk().replace(kill_switch={"max_drawdown": None, "daily_loss_limit": None,
                                        "max_consecutive_losses": None})
    frames = {"AAA": _flat("AAA", 20, entry_at=8, rise=0.01), "BBB": _flat("BBB", 20, entry_at=8, rise=0.05),
              "CCC": _flat("CCC", 20, entry_at=8, rise=0.05)}
    inputs = [prepare_symbol(f, _go_rules(), symbol=s, risk=risk, rank_lookback=5) for s, f in frames.items()]
    res = run_portfolio(inputs, risk=risk, interval="1h", max_open=1, costs=Costs(fees=0.0, slippage=0.0))
    assert res.trades["symbol"].tolist() == ["BBB"]          # 5 % beats 1 %; BBB before CCC on a tie
    assert res.skips == {"max_open": 2}
    res2 = run_portfolio(inputs, risk=risk, interval="1h", max_open=2, costs=Costs(fees=0.0, slippage=0.0))
    assert sorted(res2.trades["symbol"]) == ["BBB", "CCC"]
    assert rank_key(float("nan"), "A") > rank_key(-0.5, "Z")     # unknown scores rank last


def test_bad_arguments_are_user_errors(sim_frames):
    from S1.errors import UserError

    inputs = _inputs({"ETHUSDT": sim_frames["ETHUSDT"]}, _risk())
    with pytest.raises(UserError, match="max-open"):
        run_portfolio(inputs, risk=_risk(), interval="1h", max_open=0)
    with pytest.raises(UserError, match="twice"):
        run_portfolio(inputs * 2, risk=_risk(), interval="1h", max_open=1)


# ------------------------------------------------------------------ files, CLI, fan-out
@pytest.fixture
def ta_files(settings_env, sim_frames):
    from S1.datasets import Dataset, dataset_path, write_parquet

    for s, f in sim_frames.items():
        write_parquet(f, dataset_path(Dataset(s, "1h", 90), "ta"), metadata={"simulated": True})
    return list(sim_frames)


def test_cli_writes_the_four_files(ta_files, tmp_path, capsys):
    from S1.datasets import portfolio_path, read_parquet
    from S5.portfolio import main

    assert main(["--symbols", ",".join(ta_files), "--interval", "1h", "--days", "90", "--rules", RULES,
                 "--max-open", "2", "--name", "trio", "--exchange-filters", "off"]) == 0
    eq = read_parquet(portfolio_path("trio", "equity"))
    assert list(eq.columns) == ["cash", "equity", *ta_files]
    tr = read_parquet(portfolio_path("trio", "trades"))
    assert {"symbol", "entry_time", "exit_time", "size", "entry_price", "exit_price", "fees", "pnl",
            "return"} <= set(tr.columns)
    doc = json.loads(portfolio_path("trio", "backtest").read_text())
    assert doc["simulated"] is True and doc["params"]["max_open"] == 2
    assert doc["metrics"]["final_equity"] == pytest.approx(10_000 + tr["pnl"].sum(), rel=1e-12)
    assert eq["equity"].iloc[-1] == pytest.approx(10_000 + tr["pnl"].sum(), rel=1e-12)
    page = portfolio_path("trio", "report").read_text()
    assert "SIMULATED" in page and "Correlation" in page and "buy-and-hold" in page
    assert "wrote" in capsys.readouterr().out


def test_rules_map(ta_files, tmp_path):
    from S5.portfolio_files import portfolio_files

    m = tmp_path / "map.yaml"
    m.write_text(f"symbols:\n  ETHUSDT: {RULES}\ndefault: S4/rules_ta_only.yaml\n")
    run = portfolio_files(ta_files, "1h", 90, rules=m, max_open=1, write=False, exchange_filters="off")
    assert run.result.params["rules"] == {s: RULES for s in ta_files}
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"symbols:\n  ETHUSDT: {RULES}\n")
    from S1.errors import UserError

    with pytest.raises(UserError, match="no rule file for"):
        portfolio_files(ta_files, "1h", 90, rules=bad, max_open=1, write=False)


def test_local_processes_give_the_sequential_result(ta_files):
    from S5.portfolio_files import portfolio_files

    kw = dict(rules=RULES, max_open=2, write=False, exchange_filters="off")
    seq = portfolio_files(ta_files, "1h", 90, **kw).result
    par = portfolio_files(ta_files, "1h", 90, workers=2, **kw).result
    pd.testing.assert_frame_equal(seq.equity, par.equity)
    pd.testing.assert_frame_equal(seq.trades, par.trades)


def test_trailing_stop_one_symbol_equals_the_decided_backtest(sim_frames, tmp_path):
    """A rule file with a trailing stop: the portfolio moves it as S5's decided path does."""
    from pathlib import Path

    from S4.rules import load_rules
    from S5.hooks import decided_path

    f = tmp_path / "trail.yaml"
    f.write_text(Path(RULES).read_text() + "\ntrailing_stop: {atr: 1.5}\n")
    rules = load_rules(f)
    assert rules.trailing_stop is not None
    frame, risk, costs = sim_frames["ETHUSDT"], _risk(max_drawdown=None), Costs(fees=0.001, slippage=0.0005)
    ref = decided_path(frame, rules, risk=risk, interval="1h", costs=costs)
    res = run_portfolio([prepare_symbol(frame, rules, symbol="X", risk=risk)], risk=risk, interval="1h", max_open=1,
                        costs=costs)
    assert any(t["exit_reason"] == "trailing_stop" for t in ref.trades)
    assert [(t["entry_time"], t["exit_time"], t["exit_price"], t["exit_reason"]) for t in ref.trades] == \
        list(zip(res.trades["entry_time"], res.trades["exit_time"], res.trades["exit_price"], res.trades["exit_reason"]))


def test_short_rules_are_refused(sim_frames):
    from S1.errors import UserError
    from S4.rules import load_rules

    with pytest.raises(UserError, match="short"):
        prepare_symbol(sim_frames["ETHUSDT"], load_rules("S4/rules_long_short.yaml"), symbol="X", risk=_risk())


@pytest.mark.slow
def test_a_dask_cluster_gives_the_sequential_result(ta_files):
    """--scheduler tcp://...: the per-symbol preparation on a Dask cluster, the same portfolio."""
    distributed = pytest.importorskip("distributed")
    from S5.portfolio_files import portfolio_files

    kw = dict(rules=RULES, max_open=2, write=False, exchange_filters="off")
    seq = portfolio_files(ta_files, "1h", 90, **kw).result
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        got = portfolio_files(ta_files, "1h", 90, scheduler=cluster.scheduler_address, **kw).result
    pd.testing.assert_frame_equal(seq.equity, got.equity)
    pd.testing.assert_frame_equal(seq.trades, got.trades)
