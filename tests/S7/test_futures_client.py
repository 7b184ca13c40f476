"""S7's signed USD-M futures client against the local USD-M test exchange (127.0.0.1):
signatures, leverage, a short opened and closed with reduceOnly, funding by side, the
balance by hand."""

from __future__ import annotations

import asyncio
import json

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


def test_leverage_bracket_payload_and_first_bracket_fallbacks(settings_env, capsys):
    """``GET /fapi/v1/leverageBracket`` in Binance's documented shape (no recorded payload in
    ../shared: one object with ``symbol`` sent, a list without; numbers as JSON numbers); the
    session's first bracket: from the exchange (cached under data/), else the cache, else the
    built-in table with one printed note."""
    from S1.datasets import leverage_brackets_path
    from S7.futures_exchange import first_bracket

    async def go():
        ex = LocalUSDM(mmr=0.0065, symbols={"ETHUSDT": {"symbol": "ETHUSDT", "filters": []}})
        url = await ex.start()
        try:
            async with UsdmClient(url, ex.api_key, ex.api_secret) as c:
                one = await c._signed("GET", "/fapi/v1/leverageBracket", {"symbol": "ETHUSDT"})
                assert set(one) == {"symbol", "brackets"} and one["symbol"] == "ETHUSDT"
                b = one["brackets"][0]
                assert set(b) == {"bracket", "initialLeverage", "notionalCap", "notionalFloor", "maintMarginRatio",
                                  "cum"}
                assert isinstance(b["initialLeverage"], int) and isinstance(b["maintMarginRatio"], float)
                assert (b["bracket"], b["notionalFloor"], b["maintMarginRatio"]) == (1, 0, 0.0065)
                every = await c._signed("GET", "/fapi/v1/leverageBracket", {})
                assert isinstance(every, list) and [e["symbol"] for e in every] == ["ETHUSDT"]
                with pytest.raises(FuturesError) as err:
                    await c.leverage_brackets("XRPUSDT")
                assert err.value.code == -1121
                with pytest.raises(FuturesError) as err:                          # above the first bracket
                    await c.set_leverage("ETHUSDT", 126)
                assert err.value.code == -4028
                assert not leverage_brackets_path("ETHUSDT").exists()
                got = await first_bracket(c, "ETHUSDT")
                assert (got.mmr, got.cum, got.max_leverage) == (0.0065, 0.0, 125) and "leverageBracket" in got.origin
                assert json.loads(leverage_brackets_path("ETHUSDT").read_text())["brackets"][0]["maintMarginRatio"] \
                    == 0.0065
                ex.inject("error", path="/fapi/v1/leverageBracket", method="GET")      # unreachable: the cache
                got = await first_bracket(c, "ETHUSDT")
                assert got.mmr == 0.0065 and got.origin.startswith("cached leverageBracket")
                assert "note:" not in capsys.readouterr().out
                leverage_brackets_path("ETHUSDT").unlink()
                ex.inject("error", path="/fapi/v1/leverageBracket", method="GET")      # no cache: the table
                got = await first_bracket(c, "ETHUSDT")
                assert (got.mmr, got.origin) == (0.005, "built-in table (S5.futures.FIRST_BRACKET_MMR)")
                out = capsys.readouterr().out
                assert out.count("note:") == 1 and "0.005 for ETHUSDT" in out
        finally:
            await ex.close()

    run(go())


def test_a_list_answer_with_symbol_sent_is_accepted():
    class Fake(UsdmClient):
        async def _signed(self, method, path, params, **kw):
            return [{"symbol": "BTCUSDT", "brackets": [
                {"bracket": 2, "initialLeverage": 100, "notionalCap": 600000, "notionalFloor": 50000,
                 "maintMarginRatio": 0.005, "cum": 50.0},
                {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0,
                 "maintMarginRatio": 0.004, "cum": 0.0}]}]

    rows = run(Fake("http://127.0.0.1:9", "k", "s").leverage_brackets("BTCUSDT"))
    assert [r["bracket"] for r in rows] == [1, 2]
