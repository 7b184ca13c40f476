"""1m candles from a trade stream, proven complete by contiguous trade ids
(:class:`MinuteAggregator`), and :func:`parse_trade` for Binance ``trade`` / ``aggTrade`` events."""

from __future__ import annotations

MINUTE_MS = 60_000
_MINUTE = MINUTE_MS


class MinuteAggregator:
    """1m candles of one symbol from its trade stream, Binance's way: open = first
    price, high/low, close = last price, volume = sum of quantities, quote volume =
    sum of price x quantity, trades = number of trade ids, taker-buy volumes from the
    trades whose buyer was the taker (``m`` false).

    A minute closes when a trade of a later minute arrives, or (:meth:`close_due`)
    when the exchange clock passes its end while the connection stayed up. It is
    *complete* -- written as closed -- only when trade ids are contiguous from a
    trade before the minute to its last one; a minute with no trade between two
    contiguous trades is a flat candle at the last price. Anything else is reported
    as incomplete (the streamer takes it from REST).

    >>> agg = MinuteAggregator("BTCUSDT")
    >>> agg.add(59_000, 10.0, 1.0, False, 1, 1, epoch=1)        # before: unknown -> incomplete
    ([], [])
    >>> agg.add(60_500, 11.0, 2.0, True, 2, 3, epoch=1)
    ([], [0])
    >>> rows, bad = agg.add(181_000, 12.0, 1.0, False, 4, 4, epoch=1)
    >>> [(r[2], r[4], r[7], r[12]) for r in rows], bad          # minute 1 complete, minute 2 flat
    ([(60000, 11.0, 11.0, 2), (120000, 11.0, 11.0, 0)], [])
    """

    def __init__(self, symbol: str):
        self.symbol = symbol
        self.cur: list | None = None   # [t, o, h, l, c, v, q, V, Q, n, complete, epoch]
        self.last_id: int | None = None
        self.last_price: float | None = None
        self.last_minute: int | None = None  # open time of the last minute that had trades

    def _row(self, b: list, closed: int) -> tuple:
        return (self.symbol, "1m", b[0], b[0] + _MINUTE - 1, b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8],
                b[9], closed)

    def current_row(self) -> tuple | None:
        return None if self.cur is None else self._row(self.cur, 0)

    def add(self, time_ms: int, price: float, qty: float, buyer_maker: bool, first_id: int, last_id: int,
            *, epoch: int) -> tuple[list[tuple], list[int]]:
        """Take one trade (or aggregate trade ``first_id..last_id``); returns the closed
        rows and the open times of minutes that closed incomplete."""
        if self.last_id is not None and last_id <= self.last_id:
            return [], []  # already seen
        contiguous = self.last_id is not None and first_id == self.last_id + 1
        t = time_ms - time_ms % _MINUTE
        closed: list[tuple] = []
        bad: list[int] = []
        cur = self.cur
        if cur is not None and t != cur[0]:
            if contiguous and cur[10]:
                closed.append(self._row(cur, 1))
            else:
                bad.append(cur[0])
            self.cur = cur = None
        if cur is None:
            if contiguous and self.last_minute is not None and self.last_price is not None:
                m = self.last_minute + _MINUTE
                while m < t:  # minutes without a trade, proven by contiguous ids
                    p = self.last_price
                    closed.append((self.symbol, "1m", m, m + _MINUTE - 1, p, p, p, p, 0.0, 0.0, 0.0, 0.0, 0, 1))
                    m += _MINUTE
            self.cur = cur = [t, price, price, price, price, 0.0, 0.0, 0.0, 0.0, 0, contiguous, epoch]
        elif not contiguous:
            cur[10] = False
        cur[2] = max(cur[2], price)
        cur[3] = min(cur[3], price)
        cur[4] = price
        quote = price * qty
        cur[5] += qty
        cur[6] += quote
        if not buyer_maker:
            cur[7] += qty
            cur[8] += quote
        cur[9] += last_id - first_id + 1
        cur[11] = epoch
        self.last_id, self.last_price, self.last_minute = last_id, price, t
        return closed, bad

    def close_due(self, now_ms: float, grace_ms: int, *, epoch: int, connected: bool
                  ) -> tuple[list[tuple], list[int]]:
        """Close the open minute once the exchange clock ``now_ms`` is ``grace_ms`` past
        its end -- only if the connection stayed up since its last trade (else the
        next trade's id decides)."""
        cur = self.cur
        if cur is None or now_ms < cur[0] + _MINUTE + grace_ms or not connected or cur[11] != epoch:
            return [], []
        self.cur = None
        if cur[10]:
            return [self._row(cur, 1)], []
        return [], [cur[0]]


def parse_trade(event: dict) -> tuple[int, float, float, bool, int, int]:
    """A ``trade`` or ``aggTrade`` event -> ``(time_ms, price, qty, buyer_maker, first_id, last_id)``.

    >>> parse_trade({"e": "aggTrade", "p": "0.5", "q": "2", "f": 7, "l": 9, "T": 60_001, "m": False})
    (60001, 0.5, 2.0, False, 7, 9)
    """
    if event["e"] == "aggTrade":
        first, last = event["f"], event["l"]
    else:
        first = last = event["t"]
    return int(event["T"]), float(event["p"]), float(event["q"]), bool(event["m"]), int(first), int(last)
