"""Executor store: WAL, intents, idempotent fills and exact position accounting;
the order log: required keys, append-only, redaction."""

from __future__ import annotations

import json
import sqlite3
import threading
from decimal import Decimal

import pytest

from S7.order_log import MAX_LINE, REQUIRED_KEYS, OrderLog, order_log_frame, read_order_log
from S7.orders import Fill
from S7.store import ExecutorStore
from tests.S7.helpers import CANARY_SECRET, D

SYM = "BTCUSDT"
MIN = Decimal("0.00001")


def fill(tid, side, price, qty, comm, asset, t=1000, oid=1):
    return Fill(SYM, tid, oid, side, D(price), D(qty), D(comm), asset, t)


def apply(st, f):
    return st.apply_fill(f, base_asset="BTC", quote_asset="USDT", min_tradable=MIN)


def test_wal_and_intents(tmp_path):
    st = ExecutorStore(tmp_path / "x.db")
    assert st.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert st.insert_order("s7-1", symbol=SYM, side="BUY", type="MARKET", quantity="0.1", status="INTENT")
    assert not st.insert_order("s7-1", symbol=SYM, side="BUY", type="MARKET", quantity="0.2", status="INTENT")
    assert st.get_order("s7-1")["quantity"] == "0.1"
    # a reader in another connection sees the committed intent while the store is open
    ro = sqlite3.connect(f"file:{tmp_path / 'x.db'}?mode=ro", uri=True)
    assert ro.execute("SELECT status FROM orders").fetchall() == [("INTENT",)]
    st.update_order("s7-1", status="FILLED", exchange_order_id=7)
    assert [o["client_order_id"] for o in st.unresolved(SYM)] == []
    with pytest.raises(ValueError):
        st.update_order("s7-1", colour="red")
    st.set_meta("k", {"a": 1})
    assert st.get_meta("k") == {"a": 1} and st.get_meta("missing", 5) == 5


def test_position_accounting_with_partial_fills_and_both_commission_assets(tmp_path):
    st = ExecutorStore(tmp_path / "x.db")
    apply(st, fill(1, "BUY", "20000", "0.01", "0.00001", "BTC"))          # base commission
    apply(st, fill(2, "BUY", "21000", "0.01", "0.21", "USDT", t=2000))    # quote commission
    p = st.position(SYM)
    assert p.qty == D("0.01999") and p.cost == D("410.21")
    assert p.entry_price == pytest.approx(20500) and p.entry_time_ms == 1000
    # a partial exit realises the sold share of the cost
    r = apply(st, fill(3, "SELL", "22000", "0.01", "0.22", "USDT", t=3000))
    share = D("0.01") / D("0.01999")
    assert r.closed is None
    assert st.position(SYM).realized_pnl == D("219.78") - D("410.21") * share
    r = apply(st, fill(4, "SELL", "22000", "0.00999", "0.21978", "USDT", t=4000))
    assert r.closed is not None and not st.position(SYM).is_open
    trip = st.round_trips(SYM)[0]
    assert trip["pnl"] == pytest.approx(219.78 + 219.56022 - 410.21)
    assert trip["entry_price"] == pytest.approx(20500) and trip["exit_price"] == pytest.approx(22000)
    assert trip["fees"] == pytest.approx(0.2 + 0.21 + 0.22 + 0.21978)
    assert st.position(SYM).round_trips == 1 and st.position(SYM).stop is None


def test_dust_below_the_minimum_closes_the_trip(tmp_path):
    st = ExecutorStore(tmp_path / "x.db")
    apply(st, fill(1, "BUY", "20000", "0.01", "0.00001", "BTC"))          # holds 0.00999
    r = st.apply_fill(fill(2, "SELL", "20000", "0.00998", "0.1996", "USDT"), base_asset="BTC", quote_asset="USDT",
                      min_tradable=Decimal("0.0001"))                     # 0.00001 left < 0.0001
    p = st.position(SYM)
    assert r.closed is not None and not p.is_open and p.dust == D("0.00001")
    assert r.closed["pnl"] == pytest.approx(0.00998 * 20000 - 0.1996 - 200 + 0.00001 * 20000)


@pytest.mark.parametrize("shared", [True, False])
def test_fills_are_idempotent_even_from_several_threads(tmp_path, shared):
    st = ExecutorStore(tmp_path / "x.db")
    f = fill(1, "BUY", "20000", "0.01", "0", "BNB")
    results = []

    def one():
        s = st if shared else ExecutorStore(tmp_path / "x.db")   # one connection, or one per writer
        results.append(apply(s, f).new)

    threads = [threading.Thread(target=one) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(results) == [False, False, False, True] and st.position(SYM).qty == D("0.01")
    assert st.last_trade_id(SYM) == 1 and st.has_fill(SYM, 1)


def test_clamp_position(tmp_path):
    st = ExecutorStore(tmp_path / "x.db")
    apply(st, fill(1, "BUY", "100", "2", "0", "BNB"))
    p = st.clamp_position(SYM, D("0.5"))
    assert p.qty == D("0.5") and p.cost == D("50")
    assert not st.clamp_position(SYM, D("0")).is_open


def test_store_refuses_a_folder(tmp_path):
    from S1.errors import UserError

    with pytest.raises(UserError, match="is a folder"):
        ExecutorStore(tmp_path)


def test_order_log_lines(tmp_path, settings_env, monkeypatch):
    from S1.settings import get_settings

    monkeypatch.setenv("BINANCE_TESTNET_API_SECRET", CANARY_SECRET)
    get_settings.cache_clear()
    path = tmp_path / "orders.jsonl"
    path.write_text('{"old": "line"}\n')
    log = OrderLog(path, mode="testnet")
    log.append(symbol=SYM, side="BUY", type="MARKET", quantity=D("0.1"), price=27000.5, client_id="s7-a",
               exchange_id=12, status="FILLED", reason="entry:x", executed_qty="0.1", event="accepted")
    log.append(symbol=SYM, side="SELL", type="MARKET", quantity="0.1", price=None, client_id="s7-b",
               exchange_id=None, status="REJECTED", reason=f"error mentioning {CANARY_SECRET}",
               error="x" * 10_000, code=-2010)
    text = path.read_text()
    assert text.startswith('{"old": "line"}\n') and CANARY_SECRET not in text and "***" in text
    rows = read_order_log(path)
    assert len(rows) == 3 and all(REQUIRED_KEYS <= set(r) for r in rows[1:])
    assert rows[1]["exchange_id"] == 12 and rows[1]["quantity"] == "0.1" and rows[1]["price"] == "27000.5"
    assert rows[2]["code"] == -2010 and len(json.dumps(rows[2])) <= MAX_LINE + 50
    df = order_log_frame(path)
    assert str(df["time"].dt.tz) == "UTC" and len(df) == 3
    get_settings.cache_clear()
