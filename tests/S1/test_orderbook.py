"""S1/orderbook.py: Binance's local-order-book procedure, on real payloads from ../shared
and on the local server's simulated true book (S1/local/depth.py)."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import pytest

from S1.local.depth import DepthMarket
from S1.orderbook import (
    APPLIED,
    BUFFERED,
    GAP,
    REFETCH,
    STALE,
    SYNCED,
    BookError,
    LocalBook,
    OrderBook,
    parse_depth_event,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "api"


def shared(name: str) -> Path:
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"{p} not available (../shared)")
    return p


def ev(U, u, bids=(), asks=(), pu=None, s="X"):
    d = {"e": "depthUpdate", "E": u, "s": s, "U": U, "u": u, "b": [list(x) for x in bids],
         "a": [list(x) for x in asks]}
    if pu is not None:
        d["pu"] = pu
    return parse_depth_event(d)


SNAP = {"lastUpdateId": 100, "bids": [["10.00", "1"], ["9.50", "2"]], "asks": [["11.00", "3"], ["12.00", "4"]]}


# ------------------------------------------------------------------ real payloads
def test_real_snapshot_keeps_exact_text_and_order():
    snap = json.loads(shared("rest_depth_BTCUSDT_snapshot.json").read_text())
    book = LocalBook("BTCUSDT")
    assert book.on_snapshot(snap) == SYNCED and book.update_id == snap["lastUpdateId"]
    bids, asks = book.book.top(10)
    want_bids = sorted(snap["bids"], key=lambda x: Decimal(x[0]), reverse=True)[:10]
    want_asks = sorted(snap["asks"], key=lambda x: Decimal(x[0]))[:10]
    assert bids == [tuple(x) for x in want_bids] and asks == [tuple(x) for x in want_asks]
    assert bids[0][0] == "60650.00000000"       # the exchange's own text, not a float
    assert not book.book.crossed()


def capture_depth_events(symbol: str) -> list[dict]:
    out = []
    for line in shared("ws_combined_stream_capture_2021-10-12.txt").read_text().splitlines()[1:]:
        _, _, payload = line.partition(": ")
        if not payload.startswith("{"):
            continue
        msg = json.loads(payload)
        if msg["data"].get("e") == "depthUpdate" and msg["data"]["s"] == symbol:
            out.append(msg["data"])
    return out


def test_real_capture_applies_contiguously_and_a_missing_event_is_a_gap():
    events = capture_depth_events("NKNUSDT")
    assert len(events) > 50
    first = events[0]
    # a snapshot taken in the middle of the first event: U <= lastUpdateId + 1 <= u
    snap = {"lastUpdateId": first["U"], "bids": [["0.30000000", "1.00000000"]], "asks": [["0.40000000", "1.00000000"]]}
    book = LocalBook("NKNUSDT")
    for e in events[:3]:
        assert book.on_event(parse_depth_event(e)) == BUFFERED
    assert book.on_snapshot(snap) == SYNCED
    results = [book.on_event(parse_depth_event(e)) for e in events[3:]]
    assert set(results) == {APPLIED} and book.update_id == events[-1]["u"]
    # replayed by hand: the last quantity of every price, zeros removed
    levels: dict[Decimal, str] = {Decimal("0.3"): "1.00000000"}
    for e in events:
        for p, q in e["b"]:
            if Decimal(q) == 0:
                levels.pop(Decimal(p), None)
            else:
                levels[Decimal(p)] = q
    assert {Decimal(p): q for p, q in book.book.top(10_000)[0]} == levels
    # the same stream with one event lost
    book2 = LocalBook("NKNUSDT")
    book2.on_snapshot(snap)
    results = [book2.on_event(parse_depth_event(e)) for i, e in enumerate(events) if i != 10]
    assert results.index(GAP) == 10 and set(results[11:]) == {BUFFERED} and not book2.synced


def test_real_futures_event_checks_pu():
    e = json.loads(shared("ws_usdm_depth_update.json").read_text())
    book = LocalBook("BTCUSDT", futures=True)
    assert book.on_event(parse_depth_event(e)) == BUFFERED
    snap = {"lastUpdateId": e["U"] + 1, "bids": [["7000.00", "1.000"]], "asks": [["7500.00", "1.000"]]}
    assert book.on_snapshot(snap) == SYNCED and book.update_id == e["u"]   # U <= lastUpdateId <= u
    nxt = dict(e, U=e["u"] + 1, u=e["u"] + 5, pu=e["u"], b=[], a=[])
    assert book.on_event(parse_depth_event(nxt)) == APPLIED
    bad = dict(nxt, U=nxt["u"] + 1, u=nxt["u"] + 3, pu=nxt["u"] - 1)        # pu is not the last u
    assert book.on_event(parse_depth_event(bad)) == GAP


# ------------------------------------------------------------------ the procedure
def test_stale_events_are_ignored_and_zero_removes():
    book = LocalBook("X")
    book.on_snapshot(SNAP)
    assert book.on_event(ev(90, 100, bids=[("10.00", "0")])) == STALE
    assert book.book.best_bid() == (Decimal("10.00"), Decimal(1))
    assert book.on_event(ev(101, 103, bids=[("10.00", "0"), ("1.00", "0")], asks=[("11.5", "1")])) == APPLIED
    assert book.book.top(5) == ([("9.50", "2")], [("11.5", "1"), ("11.00", "3"), ("12.00", "4")][:0] or
                                [("11.00", "3"), ("11.5", "1"), ("12.00", "4")])
    assert book.update_id == 103


def test_snapshot_older_than_the_buffer_is_fetched_again():
    book = LocalBook("X")
    book.on_event(ev(120, 125))
    assert book.on_snapshot(SNAP) == REFETCH and not book.synced and book.refetches == 1
    assert book.on_snapshot(dict(SNAP, lastUpdateId=121)) == SYNCED and book.update_id == 125


def test_buffered_events_before_the_snapshot_are_dropped_and_the_first_must_straddle():
    book = LocalBook("X")
    for U, u in ((95, 98), (99, 102), (103, 104)):
        book.on_event(ev(U, u, bids=[("10.00", str(u))]))
    assert book.on_snapshot(SNAP) == SYNCED and book.update_id == 104
    assert book.book.best_bid() == (Decimal("10.00"), Decimal(104)) and book.applied == 2
    book = LocalBook("X")
    book.on_event(ev(99, 100))
    book.on_event(ev(103, 104))                 # 101..102 never arrived
    assert book.on_snapshot(SNAP) == GAP and not book.synced


def test_a_crossing_update_is_a_gap_never_a_book():
    book = LocalBook("X")
    book.on_snapshot(SNAP)
    assert book.on_event(ev(101, 101, bids=[("11.00", "1")])) == GAP
    assert not book.synced and book.crossed == 1
    assert LocalBook("X").on_snapshot(dict(SNAP, bids=[["13", "1"]])) == GAP


def test_malformed_messages_raise_book_error():
    with pytest.raises(BookError):
        parse_depth_event({"e": "depthUpdate", "U": 1})
    with pytest.raises(BookError):
        parse_depth_event({"e": "depthUpdate", "U": 1, "u": 2, "b": [["x", "1"]], "a": []})
    with pytest.raises(BookError):
        LocalBook("X").on_snapshot({"bids": []})


def test_order_book_top_and_best():
    b = OrderBook()
    b.set_levels([(Decimal(p), Decimal(1)) for p in ("1", "3", "2")], [(Decimal(p), Decimal(1)) for p in ("9", "7")])
    assert [p for p, _ in b.top(2)[0]] == ["3", "2"] and [p for p, _ in b.top(5)[1]] == ["7", "9"]


# --------------------------------------------- against the simulated true book
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_applied_book_equals_the_true_book_despite_losses_and_reordering(seed):
    """The server's true book evolves; its events reach us with losses and swaps; snapshots
    come late. After every event we apply, our top 50 equals the true top 50 at that id."""
    rng = random.Random(seed)
    m = DepthMarket(f"S{seed}USDT", start_ms=0, history_events=None)
    book = LocalBook(m.symbol)
    wire: list[dict] = []
    checked = gaps = 0
    snapshot_due = 0
    for i in range(3000):
        e = m.event(i)
        wire.append(e)
        r = rng.random()
        if r < 0.03:
            wire.pop()                                  # lost
        elif r < 0.06 and len(wire) >= 2:
            wire[-1], wire[-2] = wire[-2], wire[-1]     # out of order
        while len(wire) > 1:
            e2 = wire.pop(0)
            res = book.on_event(parse_depth_event(json.loads(m.depth_json([e2]))))
            if res == GAP:
                gaps += 1
            if res == APPLIED:
                want = m.history[book.update_id]
                assert book.book.top(50) == (want[0][:50], want[1][:50])
                assert not book.book.crossed()
                # the cached best prices agree with the levels
                assert (book.book.best_bid_price(), book.book.best_ask_price()) == (max(book.book.bids),
                                                                                    min(book.book.asks))
                checked += 1
        if not book.synced:
            snapshot_due += 1
            if snapshot_due >= 3:                       # the REST answer arrives a few events later
                snapshot_due = 0
                res = book.on_snapshot(m.snapshot(1000))
                if res == SYNCED:
                    want = m.history[book.update_id]
                    assert book.book.top(50) == (want[0][:50], want[1][:50])
    assert gaps > 20 and checked > 1000
