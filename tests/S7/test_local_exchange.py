"""The local test exchange speaks Binance's signed protocol: raw HTTP requests
(aiohttp, our own HMAC) to check each rule independently of python-binance."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.S7.helpers import API_KEY, CANARY_SECRET, run

SYM = "TESTUSDT"


def signed(params: dict, *, secret: str = CANARY_SECRET, ts: int | None = None, window: int | None = 5000) -> str:
    p = dict(params)
    p["timestamp"] = ts if ts is not None else int(time.time() * 1000)
    if window is not None:
        p["recvWindow"] = window
    q = urlencode(p)
    return q + "&signature=" + hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()


async def call(env, method: str, path: str, query: str = "", body: str | None = None, key: str | None = API_KEY):
    headers = {"X-MBX-APIKEY": key} if key else {}
    url = f"{env.server.api_url}/v3/{path}" + (f"?{query}" if query else "")
    async with aiohttp.ClientSession() as s:
        kw = {"data": body, "headers": {**headers, "Content-Type": "application/x-www-form-urlencoded"}} \
            if body is not None else {"headers": headers}
        async with s.request(method, url, **kw) as r:
            return r.status, await r.json()


@pytest.mark.parametrize("case, status, code", [
    ("no key", 401, -2014),
    ("wrong key", 401, -2015),
    ("bad signature", 400, -1022),
    ("no signature", 400, -1102),
    ("old timestamp", 400, -1021),
    ("future timestamp", 400, -1021),
    ("huge recvWindow", 400, -1131),
])
def test_signed_request_checks(texchange, case, status, code):
    async def go():
        params = {"symbol": SYM}
        q = signed(params)
        key = API_KEY
        if case == "no key":
            key = None
        elif case == "wrong key":
            key = "other"
        elif case == "bad signature":
            q = signed(params, secret="not-the-secret")
        elif case == "no signature":
            q = q.split("&signature=")[0]
        elif case == "old timestamp":
            q = signed(params, ts=int(time.time() * 1000) - 6000, window=5000)
        elif case == "future timestamp":
            q = signed(params, ts=int(time.time() * 1000) + 5000)
        elif case == "huge recvWindow":
            q = signed(params, window=70_000)
        st, body = await call(texchange, "GET", "openOrders", q, key=key)
        assert (st, body["code"]) == (status, code)
    run(go())


def test_order_lifecycle_over_raw_http(texchange):
    async def go():
        ex = texchange.exchange
        ex.set_price(SYM, "50")
        # a body-signed POST (as python-binance sends it) and a query-signed GET
        st, o = await call(texchange, "POST", "order", body=signed(
            {"symbol": SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "2", "price": "40",
             "newClientOrderId": "s7-lim"}))
        assert st == 200 and o["status"] == "NEW" and o["fills"] == []
        st, acct = await call(texchange, "GET", "account", signed({}))
        usdt = next(b for b in acct["balances"] if b["asset"] == "USDT")
        assert usdt["locked"] == "80.00000000" and usdt["free"] == "9920.00000000"
        st, dup = await call(texchange, "POST", "order", body=signed(
            {"symbol": SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "2", "price": "40",
             "newClientOrderId": "s7-lim"}))
        assert (st, dup["code"], dup["msg"]) == (400, -2010, "Duplicate order sent.")
        st, opn = await call(texchange, "GET", "openOrders", signed({"symbol": SYM}))
        assert [x["clientOrderId"] for x in opn] == ["s7-lim"]
        st, c = await call(texchange, "DELETE", "order", body=signed({"symbol": SYM, "origClientOrderId": "s7-lim"}))
        assert st == 200 and c["status"] == "CANCELED" and c["origClientOrderId"] == "s7-lim"
        st, again = await call(texchange, "DELETE", "order", body=signed({"symbol": SYM, "origClientOrderId": "s7-lim"}))
        assert (st, again["code"]) == (400, -2011)
        st, q = await call(texchange, "GET", "order", signed({"symbol": SYM, "origClientOrderId": "s7-lim"}))
        assert q["status"] == "CANCELED"
        st, q = await call(texchange, "GET", "order", signed({"symbol": SYM, "origClientOrderId": "zzz"}))
        assert (st, q["code"]) == (400, -2013)
        # a resting order fills when the price crosses it (maker, at its limit)
        await call(texchange, "POST", "order", body=signed(
            {"symbol": SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "45",
             "newClientOrderId": "s7-rest"}))
        trades = ex.set_price(SYM, "44")
        assert len(trades) == 1 and trades[0]["price"] == "45.00000000"
        st, mt = await call(texchange, "GET", "myTrades", signed({"symbol": SYM}))
        assert [t["isMaker"] for t in mt] == [True] and mt[0]["commissionAsset"] == "TEST"
        st, t = await call(texchange, "POST", "order/test", body=signed(
            {"symbol": SYM, "side": "SELL", "type": "MARKET", "quantity": "0.0001"}))
        assert (st, t["code"], t["msg"]) == (400, -1013, "Filter failure: LOT_SIZE")
        st, bad = await call(texchange, "POST", "order", body=signed({"symbol": SYM, "side": "BUY", "type": "MARKET"}))
        assert bad["code"] == -1102 and "quantity" in bad["msg"]
    run(go())


def test_exchange_info_and_filters_are_the_real_capture(texchange, shared_dir):
    f = texchange.exchange.symbol_filters("BTCUSDT")
    assert str(f.step_size) == "0.00001000" and str(f.tick_size) == "0.01000000" and f.notional_filter == "MIN_NOTIONAL"
    assert texchange.exchange.symbol_filters("NOTAREALPAIRX") is None


def test_market_price_follows_the_served_candles(settings_env):
    from S1.intervals import to_ms
    from S1.local.exchange import LocalBinance
    from S1.local.simulated import simulate_candles
    from S7.local.exchange import BinanceTestExchange

    df = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-02")
    server = LocalBinance(now_ms=to_ms("2024-01-01 05:30"))
    ex = BinanceTestExchange(server, api_key="k", api_secret="s")
    server.add_candles("BTCUSDT", "1h", df)
    p = float(ex.price("BTCUSDT"))
    row = df.loc["2024-01-01 05:00"]
    assert p == pytest.approx((row["open"] + row["close"]) / 2, rel=1e-6)   # the 05:00 candle, half way
    with pytest.raises(ValueError):
        ex.inject("earthquake")
