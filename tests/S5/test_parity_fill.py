"""The one fill price after slippage and the tick (S5.costs.fill_price): exact against the
Decimal tick arithmetic of S6's filters, the direction S7 rounds (BUY up, SELL down), and
used by S7's simulator, S5's decided path, the vectorised engine and the portfolio alike."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from S5.costs import Costs, LotRules, fill_price, price_grid


def _exact(price: float, buy: bool, slippage: float, tick: str, base: str) -> Decimal:
    from S6.filters import round_to_tick

    p = Decimal(repr(price)) * (1 + Decimal(repr(slippage))) if buy else \
        Decimal(repr(price)) * (1 - Decimal(repr(slippage)))
    return round_to_tick(p, Decimal(tick), direction="up" if buy else "down", base=Decimal(base))


@pytest.mark.parametrize("tick,base,lo,hi", [("0.01", "0.01", 15_000, 70_000), ("0.00001", "0", 0.05, 3.0),
                                             ("0.5", "0", 100, 5_000), ("0.001", "0.001", 10, 200)])
def test_fill_price_equals_the_decimal_grid_arithmetic(tick, base, lo, hi):
    """Random prices on the grid, slippage 1, 5 and 7.3 bp: the float result is the float of the
    exact Decimal result (ceil for buys, floor for sells), and never better than the slipped price."""
    rng = np.random.default_rng(7)
    t, b = float(tick), float(base)
    prices = np.round((rng.uniform(lo, hi, 400) - b) / t) * t + b
    prices = np.array([float(Decimal(repr(float(p))).quantize(Decimal(tick))) for p in prices])
    for slip in (0.0001, 0.0005, 0.00073):
        for buy in (True, False):
            got = fill_price(prices, buy=buy, slippage=slip, tick=t, base=b)
            want = [_exact(float(p), buy, slip, tick, base) for p in prices]
            assert got.tolist() == [float(w) for w in want]
            assert all(Decimal(repr(g)) == w for g, w in zip(got.tolist(), want))      # repr is the grid decimal
            raw = prices * (1 + slip) if buy else prices * (1 - slip)
            assert (got >= raw * (1 - 1e-15)).all() if buy else (got <= raw * (1 + 1e-15)).all()
            assert (np.abs(got - raw) < t * (1 + 1e-9)).all()
            scalar = [fill_price(float(p), buy=buy, slippage=slip, tick=t, base=b) for p in prices[:20]]
            assert scalar == got[:20].tolist() and all(type(x) is float for x in scalar)


def test_fill_price_without_slippage_or_grid():
    assert fill_price(16600.5, buy=True, slippage=0.0, tick=0.01) == 16600.5
    assert fill_price(16600.123, buy=False, slippage=0.0, tick=0.01) == 16600.123     # a traded price stays
    assert fill_price(200.0, buy=True, slippage=0.0005) == 200.0 * 1.0005
    assert fill_price(200.0, buy=False, slippage=0.0005) == 200.0 * 0.9995
    assert price_grid(None) == (None, 0.0)
    lot = LotRules(symbol="X", step=0.001, tick=0.01, min_price=0.01)
    assert price_grid(lot) == (0.01, 0.01)
    c = Costs(fees=0.001, slippage=0.0005, lot=lot)
    assert c.tick_grid == (0.01, 0.01) and c.fill(100.01, buy=True) == 100.07      # 100.060005 -> up
    assert Costs(fees=0.001, slippage=0.0005).fill(100.01, buy=True) == 100.01 * 1.0005


def test_s7_simulator_fills_at_the_shared_price():
    """The dry-run venue's MARKET fills (S7.matching) are fill_price's, BUY and SELL."""
    from S6.filters import SymbolFilters
    from S7.simulator import SimulatedExchange

    f = SymbolFilters(symbol="BTCUSDT", base_asset="BTC", quote_asset="USDT", tick_size=Decimal("0.01"),
                      min_price=Decimal("0.01"), step_size=Decimal("0.00001"), min_qty=Decimal("0.00001"),
                      min_notional=Decimal(10))
    sim = SimulatedExchange(f, balance=100_000, slippage_bps=5, fee_asset="quote")
    sim.on_price(16600.5, 1_000)
    asyncio.run(sim.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.5", newClientOrderId="b1"))
    buy = sim.on_price(16600.5, 2_000)
    asyncio.run(sim.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.5", newClientOrderId="s1"))
    sell = sim.on_price(16711.37, 3_000)
    assert [Decimal(t["price"]) for t in buy] == [Decimal("16608.81")]
    assert float(buy[0]["price"]) == fill_price(16600.5, buy=True, slippage=0.0005, tick=0.01, base=0.01)
    assert float(sell[0]["price"]) == fill_price(16711.37, buy=False, slippage=0.0005, tick=0.01, base=0.01)
    assert Decimal(sell[0]["price"]) == Decimal("16703.01")              # 16703.014315 -> down


def test_vectorised_engine_fills_on_the_grid_like_the_decided_path(btc_1h_sim):
    """run_backtest (the vectorised path) with the symbol's filters and 5 bp fills at the same
    tick-grid prices as run_decided (the decided path) on the same signals."""
    from S1.offline import simulated_symbol_info
    from S2.ta import add_indicators
    from S4.evaluate import evaluate
    from S4.rules import parse_rules
    from S5.engine import run_backtest, run_decided
    from S5.hooks import all_in_risk
    from S6.filters import SymbolFilters

    frame = add_indicators(btc_1h_sim.iloc[:2000])
    rules = parse_rules("entry: {col: rsi14, op: crosses_above, value: 50}\n"
                        "exit: {col: rsi14, op: crosses_below, value: 50}\n")
    filters = SymbolFilters.from_symbol_info(simulated_symbol_info("BTCUSDT", float(frame["close"].iloc[-1])))
    lot = LotRules.from_filters(filters)
    sig = frame.join(evaluate(frame, rules))
    fast = run_backtest(sig, interval="1h", costs=Costs(fees=0.001, slippage=0.0005, lot=lot))
    slow = run_decided(frame, rules=rules, interval="1h", risk=all_in_risk(),
                       costs=Costs(fees=0.001, slippage=0.0005), use_stops=False, filters=filters)
    a, b = fast.trade_details, slow.trade_details
    assert len(a) == len(b) > 10
    np.testing.assert_array_equal(a["entry_time"].to_numpy(), b["entry_time"].to_numpy())
    np.testing.assert_array_equal(a["exit_time"].to_numpy(), b["exit_time"].to_numpy())
    np.testing.assert_allclose(a["entry_price"], b["entry_price"], rtol=1e-12)
    np.testing.assert_allclose(a["exit_price"], b["exit_price"], rtol=1e-12)
    tick = filters.tick_size
    for px in np.r_[a["entry_price"].to_numpy(), a["exit_price"].to_numpy()]:   # (lots -> units: 1 ulp of noise)
        on_grid = (Decimal(repr(float(px))) - filters.min_price).quantize(tick) + filters.min_price
        assert abs(float(on_grid) - px) <= 1e-12 * px, px
    for px in np.r_[b["entry_price"].to_numpy(), b["exit_price"].to_numpy()]:   # the decided path: exact
        assert (Decimal(repr(float(px))) - filters.min_price) % tick == 0, px
    o = frame["open"]
    assert (a["entry_price"].to_numpy() > o.loc[a["entry_time"]].to_numpy() * 1.0005 - 1e-9).all()
    # the equity the vectorised path books follows its fills (vectorbt's order records)
    assert np.isfinite(fast.equity.to_numpy()).all()
    pd.testing.assert_series_equal(slow.equity, pd.Series(slow.decided.equity, index=slow.equity.index,
                                                          name="equity"), rtol=1e-10)
