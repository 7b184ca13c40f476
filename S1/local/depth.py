"""A simulated Binance order book for the local stream server (:mod:`S1.local.stream`): the
TRUE book, evolving deterministically, its diff events with real ``U``/``u`` ids, REST
snapshots with ``lastUpdateId``, best bid/ask (``bookTicker``) and 24 h tickers.

Every ``step_ms`` of replay time the market makes 1-4 level changes, each with its own
update id (a quantity change or a new level, a removal, the best level hit and the next
price improved), so the book moves, never crosses, and an event covers ids ``U..u``.
Event ``i`` happens at ``start_ms + (i + 1) * step_ms``; it is generated only once the
replay clock has reached it, so a snapshot is always the book as of now.

``history`` keeps the true top ``history_depth`` levels after every event, keyed by its
``u`` (and the starting id), so a test can compare every book a client recorded with the
true book at the same update id.

>>> m = DepthMarket("BTCUSDT", start_ms=0)
>>> m.advance_to(1_000); m.events_generated
10
>>> snap = m.snapshot(5); snap["lastUpdateId"] == m.update_id, len(snap["bids"])
(True, 5)
>>> bids, asks = m.history[m.update_id]; bids[:5] == [tuple(x) for x in snap["bids"]]
True
"""

from __future__ import annotations

import heapq
import json
import random
import zlib
from collections import OrderedDict, deque

FIRST_UPDATE_ID = 1_000_000
_QTY_SCALE = 100_000_000  # quantities in units of 1e-8


def price_str(ticks: int) -> str:
    """Price in cents -> Binance's 8-decimal text. ``price_str(3000012)`` -> ``'30000.12000000'``."""
    return f"{ticks // 100}.{ticks % 100:02d}000000"


def qty_str(units: int) -> str:
    """Quantity in 1e-8 units -> Binance's 8-decimal text."""
    return f"{units // _QTY_SCALE}.{units % _QTY_SCALE:08d}"


class DepthMarket:
    """The true order book of one simulated market (prices in cents, quantities in 1e-8)."""

    def __init__(self, symbol: str, *, start_ms: int, step_ms: int = 100, levels: int = 200,
                 history_depth: int = 100, history_events: int | None = 100_000, keep_events: int = 20_000,
                 price_ticks: int | None = None):
        self.symbol = symbol
        self.step_ms = step_ms
        self.start_ms = start_ms - start_ms % step_ms
        self.rng = random.Random(zlib.crc32(symbol.encode()))
        mid = price_ticks or 1_000 + zlib.crc32(symbol.encode()) % 5_000_000
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        for i in range(levels):  # a dense book with a few empty prices
            if i < 5 or self.rng.random() < 0.9:
                self.bids[mid - i] = self._qty()
                self.asks[mid + 1 + i] = self._qty()
        self.update_id = FIRST_UPDATE_ID
        self.events_generated = 0
        self.events: deque[dict] = deque()  # the newest keep_events events
        self.keep_events = keep_events
        self.history_depth = history_depth
        self.history_events = history_events
        self.history: OrderedDict[int, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = OrderedDict()
        self.open_price = mid
        self.high = self.low = mid
        self.volume_units = 0
        self._record()

    def _qty(self) -> int:
        return self.rng.randint(1, 500_000) * 1_000  # 0.00001 .. 5 units

    # ------------------------------------------------------------------ reads
    def best_bid(self) -> int:
        return max(self.bids)

    def best_ask(self) -> int:
        return min(self.asks)

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = heapq.nlargest(n, self.bids)
        asks = heapq.nsmallest(n, self.asks)
        return ([(price_str(p), qty_str(self.bids[p])) for p in bids],
                [(price_str(p), qty_str(self.asks[p])) for p in asks])

    def _record(self) -> None:
        if self.history_events == 0:
            return
        self.history[self.update_id] = self.top(self.history_depth)
        if self.history_events is not None and len(self.history) > self.history_events:
            self.history.popitem(last=False)

    def snapshot(self, limit: int = 100) -> dict:
        """The ``GET /api/v3/depth`` body of the current book (advance it first)."""
        bids, asks = self.top(limit)
        return {"lastUpdateId": self.update_id, "bids": [list(x) for x in bids], "asks": [list(x) for x in asks]}

    def event_time(self, i: int) -> int:
        return self.start_ms + (i + 1) * self.step_ms

    def index_at(self, t_ms: int) -> int:
        """Index of the first event after ``t_ms``."""
        return max(0, (t_ms - self.start_ms) // self.step_ms)

    def event(self, i: int) -> dict | None:
        """Event ``i`` (generating up to it; None if it was dropped from memory)."""
        while self.events_generated <= i:
            self._step()
        first = self.events_generated - len(self.events)
        return self.events[i - first] if i >= first else None

    def advance_to(self, t_ms: int) -> None:
        """Generate every event up to ``t_ms``."""
        n = self.index_at(t_ms)
        while self.events_generated < n:
            self._step()

    # ------------------------------------------------------------------ moves
    def _step(self) -> None:
        rng = self.rng
        first = self.update_id + 1
        changes: dict[tuple[str, int], int] = {}

        def put(side: str, price: int, qty: int) -> None:
            book = self.bids if side == "b" else self.asks
            if qty:
                book[price] = qty
            else:
                book.pop(price, None)
            changes[(side, price)] = qty
            self.update_id += 1

        for _ in range(rng.randint(1, 4)):
            r = rng.random()
            bb, ba = self.best_bid(), self.best_ask()
            if r < 0.5:  # a quantity changes (or a new level appears) near the top
                if rng.random() < 0.5:
                    put("b", bb - rng.randint(0, 30), self._qty())
                else:
                    put("a", ba + rng.randint(0, 30), self._qty())
            elif r < 0.7:  # a level is cancelled (never the last few)
                side = "b" if rng.random() < 0.5 else "a"
                book = self.bids if side == "b" else self.asks
                if len(book) > 20:
                    p = (bb - rng.randint(1, 30)) if side == "b" else (ba + rng.randint(1, 30))
                    if p in book:
                        put(side, p, 0)
            elif r < 0.85:  # buyers: improve the bid, or take the best ask
                if ba - bb > 1:
                    put("b", bb + 1, self._qty())
                elif len(self.asks) > 20:
                    self.volume_units += self.asks[ba]
                    put("a", ba, 0)
            else:  # sellers
                if ba - bb > 1:
                    put("a", ba - 1, self._qty())
                elif len(self.bids) > 20:
                    self.volume_units += self.bids[bb]
                    put("b", bb, 0)
        if self.update_id < first:  # every event carries at least one update
            put("b", self.best_bid(), self._qty())
        i = self.events_generated
        bb, ba = self.best_bid(), self.best_ask()
        mid = (bb + ba) // 2
        self.high, self.low = max(self.high, mid), min(self.low, mid)
        ev = {"i": i, "E": self.event_time(i), "U": first, "u": self.update_id,
              "b": [(price_str(p), qty_str(q)) for (s, p), q in changes.items() if s == "b"],
              "a": [(price_str(p), qty_str(q)) for (s, p), q in changes.items() if s == "a"],
              "bbo": (price_str(bb), qty_str(self.bids[bb]), price_str(ba), qty_str(self.asks[ba])),
              "mid": mid}
        self.events.append(ev)
        if len(self.events) > self.keep_events:
            self.events.popleft()
        self.events_generated += 1
        self._record()

    # ------------------------------------------------------------------ wire
    def depth_json(self, evs: list[dict]) -> str:
        """One ``depthUpdate`` event from one or more consecutive events (merged: first ``U``,
        last ``u``, the final quantity of every changed level)."""
        bids: dict[str, str] = {}
        asks: dict[str, str] = {}
        for ev in evs:
            bids.update(ev["b"])
            asks.update(ev["a"])
        return json.dumps({"e": "depthUpdate", "E": evs[-1]["E"], "s": self.symbol, "U": evs[0]["U"],
                           "u": evs[-1]["u"], "b": [list(x) for x in bids.items()],
                           "a": [list(x) for x in asks.items()]}, separators=(",", ":"))

    def book_ticker_json(self, ev: dict) -> str:
        b, bq, a, aq = ev["bbo"]
        return (f'{{"u":{ev["u"]},"s":"{self.symbol}","b":"{b}","B":"{bq}","a":"{a}","A":"{aq}"}}')

    def ticker_json(self, t_ms: int) -> str:
        """A ``24hrTicker`` event of the book as of ``t_ms`` (prices from the mid)."""
        self.advance_to(t_ms)
        bb, ba = self.best_bid(), self.best_ask()
        last = (bb + ba) // 2
        change = last - self.open_price
        vol = self.volume_units
        return json.dumps({
            "e": "24hrTicker", "E": t_ms, "s": self.symbol, "p": f"{change / 100:.8f}",
            "P": f"{change / self.open_price * 100:.3f}", "w": price_str(last), "x": price_str(self.open_price),
            "c": price_str(last), "Q": "0.00100000", "b": price_str(bb), "B": qty_str(self.bids[bb]),
            "a": price_str(ba), "A": qty_str(self.asks[ba]), "o": price_str(self.open_price),
            "h": price_str(self.high), "l": price_str(self.low), "v": qty_str(vol),
            "q": f"{vol / _QTY_SCALE * last / 100:.8f}", "O": t_ms - 86_400_000, "C": t_ms, "F": 0,
            "L": self.update_id, "n": self.update_id - FIRST_UPDATE_ID}, separators=(",", ":"))


class DepthFeed:
    """One connection's ``<symbol>@depth`` (1000 ms) or ``<symbol>@depth@100ms`` stream, with
    scriptable faults: ``gap_every`` drops every Nth event (a lost packet), ``swap_every``
    sends every Nth event after the one that follows it (out of order)."""

    def __init__(self, market: DepthMarket, after_ms: int, *, every_ms: int = 100,
                 gap_every: int | None = None, swap_every: int | None = None):
        self.m = market
        self.group = max(1, every_ms // market.step_ms)
        start = market.index_at(after_ms)
        self.g = (start + self.group - 1) // self.group  # next group to send
        self.gap_every, self.swap_every = gap_every, swap_every
        self.sent = 0
        self.dropped: list[int] = []   # u of the events dropped
        self.swapped: list[int] = []   # u of the events sent late
        self._held: str | None = None

    def next_time(self) -> int | None:
        return self.m.event_time((self.g + 1) * self.group - 1)

    def _render(self, g: int) -> tuple[str, int] | None:
        evs = [self.m.event(i) for i in range(g * self.group, (g + 1) * self.group)]
        if any(e is None for e in evs):
            return None
        return self.m.depth_json(evs), evs[-1]["u"]

    def pop(self) -> str | list[str] | None:
        """The next message(s) (None: nothing to send this time: a dropped or held event)."""
        rendered = self._render(self.g)
        self.g += 1
        self.sent += 1
        if rendered is None:
            return None
        msg, u = rendered
        if self.gap_every and self.sent % self.gap_every == 0:
            self.dropped.append(u)
            return None
        if self._held is not None:  # the late one goes after this one
            held, self._held = self._held, None
            return [msg, held]
        if self.swap_every and self.sent % self.swap_every == 0:
            self._held = msg
            self.swapped.append(u)
            return None
        return msg


class BookTickerFeed:
    """``<symbol>@bookTicker``: best bid/ask after every event whose top changed."""

    def __init__(self, market: DepthMarket, after_ms: int):
        self.m = market
        self.i = market.index_at(after_ms)
        self._last = None

    def next_time(self) -> int | None:
        return self.m.event_time(self.i)

    def pop(self) -> str | None:
        ev = self.m.event(self.i)
        self.i += 1
        if ev is None or ev["bbo"] == self._last:
            return None
        self._last = ev["bbo"]
        return self.m.book_ticker_json(ev)


class TickerFeed:
    """``<symbol>@ticker``: a ``24hrTicker`` event every second."""

    def __init__(self, market: DepthMarket, after_ms: int):
        self.m = market
        self.t = after_ms - after_ms % 1000 + 1000

    def next_time(self) -> int | None:
        return self.t

    def pop(self) -> str | None:
        t, self.t = self.t, self.t + 1000
        return self.m.ticker_json(t)
