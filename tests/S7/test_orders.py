"""Client order ids and the parsing of real Binance order payloads (user-data
``executionReport`` events from ../shared, REST order answers)."""

from __future__ import annotations

import doctest
import json
from decimal import Decimal

import pytest

import S7.config
import S7.ledger
import S7.matching
import S7.order_log
import S7.orders
import S7.simulator
import S7.store
from S7.orders import CLIENT_ID_RE, Fill, OrderState, client_order_id, is_ours


@pytest.mark.parametrize("mod", [S7.orders, S7.matching, S7.store, S7.order_log, S7.ledger, S7.simulator,
                                 S7.config])
def test_docstring_examples(mod, settings_env):
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


def test_client_ids_are_deterministic_valid_and_distinct():
    base = dict(symbol="BTCUSDT", interval="1m", candle_open_ms=1_700_000_000_000, side="BUY", strategy="abc")
    a = client_order_id(**base)
    assert a == client_order_id(**{**base, "symbol": "btcusdt", "side": "buy"})
    assert CLIENT_ID_RE.match(a) and len(a) <= 36 and is_ours(a)
    others = {client_order_id(**{**base, k: v}) for k, v in [("symbol", "ETHUSDT"), ("interval", "5m"),
                                                              ("candle_open_ms", 1_700_000_060_000),
                                                              ("side", "SELL"), ("strategy", "abd")]}
    assert len(others) == 5 and a not in others
    with pytest.raises(ValueError):
        client_order_id(**{**base, "side": "HOLD"})


def _report(shared_dir, name):
    return json.loads((shared_dir / f"data/api/ws_spot_execution_report_{name}.json").read_text())


def test_real_execution_reports(shared_dir):
    new = _report(shared_dir, "new")
    s = OrderState.from_execution_report(new)
    assert (s.symbol, s.client_order_id, s.order_id, s.status, s.orig_qty) == (
        "ETHUSDT", "O-12345-test-new", 1234567890, "NEW", Decimal("1"))
    assert Fill.from_execution_report(new) is None

    trade = _report(shared_dir, "trade")
    s = OrderState.from_execution_report(trade)
    f = Fill.from_execution_report(trade)
    assert s.status == "PARTIALLY_FILLED" and s.executed_qty == Decimal("0.5") and s.avg_price == Decimal("2499.5")
    assert (f.trade_id, f.qty, f.price, f.commission, f.commission_asset, f.is_maker) == (
        98765432, Decimal("0.5"), Decimal("2499.5"), Decimal("0.0005"), "ETH", True)

    quirk = _report(shared_dir, "trade_l_zero_partial")       # x=TRADE but l=0: no execution to book
    assert Fill.from_execution_report(quirk) is None
    assert OrderState.from_execution_report(quirk).executed_qty == Decimal("0.5")

    cancel = _report(shared_dir, "canceled")
    s = OrderState.from_execution_report(cancel)
    assert s.status == "CANCELED" and s.client_order_id == "O-12345-test-cancel" and s.executed_qty == Decimal("0.1")
    exp = OrderState.from_execution_report(_report(shared_dir, "expired"))
    assert exp.status == "EXPIRED" and exp.is_final and exp.avg_price is None


def test_execution_reports_update_the_ledger(shared_dir, tmp_path):
    from S7.ledger import Ledger
    from S7.order_log import OrderLog, read_order_log
    from S7.store import ExecutorStore

    store = ExecutorStore(tmp_path / "s.db")
    led = Ledger(store, OrderLog(tmp_path / "o.jsonl", mode="test"), symbol="ETHUSDT", interval="1m",
                 base_asset="ETH", quote_asset="USDT", min_tradable=lambda p: Decimal("0.0001"))
    store.insert_order("O-12345-test-trade", symbol="ETHUSDT", side="BUY", type="LIMIT", quantity="1", status="NEW")
    trade = _report(shared_dir, "trade")
    for _ in range(2):                                        # a redelivered event is booked once
        led.execution_report(trade)
    assert store.position("ETHUSDT").qty == Decimal("0.4995")
    assert len(store.fills("ETHUSDT")) == 1
    assert [e["status"] for e in read_order_log(tmp_path / "o.jsonl")] == ["PARTIALLY_FILLED", "FILL"]
    # an event about an order that is not ours changes nothing
    st, res = led.execution_report(_report(shared_dir, "new"))
    assert res is None and store.get_order("O-12345-test-new") is None


def test_rest_order_answers():
    full = {"symbol": "BTCUSDT", "orderId": 28, "orderListId": -1, "clientOrderId": "s7-x", "transactTime": 1507725176595,
            "price": "0.00000000", "origQty": "10.00000000", "executedQty": "10.00000000",
            "cummulativeQuoteQty": "10.00000000", "status": "FILLED", "timeInForce": "GTC", "type": "MARKET",
            "side": "SELL", "fills": [{"price": "4000.00000000", "qty": "1.00000000", "commission": "4.00000000",
                                       "commissionAsset": "USDT", "tradeId": 56},
                                      {"price": "3999.00000000", "qty": "5.00000000", "commission": "19.99500000",
                                       "commissionAsset": "USDT", "tradeId": 57}]}
    s = OrderState.from_rest(full)
    fills = Fill.from_order_response(full)
    assert s.is_final and [f.trade_id for f in fills] == [56, 57] and fills[1].quote_qty == Decimal("19995")
    cancel = {**full, "status": "CANCELED", "clientOrderId": "cancel-req-1", "origClientOrderId": "s7-x"}
    assert OrderState.from_rest(cancel).client_order_id == "s7-x"
