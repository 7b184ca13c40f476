"""Where the executor's candles come from. Each source gives the closed candles
before the session (:meth:`history`, the indicators' warm-up) and then a stream
of events: :class:`CandleEvent` (a newly closed candle) and :class:`PriceEvent`
(the latest trade price, which fills the dry-run simulator's waiting orders).

- :class:`DbSource` -- the streamer's SQLite ``kline`` table (``python S1/streamer.py``):
  the warm-up with :func:`S1.stream_store.read_klines`, then the rows after the last
  one seen whenever SQLite's ``PRAGMA data_version`` says another connection
  committed (checked every ``poll`` seconds: one tiny query, no file scan).
  Candles the streamer backfilled after one of its reconnects all come through, in
  order; the candle in progress gives the price.
- :class:`RestPollSource` -- no streamer: ``GET /api/v3/klines`` around each
  expected close time (sleeping in between, so the request weight stays tiny).
- :class:`ReplaySource` -- the last ``days`` of closed candles over REST, replayed
  as fast as the engine takes them, each candle preceded by its open price (the
  "next price" after the previous close). The clock of a replay is the candles'.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import numpy as np
import pandas as pd

from S1.datasets import candles_from_arrays, empty_candles
from S1.errors import NetworkError, UserError
from S1.intervals import floor_ms, interval_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandleEvent:
    candle: pd.DataFrame          #: one row, the S1 candle schema
    now_ms: int | None = None     #: the source's clock (None: the wall clock)

    @property
    def open_ms(self) -> int:
        return int(self.candle.index[-1].value // 1_000_000)


@dataclass(frozen=True)
class PriceEvent:
    price: float
    t_ms: int
    now_ms: int | None = None


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass



class SessionEnd:
    """Why a session's event loop ended: the end of the data, ``--duration`` (which sets
    ``stop`` when it runs out) or a stop signal. One per loop, used as a context manager
    around it so the duration timer is always cancelled::

        with SessionEnd(stop, cfg.duration) as end:
            async for ev in source.events(stop):
                ...
        return end.reason
    """

    def __init__(self, stop: asyncio.Event, duration: float | None):
        self.stop, self.duration = stop, duration
        self._timed_out = False
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> SessionEnd:
        if self.duration is not None:
            self._timer = asyncio.get_running_loop().call_later(self.duration, self._time_out)
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _time_out(self) -> None:
        self._timed_out = True
        self.stop.set()

    @property
    def reason(self) -> str:
        if self._timed_out:
            return f"--duration {self.duration:g}s"
        return "stop signal" if self.stop.is_set() else "end of data"


def _open_ms(df: pd.DataFrame) -> np.ndarray:
    return df.index.as_unit("ms").asi8


# ----------------------------------------------------------------------- database
#: Rows after a given open time, in the Binance kline layout, from the streamer's ``kline`` table
#: (schema: :mod:`S1.stream_store`). The hot path reads them directly: ``read_klines`` builds and
#: validates a DataFrame per call (15-20 ms measured), which a per-poll read cannot afford.
_NEW_ROWS = ("SELECT open_time, open, high, low, close, volume, close_time, quote_volume, trades, taker_buy_base, "
             "taker_buy_quote, is_closed FROM kline WHERE symbol = ? AND interval = ? AND open_time > ? "
             "ORDER BY open_time LIMIT 10000")


class DbSource:
    """The streamer's SQLite table (see the module docstring)."""

    def __init__(self, db_path: str | Path, symbol: str, interval: str, *, poll: float = 0.05):
        self.db = Path(db_path)
        self.symbol, self.interval, self.poll = symbol, interval, float(poll)
        self.description = f"streamer database {self.db}"
        self._ms = interval_ms(interval)
        if not self.db.is_file():
            raise UserError(f"the streamer database {self.db} does not exist",
                            f"start the streamer first: python S1/streamer.py --symbol {symbol} --interval {interval} "
                            "(or pass --db PATH, or use --source rest)")
        self.last_open_ms: int | None = None

    def _read(self, *, closed_only: bool, last_n: int) -> pd.DataFrame:
        from S1.stream_store import read_klines

        return read_klines(self.db, self.symbol, self.interval, closed_only=closed_only, last_n=last_n)

    async def history(self, n: int) -> pd.DataFrame:
        df = self._read(closed_only=True, last_n=n)
        if len(df):
            self.last_open_ms = int(_open_ms(df)[-1])
        return df

    async def events(self, stop: asyncio.Event) -> AsyncIterator[CandleEvent | PriceEvent]:
        con = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True, timeout=5, isolation_level=None)
        try:
            version, last_price = None, None
            while not stop.is_set():
                v = con.execute("PRAGMA data_version").fetchone()[0]
                if v != version:
                    version = v
                    after = self.last_open_ms if self.last_open_ms is not None else -1
                    rows = con.execute(_NEW_ROWS, (self.symbol, self.interval, after)).fetchall()
                    for r in rows:
                        if r[11] != 1:
                            break                      # the candle in progress (and nothing closed after it)
                        self.last_open_ms = int(r[0])
                        yield CandleEvent(candles_from_arrays(np.array([r[:11]], dtype=np.float64)))
                    live = [r for r in rows if r[11] != 1]
                    if live and float(live[-1][4]) != last_price:
                        last_price = float(live[-1][4])
                        yield PriceEvent(last_price, int(time.time() * 1000))
                await _pause(stop, self.poll)
        finally:
            con.close()

    async def close(self) -> None:
        pass


# --------------------------------------------------------------------------- REST
class _RestMixin:
    symbol: str
    interval: str

    def _rest(self):
        from S1.rest_client import BinanceRest

        return BinanceRest(self.settings, max_retries=2)  # type: ignore[attr-defined]

    @staticmethod
    def _closed(rows: np.ndarray, now_ms: int) -> pd.DataFrame:
        if len(rows) == 0:
            return empty_candles()
        rows = rows[rows[:, 6] < now_ms]   # drop the candle in progress
        return candles_from_arrays(rows) if len(rows) else empty_candles()


class RestPollSource(_RestMixin):
    """Closed candles polled over REST around their close times (no streamer needed)."""

    def __init__(self, symbol: str, interval: str, *, settings=None, poll: float = 1.0):
        from S1.settings import get_settings

        self.symbol, self.interval, self.poll = symbol, interval, max(0.2, float(poll))
        self.settings = settings or get_settings()
        self.description = f"REST klines from {self.settings.binance_api_url}"
        self._ms = interval_ms(interval)
        self.last_open_ms: int | None = None
        self._offset_ms = 0

    async def history(self, n: int) -> pd.DataFrame:
        async with self._rest() as api:
            await api.check_symbol(self.symbol)
            now = await api.server_time()
            self._offset_ms = now - int(time.time() * 1000)
            if n + 1 <= 1000:
                rows = await api.klines(self.symbol, self.interval, limit=n + 1)
            else:                       # a long warm-up (informative columns): exact pages
                rows = await api.klines_range(self.symbol, self.interval, floor_ms(now, self.interval) - n * self._ms,
                                              now + self._ms)
        df = self._closed(rows, now)
        df = df.iloc[-n:] if n > 0 else df
        if len(df):
            self.last_open_ms = int(_open_ms(df)[-1])
        return df

    async def events(self, stop: asyncio.Event) -> AsyncIterator[CandleEvent | PriceEvent]:
        async with self._rest() as api:
            failures = 0
            while not stop.is_set():
                now = int(time.time() * 1000) + self._offset_ms
                nxt = (self.last_open_ms + 2 * self._ms) if self.last_open_ms is not None else now
                if now < nxt:
                    await _pause(stop, min(self.poll * 5, (nxt - now) / 1000 + 0.3))
                    continue
                try:
                    rows = await api.klines(self.symbol, self.interval, limit=5)
                    failures = 0
                except NetworkError as exc:
                    failures += 1
                    log.warning("REST candles: %s (retrying in %.0fs)", exc.problem, min(60, 2 ** failures))
                    await _pause(stop, min(60, 2 ** failures))
                    continue
                now = int(time.time() * 1000) + self._offset_ms
                closed = self._closed(rows, now)
                t = _open_ms(closed)
                for i in np.nonzero(t > (self.last_open_ms if self.last_open_ms is not None else -1))[0]:
                    self.last_open_ms = int(t[i])
                    yield CandleEvent(closed.iloc[int(i):int(i) + 1])
                if len(rows) and rows[-1, 6] >= now:
                    yield PriceEvent(float(rows[-1, 4]), now)
                await _pause(stop, self.poll)

    async def close(self) -> None:
        pass


def intrabar_path(o: float, h: float, l: float, c: float, open_ms: int, close_ms: int) -> list[tuple[float, int]]:
    """The prices a replay shows inside one candle, the usual OHLC assumption: open, then
    the extreme nearer the open's side first (low before high on an up candle, high before
    low on a down candle), then the close; times spread over the candle.

    >>> intrabar_path(10, 12, 9, 11, 0, 59_999)
    [(10, 0), (9, 15000), (12, 30000), (11, 45000)]
    """
    span = (close_ms + 1 - open_ms) // 4
    mid = (l, h) if c >= o else (h, l)
    return [(o, open_ms), (mid[0], open_ms + span), (mid[1], open_ms + 2 * span), (c, open_ms + 3 * span)]


class ReplaySource(_RestMixin):
    """The last ``days`` of closed candles, replayed fast (see the module docstring)."""

    def __init__(self, symbol: str, interval: str, days: float, *, warmup: int, settings=None,
                 intrabar: bool = False):
        from S1.settings import get_settings

        if not 0 < float(days) <= 3650:
            raise UserError(f"--replay-days must be more than 0 and at most 3650, got {days:g}", "e.g. --replay-days 7")
        self.symbol, self.interval, self.days, self.warmup = symbol, interval, float(days), int(warmup)
        self.settings = settings or get_settings()
        self.description = f"replay of the last {days:g} days of REST klines from {self.settings.binance_api_url}"
        self._ms = interval_ms(interval)
        self.frame: pd.DataFrame | None = None
        self.start_ms = 0
        #: also show the path inside each candle (open, low/high, close) so resting LIMIT orders
        #: fill when the candle reaches their price (see :func:`intrabar_path`)
        self.intrabar = bool(intrabar)

    async def load(self) -> None:
        async with self._rest() as api:
            await api.check_symbol(self.symbol)
            now = await api.server_time()
            end = floor_ms(now, self.interval)
            self.start_ms = end - int(self.days * 86_400_000)
            first = self.start_ms - self.warmup * self._ms
            rows = await api.klines_range(self.symbol, self.interval, first, end)
        self.frame = self._closed(rows, now)
        n = int((_open_ms(self.frame) >= self.start_ms).sum()) if len(self.frame) else 0
        if n == 0:
            raise UserError(f"no closed {self.interval} candle of {self.symbol} in the last {self.days:g} days at "
                            f"{self.settings.binance_api_url}", "check the symbol and --replay-days")

    @property
    def replay_count(self) -> int:
        return int((_open_ms(self.frame) >= self.start_ms).sum()) if self.frame is not None else 0

    async def history(self, n: int) -> pd.DataFrame:
        if self.frame is None:
            await self.load()
        before = self.frame[_open_ms(self.frame) < self.start_ms]
        return before.iloc[-n:]

    async def events(self, stop: asyncio.Event) -> AsyncIterator[CandleEvent | PriceEvent]:
        if self.frame is None:
            await self.load()
        part = self.frame[_open_ms(self.frame) >= self.start_ms]
        opens, closes = _open_ms(part), part["close_time"].dt.as_unit("ms").astype("int64").to_numpy()
        for i in range(len(part)):
            if stop.is_set():
                return
            if self.intrabar:
                row = part.iloc[i]
                for price, t in intrabar_path(float(row["open"]), float(row["high"]), float(row["low"]),
                                              float(row["close"]), int(opens[i]), int(closes[i])):
                    yield PriceEvent(price, t, t)
            else:
                yield PriceEvent(float(part["open"].iloc[i]), int(opens[i]), int(opens[i]))
            yield CandleEvent(part.iloc[i:i + 1], int(closes[i]) + 1)
            await asyncio.sleep(0)

    async def close(self) -> None:
        pass


# ------------------------------------------------------------------ several symbols
class MultiDbSource:
    """Several symbols from ONE streamer database (``python S1/streamer.py --symbols A,B,C`` writes
    them all to ``data/<a>_<interval>_realtime.db``): the warm-up of each, then every newly
    closed candle of any symbol, in open-time order, as ``(symbol, CandleEvent)``, and each
    symbol's price in progress as ``(symbol, PriceEvent)``. One connection and one query per
    commit (``PRAGMA data_version`` checked every ``poll`` s), so the candles a commit holds --
    the streamer writes a batch per transaction -- come out together; ``(None, None)`` after each
    check lets the caller run its timers."""

    def __init__(self, db_path: str | Path, symbols: list[str], interval: str, *, poll: float = 0.05):
        self.db = Path(db_path)
        self.symbols, self.interval, self.poll = list(symbols), interval, float(poll)
        self.description = f"streamer database {self.db} ({', '.join(self.symbols)})"
        if not self.db.is_file():
            raise UserError(f"the streamer database {self.db} does not exist",
                            f"start the streamer first: python S1/streamer.py --symbols {','.join(self.symbols)} "
                            f"--interval {interval} (or pass --db PATH, or use --source rest)")
        self.last_open_ms: dict[str, int | None] = {s: None for s in self.symbols}

    async def history(self, n: int) -> dict[str, pd.DataFrame]:
        from S1.stream_store import read_klines

        out = {}
        for s in self.symbols:
            df = read_klines(self.db, s, self.interval, closed_only=True, last_n=n)
            if len(df):
                self.last_open_ms[s] = int(_open_ms(df)[-1])
            out[s] = df
        return out

    async def events(self, stop: asyncio.Event) -> AsyncIterator[tuple[str | None, CandleEvent | PriceEvent | None]]:
        con = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True, timeout=5, isolation_level=None)
        marks = ", ".join("?" * len(self.symbols))
        query = (_NEW_ROWS.replace("symbol = ? AND interval = ? AND open_time > ?",
                                   f"symbol IN ({marks}) AND interval = ? AND open_time > ?")
                 .replace("SELECT open_time", "SELECT symbol, open_time").replace("ORDER BY open_time",
                                                                                "ORDER BY open_time, symbol"))
        try:
            version, last_price = None, {}
            while not stop.is_set():
                v = con.execute("PRAGMA data_version").fetchone()[0]
                if v != version:
                    version = v
                    known = [t for t in self.last_open_ms.values() if t is not None]
                    after = min(known) if known else -1
                    rows = con.execute(query, (*self.symbols, self.interval, after)).fetchall()
                    live: dict[str, tuple] = {}
                    for r in rows:
                        sym, k = r[0], r[1:]
                        seen = self.last_open_ms[sym]
                        if k[11] != 1:
                            live[sym] = k            # the candle in progress
                            continue
                        if seen is not None and int(k[0]) <= seen:
                            continue
                        self.last_open_ms[sym] = int(k[0])
                        yield sym, CandleEvent(candles_from_arrays(np.array([k[:11]], dtype=np.float64)))
                    for sym, k in live.items():
                        if float(k[4]) != last_price.get(sym):
                            last_price[sym] = float(k[4])
                            yield sym, PriceEvent(float(k[4]), int(time.time() * 1000))
                yield None, None
                await _pause(stop, self.poll)
        finally:
            con.close()

    async def close(self) -> None:
        pass


class MergedSource:
    """One single-symbol source per symbol (e.g. :class:`RestPollSource`), merged into one stream of
    ``(symbol, event)`` with ``(None, None)`` at least every ``tick`` seconds."""

    def __init__(self, sources: dict[str, object], *, tick: float = 0.2):
        self.sources, self.tick = dict(sources), float(tick)
        self.description = "; ".join(f"{s}: {src.description}" for s, src in self.sources.items())

    async def history(self, n: int) -> dict[str, pd.DataFrame]:
        return {s: await src.history(n) for s, src in self.sources.items()}

    async def events(self, stop: asyncio.Event) -> AsyncIterator[tuple[str | None, CandleEvent | PriceEvent | None]]:
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(sym, src):
            async for ev in src.events(stop):
                await queue.put((sym, ev))

        tasks = [asyncio.create_task(pump(s, src)) for s, src in self.sources.items()]
        try:
            while not stop.is_set():
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=self.tick)
                except TimeoutError:
                    item = (None, None)
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()
                yield item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for src in self.sources.values():
            await src.close()


__all__ = ["CandleEvent", "DbSource", "MergedSource", "MultiDbSource", "PriceEvent", "ReplaySource", "RestPollSource",
           "SessionEnd", "intrabar_path"]
