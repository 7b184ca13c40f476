"""The dry-run exchange: fills at the next price, commissions as Binance charges
them, the real filters, balance checks, persistence across restarts; and the
shared matching rules on hand-computed cases."""

from __future__ import annotations

import pytest

from S7.exchange_client import FilterFailure, InsufficientBalance, OrderNotFound
from S7.matching import BookError, MatchingBook, filter_failure
from S7.simulator import SimulatedExchange
from tests.S7.helpers import D, make_filters, run

SYM = "TESTUSDT"


def _sim(**kw):
    return SimulatedExchange(make_filters(SYM), **kw)


def test_market_orders_fill_at_the_next_price_not_at_send():
    async def go():
        sim = _sim(balance=1000)
        sim.on_price(100, 1_000)
        r = await sim.new_order(symbol=SYM, side="BUY", type="MARKET", quantity="2", newClientOrderId="s7-1")
        assert r["status"] == "NEW" and r["fills"] == []
        assert sim.book.balance("USDT") == (D("800"), D("200"))      # reserved at the reference price
        trades = sim.on_price(101, 2_000)
        assert [(t["price"], t["qty"], t["commission"], t["commissionAsset"]) for t in trades] == [
            ("101.00000000", "2.00000000", "0.00200000", "TEST")]
        o = await sim.get_order(symbol=SYM, client_order_id="s7-1")
        assert o["status"] == "FILLED" and o["cummulativeQuoteQty"] == "202.00000000" and o["updateTime"] == 2_000
        assert sim.book.balance("USDT") == (D("798"), D("0")) and sim.book.balance("TEST") == (D("1.998"), D("0"))
        r = await sim.new_order(symbol=SYM, side="SELL", type="MARKET", quantity="1.998", newClientOrderId="s7-2")
        sim.on_price(110, 3_000)
        assert sim.book.balance("USDT")[0] == D("798") + D("219.78") - D("0.21978")
        assert [t["isBuyer"] for t in await sim.my_trades(symbol=SYM)] == [True, False]
    run(go())


def test_slippage_is_against_us_and_on_the_tick():
    async def go():
        sim = _sim(balance=1000, slippage_bps=10)
        sim.on_price(100, 1)
        await sim.new_order(symbol=SYM, side="BUY", type="MARKET", quantity="1", newClientOrderId="s7-1")
        assert sim.on_price(100.003, 2)[0]["price"] == "100.11000000"     # 100.103 rounded up to 0.01
        await sim.new_order(symbol=SYM, side="SELL", type="MARKET", quantity="0.999", newClientOrderId="s7-2")
        assert sim.on_price(100.003, 3)[0]["price"] == "99.90000000"      # 99.903 rounded down
    run(go())


def test_filters_and_balance_are_enforced_with_binance_codes():
    async def go():
        sim = _sim(balance=100)
        sim.on_price(100, 1)
        with pytest.raises(FilterFailure, match="LOT_SIZE"):
            await sim.new_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.0015")
        with pytest.raises(FilterFailure, match="NOTIONAL"):
            await sim.new_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.04")
        with pytest.raises(InsufficientBalance):
            await sim.new_order(symbol=SYM, side="BUY", type="MARKET", quantity="2")
        with pytest.raises(InsufficientBalance):
            await sim.new_order(symbol=SYM, side="SELL", type="MARKET", quantity="1")
        with pytest.raises(OrderNotFound):
            await sim.cancel_order(symbol=SYM, client_order_id="nope")
        assert await sim.get_order(symbol=SYM, client_order_id="nope") is None
    run(go())


def test_a_buy_the_cash_no_longer_covers_fills_partly_and_expires():
    async def go():
        sim = _sim(balance=100)
        sim.on_price(50, 1)
        await sim.new_order(symbol=SYM, side="BUY", type="MARKET", quantity="2", newClientOrderId="s7-1")
        sim.on_price(80, 2)                                   # the price jumped: 100 USDT buys 1.25
        o = await sim.get_order(symbol=SYM, client_order_id="s7-1")
        assert o["status"] == "EXPIRED" and o["executedQty"] == "1.25000000"
        assert sim.book.balance("USDT") == (D("0"), D("0"))
    run(go())


def test_the_account_survives_a_restart(tmp_path):
    async def go():
        f = tmp_path / "sim.json"
        sim = _sim(balance=1000, state_file=f)
        sim.on_price(100, 1)
        await sim.new_order(symbol=SYM, side="BUY", type="MARKET", quantity="1", newClientOrderId="s7-1")
        again = _sim(balance=5, state_file=f)                 # the saved account wins over --balance
        assert again.restored and (await again.open_orders(symbol=SYM))[0]["clientOrderId"] == "s7-1"
        again.on_price(100, 2)
        assert (await again.get_order(symbol=SYM, client_order_id="s7-1"))["status"] == "FILLED"
        third = _sim(state_file=f)
        assert third.book.balance("TEST")[0] == D("0.999") and third.now_ms == 2
        f.write_text("{not json")
        from S1.errors import UserError

        with pytest.raises(UserError, match="unreadable"):
            _sim(state_file=f)
    run(go())


@pytest.mark.parametrize("otype, qty, price, ref, expected", [
    ("LIMIT", "1", "100.005", None, "PRICE_FILTER"),     # off the 0.01 tick
    ("LIMIT", "1", "0.001", None, "PRICE_FILTER"),       # below minPrice
    ("LIMIT", "1.0005", "100", None, "LOT_SIZE"),        # off the 0.001 step
    ("LIMIT", "0", "100", None, "LOT_SIZE"),
    ("LIMIT", "200000", "1", None, "LOT_SIZE"),          # above maxQty
    ("LIMIT", "0.049", "100", None, "NOTIONAL"),         # 4.9 < 5
    ("LIMIT", "0.05", "100", None, None),                # exactly 5: passes
    ("MARKET", "0.049", None, "100", "NOTIONAL"),        # market: reference price
    ("MARKET", "1", None, "100", None),
])
def test_filter_failure_cases(otype, qty, price, ref, expected):
    f = make_filters(SYM)
    got = filter_failure(f, order_type=otype, qty=D(qty), price=D(price) if price else None,
                         ref_price=D(ref) if ref else None)
    assert got == expected


def test_filters_of_real_symbols(shared_dir):
    """Cases from the real exchangeInfo capture: BTCUSDT (MIN_NOTIONAL 10, step 1e-5) and a
    tiny-price pair (ADABTC, tick 1e-8)."""
    import json

    from S6.filters import symbol_filters

    info = json.loads((shared_dir / "data/api/rest_exchangeInfo_2021-10-12.json").read_text())
    btc = symbol_filters(info, "BTCUSDT")
    assert filter_failure(btc, order_type="MARKET", qty=D("0.00024"), price=None, ref_price=D("43000")) is None
    assert filter_failure(btc, order_type="MARKET", qty=D("0.00024"), price=None, ref_price=D("40000")) == "MIN_NOTIONAL"
    assert filter_failure(btc, order_type="MARKET", qty=D("0.000241"), price=None, ref_price=D("43000")) == "LOT_SIZE"
    ada = symbol_filters(info, "ADABTC")
    assert filter_failure(ada, order_type="LIMIT", qty=D(str(ada.min_qty * 1000)), price=D("0.00002812"),
                          ref_price=None) is None
    assert filter_failure(ada, order_type="LIMIT", qty=D(str(ada.min_qty * 1000)), price=D("0.000028125"),
                          ref_price=None) == "PRICE_FILTER"


def test_book_errors_carry_binance_codes():
    book = MatchingBook(filters={SYM: make_filters(SYM)}, balances={"USDT": "10"}, price_of=lambda s: D("1"))
    for params, code in [({"side": "BUY"}, -1102), ({"symbol": "NOPE", "side": "BUY"}, -1121),
                         ({"symbol": SYM, "side": "HOLD", "type": "MARKET", "quantity": "1"}, -1117),
                         ({"symbol": SYM, "side": "BUY", "type": "STOP", "quantity": "1"}, -1116),
                         ({"symbol": SYM, "side": "BUY", "type": "MARKET", "quantity": "1e3"}, -1100),
                         ({"symbol": SYM, "side": "BUY", "type": "LIMIT", "quantity": "1", "price": "1"}, -1102),
                         ({"symbol": SYM, "side": "BUY", "type": "MARKET", "quantity": "6",
                           "newClientOrderId": "bad id!"}, -1100)]:
        with pytest.raises(BookError) as e:
            book.new_order(params)
        assert e.value.code == code, params
