"""S7's signed USD-M futures client against the local USD-M test exchange (127.0.0.1):
signatures, leverage, a short opened and closed with reduceOnly, funding by side, the
balance by hand."""

from __future__ import annotations

import asyncio

import pytest

from S7.futures_client import FuturesError, UsdmClient
from S7.local.usdm import LocalUSDM


def run(coro):
    return asyncio.run(coro)


def test_short_round_trip_with_funding_by_hand():
    async def go():
        ex = LocalUSDM(fee_rate=0.0004, balance=10_000.0)
        url = await ex.start()
        try:
            async with UsdmClient(url, ex.api_key, ex.api_secret) as c:
                assert (await c.set_leverage("BTCUSDT", 5))["leverage"] == 5
                assert await c.set_margin_type("BTCUSDT", "ISOLATED") is True
                assert await c.set_margin_type("BTCUSDT", "ISOLATED") is False      # -4046: already isolated
                o = await c.market_order("BTCUSDT", "SELL", "2", client_order_id="s1")
                assert (o["status"], o["avgPrice"]) == ("FILLED", "100.0")
                pos = await c.position("BTCUSDT")
                assert float(pos["positionAmt"]) == -2.0 and float(pos["isolatedMargin"]) == pytest.approx(40.0)
                # liquidation price of the isolated short: (2 x 100 + 40) / (2 x 1.004)
                assert float(pos["liquidationPrice"]) == pytest.approx(240 / 2.008)
                ex.settle_funding(0.001, mark=101.0)                 # a short receives a positive rate
                ex.set_price(90.0)
                assert float((await c.position("BTCUSDT"))["unRealizedProfit"]) == pytest.approx(20.0)
                with pytest.raises(FuturesError) as err:                     # reduceOnly on the wrong side
                    await c.market_order("BTCUSDT", "SELL", "1", client_order_id="bad", reduce_only=True)
                assert err.value.code == -2022
                await c.market_order("BTCUSDT", "BUY", "2", client_order_id="c1", reduce_only=True)
                with pytest.raises(FuturesError) as err:
                    await c.market_order("BTCUSDT", "BUY", "2", client_order_id="c1")
                assert err.value.code == -4116                               # one client id, one order
                fees = 2 * 100 * 0.0004 + 2 * 90 * 0.0004
                assert await c.usdt_balance() == pytest.approx(10_000 - fees + 2 * 101 * 0.001 + 2 * 10)
                (inc,) = await c.funding_income("BTCUSDT")
                assert float(inc["income"]) == pytest.approx(0.202)
                assert float((await c.position("BTCUSDT"))["positionAmt"]) == 0.0
            async with UsdmClient(url, ex.api_key, "wrong-secret") as bad:
                with pytest.raises(FuturesError) as err:
                    await bad.usdt_balance()
                assert err.value.code == -1022
            async with UsdmClient(url, "other-key", ex.api_secret) as bad:
                with pytest.raises(FuturesError) as err:
                    await bad.usdt_balance()
                assert err.value.code == -2015
        finally:
            await ex.close()

    run(go())


def test_keys_and_url_come_from_the_settings(settings_env, monkeypatch):
    from S1.errors import UserError
    from S1.settings import get_settings

    with pytest.raises(UserError, match="BINANCE_FUTURES_TESTNET_API_KEY"):
        UsdmClient.from_settings(get_settings())
    monkeypatch.setenv("BINANCE_FUTURES_TESTNET_API_KEY", "k")
    monkeypatch.setenv("BINANCE_FUTURES_TESTNET_API_SECRET", "s")
    if hasattr(get_settings, "cache_clear"):
        get_settings.cache_clear()
    c = UsdmClient.from_settings()
    assert c.base_url == "https://testnet.binancefuture.com"          # the real futures testnet by default
    assert "'s'" not in repr(get_settings().binance_futures_testnet_api_secret)   # redacted
