"""A local order book kept exactly as Binance documents it ("How to manage a local order
book correctly"), with no network code: the streamer (:mod:`S1.book_stream`) feeds it
``depthUpdate`` events and REST snapshots; everything here is pure and testable.

The procedure (spot; ``futures=True`` adds the ``pu`` check of USD-M futures):

1. Buffer the diff events while the REST snapshot is fetched (:class:`LocalBook` state
   ``"buffering"``).
2. A snapshot whose ``lastUpdateId`` is below the first buffered ``U`` is too old: fetch
   another (:meth:`LocalBook.on_snapshot` returns ``"refetch"``).
3. Drop buffered events with ``u <= lastUpdateId``; the first kept one must have
   ``U <= lastUpdateId + 1 <= u`` (futures: ``U <= lastUpdateId <= u``).
4. Then for each event: ``u <= local id`` -> stale, ignored; ``U > local id + 1`` (futures:
   ``pu != local id``) -> a gap: the book is thrown away and rebuilt from a fresh snapshot.
   Otherwise every level is set (quantity 0 removes it) and the local id becomes ``u``.

A book that would come out crossed (best bid >= best ask) is never published: it counts
as a gap too. Prices and quantities are :class:`decimal.Decimal` (exact; ``str()`` gives
back the exchange's own text).

>>> book = LocalBook("BTCUSDT")
>>> book.on_event(parse_depth_event({"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 11, "u": 12,
...                                  "b": [["99.5", "2"]], "a": [["101", "0"]]}))
'buffered'
>>> book.on_snapshot({"lastUpdateId": 11, "bids": [["99", "1"]], "asks": [["101", "3"], ["102", "1"]]})
'synced'
>>> book.update_id, book.book.top(2)
(12, ([('99.5', '2'), ('99', '1')], [('102', '1')]))
>>> book.on_event(parse_depth_event({"e": "depthUpdate", "E": 2, "s": "BTCUSDT", "U": 14, "u": 15,
...                                  "b": [], "a": []}))
'gap'
>>> book.synced
False
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_ZERO = Decimal(0)

#: results of :meth:`LocalBook.on_event` / :meth:`LocalBook.on_snapshot`
APPLIED, STALE, GAP, BUFFERED, SYNCED, REFETCH = "applied", "stale", "gap", "buffered", "synced", "refetch"


class BookError(ValueError):
    """A malformed depth message (not a sync problem)."""


@dataclass(frozen=True, slots=True)
class DepthEvent:
    """One ``depthUpdate``: update ids ``first..final`` (``U``/``u``), ``prev_final``
    (``pu``, futures only), event time, and the changed levels (quantity 0 = remove)."""

    symbol: str
    first_id: int
    final_id: int
    event_ms: int
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    prev_final: int | None = None


def _levels(raw) -> tuple[tuple[Decimal, Decimal], ...]:
    try:
        return tuple((Decimal(p), Decimal(q)) for p, q, *_ in raw)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise BookError(f"bad price level in {raw!r:.80}") from exc


def parse_depth_event(data: dict) -> DepthEvent:
    """A Binance ``depthUpdate`` event (spot or USD-M) -> :class:`DepthEvent`.

    >>> e = parse_depth_event({"e": "depthUpdate", "E": 5, "s": "X", "U": 3, "u": 4, "pu": 2,
    ...                        "b": [["1.50", "0.00"]], "a": []})
    >>> e.first_id, e.final_id, e.prev_final, str(e.bids[0][0])
    (3, 4, 2, '1.50')
    """
    try:
        first, final = int(data["U"]), int(data["u"])
        pu = data.get("pu")
        return DepthEvent(str(data.get("s", "")), first, final, int(data.get("E", 0)), _levels(data.get("b", ())),
                          _levels(data.get("a", ())), None if pu is None else int(pu))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BookError):
            raise
        raise BookError(f"not a depthUpdate event: {data!r:.120}") from exc


class OrderBook:
    """Price levels of one market (``bids``/``asks``: price -> quantity, both Decimal), with
    the prices of each side also kept sorted, so the best price and the top N are cheap.

    >>> b = OrderBook(); b.set_levels([(Decimal("1"), Decimal("2"))], [(Decimal("3"), Decimal("1"))])
    >>> b.best_bid(), b.best_ask(), b.crossed()
    ((Decimal('1'), Decimal('2')), (Decimal('3'), Decimal('1')), False)
    """

    __slots__ = ("_ask_prices", "_bid_prices", "asks", "bids")

    def __init__(self):
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self._bid_prices: list[Decimal] = []  # ascending: the best bid is the last
        self._ask_prices: list[Decimal] = []  # ascending: the best ask is the first

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_prices.clear()
        self._ask_prices.clear()

    @staticmethod
    def _set(side: dict, prices: list, levels) -> None:
        for price, qty in levels:
            if qty == _ZERO:
                if side.pop(price, None) is not None:
                    del prices[bisect_left(prices, price)]
            else:
                if price not in side:
                    insort(prices, price)
                side[price] = qty

    def set_levels(self, bids, asks) -> None:
        """Set every level (quantity 0 removes it; removing an absent level is fine)."""
        self._set(self.bids, self._bid_prices, bids)
        self._set(self.asks, self._ask_prices, asks)

    def best_bid_price(self) -> Decimal | None:
        return self._bid_prices[-1] if self._bid_prices else None

    def best_ask_price(self) -> Decimal | None:
        return self._ask_prices[0] if self._ask_prices else None

    def best_bid(self) -> tuple[Decimal, Decimal] | None:
        p = self.best_bid_price()
        return None if p is None else (p, self.bids[p])

    def best_ask(self) -> tuple[Decimal, Decimal] | None:
        p = self.best_ask_price()
        return None if p is None else (p, self.asks[p])

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (a broken book)."""
        return bool(self._bid_prices) and bool(self._ask_prices) and self._bid_prices[-1] >= self._ask_prices[0]

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The best ``n`` levels per side as exact strings: bids high to low, asks low to high."""
        bids, asks = self.bids, self.asks
        return ([(str(p), str(bids[p])) for p in reversed(self._bid_prices[-n:])] if n else [],
                [(str(p), str(asks[p])) for p in self._ask_prices[:n]])


class LocalBook:
    """Binance's local-order-book procedure for one market (see the module docstring).

    ``on_event`` / ``on_snapshot`` return what happened (``"applied"``, ``"stale"``,
    ``"buffered"``, ``"gap"``, ``"synced"``, ``"refetch"``); after ``"gap"`` or
    ``"refetch"`` the caller fetches a fresh snapshot. Counters: ``applied``, ``stale``,
    ``gaps``, ``crossed``, ``snapshots``, ``refetches``.
    """

    def __init__(self, symbol: str, *, futures: bool = False, max_buffer: int = 100_000):
        self.symbol = symbol
        self.futures = futures
        self.book = OrderBook()
        self.update_id: int | None = None  # local id when synced
        self.event_ms = 0
        self.buffer: deque[DepthEvent] = deque()
        self.max_buffer = max_buffer
        self.applied = self.stale = self.gaps = self.crossed = self.snapshots = self.refetches = 0
        self.last_gap = ""

    @property
    def synced(self) -> bool:
        return self.update_id is not None

    def reset(self) -> None:
        """Throw the book away and buffer again (e.g. after a reconnect)."""
        self.book.clear()
        self.update_id = None
        self.buffer.clear()

    def _gap(self, why: str) -> str:
        self.gaps += 1
        self.last_gap = why
        self.reset()
        return GAP

    def on_event(self, ev: DepthEvent) -> str:
        if self.update_id is None:
            if len(self.buffer) >= self.max_buffer:  # the snapshot is far too late: start over
                self.buffer.popleft()
            self.buffer.append(ev)
            return BUFFERED
        return self._apply(ev)

    def _apply(self, ev: DepthEvent) -> str:
        lid = self.update_id
        if ev.final_id <= lid:
            self.stale += 1
            return STALE
        if self.futures and ev.prev_final is not None:
            if ev.prev_final != lid:
                return self._gap(f"pu {ev.prev_final} != last u {lid}")
        elif ev.first_id > lid + 1:
            return self._gap(f"U {ev.first_id} > last u {lid} + 1")
        self.book.set_levels(ev.bids, ev.asks)
        if self.book.crossed():
            self.crossed += 1
            return self._gap(f"crossed book after u {ev.final_id}")
        self.update_id = ev.final_id
        self.event_ms = ev.event_ms
        self.applied += 1
        return APPLIED

    def on_snapshot(self, snapshot: dict) -> str:
        """Apply a ``GET /api/v3/depth`` body (``lastUpdateId``, ``bids``, ``asks``) and the
        buffered events after it."""
        try:
            lid = int(snapshot["lastUpdateId"])
            bids, asks = _levels(snapshot["bids"]), _levels(snapshot["asks"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BookError(f"not a depth snapshot: {snapshot!r:.120}") from exc
        self.snapshots += 1
        if self.buffer and lid < self.buffer[0].first_id:
            self.refetches += 1
            return REFETCH  # older than what we buffered: the events between are unknown
        pending = [e for e in self.buffer if e.final_id > lid]
        self.buffer.clear()
        self.book.clear()
        self.book.set_levels(bids, asks)
        if self.book.crossed():
            self.crossed += 1
            return self._gap("crossed snapshot")
        if pending:
            first = pending[0]
            ok = (first.first_id <= lid <= first.final_id if self.futures
                  else first.first_id <= lid + 1 <= first.final_id)
            if not ok:
                return self._gap(f"first event U {first.first_id}..u {first.final_id} does not follow snapshot {lid}")
        self.update_id = lid
        for i, ev in enumerate(pending):
            if self.futures and i == 0:  # its pu precedes the snapshot: U <= lid <= u was checked above
                ev = DepthEvent(ev.symbol, ev.first_id, ev.final_id, ev.event_ms, ev.bids, ev.asks, None)
            if self._apply(ev) == GAP:
                return GAP
        return SYNCED
