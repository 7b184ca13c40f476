"""Live candles from any exchange CCXT knows into the streamer's SQLite (``python S1/streamer.py
--exchange okx``), with the same guarantees as the Binance path (:mod:`S1.stream_client`).

:class:`CcxtStreamer` is a :class:`S1.stream_client.KlineStreamer` whose connection is
ccxt.pro's ``watch_ohlcv`` / ``watch_trades`` and whose REST side is
:class:`S1.ccxt_source.CcxtHistory` (exact pages, CCXT's own rate limiter, bounded
retries). Everything else is the Binance streamer's own code: the per-symbol watermark
committed with the rows, the REST backfill of ``[W, now)`` after every (re)connect and on
every hole, upserts (the in-progress row replaced until the closed candle lands), batched
commits, status lines, Ctrl-C / SIGTERM flush, the trade-to-candle aggregator that writes a
minute as closed only when contiguous trade ids prove nothing was missed.

- **One connection for all symbols**: one ccxt.pro instance watches every symbol; CCXT
  multiplexes the subscriptions over its connection(s) to the exchange.
- **Which candles are closed**: CCXT's unified OHLCV has no "closed" flag, so a tap on the
  exchange class's ``handle_ohlcv`` reads it from the raw message where the exchange sends
  one (Binance ``k.x``, OKX ``confirm``) together with the full candle (close time, quote
  volume, trades, taker volumes on Binance). For other exchanges the stream gives the
  candle in progress and the moment it closes (a newer one starts); its final values are
  then taken from REST (a last pushed update may miss the last trade). Columns an
  exchange does not report are NULL in SQLite, NaN when read, as in the Parquet files.
- **Trades** (``--stream trades``): ``watch_trades`` feeds
  :class:`S1.trade_aggregation.MinuteAggregator`. Trade ids prove completeness where they are
  consecutive integers (Binance ``trade`` ids, ``aggTrade`` first/last ids); where they are
  not, every minute is written in progress from the trades and closed from REST.
- **Reconnects**: a CCXT network error (drop, close frame, refused handshake, DNS) ends the
  connection; the next watch reconnects -- at once after data had arrived, else with
  exponential backoff and jitter -- and the REST backfill fills what closed meanwhile. After
  ``max_failures`` consecutive failures it gives up with one line.

URLs from settings: Binance's websocket from ``BINANCE_WS_URL`` and REST from
``BINANCE_API_URL``; other exchanges from ``CCXT_WS_URLS`` / ``CCXT_API_URLS``.

From a notebook::

    from S1.ccxt_source import Venue
    from S1.ccxt_stream import run_ccxt_streamer
    summary = run_ccxt_streamer(["BTC/USDT"], venue=Venue("okx"), interval="1m", duration=120)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from typing import Any

import numpy as np

from S1.ccxt_source import CcxtHistory, Venue, closed_rows, make_exchange, rich_row
from S1.errors import NetworkError, UserError
from S1.intervals import close_time_ms, floor_ms
from S1.settings import Settings, get_settings
from S1.stream_client import KlineStreamer, run_streamer
from S1.stream_config import StreamConfig, _Attempt, backoff
from S1.stream_stats import StreamSummary

log = logging.getLogger("S1.streamer")


# ------------------------------------------------------------------ the taps
def tap_rows(exchange_id: str, message) -> list[list]:
    """Rich rows (``S1.ccxt_source.ROW_WIDTH``, last field = closed flag) from one raw
    kline message, for exchanges whose messages say whether a candle is final."""
    if not isinstance(message, dict):
        return []
    if exchange_id.startswith("binance"):
        k = message.get("k")
        if not isinstance(k, dict):
            return []
        row = [k.get("t"), k.get("o"), k.get("h"), k.get("l"), k.get("c"), k.get("v"), k.get("T"), k.get("q"),
               k.get("n"), k.get("V"), k.get("Q")]
        return [[float(x) if x is not None else np.nan for x in row] + [1.0 if k.get("x") else 0.0]]
    if exchange_id.startswith("okx"):
        channel = str((message.get("arg") or {}).get("channel", ""))
        contract = str((message.get("arg") or {}).get("instId", "")).endswith(("-SWAP", "-FUTURES")) or \
            str((message.get("arg") or {}).get("instId", "")).count("-") >= 2
        if not channel.startswith(("candle", "mark-price-candle", "index-candle")):
            return []
        return [rich_row("okx", d, {"contract": contract}, lambda r, m: r) for d in message.get("data") or []]
    return []


def tap_market_id(exchange_id: str, message) -> str | None:
    """The exchange's market id a raw kline message is about (``BTCUSDT``, ``BTC-USDT``)."""
    if not isinstance(message, dict):
        return None
    if exchange_id.startswith("binance"):
        k = message.get("k")
        return str(k.get("s")) if isinstance(k, dict) and k.get("s") is not None else None
    if exchange_id.startswith("okx"):
        inst = (message.get("arg") or {}).get("instId")
        return str(inst) if inst is not None else None
    return None


def _taps(cls) -> dict:
    """Methods added to the ccxt.pro class: the closed-candle tap (raw rows per market id,
    with the event time), a connection hook, and (Binance) spot detection that also accepts a configured
    local stream URL."""

    def handle_ohlcv(self, client, message):
        try:
            mid = tap_market_id(self.id, message)
            if mid is not None:
                event = message.get("E") if isinstance(message, dict) else None
                for r in tap_rows(self.id, message):
                    self.toolkit_tap[mid].append((r, event))
        except (TypeError, ValueError, AttributeError):  # never let the tap break CCXT's own handling
            pass
        return super(cls, self).handle_ohlcv(client, message)

    def on_connected(self, client, message=None):
        hook = getattr(self, "toolkit_on_connected", None)
        if hook is not None:
            hook(client)
        return super(cls, self).on_connected(client, message)

    methods = {"handle_ohlcv": handle_ohlcv, "on_connected": on_connected}
    if hasattr(cls, "is_spot_url"):
        def is_spot_url(self, client) -> bool:
            base = ((self.urls.get("api") or {}).get("ws") or {}).get("spot")
            return super(cls, self).is_spot_url(client) or bool(base and str(client.url).startswith(str(base)))
        methods["is_spot_url"] = is_spot_url
    return methods


def newest_candle(ohlcv) -> list | None:
    """The newest candle of a unified OHLCV list as a rich row flagged in progress (or None).

    >>> newest_candle([[60_000, 2, 2, 2, 2, 2], [0, 1, 1, 1, 1, 1]])[:2], newest_candle([])
    ([60000.0, 2.0], None)
    """
    if not ohlcv:
        return None
    c = max(ohlcv, key=lambda c: c[0])
    return [float(x) if x is not None else np.nan for x in c[:6]] + [np.nan] * 5 + [0.0]


def trade_fields(trade: dict, fallback_id: int) -> tuple[tuple, bool]:
    """A CCXT trade -> ``(time_ms, price, qty, buyer_maker, first_id, last_id)`` for
    :class:`S1.trade_aggregation.MinuteAggregator`, and whether its ids are real.
    Binance ``aggTrade`` keeps its first/last trade ids; an OKX ``trades`` push (``tradeId`` =
    the last of ``count`` aggregated trades) spans ``tradeId - count + 1 .. tradeId``; other
    integer ids are used as they are; any other id gets ``fallback_id`` (never contiguous, so such minutes close from REST).

    >>> trade_fields({"timestamp": 60_001, "price": 0.5, "amount": 2.0, "side": "sell", "id": "7"}, 0)
    ((60001, 0.5, 2.0, True, 7, 7), True)
    """
    info = trade.get("info") if isinstance(trade.get("info"), dict) else {}
    buyer_maker = trade.get("side") == "sell"  # the taker sold: the buyer was the maker
    if info.get("e") == "aggTrade" and "f" in info and "l" in info:
        first, last, real = int(info["f"]), int(info["l"]), True
    elif str(info.get("tradeId", "")).isdigit() and str(info.get("count", "")).isdigit() and int(info["count"]) > 0:
        # OKX's trades channel aggregates: tradeId is the last of `count` trades
        last, real = int(info["tradeId"]), True
        first = last - int(info["count"]) + 1
    else:
        tid = str(trade.get("id") or "")
        real = tid.isdigit()
        first = last = int(tid) if real else fallback_id
    return (int(trade["timestamp"]), float(trade["price"]), float(trade["amount"]), buyer_maker, first, last), real


def _store_row(symbol: str, interval: str, r: list) -> tuple:
    """A rich row -> a store row (close time from the interval when not reported; trades 0)."""
    t = int(r[0])
    close = int(r[6]) if r[6] == r[6] else int(close_time_ms(t, interval))
    trades = int(r[8]) if r[8] == r[8] else 0
    return (symbol, interval, t, close, float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]),
            float(r[7]), float(r[9]), float(r[10]), trades, 1 if r[11] == 1 else 0)


# ------------------------------------------------------------------ REST side
class CcxtRest:
    """What the streamer asks of REST, through CCXT: the exchange clock and the closed
    candles of a range, per file symbol (``async with``)."""

    def __init__(self, venue: Venue, settings: Settings, exchange, histories: dict[str, CcxtHistory]):
        self.venue, self.settings, self.ex, self.histories = venue, settings, exchange, histories

    async def __aenter__(self) -> CcxtRest:
        return self

    async def __aexit__(self, *exc) -> None:
        self.ex.timeout_on_exit = 0
        await self.ex.close()

    async def check_symbol(self, symbol: str) -> None:
        if symbol not in self.histories:  # resolved at start-up; this is a programming error
            raise UserError(f"{symbol} is not streamed", "pass it with --symbols")

    async def server_time(self) -> int:
        return await next(iter(self.histories.values())).server_time()

    async def closed_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int
                            ) -> tuple[np.ndarray, int]:
        """Closed candles with ``start <= open < end`` as ``(n, 11)`` rows (Binance layout;
        close time filled, trades 0 and NaN volumes where the exchange reports none), and the
        open time up to which they are complete: a candle that has ended but is not final on
        the exchange yet (OKX ``confirm`` "0" for a moment after the close) ends the coverage,
        so the watermark stops before it and the streamer asks again."""
        rows = await self.histories[symbol].fetch_range(start_ms, end_ms)
        rows, covered = closed_rows(rows, start_ms, end_ms, interval)
        covered = min(covered, floor_ms(end_ms, interval))
        rows = rows[rows[:, 0] < covered] if len(rows) else rows
        if not len(rows):
            return np.empty((0, 11)), covered
        rows = rows[:, :11].copy()
        missing = np.isnan(rows[:, 6])
        if missing.any():
            rows[missing, 6] = close_time_ms(rows[missing, 0].astype(np.int64), interval)
        rows[np.isnan(rows[:, 8]), 8] = 0.0
        return rows, covered


# ------------------------------------------------------------------ streamer
class CcxtStreamer(KlineStreamer):
    """The streamer over ccxt.pro (``await CcxtStreamer(config, venue=..., markets=...).run()``).

    ``config.symbols`` are file symbols (``BTCUSDT``); ``markets`` maps each to the symbol
    as the user gave it (``BTC/USDT``, ``BTC-USDT-SWAP``), resolved at start-up."""

    def __init__(self, config: StreamConfig, *, venue: Venue, markets: dict[str, str] | None = None,
                 settings: Settings | None = None):
        self.venue = venue
        self.markets_in = dict(markets or {s: s for s in config.symbols})
        super().__init__(config, settings=settings)
        self.ex = None
        self.histories: dict[str, CcxtHistory] = {}
        self._fallback_id: dict[str, int] = defaultdict(int)
        self._label = f"{venue.label()} " + self._label
        #: read closed flags and full candles from the raw messages (exchanges that send them)
        self.uses_tap = venue.exchange.startswith(("binance", "okx"))

    def _check_url(self) -> None:  # the URLs come from S1.ccxt_source.configure_urls
        self.url = ""

    def _open_rest(self):
        import ccxt

        self.ex = make_exchange(self.venue, self.settings, pro=True, extra=_taps)
        self.ex.toolkit_tap = defaultdict(deque)
        self.ex.newUpdates = True
        self.ex.toolkit_on_connected = lambda client: self._on_connected()
        self.url = self.ex.toolkit_url
        # CCXT wraps most socket failures in NetworkError, but a send on a connection the server is
        # closing (a subscription racing a drop) surfaces as aiohttp's ConnectionResetError("Cannot
        # write to closing transport"): a dropped connection all the same, so reconnect
        self._ccxt_network_error = (ccxt.NetworkError, ConnectionError)
        return CcxtRest(self.venue, self.settings, self.ex, self.histories)

    async def _startup(self) -> None:
        for fsym, given in self.markets_in.items():
            h = CcxtHistory(self.venue, given, self.config.interval, settings=self.settings, exchange=self.ex)
            await h.__aenter__()  # loads the markets once, resolves the symbol; closing is the exchange's
            self.histories[fsym] = h
        await super()._startup()

    async def _closed_klines(self, symbol: str, start: int, now: int) -> tuple[np.ndarray, int]:
        return await self.api.closed_klines(symbol, self.config.interval, start, now)

    # --------------------------------------------------------------- connection
    async def _connection_loop(self) -> None:
        await asyncio.gather(*(self._watch(s) for s in self.config.symbols))

    def _on_connected(self) -> None:
        self._epoch += 1
        self._connected = True
        self.stats.connections += 1
        if self.stats.connections > 1:
            self.stats.reconnects += 1
            log.info("reconnected (#%d) to %s", self.stats.reconnects, self.venue.label())
        else:
            log.info("connected to %s websocket", self.venue.label())
        self._backfill_needed.set()  # whatever closed while we were away comes from REST

    async def _watch(self, symbol: str) -> None:
        cfg = self.config
        h = self.histories[symbol]
        unified, market_id = h.market["symbol"], str(h.market["id"])
        wait = backoff(cfg)
        failures, seen = 0, self.stats.connections
        trades = cfg.stream == "trades"
        params: dict[str, Any] = {}
        if trades and self.venue.exchange.startswith("binance"):
            params["name"] = cfg.trade_stream
        while True:
            try:
                data = await (self.ex.watch_trades(unified, None, None, params) if trades
                              else self.ex.watch_ohlcv(unified, cfg.interval))
            except self._ccxt_network_error as exc:
                self._connected = False
                # a connection that was established counts as a success: reconnect at once
                failures = 1 if self.stats.connections > seen else failures + 1
                seen = self.stats.connections
                if failures > 1 or not seen:
                    self.stats.failed_connects += 1
                reason = (str(exc).splitlines() or [""])[0][:200] or type(exc).__name__
                if failures > cfg.max_failures:
                    raise NetworkError(f"{self.venue.label()} websocket failed {failures - 1} times in a row "
                                       f"({reason})", "check the network and CCXT_WS_URLS / BINANCE_WS_URL; "
                                       f"everything received is in {cfg.db_path} and a restart backfills the gap"
                                       ) from None
                delay = wait(_Attempt(failures - 1)) if failures > 1 else 0.0
                log.warning("%s %s websocket: %s; reconnecting in %.1fs", self.venue.label(), symbol, reason, delay)
                await asyncio.sleep(delay)
                continue
            if trades:
                self.stats.messages += 1
                self._on_trades(symbol, data, time.monotonic())
            else:
                self._on_ohlcv(symbol, market_id, data, time.monotonic())

    # ----------------------------------------------------------------- messages
    def _on_ohlcv(self, symbol: str, market_id: str, ohlcv, recv: float) -> None:
        cfg = self.config
        w = self._W.get(symbol, 0)
        if not self.uses_tap:
            # no closed flag on the wire: a candle is known closed once a newer one has started, and its
            # final values are the exchange's REST candle (the last pushed update may miss a last trade)
            self.ex.toolkit_tap.pop(market_id, None)
            self.stats.messages += 1
            live = newest_candle(ohlcv)
            if live is None:
                return
            if live[0] > w:
                self._backfill_needed.set()
            if cfg.write_in_progress and live[0] >= w:
                self.writer.put(_store_row(symbol, cfg.interval, live), recv)
                self.stats.in_progress_rows += 1
            return
        tap = self.ex.toolkit_tap.get(market_id)
        items = []
        while tap:
            items.append(tap.popleft())
        self.stats.messages += len(items)  # one raw message each (a watch may return after several)
        for r, event_ms in sorted(items, key=lambda x: (x[0][0], x[0][11])):
            row = _store_row(symbol, cfg.interval, r)
            if row[13]:
                self.writer.put(row, recv, event_ms)
                self.stats.closed_stream += 1
                self._closed(symbol, row[2])
            elif cfg.write_in_progress and row[2] >= self._W.get(symbol, 0):
                self.writer.put(row, recv, event_ms)
                self.stats.in_progress_rows += 1

    def _on_trades(self, symbol: str, trades: list, recv: float) -> None:
        agg = self._aggs[symbol]
        for tr in trades or []:
            self._fallback_id[symbol] += 2
            fields, _ = trade_fields(tr, self._fallback_id[symbol])  # repeats of real ids are skipped
            self._on_trade_fields(agg, fields, recv, None)


# ------------------------------------------------------------------ running
async def resolve_markets(symbols: list[str], venue: Venue, interval: str, *,
                          settings: Settings | None = None) -> dict[str, str]:
    """``{file symbol: symbol as given}`` for ``symbols`` on ``venue`` (one markets request);
    unknown symbols and intervals raise one-line :class:`UserError`\\ s."""
    settings = settings or get_settings()
    ex = make_exchange(venue, settings, pro=False)
    out: dict[str, str] = {}
    try:
        for s in symbols:
            h = CcxtHistory(venue, s, interval, settings=settings, exchange=ex)
            await h.__aenter__()
            if h.file_symbol in out:
                raise UserError(f"{s!r} and {out[h.file_symbol]!r} are the same market", "pass each symbol once")
            out[h.file_symbol] = s
    finally:
        ex.timeout_on_exit = 0
        await ex.close()
    return out


def run_ccxt_streamer(symbols: list[str], *, venue: Venue, settings: Settings | None = None,
                      handle_signals: bool = True, **config: Any) -> StreamSummary:
    """Resolve ``symbols`` on ``venue`` and stream them (``config``: the other
    :class:`S1.stream_config.StreamConfig` fields) until the duration, Ctrl-C or SIGTERM."""
    from S1.rest_client import run

    if venue.price != "last":
        raise UserError(f"the streamer records last prices, not --price {venue.price}",
                        "drop --price (mark/index history: python S1/historical.py --price ...)")
    settings = settings or get_settings()
    interval = "1m" if config.get("stream") == "trades" else config.get("interval", "1m")
    markets = run(resolve_markets(list(symbols), venue, interval, settings=settings))
    cfg = StreamConfig(symbols=tuple(markets), exchange=venue.token, **config)
    return run_streamer(cfg, settings=settings, handle_signals=handle_signals,
                        make=lambda c, s: CcxtStreamer(c, venue=venue, markets=markets, settings=s))


__all__ = [
    "CcxtRest",
    "CcxtStreamer",
    "newest_candle",
    "resolve_markets",
    "run_ccxt_streamer",
    "tap_market_id",
    "tap_rows",
    "trade_fields",
]
