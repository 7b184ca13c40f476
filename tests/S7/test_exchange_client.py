"""S7.exchange_client against the local test exchange: python-binance's signing
accepted by an independent HMAC check, typed errors, clock sync on -1021, the
rate-limit window, idempotent submission under every fault, no secret in errors."""

from __future__ import annotations

import time

import pytest

from S7.exchange_client import (
    AuthFailed,
    BinanceTradingClient,
    ClockSkew,
    FilterFailure,
    InsufficientBalance,
    OrderNotFound,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    classify,
    submit_order,
)
from tests.S7.helpers import CANARY_SECRET, run, trading_client

SYM = "TESTUSDT"


def _buy(c, cid, qty="1", **kw):
    return submit_order(c, symbol=SYM, side="BUY", order_type="MARKET", quantity=qty, client_order_id=cid, **kw)


def test_signed_requests_round_trip(texchange):
    async def go():
        texchange.exchange.set_price(SYM, "50")
        async with trading_client(texchange) as c:
            await c.sync_time()
            assert (await c.account())["balances"]
            res = await _buy(c, "s7-a")
            assert res.status == "accepted" and res.order["status"] == "FILLED" and res.sends == 1
            assert res.order["fills"][0]["commissionAsset"] == "TEST"
            got = await c.get_order(symbol=SYM, client_order_id="s7-a")
            assert got["orderId"] == res.order["orderId"] and got["executedQty"] == "1.00000000"
            trades = await c.my_trades(symbol=SYM, order_id=got["orderId"])
            assert [t["orderId"] for t in trades] == [got["orderId"]]
            assert await c.get_order(symbol=SYM, client_order_id="s7-none") is None
            assert await c.open_orders(symbol=SYM) == []
            assert await c.test_order(symbol=SYM, side="BUY", type="MARKET", quantity="1") == {}
            # every signed request carried recvWindow and a timestamp; the secret never travelled
            for r in texchange.exchange.requests:
                assert r.params["recvWindow"] == "1000" and "timestamp" in r.params
                assert CANARY_SECRET not in str(r.params)
    run(go())


def test_wrong_secret_and_wrong_key_are_auth_failures_without_the_secret(texchange):
    # timeout=10: generous, so a slow answer on a loaded machine is never mistaken for the refusal under test
    async def go():
        bad = BinanceTradingClient(base_url=texchange.server.api_url, api_key=texchange.key,
                                   api_secret="another-" + CANARY_SECRET, timeout=10)
        async with bad:
            with pytest.raises(AuthFailed) as e:
                await bad.account()
            assert e.value.code == -1022 and CANARY_SECRET not in str(e.value) and "another-" not in str(e.value)
            assert CANARY_SECRET not in repr(bad)
            with pytest.raises(AuthFailed):
                await _buy(bad, "s7-x")                # submit_order lets auth failures through
        wrong = BinanceTradingClient(base_url=texchange.server.api_url, api_key="nope",
                                     api_secret=CANARY_SECRET, timeout=10)
        async with wrong:
            with pytest.raises(AuthFailed) as e:
                await wrong.open_orders(symbol=SYM)
            assert e.value.code == -2015
        assert texchange.exchange.orders_with_client_id("s7-x") == []
    run(go())


def test_clock_skew_is_synced_and_retried_once(texchange):
    async def go():
        texchange.exchange.set_price(SYM, "50")
        async with trading_client(texchange) as c:
            await c.sync_time()
            # the server clock jumps 30 s ahead: our timestamps fall outside the recvWindow
            texchange.server.set_now(lambda: int(time.time() * 1000) + 30_000)
            assert (await c.account())["balances"]            # a read re-syncs on -1021 and retries
            assert c.timestamp_offset > 29_000
            texchange.server.set_now(lambda: int(time.time() * 1000) - 20_000)
            res = await _buy(c, "s7-skew")
            assert res.status == "accepted" and res.sends == 2 and "-1021" in res.notes[0]
            codes = [r.code for r in texchange.exchange.posted()]
            assert codes == [-1021, None]
            texchange.exchange.inject("clock_skew", count=2)   # twice in a row: given up, nothing executed
            res = await _buy(c, "s7-skew2")
            assert res.status == "rejected" and isinstance(res.error, ClockSkew)
            assert texchange.exchange.orders_with_client_id("s7-skew2") == []
    run(go())


def test_rate_limit_window_is_honoured(texchange):
    async def go():
        texchange.exchange.set_price(SYM, "50")
        async with trading_client(texchange) as c:
            texchange.exchange.inject("429", retry_after=0.6)
            res = await _buy(c, "s7-rl")
            assert res.status == "accepted" and res.sends == 2
            a, b = texchange.exchange.posted()
            assert a.status == 429 and b.status == 200 and b.arrived - a.arrived >= 0.6
            # a long Retry-After: not waited out, not sent again, and no request at all inside the window
            texchange.exchange.inject("418", retry_after=120)
            res = await _buy(c, "s7-ban", max_rate_wait=5)
            assert res.status == "rate_limited" and isinstance(res.error, RateLimited)
            assert res.error.http_status == 418
            n = len(texchange.exchange.requests)
            with pytest.raises(RateLimited):
                await c.new_order(symbol=SYM, side="BUY", type="MARKET", quantity="1", newClientOrderId="s7-q")
            assert len(texchange.exchange.requests) == n
            assert texchange.exchange.orders_with_client_id("s7-ban") == []
    run(go())


@pytest.mark.parametrize("fault", ["timeout_after_accept", "drop_after_accept", "error_after_accept"])
def test_unknown_outcome_after_accept_never_duplicates(texchange, fault):
    async def go():
        texchange.exchange.set_price(SYM, "50")
        async with trading_client(texchange) as c:
            texchange.exchange.inject(fault, delay=600, status=500)  # held: the answer never comes
            res = await _buy(c, "s7-dup")
            assert res.status == "accepted" and res.found_by_lookup and res.sends == 1
            assert len(texchange.exchange.orders_with_client_id("s7-dup")) == 1
            # a resumed intent with the same id: looked up first, not sent
            res2 = await _buy(c, "s7-dup", lookup_first=True)
            assert res2.found_by_lookup and res2.sends == 0
            assert len(texchange.exchange.orders_with_client_id("s7-dup")) == 1
    run(go())


def test_unreachable_exchange_is_not_sent(settings_env):
    async def go():
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        async with BinanceTradingClient(base_url=f"http://127.0.0.1:{port}/api", api_key="k",
                                        api_secret=CANARY_SECRET, timeout=1, read_retries=0) as c:
            res = await submit_order(c, symbol=SYM, side="BUY", order_type="MARKET", quantity="1",
                                     client_order_id="s7-n", max_sends=2)
            assert res.status == "rejected" and res.error.executed == "no" and res.sends == 2
    run(go())


def test_filter_balance_and_unknown_order_errors_are_typed(texchange):
    async def go():
        texchange.exchange.set_price(SYM, "50")
        async with trading_client(texchange) as c:
            res = await _buy(c, "s7-f", qty="0.0005")           # step 0.001
            assert res.status == "rejected" and isinstance(res.error, FilterFailure)
            assert "LOT_SIZE" in res.error.message
            res = await _buy(c, "s7-n", qty="0.05")             # 2.5 USDT < notional 5
            assert isinstance(res.error, FilterFailure) and "NOTIONAL" in res.error.message
            res = await _buy(c, "s7-b", qty="1000")             # 50,000 USDT > 10,000
            assert isinstance(res.error, InsufficientBalance) and res.error.code == -2010
            with pytest.raises(OrderNotFound):
                await c.cancel_order(symbol=SYM, client_order_id="s7-nothing")
            with pytest.raises(OrderRejected) as e:
                await c.symbol_info("NOPE$")
            assert e.value.code in (-1121, -1100)
    run(go())


@pytest.mark.parametrize("status, body, cls, code", [
    (400, '{"code":-1013,"msg":"Filter failure: LOT_SIZE"}', FilterFailure, -1013),
    (400, '{"code":-2010,"msg":"Account has insufficient balance for requested action."}', InsufficientBalance, -2010),
    (400, '{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}', ClockSkew, -1021),
    (400, '{"code":-1022,"msg":"Signature for this request is not valid."}', AuthFailed, -1022),
    (401, '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}', AuthFailed, -2015),
    (400, '{"code":-2013,"msg":"Order does not exist."}', OrderNotFound, -2013),
    (429, '{"code":-1003,"msg":"Too many requests"}', RateLimited, -1003),
    (418, '{"code":-1003,"msg":"banned"}', RateLimited, -1003),
    (503, "<html>busy</html>", OutcomeUnknown, None),
    (400, '{"code":-1121,"msg":"Invalid symbol."}', OrderRejected, -1121),
])
def test_classify(status, body, cls, code):
    err = classify(status, body, retry_after=3)
    assert type(err) is cls and err.code == code
    assert err.executed == ("unknown" if cls is OutcomeUnknown else "no")
    if cls is RateLimited:
        assert err.retry_after == 3


def test_error_texts_are_redacted(settings_env):
    err = classify(400, '{"code":-1100,"msg":"bad value %s"}' % CANARY_SECRET, secrets=(CANARY_SECRET,))
    assert CANARY_SECRET not in str(err) and "***" in str(err)
