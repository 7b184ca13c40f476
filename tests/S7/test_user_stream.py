"""The user-data stream (S7/user_stream.py, engine hooks) against the local test exchange's
WebSocket API (S7/local/user_stream.py): real sockets, real signatures, real event layouts.

- a resting LIMIT order filled in three parts is booked from events within a bounded time,
  with **no** REST request in between (and the same flow without the stream does poll);
- the same fills reported by REST answers, lookups, reconciliation and the stream (events
  replayed twice, delayed events, events before the answer) are booked once;
- the stream dropped (connections refused) while the order fills: reconnect with backoff,
  then the REST re-read books exactly what was missed; the rest comes by events;
- the subscription terminated (``eventStreamTerminated``, the WebSocket API's key expiry):
  resubscribed on the same connection, the gap re-read over REST;
- the secret, the API key and the subscription signatures never reach the logs, the order
  log or the state; a wrong secret stops the stream with one line (-1022), no retry storm.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time

import aiohttp
import numpy as np
import pytest

from S7.limit_orders import LimitPolicy
from S7.local.user_stream import SUBSCRIBE
from S7.orders import Fill, OrderState
from tests.S7.helpers import (
    API_KEY,
    CANARY_SECRET,
    D,
    attach_stream,
    build_rig,
    candles,
    run,
    trading_client,
    wait_until,
    warm_closes,
)

SYM = "TESTUSDT"
WARM = warm_closes(80, 90.0)
QTY = D("8.333")          # 10 % of 10,000 USDT at the signal close 120, on the 0.001 step
LIMIT_BUY = D("119.88")   # 120 * (1 - 10 bps)


def now_ms() -> int:
    return int(time.time() * 1000)


async def _rig(env, tmp, *, limit=True, stream=True, market="120.5", **skw):
    """An engine (LIMIT 10 bps below the close unless ``limit=False``) with the stream attached,
    then the entry candle: a BUY of 8.333 rests at 119.88 (LIMIT) or fills at ``market`` (MARKET)."""
    t0 = now_ms()
    df = candles(np.r_[WARM, 120.0, 121.0], end_ms=t0 + 120_000)
    env.exchange.set_price(SYM, market)
    c = trading_client(env)
    lim = LimitPolicy(offset_bps=10, timeout_candles=5, poll_s=0) if limit else None
    rig = await build_rig(tmp, venue=c, symbol=SYM, limit=lim)
    rig.client = c
    rig.stream = await attach_stream(env, rig.engine, c, **skw) if stream else None
    if stream:
        assert rig.stream.healthy and rig.engine.stream_live
    n = len(df) - 1
    rig.engine.seed(df.iloc[:n - 1])
    rig.decision = await rig.engine.on_candle(df.iloc[n - 1:n])
    assert rig.decision.action == "buy"
    return rig


async def _close(rig):
    if rig.stream is not None:
        await rig.stream.close()
    await rig.client.close_connection()
    rig.store.close()


def _executed(rig, cid) -> D:
    return D(rig.store.get_order(cid)["executed_qty"])


def _fill_events(rig):
    return [e for e in rig.events() if e["event"] == "fill"]


# ---------------------------------------------------------------- booked from events
@pytest.mark.parametrize("with_stream", [True, False])
def test_partial_fills_are_booked_from_events_without_polling(texchange, tmp_path, with_stream):
    async def go():
        rig = await _rig(texchange, tmp_path, stream=with_stream)
        eng, cid, ex = rig.engine, rig.decision.client_order_id, texchange.exchange
        try:
            assert rig.store.get_order(cid)["status"] == "NEW"
            if with_stream:   # the order's own NEW event (and its balance change) came through
                await wait_until(lambda: rig.stream.stats["events"] >= 2)
            n0 = len(ex.requests)
            seen_events = []  # stream events the engine had taken when each part was booked
            for px, qty, total in (("119.8", "3", D(3)), ("119.7", "2", D(5)), ("119.6", None, QTY)):
                ex.set_price(SYM, px, qty=qty)
                await eng.on_price(float(px), now_ms())     # a price event, as the session feeds them
                await wait_until(lambda: _executed(rig, cid) == total, timeout=30.0)
                seen_events.append(eng.stats.get("stream_events", 0))
            row = rig.store.get_order(cid)
            assert row["status"] == "FILLED"
            fills = rig.store.fills(SYM)
            assert [(D(f["qty"]), D(f["price"])) for f in fills] == [(D(3), LIMIT_BUY), (D(2), LIMIT_BUY),
                                                                   (QTY - 5, LIMIT_BUY)]
            assert rig.store.position(SYM).qty == QTY * D("0.999")
            assert len(_fill_events(rig)) == 3
            assert eng.limits.record() is None
            lookups = [r for r in ex.requests[n0:] if r.path in ("/api/v3/order", "/api/v3/myTrades")]
            if with_stream:
                assert ex.requests[n0:] == []                     # not one REST request: no polling
                assert seen_events == sorted(set(seen_events))    # each part booked on a new stream event
                assert eng.stats["stream_events"] >= 4            # NEW + three TRADEs
                # balances came from outboundAccountPosition, equal to the exchange's
                assert eng.balances["USDT"] == ex.book.balance("USDT")
                assert eng.balances["TEST"] == ex.book.balance("TEST")
            else:
                assert len(lookups) >= 3                          # without the stream: lookups
        finally:
            await _close(rig)
    run(go())


# ------------------------------------------------------------------ booked once
def test_rest_answer_and_delayed_events_of_a_market_order_are_booked_once(texchange, tmp_path):
    async def go():
        texchange.exchange.user_stream.delay = 0.3       # the events arrive after the REST answer
        rig = await _rig(texchange, tmp_path, limit=False)
        eng, cid = rig.engine, rig.decision.client_order_id
        seen: list[dict] = []
        orig = eng.on_user_event

        async def record(ev):
            seen.append(ev)
            await orig(ev)
        rig.stream.on_event = record
        try:
            row = rig.store.get_order(cid)
            assert row["status"] == "FILLED" and len(rig.store.fills(SYM)) == 1   # from the FULL answer
            await wait_until(lambda: any(e.get("x") == "TRADE" for e in seen), timeout=30.0)
            await wait_until(lambda: any(e.get("X") == "FILLED" for e in seen), timeout=30.0)
            assert any(e.get("X") == "FILLED" for e in seen)
            pos = rig.store.position(SYM)
            assert len(rig.store.fills(SYM)) == 1 and len(_fill_events(rig)) == 1
            assert pos.qty == QTY * D("0.999")
            # every event once more, plus a full REST reconciliation: nothing changes
            lines = len(rig.events())
            for ev in seen:
                await orig(ev)
            await eng.reconcile("test")
            assert len(rig.store.fills(SYM)) == 1 and len(rig.events()) == lines
            assert rig.store.position(SYM) == pos
            assert rig.store.get_order(cid)["status"] == "FILLED"
        finally:
            await _close(rig)
    run(go())


def test_events_before_the_rest_lookup_are_booked_once(texchange, tmp_path):
    """Events book a partial fill first; a late event of an older state, a lookup and a
    reconciliation then report the same trades: booked once, the state never goes back."""
    async def go():
        rig = await _rig(texchange, tmp_path)
        eng, cid, ex = rig.engine, rig.decision.client_order_id, texchange.exchange
        try:
            ex.set_price(SYM, "119.8", qty="3")
            await wait_until(lambda: _executed(rig, cid) == 3)
            ex.set_price(SYM, "119.6")
            await wait_until(lambda: rig.store.get_order(cid)["status"] == "FILLED")
            before = (rig.store.fills(SYM), rig.store.position(SYM), len(rig.events()))
            stale = {"e": "executionReport", "s": SYM, "c": cid, "S": "BUY", "o": "LIMIT", "q": "8.333",
                     "p": "119.88", "x": "TRADE", "X": "PARTIALLY_FILLED", "i": rig.store.get_order(cid)[
                         "exchange_order_id"], "l": "3", "z": "3", "L": "119.88", "n": "0.003", "N": "TEST",
                     "T": now_ms(), "t": int(before[0][0]["trade_id"]), "Z": "359.64"}
            await eng.on_user_event(stale)                     # an old event arriving late
            await eng.sync_orders(all_orders=True)             # a REST lookup of the same order
            await eng.reconcile("test")                        # myTrades of the account
            assert rig.store.get_order(cid)["status"] == "FILLED"
            assert rig.store.fills(SYM) == before[0] and rig.store.position(SYM) == before[1]
            assert len(rig.events()) == before[2]
        finally:
            await _close(rig)
    run(go())


# --------------------------------------------------------------- drop and expiry
def test_stream_dropped_during_a_fill_is_reconciled_exactly(texchange, tmp_path):
    async def go():
        rig = await _rig(texchange, tmp_path)
        eng, cid, ex, us = rig.engine, rig.decision.client_order_id, texchange.exchange, \
            texchange.exchange.user_stream
        try:
            await asyncio.to_thread(us.drop, refuse=True)        # connection reset, reconnects refused
            await wait_until(lambda: not rig.stream.healthy)
            assert not eng.stream_live
            lost = us.events_lost
            ex.set_price(SYM, "119.8", qty="3")                  # fills while nobody listens
            await wait_until(lambda: us.events_lost > lost)     # the exchange had nobody to tell
            await wait_until(lambda: us.refused >= 2)            # the client keeps trying (backoff)
            assert _executed(rig, cid) == 0 and not rig.store.fills(SYM)
            resyncs = rig.stream.stats["resyncs"]
            us.allow()
            await wait_until(lambda: rig.stream.stats["resyncs"] > resyncs, timeout=30.0)
            row = rig.store.get_order(cid)
            assert row["status"] == "PARTIALLY_FILLED" and D(row["executed_qty"]) == 3
            assert len(rig.store.fills(SYM)) == 1 and rig.stream.healthy
            n0 = len(ex.requests)
            ex.set_price(SYM, "119.6")                           # the rest comes by events again
            await wait_until(lambda: rig.store.get_order(cid)["status"] == "FILLED")
            assert ex.requests[n0:] == []
            fills = rig.store.fills(SYM)
            assert [D(f["qty"]) for f in fills] == [D(3), QTY - 3]
            assert len({f["trade_id"] for f in fills}) == 2 and len(_fill_events(rig)) == 2
            assert rig.store.position(SYM).qty == QTY * D("0.999")
            assert rig.stream.stats["drops"] >= 1 and rig.stream.stats["backoff_waits"] >= 2
            assert rig.stream.stats["subscribed"] == 2
        finally:
            await _close(rig)
    run(go())


def test_subscription_expiry_resubscribes_and_rereads_the_gap(texchange, tmp_path):
    async def go():
        rig = await _rig(texchange, tmp_path)
        eng, cid, ex, us = rig.engine, rig.decision.client_order_id, texchange.exchange, \
            texchange.exchange.user_stream
        try:
            connections = us.connections

            def expire_then_fill():   # the fill lands right after the termination, before any resubscription
                us.expire()
                ex.set_price(SYM, "119.8", qty="3")
            await asyncio.to_thread(expire_then_fill)
            await wait_until(lambda: rig.stream.stats["terminated"] == 1 and rig.stream.stats["resyncs"] >= 2)
            assert len(us.subscribe_requests()) == 2 and us.connections == connections   # same connection
            await wait_until(lambda: _executed(rig, cid) == 3)
            assert len(rig.store.fills(SYM)) == 1
            n0 = len(ex.requests)
            ex.set_price(SYM, "119.6")
            await wait_until(lambda: rig.store.get_order(cid)["status"] == "FILLED")
            assert ex.requests[n0:] == []                         # after the resubscription: events again
            assert [D(f["qty"]) for f in rig.store.fills(SYM)] == [D(3), QTY - 3]
            assert rig.store.position(SYM).qty == QTY * D("0.999")
        finally:
            await _close(rig)
    run(go())


# --------------------------------------------------------------------- secrets
def test_no_secret_key_or_signature_in_logs_and_a_wrong_secret_stops_the_stream(texchange, tmp_path, caplog):
    async def go():
        from S7.user_stream import UserDataStream

        rig = await _rig(texchange, tmp_path)
        us = texchange.exchange.user_stream
        try:
            await asyncio.to_thread(us.expire)
            await wait_until(lambda: rig.stream.stats["resyncs"] >= 2)
            await asyncio.to_thread(us.drop)
            await wait_until(lambda: rig.stream.stats["resyncs"] >= 3, timeout=30.0)
            # a wrong secret: one error line (-1022), the stream stops, no retry
            got: list = []

            async def keep(ev):
                got.append(ev)
            bad = UserDataStream(url=us.url, api_key=API_KEY, api_secret="wrong-" + CANARY_SECRET,
                                 on_event=keep, backoff_initial=0.01, backoff_max=0.02)
            assert await bad.start(wait=0.5) is False
            await wait_until(lambda: bad.stopped_reason is not None, timeout=30.0)  # refused, gave up
            assert "-1022" in bad.stopped_reason and bad.stats["connects"] == 1 and not bad.healthy
            assert CANARY_SECRET not in repr(bad) and API_KEY not in repr(rig.stream)
            await bad.close()
        finally:
            await _close(rig)
    with caplog.at_level(logging.DEBUG):
        run(go())
    us = texchange.exchange.user_stream
    sigs = us.signatures_seen
    assert len(sigs) >= 4 and len(us.subscribe_requests(ok=False)) == 1
    text = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert "refused (-1022" in caplog.text
    stored = (tmp_path / "orders.jsonl").read_text() + (tmp_path / "state.db").read_bytes().decode("latin-1")
    for secret in (CANARY_SECRET, *sigs):
        assert secret not in text and secret not in stored


# ------------------------------------------------------------- the server itself
def _signed(params: dict, secret: str = CANARY_SECRET) -> dict:
    payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return {**params, "signature": hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()}


async def _ask(ws, method: str, params: dict | None = None, rid: str = "r1") -> dict:
    await ws.send_str(json.dumps({"id": rid, "method": method, **({"params": params} if params else {})}))
    while True:
        data = json.loads((await ws.receive(timeout=3)).data)
        if data.get("id") == rid:
            return data


async def _next_event(ws, kind: str) -> dict:
    while True:
        data = json.loads((await ws.receive(timeout=3)).data)
        if "event" in data and data["event"]["e"] == kind:
            return data


def test_test_exchange_serves_the_ws_api_user_data_stream(texchange):
    """Independent of the executor's client: raw WebSocket frames and our own HMAC."""
    async def go():
        ex, us = texchange.exchange, texchange.exchange.user_stream
        ex.set_price(SYM, "100")
        ts = now_ms()
        async with aiohttp.ClientSession() as s, s.ws_connect(us.url) as ws:
            cases = [({"apiKey": "nope", "timestamp": ts}, 401, -2015),
                     ({"apiKey": API_KEY, "timestamp": ts}, 400, -1022),           # signed with another secret
                     ({"apiKey": API_KEY, "timestamp": ts - 60_000}, 400, -1021),
                     ({"apiKey": API_KEY}, 400, -1102)]
            for i, (p, status, code) in enumerate(cases):
                secret = "other" if code == -1022 else CANARY_SECRET
                r = await _ask(ws, SUBSCRIBE, _signed(p, secret) if code != -1102 else p, rid=f"bad{i}")
                assert (r["status"], r["error"]["code"]) == (status, code)
            r = await _ask(ws, SUBSCRIBE, _signed({"apiKey": API_KEY, "timestamp": now_ms(), "recvWindow": 5000}))
            assert r["status"] == 200 and isinstance(r["result"]["subscriptionId"], int)
            sid = r["result"]["subscriptionId"]
            assert (await _ask(ws, "session.subscriptions", rid="s"))["result"] == [{"subscriptionId": sid}]

            c = trading_client(texchange)
            try:
                await c.new_order(symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC", quantity="1",
                                  price="99", newClientOrderId="ws-1")
                new = await _next_event(ws, "executionReport")
                assert new["subscriptionId"] == sid
                e = new["event"]
                assert (e["x"], e["X"], e["c"], e["i"], e["t"]) == ("NEW", "NEW", "ws-1", e["i"], -1)
                acct = (await _next_event(ws, "outboundAccountPosition"))["event"]
                assert {b["a"]: (D(b["f"]), D(b["l"])) for b in acct["B"]}["USDT"] == ex.book.balance("USDT")
                ex.set_price(SYM, "98.5", qty="0.4")
                tr = (await _next_event(ws, "executionReport"))["event"]
                f = Fill.from_execution_report(tr)
                assert (tr["x"], tr["X"], tr["z"]) == ("TRADE", "PARTIALLY_FILLED", "0.40000000")
                assert f.qty == D("0.4") and f.price == D(99) and f.trade_id == ex.book.trades[-1]["id"] and tr["m"]
                await c.cancel_order(symbol=SYM, client_order_id="ws-1")
                cx = (await _next_event(ws, "executionReport"))["event"]
                st = OrderState.from_execution_report(cx)
                assert (cx["x"], cx["C"], st.client_order_id, st.executed_qty) == ("CANCELED", "ws-1", "ws-1",
                                                                                    D("0.4"))
                assert cx["c"] != "ws-1"                            # the cancel's own id, as on Binance
            finally:
                await c.close_connection()
            ex.deposit("USDT", "5")
            bu = (await _next_event(ws, "balanceUpdate"))["event"]
            assert (bu["a"], D(bu["d"])) == ("USDT", D(5))
            await asyncio.to_thread(us.expire)
            end = await _next_event(ws, "eventStreamTerminated")
            assert end["subscriptionId"] == sid and us.subscriptions() == 0
    run(go())


def test_execution_reports_have_the_real_payload_layout(texchange, shared_dir):
    """Every field of the real captured ``executionReport`` payloads is in the test exchange's."""
    async def go():
        ex, us = texchange.exchange, texchange.exchange.user_stream
        ex.set_price(SYM, "100")
        async with aiohttp.ClientSession() as s, s.ws_connect(us.url) as ws:
            r = await _ask(ws, SUBSCRIBE, _signed({"apiKey": API_KEY, "timestamp": now_ms()}))
            assert r["status"] == 200
            c = trading_client(texchange)
            try:
                await c.new_order(symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC", quantity="1",
                                  price="99", newClientOrderId="ws-2")
                ex.set_price(SYM, "99", qty="0.5")
                await c.cancel_order(symbol=SYM, client_order_id="ws-2")
            finally:
                await c.close_connection()
            ours = {}
            while len(ours) < 3:
                e = (await _next_event(ws, "executionReport"))["event"]
                ours[e["x"]] = e
        for name, x in (("new", "NEW"), ("trade", "TRADE"), ("canceled", "CANCELED")):
            real = json.loads((shared_dir / f"data/api/ws_spot_execution_report_{name}.json").read_text())["data"]
            assert set(real) <= set(ours[x]), set(real) - set(ours[x])
            for k in real:
                assert type(ours[x][k]) is type(real[k]) or real[k] is None or ours[x][k] is None, k
    run(go())
