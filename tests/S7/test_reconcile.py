"""Reconciliation against the local test exchange: what is ours and what is not,
fills the store missed, balances below the tracked position, and what it says."""

from __future__ import annotations

from decimal import Decimal

from S7.exchange_client import submit_order
from S7.orders import client_order_id
from tests.S7.helpers import build_rig, run, trading_client

SYM = "TESTUSDT"


def test_reconcile_sorts_ours_from_theirs_and_books_missed_fills(texchange, tmp_path):
    async def go():
        ex = texchange.exchange
        ex.set_price(SYM, "50")
        async with trading_client(texchange) as c:
            rig = await build_rig(tmp_path, venue=c, symbol=SYM, start=False)
            # someone else's resting order and trade on the same account
            await c.new_order(symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC", quantity="1", price="40",
                              newClientOrderId="web_manual_1")
            await submit_order(c, symbol=SYM, side="BUY", order_type="MARKET", quantity="3",
                               client_order_id="web_manual_2")
            # one of ours left open (a LIMIT from an older version, say) ...
            stale = client_order_id(symbol=SYM, interval="1m", candle_open_ms=1, side="BUY", strategy="t1")
            rig.store.insert_order(stale, symbol=SYM, side="BUY", type="LIMIT", quantity="1", status="NEW")
            await c.new_order(symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC", quantity="1", price="41",
                              newClientOrderId=stale)
            # ... and one of ours that filled while the store recorded only its acceptance
            done = client_order_id(symbol=SYM, interval="1m", candle_open_ms=2, side="BUY", strategy="t1")
            res = await submit_order(c, symbol=SYM, side="BUY", order_type="MARKET", quantity="2",
                                     client_order_id=done)
            rig.store.insert_order(done, symbol=SYM, side="BUY", type="MARKET", quantity="2", status="FILLED",
                                   exchange_order_id=res.order["orderId"])
            rep = await rig.engine.start()
            assert rep.ok and rep.open_foreign == 1 and rep.cancelled == [stale] and rep.open_ours == [stale]
            assert rep.fills_applied == 1 and rep.fills_foreign == 1
            assert rig.store.get_order(stale)["status"] == "CANCELED"
            assert [o["clientOrderId"] for o in await c.open_orders(symbol=SYM)] == ["web_manual_1"]
            assert rig.store.position(SYM).qty == Decimal("1.998")
            assert any("more than the strategy's position" in n for n in rep.notes)   # web_manual_2's TEST
            text = "\n".join(rep.lines("TEST", "USDT"))
            assert "1 ours (1 cancelled), 1 not ours (left alone)" in text
            assert "fills: 1 of ours applied from the exchange, 1 of other orders ignored" in text
            # a second pass finds nothing new
            rep2 = await rig.engine.reconcile("reconnect")
            assert rep2.fills_applied == 0 and rep2.cancelled == [] and rig.store.position(SYM).qty == Decimal("1.998")
    run(go())


def test_less_base_asset_than_the_position_lowers_it(texchange, tmp_path):
    async def go():
        ex = texchange.exchange
        ex.set_price(SYM, "50")
        async with trading_client(texchange) as c:
            rig = await build_rig(tmp_path, venue=c, symbol=SYM)
            cid = client_order_id(symbol=SYM, interval="1m", candle_open_ms=3, side="BUY", strategy="t1")
            rig.store.insert_order(cid, symbol=SYM, side="BUY", type="MARKET", quantity="4", status="INTENT")
            res = await submit_order(c, symbol=SYM, side="BUY", order_type="MARKET", quantity="4", client_order_id=cid)
            rig.engine.ledger.order_response(res.order)
            assert rig.store.position(SYM).qty == Decimal("3.996")
            ex.book.free["TEST"] = Decimal("1.5")        # sold by hand on the exchange's website
            rep = await rig.engine.reconcile("reconnect")
            assert rig.store.position(SYM).qty == Decimal("1.5")
            assert any("less than the tracked position" in n for n in rep.notes)
            ex.book.free["TEST"] = Decimal("0")          # a testnet reset
            await rig.engine.reconcile("reconnect")
            assert not rig.store.position(SYM).is_open
    run(go())
