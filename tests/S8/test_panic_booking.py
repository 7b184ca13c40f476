"""The S8 panic sale is booked like any executor exit (S8/actions.py ``flatten_market``): the SELL goes
through S7's order recording (store + order log), so the executor's fills, trades and round trips include
it -- on the dry-run account file and on the local test exchange (real signed requests)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

API_KEY, SECRET = "s8-panic-test-key", "s8-panic-test-secret-0001"
SYMBOL = "BTCUSDT"


@pytest.fixture
def exchange(settings_env, monkeypatch):
    from S1.local.exchange import LocalBinance
    from S1.settings import get_settings
    from S7.local.exchange import BinanceTestExchange

    server = LocalBinance(simulate=True, simulate_days=3)
    ex = BinanceTestExchange(server, api_key=API_KEY, api_secret=SECRET, balances={"USDT": "10000"})
    server.start()
    monkeypatch.setenv("BINANCE_API_URL", server.api_url)
    monkeypatch.setenv("BINANCE_TESTNET_API_URL", server.api_url)
    monkeypatch.setenv("BINANCE_TESTNET_API_KEY", API_KEY)
    monkeypatch.setenv("BINANCE_TESTNET_API_SECRET", SECRET)
    get_settings.cache_clear()
    try:
        yield ex
    finally:
        server.stop()
        get_settings.cache_clear()


def _write_last_candle(db, price: float, open_ms: int) -> None:
    from S1.stream_store import KlineStore

    store = KlineStore(db, checkpoint_every_s=None)
    try:
        store.write([(SYMBOL, "1m", open_ms, open_ms + 59_999, price, price, price, price, 1.0, price, 0.5,
                      price / 2, 1, 1)])
    finally:
        store.close()


async def _enter(venue, m, paths, filters, qty: str, price: float, t_ms: int) -> None:
    """An entry recorded the way the executor records one (intent, answer, fills)."""
    from S1.datasets import orders_log_path
    from S7.exchange_client import submit_order
    from S7.ledger import Ledger
    from S7.order_log import OrderLog
    from S7.orders import Fill
    from S7.session import _min_tradable
    from S7.store import ExecutorStore

    paths["state"].parent.mkdir(parents=True, exist_ok=True)
    store = ExecutorStore(paths["state"])
    try:
        ledger = Ledger(store, OrderLog(orders_log_path(), mode=m.mode), symbol=SYMBOL, interval=m.interval,
                        base_asset=filters.base_asset, quote_asset=filters.quote_asset,
                        min_tradable=_min_tradable(filters))
        cid = "s7-test-entry-0001"
        store.insert_order(cid, symbol=SYMBOL, interval=m.interval, side="BUY", type="MARKET", quantity=qty,
                           status="INTENT", reason="entry:test")
        res = await submit_order(venue, symbol=SYMBOL, side="BUY", order_type="MARKET", quantity=qty,
                                 client_order_id=cid)
        assert res.status == "accepted", res
        order = res.order
        if m.mode == "dry-run":
            venue.on_price(price, t_ms + 1)
            order = await venue.get_order(symbol=SYMBOL, client_order_id=cid)
        state, _ = ledger.order_response(order)
        if not store.fills(SYMBOL):
            for t in await venue.my_trades(symbol=SYMBOL, order_id=state.order_id):
                ledger.fill(Fill.from_my_trade(t, client_order_id=cid))
        assert store.position(SYMBOL).is_open
    finally:
        store.close()


@pytest.mark.parametrize("mode", ["dry-run", "testnet"])
def test_panic_sale_is_a_booked_round_trip(exchange, settings_env, tmp_path, mode):
    from S1.datasets import orders_log_path
    from S1.settings import get_settings
    from S7.order_log import read_order_log
    from S7.store import ExecutorStore
    from S8.actions import _close_venue, _open_venue, flatten_market, market_paths
    from S8.config import Market

    settings = get_settings()
    m = Market(symbol=SYMBOL, interval="1m", mode=mode)
    paths = market_paths(m, interval_db=tmp_path / "rt.db")
    price, t_ms = 30_000.0, 1_700_000_000_000
    _write_last_candle(paths["db"], price, t_ms)
    exchange.set_price(SYMBOL, price)

    async def setup():
        venue, filters = await _open_venue(m, paths, settings)
        try:
            await _enter(venue, m, paths, filters, "0.05", price, t_ms)
        finally:
            await _close_venue(venue)

    asyncio.run(setup())
    exchange.set_price(SYMBOL, price * 1.01)
    out = asyncio.run(flatten_market(m, paths, settings, generation=7))
    assert not out["errors"], out
    assert Decimal(out["sold"]) > 0
    store = ExecutorStore.open_readonly(paths["state"])
    try:
        assert not store.position(SYMBOL).is_open
        trips = store.round_trips(SYMBOL)
        assert len(trips) == 1, trips
        assert trips[0]["reason"] == "panic"
        sell = [o for o in store.orders(SYMBOL) if o["side"] == "SELL"]
        assert [o["client_order_id"] for o in sell] == [out["sell_order"]]
        assert sell[0]["status"] == "FILLED" and sell[0]["reason"] == "panic"
        sold = sum(Decimal(f["qty"]) for f in store.fills(SYMBOL) if f["client_order_id"] == out["sell_order"])
        assert sold == Decimal(out["sold"])
    finally:
        store.close()
    events = [e for e in read_order_log(orders_log_path()) if e.get("client_id") == out["sell_order"]]
    assert events[0]["status"] == "INTENT" and "FILL" in [e["status"] for e in events]
    # idempotent: a second panic finds the market flat and books nothing more
    again = asyncio.run(flatten_market(m, paths, settings, generation=8))
    assert again["sold"] == "0" and not again["errors"]
    store = ExecutorStore.open_readonly(paths["state"])
    try:
        assert len(store.round_trips(SYMBOL)) == 1
    finally:
        store.close()
