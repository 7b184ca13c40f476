"""Exchange filters (LOT_SIZE / MIN_NOTIONAL) and fee models in the vectorbt engine, checked
against the independent loop of tests/S5/reference.py, S6's Decimal filters and the real
exchangeInfo capture."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, report_path, write_parquet
from S1.errors import UserError
from S5.engine import Bars, Costs, run_backtest, simulate
from S5.exchange import LotRules, describe_costs, resolve_lot_rules
from tests.S5.reference import reference_backtest

LOT = LotRules(symbol="ETHUSDC", step=0.001, min_qty=0.002, max_qty=0.2, min_notional=25.0)


@pytest.fixture(scope="module")
def market():
    """400 simulated 1h ETHUSDC bars, random signals and sizes spanning every case: entries
    rounded, refused by minQty (tiny sizes), refused by MIN_NOTIONAL, capped by maxQty."""
    from S1.local.simulated import simulate_candles

    f = simulate_candles("ETHUSDC", "1h", "2023-01-01", "2023-01-18").iloc[:400].copy()
    rng = np.random.default_rng(7)
    f["entry"] = rng.random(len(f)) < 0.12
    f["exit"] = rng.random(len(f)) < 0.10
    size = rng.choice([1.0, 0.6, 0.2, 0.0015, 0.004, 0.01, 0.011], size=len(f))
    return f, size


def _lot_tuple(lot: LotRules, market: bool):
    return lot.entry_limits(market=market)


CASES = [
    ("taker", None, False, None),
    ("taker", None, False, LOT),
    ("mixed", 0.0002, False, LOT),
    ("maker", 0.0002, True, LOT),
    ("mixed", 0.0004, True, None),
]


@pytest.mark.parametrize("model,maker,bnb,lot", CASES)
def test_engine_equals_the_reference_loop(market, model, maker, bnb, lot):
    f, size = market
    costs = Costs(fees=0.001, slippage=0.0005, maker_fee=maker, fee_model=model, bnb_discount=bnb, lot=lot)
    res = run_backtest(f, interval="1h", costs=costs, init_cash=2_000.0, size=size)
    ref = reference_backtest(f["open"].to_numpy(), f["close"].to_numpy(), f["entry"].to_numpy(), f["exit"].to_numpy(),
                             size=size, init_cash=2_000.0, slippage=0.0005, maker=costs.maker_rate,
                             taker=costs.taker_rate, fee_model=model,
                             lot=None if lot is None else _lot_tuple(lot, model == "taker"))
    rt = ref["trades"]
    assert len(res.trades) == len(rt) > 10
    d = res.trade_details
    np.testing.assert_array_equal(d["entry_bar"].to_numpy(), rt["entry_bar"].to_numpy())
    np.testing.assert_array_equal(d["exit_bar"].to_numpy(), rt["exit_bar"].to_numpy())
    np.testing.assert_allclose(res.trades["size"], rt["size"], rtol=1e-12)
    np.testing.assert_allclose(res.trades["entry_price"], rt["entry_price"], rtol=1e-12)
    np.testing.assert_allclose(res.trades["exit_price"], rt["exit_price"], rtol=1e-12)
    np.testing.assert_allclose(res.trades["fees"], rt["entry_fee"] + rt["exit_fee"], rtol=1e-9)
    np.testing.assert_allclose(res.trades["pnl"], rt["pnl"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.equity.to_numpy(), ref["equity"], rtol=1e-10)
    if lot is None:
        assert "entries_skipped" not in res.metrics
        return
    for k, v in ref["stats"].items():
        assert res.metrics[k] == v, k
    s = ref["stats"]
    assert s["entries_skipped_min_qty"] > 0 and s["entries_skipped_min_notional"] > 0 and s["entries_rounded"] > 0
    # every traded quantity is a whole number of steps within the limits
    lots = res.trades["size"].to_numpy() / LOT.step
    np.testing.assert_allclose(lots, np.round(lots), atol=1e-9)
    assert (res.trades["size"] >= LOT.min_qty - 1e-12).all() and (res.trades["size"] <= LOT.max_qty + 1e-12).all()
    assert (res.trades["size"] * res.trades["entry_price"] >= LOT.min_notional).all()
    assert (res.trades["size"] == LOT.max_qty).any()   # the cap was hit


def test_fee_models_charge_maker_and_taker_where_s7_sends_limit_and_market():
    """One trade by hand: entry and signal exit at maker in the mixed model, the kill-switch's
    MARKET exit and the end-of-test close at taker."""
    t = pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC")
    o = np.array([100.0, 100, 110, 120, 120, 130])
    f = pd.DataFrame({"open": o, "high": o + 1, "low": o - 1, "close": o}, index=t)
    bars = Bars.from_frame(f, "1h")
    e = np.array([1, 0, 0, 1, 0, 0], dtype=bool)
    x = np.array([0, 1, 0, 0, 0, 0], dtype=bool)
    c = Costs(fees=0.001, maker_fee=0.0002, slippage=0.0, fee_model="mixed")
    tr = simulate(bars, e, x, costs=c, init_cash=1000.0).trades
    # trade 1: entry at 100 (maker), signal exit at 110 (maker); trade 2: entry at 120 (maker), end close 130 (taker)
    q1 = 1000 / (100 * 1.0002)
    np.testing.assert_allclose(tr["entry_fees"][0], q1 * 100 * 0.0002)
    np.testing.assert_allclose(tr["exit_fees"][0], q1 * 110 * 0.0002)
    np.testing.assert_allclose(tr["exit_fees"][1], tr["size"][1] * 130 * 0.001)
    # the same exit marked as a MARKET order (kill-switch flattening) pays taker
    mx = np.array([0, 1, 0, 0, 0, 0], dtype=bool)
    tr2 = simulate(bars, e, x, costs=c, init_cash=1000.0, market_exits=mx).trades
    np.testing.assert_allclose(tr2["exit_fees"][0], q1 * 110 * 0.001)
    # maker model: everything maker; taker (default): everything taker; BNB: 25 % off
    tm = simulate(bars, e, x, costs=Costs(fees=0.001, maker_fee=0.0002, slippage=0.0, fee_model="maker"),
                  init_cash=1000.0).trades
    np.testing.assert_allclose(tm["exit_fees"][1], tm["size"][1] * 130 * 0.0002)
    tt = simulate(bars, e, x, costs=Costs(fees=0.001, slippage=0.0, bnb_discount=True), init_cash=1000.0).trades
    np.testing.assert_allclose(tt["entry_fees"][0], 1000 / (100 * 1.00075) * 100 * 0.00075)


def test_grid_columns_equal_single_runs_with_filters_and_mixed_fees(market):
    f, size = market
    bars = Bars.from_frame(f, "1h")
    rng = np.random.default_rng(3)
    ent = np.column_stack([f["entry"].to_numpy(), rng.random(len(f)) < 0.1, rng.random(len(f)) < 0.2])
    ext = np.column_stack([f["exit"].to_numpy(), rng.random(len(f)) < 0.1, rng.random(len(f)) < 0.05])
    c = Costs(maker_fee=0.0002, fee_model="mixed", lot=LOT)
    grid = simulate(bars, ent, ext, costs=c, init_cash=2_000.0, size=size, with_index=False)
    for j in range(3):
        one = simulate(bars, ent[:, j], ext[:, j], costs=c, init_cash=2_000.0, size=size)
        np.testing.assert_allclose(grid.equity[:, j], one.equity[:, 0], rtol=1e-12)
        for k in grid.order_stats:
            assert grid.order_stats[k][j] == one.order_stats[k][0], k


def test_stops_with_filters_keep_whole_positions(market):
    """With stops (two rows per bar) every sell still closes the rounded position exactly."""
    f, size = market
    res = run_backtest(f, interval="1h", costs=Costs(lot=LOT, fee_model="mixed", maker_fee=0.0002),
                       init_cash=2_000.0, size=size, sl_stop=0.004, tp_stop=0.004)
    assert res.metrics["n_trades"] > 10 and res.metrics["open_trades"] == 0
    assert set(res.trade_details["exit_reason"]) >= {"stop_loss", "take_profit"}
    lots = res.trades["size"].to_numpy() / LOT.step
    np.testing.assert_allclose(lots, np.round(lots), atol=1e-9)
    assert res.metrics["entries_skipped"] > 0


def test_every_order_passes_the_real_exchange_info(shared_dir, btc_1h_real):
    """BTCUSDT filters of the real 2021-10-12 exchangeInfo capture: every order the backtest
    keeps is accepted by S6's Decimal check unchanged; the refused ones are counted."""
    from S6.filters import read_exchange_info_file, symbol_filters

    path = shared_dir / "data/api/rest_exchangeInfo_2021-10-12.json"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    sf = symbol_filters(read_exchange_info_file(path), "BTCUSDT")
    lot = resolve_lot_rules("BTCUSDT", mode="on", file=path)
    assert lot.step == float(sf.step_size) and lot.min_notional == float(sf.min_notional) == 10.0
    f = btc_1h_real.iloc[:1500].copy()
    rng = np.random.default_rng(11)
    f["entry"] = rng.random(len(f)) < 0.08
    f["exit"] = rng.random(len(f)) < 0.08
    size = rng.choice([1.0, 0.3, 0.05, 0.0009, 0.0003], size=len(f))   # the small ones fall below 10 USDT
    res = run_backtest(f, interval="1h", costs=Costs(lot=lot), init_cash=1_000.0, size=size)
    orders = res.portfolio.orders.values
    assert len(res.trades) > 20 and res.metrics["entries_skipped"] > 0
    for _, t in res.trades.iterrows():
        for side, px in (("BUY", t["entry_price"]), ("SELL", t["exit_price"])):
            chk = sf.check_order(t["size"], px, side=side, order_type="MARKET")
            assert chk.ok, chk.reason
            assert float(chk.qty) == pytest.approx(t["size"], rel=1e-12)   # already on the step grid
    # without the filters the same run trades quantities Binance would refuse
    raw = run_backtest(f, interval="1h", costs=Costs(), init_cash=1_000.0, size=size)
    refused = [not sf.check_order(q, p, order_type="MARKET").ok or float(sf.round_qty(q)) != q
               for q, p in zip(raw.trades["size"], raw.trades["entry_price"])]
    assert any(refused) and len(orders) == 2 * len(res.trades)


def test_costs_are_checked_and_described():
    with pytest.raises(UserError, match="unknown fee model"):
        Costs(fee_model="cheap")
    with pytest.raises(UserError, match="maker-fee"):
        Costs(maker_fee=0.2)
    with pytest.raises(UserError, match="stepSize"):
        LotRules(symbol="X", step=0.0)
    text = describe_costs(Costs(maker_fee=0.0002, fee_model="mixed", lot=LOT))
    assert "maker 0.02%" in text and "taker 0.1%" in text and "step 0.001" in text
    assert Costs().is_plain and not Costs(fee_model="mixed").is_plain


# ------------------------------------------------------------------------ CLI + optimiser
@pytest.fixture
def signals_file(settings_env, sim_signals):
    path = dataset_path(Dataset("ETHUSDC", "1h", 90), "signals")
    write_parquet(sim_signals, path, metadata={"simulated": True})
    return path


def _backtest(argv):
    from S5.backtest import main

    return run(main, argv)


def test_cli_filters_and_fee_model_reach_json_and_html(signals_file, sim_signals, tmp_path, capsys):
    from S1.local.exchange import simulated_symbol_info

    info = simulated_symbol_info("ETHUSDC", 1500.0)
    info["filters"][1].update(stepSize="0.01000000", minQty="0.01000000")
    info["filters"][2].update(minNotional="9000.00000000")           # some entries with --risk are below it
    file = tmp_path / "exchange_info.json"
    file.write_text(json.dumps({"symbols": [info]}))
    base = ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90"]
    assert _backtest([*base, "--exchange-info", str(file), "--fee-model", "mixed", "--maker-fee", "0.0002",
                      "--risk", "S6/risk.yaml"]) == 0
    out = capsys.readouterr().out
    assert "entries skipped" in out
    doc = json.loads(dataset_path(Dataset("ETHUSDC", "1h", 90), "backtest").read_text())
    p, m = doc["params"], doc["metrics"]
    assert p["fee_model"] == "mixed" and p["maker_fee"] == 0.0002 and p["taker_fee"] == 0.001
    assert p["exchange_filters"]["step"] == 0.01 and p["exchange_filters"]["min_notional"] == 9000.0
    assert m["entries_skipped"] == m["entries_skipped_min_qty"] + m["entries_skipped_min_notional"] > 0
    html = report_path(Dataset("ETHUSDC", "1h", 90), "backtest", "html").read_text()
    assert "entries rounded" in html and "Exchange filters:" in html
    # the library run with the same costs gives the same numbers
    lot = resolve_lot_rules("ETHUSDC", file=file)
    from S5.hooks import load_risk

    lib = run_backtest(sim_signals, interval="1h", costs=Costs(maker_fee=0.0002, fee_model="mixed", lot=lot),
                       risk=load_risk("S6/risk.yaml"))
    assert lib.metrics["final_equity"] == pytest.approx(m["final_equity"], rel=1e-12)
    assert lib.metrics["entries_skipped"] == m["entries_skipped"]
    # off: no filter figures; auto on simulated data: S7's generic filters
    assert _backtest([*base, "--exchange-filters", "off", "--no-report"]) == 0
    doc = json.loads(dataset_path(Dataset("ETHUSDC", "1h", 90), "backtest").read_text())
    assert "entries_skipped" not in doc["metrics"] and "exchange_filters" not in doc["params"]
    assert _backtest([*base, "--no-report"]) == 0
    doc = json.loads(dataset_path(Dataset("ETHUSDC", "1h", 90), "backtest").read_text())
    assert "simulated market" in doc["params"]["exchange_filters"]["source"]
    capsys.readouterr()
    assert _backtest([*base, "--exchange-filters", "off", "--exchange-info", str(file)]) == 2
    assert "--exchange-info has no effect" in capsys.readouterr().err


def test_real_data_without_exchange_info_stays_off_in_auto(settings_env):
    assert resolve_lot_rules("BTCUSDT", mode="auto", simulated=False) is None
    lot = resolve_lot_rules("BTCUSDT", mode="auto", simulated=True, price=30_000.0)
    assert lot.step == pytest.approx(1e-6) and lot.min_notional == 5.0


def test_optimiser_and_walk_forward_use_the_costs(btc_1h):
    from S2.ta import add_indicators
    from S4.rules import load_rules
    from S4.signals import signals_frame
    from S5.optimizer import OptimizeConfig, fingerprint, optimize
    from S5.walkforward_search import WalkForwardConfig, walk_forward

    ta = add_indicators(btc_1h).iloc[:1500]
    rules = load_rules("S4/rules_ta_only.yaml")
    lot = LotRules(symbol="BTCUSDT", step=0.001, min_qty=0.001, min_notional=10.0)
    costs = Costs(maker_fee=0.0002, fee_model="mixed", lot=lot)
    cfg = OptimizeConfig(n_trials=4, min_trades=2, seed=5, costs=costs, init_cash=1_000.0)
    res = optimize(ta, rules, interval="1h", config=cfg, progress=False)
    sig = signals_frame(ta, rules.with_params(**res.best_params))
    oos = run_backtest(sig.iloc[res.split.train_end:], interval="1h", costs=costs, init_cash=1_000.0)
    assert res.out_of_sample.metrics["final_equity"] == pytest.approx(oos.metrics["final_equity"], rel=1e-12)
    assert res.out_of_sample.metrics["entries_rounded"] == oos.metrics["entries_rounded"] > 0
    assert res.summary()["costs"]["fee_model"] == "mixed"
    split = res.split
    fp = lambda c: fingerprint(rules, objective="sharpe", split=split, config=OptimizeConfig(costs=c), market={})
    assert fp(Costs()) != fp(costs) and fp(Costs()) == fp(Costs(fees=0.001, slippage=0.0005))
    wf = walk_forward(ta, rules, interval="1h", config=cfg, wf=WalkForwardConfig(n_folds=2, test="200"),
                      progress=False)
    fr = wf.folds[-1]
    cut = signals_frame(ta.iloc[:fr.fold.test_end], rules.with_params(**fr.best_params))
    alone = run_backtest(cut.iloc[fr.fold.test_start:fr.fold.test_end], interval="1h", costs=costs,
                         init_cash=1_000.0)
    np.testing.assert_array_equal(fr.out_of_sample.equity.to_numpy(), alone.equity.to_numpy())
    assert fr.out_of_sample.metrics["entries_rounded"] == alone.metrics["entries_rounded"]
