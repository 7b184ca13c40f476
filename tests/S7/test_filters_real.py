"""Orders the engine sizes for real symbols, with their real filters (the
exchangeInfo capture in ../shared), pass the test exchange's independent checks;
orders that cannot meet them are refused before anything is sent."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from tests.S7.helpers import ALWAYS_ENTER, build_rig, candles, run, trading_client, warm_closes

CASES = [  # symbol, price, quote balance
    ("BTCUSDT", 43_123.45, "10000"),
    ("ETHUSDT", 3_456.78, "10000"),
    ("ETHBTC", 0.065432, "1"),
    ("BNBBTC", 0.008765, "1"),
    ("ADABTC", 0.00002812, "1"),
    ("SHIBUSDT", 0.00002567, "10000"),
    ("DOGEUSDT", 0.2345, "10000"),
    ("SOLUSDT", 155.55, "10000"),
    ("XRPBUSD", 1.0987, "10000"),
]


@pytest.mark.parametrize("symbol, price, quote", CASES)
@pytest.mark.parametrize("fraction", [0.0137, 0.4, 1.0])
def test_sized_orders_meet_the_real_filters(texchange, shared_dir, tmp_path, symbol, price, quote, fraction):
    async def go():
        from S6.config import RiskConfig

        ex = texchange.exchange
        f = ex.symbol_filters(symbol)
        ex.book.free[f.quote_asset] = Decimal(quote)
        px = f.round_price(price, direction="nearest")
        ex.set_price(symbol, px)
        df = candles(np.r_[warm_closes(60, float(px)), float(px)])
        risk = RiskConfig().replace(sizing={"method": "fixed", "fixed_fraction": fraction},
                                    kill_switch={"max_consecutive_losses": None})
        async with trading_client(texchange) as c:
            rig = await build_rig(tmp_path, venue=c, symbol=symbol, rules_text=ALWAYS_ENTER, risk=risk)
            assert rig.engine.filters.step_size == f.step_size      # read from the exchange's exchangeInfo
            rig.engine.seed(df.iloc[:-1])
            d = await rig.engine.on_candle(df.iloc[-1:])
            assert d.action == "buy", d.reason
            assert d.result.status == "accepted", d.result.error
            o = d.result.order
            qty = Decimal(o["executedQty"])
            assert o["status"] == "FILLED" and qty > 0
            assert (qty - (f.min_qty or 0)) % f.step_size == 0
            assert qty * Decimal(str(px)) >= (f.min_notional or 0)
            assert Decimal(o["cummulativeQuoteQty"]) <= Decimal(quote)
            # and the whole position can be sold back within the filters
            await rig.engine._sell(d, rig.store.position(symbol).qty, float(px), "test", None)
            assert [r.code for r in ex.posted()] == [None, None]
            assert not rig.store.position(symbol).is_open
    run(go())


@pytest.mark.parametrize("cash, why", [("9", "is below the minimum notional 10"),
                                       ("10.4", "too small to be sold back after fees")])
def test_an_order_below_the_minimum_is_refused_before_sending(texchange, shared_dir, tmp_path, cash, why):
    async def go():
        ex = texchange.exchange
        ex.book.free["USDT"] = Decimal(cash)           # BTCUSDT's MIN_NOTIONAL is 10
        ex.set_price("BTCUSDT", "43000")
        df = candles(np.r_[warm_closes(60, 43000.0), 43000.0])
        from S6.config import RiskConfig

        risk = RiskConfig().replace(sizing={"method": "fixed", "fixed_fraction": 1.0})   # all the cash
        async with trading_client(texchange) as c:
            rig = await build_rig(tmp_path, venue=c, symbol="BTCUSDT", rules_text=ALWAYS_ENTER, risk=risk)
            rig.engine.seed(df.iloc[:-1])
            d = await rig.engine.on_candle(df.iloc[-1:])
            assert d.action == "refused" and ex.posted() == []
            ev = rig.events()[-1]
            assert ev["status"] == "REFUSED" and ev["filter"] == "MIN_NOTIONAL" and why in ev["error"]
            assert rig.store.get_order(d.client_order_id)["status"] == "REFUSED"
    run(go())
