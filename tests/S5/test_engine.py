"""The engine on hand-built bars (fills, fees, slippage, stops, end of test) and on
simulated data (every metric recomputed independently; vectorbt cross-checks)."""

from __future__ import annotations

import numpy as np
import pytest

from S1.errors import UserError
from S5.engine import TRADE_COLUMNS, Bars, Costs, run_backtest, simulate

from .conftest import bars_frame
from .reference import reference_metrics

OPEN = [100.0, 102.0, 104.0, 103.0, 106.0, 108.0]
HIGH = [101.0, 105.0, 106.0, 107.0, 109.0, 110.0]
LOW = [99.0, 101.0, 102.0, 101.0, 104.0, 106.0]
CLOSE = [101.0, 104.0, 103.0, 106.0, 108.0, 109.0]


def test_next_open_fill_fees_and_slippage_by_hand():
    """Entry decided at bar 1's close fills at bar 2's open (104, not the close 104 of bar 1 --
    bar 2's open is used so the prices differ below); slippage raises the buy, lowers the sell."""
    f = bars_frame(OPEN, HIGH, LOW, CLOSE, entry=[1], exit=[3])
    fee, slip, cash = 0.001, 0.01, 1000.0
    res = run_backtest(f, interval="1h", costs=Costs(fees=fee, slippage=slip), init_cash=cash)
    buy = 104.0 * (1 + slip)                       # bar 2 open, pushed up
    units = cash / ((1 + fee) * buy)               # all cash, fee included
    fee_in = units * buy * fee
    sell = 106.0 * (1 - slip)                      # bar 4 open, pushed down
    fee_out = units * sell * fee
    cash_after = units * sell - fee_out
    expected_equity = [cash, cash, units * 103.0, units * 106.0, cash_after, cash_after]
    assert res.equity.to_numpy() == pytest.approx(expected_equity, rel=1e-12)
    t = res.trades.iloc[0]
    assert len(res.trades) == 1
    assert t["entry_time"] == f.index[2] and t["exit_time"] == f.index[4]
    assert t["entry_price"] == pytest.approx(buy) and t["exit_price"] == pytest.approx(sell)
    assert t["size"] == pytest.approx(units)
    assert t["fees"] == pytest.approx(fee_in + fee_out)
    pnl = units * (sell - buy) - fee_in - fee_out
    assert t["pnl"] == pytest.approx(pnl)
    assert t["return"] == pytest.approx(pnl / (units * buy))
    assert cash + res.trades["pnl"].sum() == pytest.approx(res.equity.iloc[-1])
    assert res.metrics["fees_paid"] == pytest.approx(fee_in + fee_out)
    assert res.trade_details["exit_reason"].tolist() == ["signal"]
    assert list(res.trades.columns) == list(TRADE_COLUMNS)
    assert res.trades["side"].tolist() == ["long"]
    assert str(res.trades["entry_time"].dt.tz) == "UTC"


def test_a_signal_on_bar_t_never_uses_bar_t_prices():
    """Changing bar 1 (the decision bar) after the decision does not change the fill;
    changing bar 2's open does."""
    base = run_backtest(bars_frame(OPEN, HIGH, LOW, CLOSE, entry=[1], exit=[3]), interval="1h",
                        costs=Costs(0.0, 0.0), init_cash=1000.0)
    o = list(OPEN)
    o[1] = 50.0  # the decision bar's open
    same = run_backtest(bars_frame(o, HIGH, [40.0] + LOW[1:], CLOSE, entry=[1], exit=[3]), interval="1h",
                        costs=Costs(0.0, 0.0), init_cash=1000.0)
    assert same.trades["entry_price"].iloc[0] == base.trades["entry_price"].iloc[0] == 104.0
    o2 = list(OPEN)
    o2[2] = 103.5
    moved = run_backtest(bars_frame(o2, HIGH, LOW, CLOSE, entry=[1], exit=[3]), interval="1h",
                         costs=Costs(0.0, 0.0), init_cash=1000.0)
    assert moved.trades["entry_price"].iloc[0] == 103.5


def test_stop_loss_inside_the_entry_bar():
    low = list(LOW)
    low[2] = 101.0  # entry at 104; a 2 % stop sits at 101.92 and bar 2 trades down to 101
    f = bars_frame(OPEN, HIGH, low, CLOSE, entry=[1])
    res = run_backtest(f, interval="1h", costs=Costs(0.0, 0.0), init_cash=1000.0, sl_stop=0.02)
    t = res.trade_details.iloc[0]
    assert t["entry_bar"] == 2 and t["exit_bar"] == 2
    assert t["exit_price"] == pytest.approx(104.0 * 0.98)
    assert t["exit_reason"] == "stop_loss"
    assert res.equity.iloc[2] == pytest.approx(1000.0 * 0.98)
    assert not res.in_position[2]


def test_stop_market_slippage_and_gap_through_the_stop():
    o = list(OPEN)
    o[3] = 100.0        # bar 3 opens below the stop 101.92: filled at the open
    low = list(LOW)
    low[2], low[3] = 103.5, 99.0   # bar 2 stays above the stop (105.04 x 0.98 = 102.94)
    f = bars_frame(o, HIGH, low, CLOSE, entry=[1])
    res = run_backtest(f, interval="1h", costs=Costs(0.0, 0.01), init_cash=1000.0, sl_stop=0.02)
    t = res.trade_details.iloc[0]
    buy = 104.0 * 1.01
    assert low[2] > buy * 0.98 > 100.0  # the level is above the gap open
    assert t["exit_bar"] == 3 and t["exit_price"] == pytest.approx(100.0 * 0.99)  # open, minus slippage
    assert t["exit_reason"] == "stop_loss"


def test_take_profit_and_stop_loss_first_when_both_in_one_bar():
    f = bars_frame(OPEN, HIGH, LOW, CLOSE, entry=[1])
    tp = run_backtest(f, interval="1h", costs=Costs(0.0, 0.0), init_cash=1000.0, tp_stop=0.02)
    t = tp.trade_details.iloc[0]
    assert t["exit_bar"] == 3 and t["exit_price"] == pytest.approx(104.0 * 1.02)  # bar 2 high 106 < 106.08
    assert t["exit_reason"] == "take_profit"
    both = run_backtest(f, interval="1h", costs=Costs(0.0, 0.0), init_cash=1000.0, sl_stop=0.02, tp_stop=0.02)
    # bar 3: low 101 <= 101.92 and high 107 >= 106.08 -> the stop-loss is assumed first
    b = both.trade_details.iloc[0]
    assert b["exit_bar"] == 3 and b["exit_price"] == pytest.approx(104.0 * 0.98) and b["exit_reason"] == "stop_loss"


def test_signal_exit_at_the_open_beats_a_stop_inside_the_bar():
    # exit decided at bar 2 fills at bar 3's open 103; bar 3's low 101 would hit the 101.92 stop later
    f = bars_frame(OPEN, HIGH, LOW, CLOSE, entry=[1], exit=[2])
    res = run_backtest(f, interval="1h", costs=Costs(0.0, 0.0), init_cash=1000.0, sl_stop=0.02)
    t = res.trade_details.iloc[0]
    assert t["exit_bar"] == 3 and t["exit_price"] == 103.0 and t["exit_reason"] == "signal"


def test_open_position_is_closed_at_the_last_close():
    f = bars_frame(OPEN, HIGH, LOW, CLOSE, entry=[1])
    res = run_backtest(f, interval="1h", costs=Costs(0.001, 0.01), init_cash=1000.0)
    t = res.trade_details.iloc[0]
    assert t["exit_bar"] == 5 and t["exit_price"] == pytest.approx(109.0 * 0.99)
    assert t["exit_reason"] == "end_of_test"
    assert res.metrics["open_trades"] == 0
    assert res.equity.iloc[-1] == pytest.approx(1000.0 + t["pnl"])
    assert not res.in_position[-1] and res.in_position[4]
    kept = run_backtest(f, interval="1h", costs=Costs(0.001, 0.01), init_cash=1000.0, close_at_end=False)
    assert len(kept.trades) == 0 and kept.metrics["open_trades"] == 1


def test_entry_that_would_fill_on_the_last_bar_is_skipped():
    f = bars_frame(OPEN, HIGH, LOW, CLOSE, entry=[4, 5])
    res = run_backtest(f, interval="1h", costs=Costs(0.0, 0.0), init_cash=1000.0)
    assert len(res.trades) == 0 and (res.equity == 1000.0).all()


def test_size_fraction_and_skipped_sizes():
    f = bars_frame(OPEN, HIGH, LOW, CLOSE, entry=[1], exit=[3])
    half = run_backtest(f, interval="1h", costs=Costs(0.001, 0.0), init_cash=1000.0, size=0.5)
    assert half.trades["size"].iloc[0] == pytest.approx(500.0 / (1.001 * 104.0))
    none = run_backtest(f, interval="1h", costs=Costs(0.001, 0.0), init_cash=1000.0, size=np.nan)
    assert len(none.trades) == 0


def test_stops_mode_with_unreachable_stops_equals_the_plain_run(sim_signals):
    bars = Bars.from_frame(sim_signals, "1h")
    e, x = sim_signals["entry"].to_numpy(), sim_signals["exit"].to_numpy()
    plain = simulate(bars, e, x)
    split = simulate(bars, e, x, sl_stop=0.99, tp_stop=100.0)
    assert plain.rows_per_bar == 1 and split.rows_per_bar == 2
    np.testing.assert_allclose(plain.equity, split.equity, rtol=1e-12)
    for k in ("entry_bar", "exit_bar", "pnl"):
        np.testing.assert_allclose(plain.trades[k], split.trades[k], rtol=1e-12)


def test_equity_matches_vectorbts_own_value(sim_signals):
    bars = Bars.from_frame(sim_signals, "1h")
    sim = simulate(bars, sim_signals["entry"].to_numpy(), sim_signals["exit"].to_numpy(), sl_stop=0.02)
    value = sim.portfolio.value().to_numpy()[:, 0]
    rows = np.arange(len(bars)) * 2 + 1
    rows[-1] = len(value) - 1  # the end-of-test row
    np.testing.assert_allclose(sim.equity[:, 0], value[rows], rtol=1e-10)
    assert float(sim.portfolio.total_return().iloc[0]) == pytest.approx(sim.equity[-1, 0] / 10_000 - 1, rel=1e-10)


def test_every_metric_recomputed_independently(sim_signals):
    for kw in ({}, {"sl_stop": 0.015, "tp_stop": 0.03}):
        res = run_backtest(sim_signals, interval="1h", costs=Costs(0.001, 0.0005), init_cash=10_000.0, **kw)
        assert res.metrics["n_trades"] > 10
        ref = reference_metrics(res.equity, res.trades, init_cash=10_000.0, bar_hours=1,
                                first_open=float(sim_signals["open"].iloc[0]),
                                last_close=float(sim_signals["close"].iloc[-1]))
        for key, value in ref.items():
            assert res.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), (kw, key)
        assert 10_000.0 + res.trades["pnl"].sum() == pytest.approx(res.equity.iloc[-1], rel=1e-10)
        # pnl and return of each trade from its own columns
        t = res.trades
        np.testing.assert_allclose(t["pnl"], t["size"] * (t["exit_price"] - t["entry_price"]) - t["fees"],
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(t["return"], t["pnl"] / (t["size"] * t["entry_price"]), rtol=1e-12)
        assert (t["exit_time"] >= t["entry_time"]).all()


def test_plain_vectorbt_bar_level_call_agrees_without_stops(sim_signals):
    """Without stops the engine equals the textbook vectorbt call: signals shifted one
    bar, price = open (the last bar closed at its close)."""
    from S5.engine import vbt

    e = sim_signals["entry"].to_numpy().copy()
    x = sim_signals["exit"].to_numpy().copy()
    e_exec = np.r_[False, e[:-1]]
    x_exec = np.r_[False, x[:-1]]
    e_exec[-1] = False
    price = sim_signals["open"].to_numpy().copy()
    close = sim_signals["close"].to_numpy()
    if not x_exec[-1]:
        x_exec[-1] = True
        price[-1] = close[-1]
    pf = vbt().Portfolio.from_signals(close, e_exec, x_exec, price=price, fees=0.001, slippage=0.0005,
                                      init_cash=10_000.0, size=1.0, size_type="percent", freq="1h")
    res = run_backtest(sim_signals, interval="1h", costs=Costs(0.001, 0.0005), init_cash=10_000.0)
    np.testing.assert_allclose(res.equity.to_numpy()[:-1], pf.value().to_numpy()[:-1], rtol=1e-10)
    assert res.equity.iloc[-1] == pytest.approx(pf.value().iloc[-1], rel=1e-10)
    assert len(res.trades) == pf.trades.count()
    # vectorbt's own ratios on the same curve (its year is 365 days too)
    assert res.metrics["total_return"] == pytest.approx(pf.total_return(), rel=1e-10)
    assert res.metrics["sharpe"] == pytest.approx(pf.sharpe_ratio(), rel=1e-9)
    assert res.metrics["sortino"] == pytest.approx(pf.sortino_ratio(), rel=1e-9)
    assert res.metrics["cagr"] == pytest.approx(pf.annualized_return(), rel=1e-9)


def test_bad_inputs_are_one_line_user_errors(sim_signals):
    with pytest.raises(UserError, match="fees"):
        Costs(fees=-0.1)
    with pytest.raises(UserError, match="interval"):
        run_backtest(sim_signals, interval="1H")
    with pytest.raises(UserError, match="entry/exit"):
        run_backtest(sim_signals.drop(columns=["entry"]), interval="1h")
    bad = sim_signals.copy()
    bad.iloc[5, bad.columns.get_loc("open")] = np.nan
    with pytest.raises(UserError, match="open"):
        run_backtest(bad, interval="1h")
    with pytest.raises(UserError, match="init_cash"):
        run_backtest(sim_signals, interval="1h", init_cash=0)
    with pytest.raises(UserError, match="sl_stop"):
        run_backtest(sim_signals, interval="1h", sl_stop=-0.1)
    with pytest.raises(UserError, match="increasing"):
        run_backtest(sim_signals.iloc[::-1], interval="1h")
    with pytest.raises(UserError, match="apart but the interval is 4h"):
        run_backtest(sim_signals, interval="4h")


def test_grid_column_equals_the_single_backtest(sim_ta):
    from S4.rules import load_rules
    from S4.signals import signals_frame
    from S5.grid import grid_backtest

    rules = load_rules("S4/rules_ta_only.yaml")
    grid = {"rsi_buy": [30, 40], "rsi_sell": [65, 75]}
    table = grid_backtest(sim_ta, rules, grid, interval="1h")
    assert len(table) == 4
    for _, row in table.iterrows():
        r = rules.with_params(rsi_buy=int(row["rsi_buy"]), rsi_sell=int(row["rsi_sell"]))
        single = run_backtest(signals_frame(sim_ta, r), interval="1h")
        for k in ("total_return", "sharpe", "max_drawdown", "n_trades", "exposure", "fees_paid", "win_rate"):
            assert row[k] == pytest.approx(single.metrics[k], rel=1e-9, nan_ok=True), k


def test_numba_cache_twin_is_installed():
    import vectorbt.portfolio.nb as pnb

    from S5.engine import enable_numba_cache, vbt

    vbt()
    assert enable_numba_cache() is False  # already done, idempotent
    assert type(pnb.simulate_from_signals_nb._cache).__name__ != "NullCache"


def test_trades_paired_from_orders_equal_vectorbts_trade_records(sim_signals):
    bars = Bars.from_frame(sim_signals, "1h")
    e, x = sim_signals["entry"].to_numpy(), sim_signals["exit"].to_numpy()
    for kw in ({}, {"sl_stop": 0.01, "tp_stop": 0.02}):
        for close_at_end in (True, False):
            sim = simulate(bars, np.column_stack([e, e[::-1]]), np.column_stack([x, x[::-1]]), with_index=False,
                           close_at_end=close_at_end, **kw)
            tr = sim.portfolio.exit_trades.values
            closed = tr[tr["status"] == 1]
            closed = closed[np.lexsort((closed["entry_idx"], closed["col"]))]
            assert len(closed) == len(sim.trades["pnl"]) > 10
            for mine, theirs in (("pnl", "pnl"), ("return", "return"), ("size", "size"),
                                 ("entry_price", "entry_price"), ("exit_price", "exit_price"),
                                 ("entry_fees", "entry_fees"), ("exit_fees", "exit_fees"), ("col", "col")):
                np.testing.assert_allclose(sim.trades[mine], closed[theirs], rtol=1e-12, err_msg=mine)
            opened = np.bincount(tr["col"][tr["status"] == 0], minlength=2)
            np.testing.assert_array_equal(sim.open_trades, opened)


def test_amount_sizing_buys_the_given_quantity_by_hand():
    """size_type="amount" (what run_decided passes): the quantity of the base asset,
    fees on top, filled at the next open; a zero amount skips the entry."""
    f = bars_frame([100.0, 100, 110, 120, 130], [101.0, 111, 121, 131, 131], [99.0, 99, 109, 119, 129],
                   [100.0, 110, 120, 130, 130], entry=[0, 2], exit=[1, 3])
    bars = Bars.from_frame(f, "1h")
    amounts = np.array([3.0, 0.0, 0.0, 0.0, 0.0])
    sim = simulate(bars, f["entry"].to_numpy(), f["exit"].to_numpy(), costs=Costs(fees=0.01, slippage=0.0),
                   init_cash=1000.0, size=amounts, size_type="amount")
    t = sim.trades
    assert t["size"].tolist() == [3.0] and t["entry_bar"].tolist() == [1] and t["exit_bar"].tolist() == [2]
    assert t["entry_price"].tolist() == [100.0] and t["exit_price"].tolist() == [110.0]
    assert t["pnl"][0] == pytest.approx(3 * 10 - 3 * 100 * 0.01 - 3 * 110 * 0.01)
    assert sim.equity[-1, 0] == pytest.approx(1000 + t["pnl"][0])
    with pytest.raises(UserError, match="size_type"):
        simulate(bars, f["entry"].to_numpy(), f["exit"].to_numpy(), size=amounts, size_type="shares")
