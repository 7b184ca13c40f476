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
        self._ccxt_network_error = ccxt.NetworkError
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


# ------------------------------------------------------------------ books and tickers
class CcxtBookStreamer:
    """Order books and tickers over ccxt.pro (``watch_order_book`` / ``watch_ticker``), into the
    same tables / files as :class:`S1.book_stream.BookStreamer` (``python S1/streamer.py
    --exchange okx --streams orderbook,ticker``).

    CCXT keeps the book (for Binance it follows the same documented snapshot + ``U``/``u``
    procedure and raises on a gap, after which the book is watched again from a fresh
    snapshot); prices arrive as floats and are recorded as their shortest exact text. The
    update id is CCXT's ``nonce`` (Binance ``u``; exchanges without one: the book timestamp).
    A crossed book is never recorded."""

    def __init__(self, config, *, venue: Venue, markets: dict[str, str] | None = None,
                 settings: Settings | None = None):
        from S1.book_stream import BookStats

        self.config = config
        self.venue = venue
        self.markets_in = dict(markets or {s: s for s in config.symbols})
        self.settings = settings or get_settings()
        self.stats = BookStats()
        self.stop_reason = ""
        self.ex = None
        self.books: dict[str, Any] = {}
        self._recorded: dict[str, int] = {}
        self._rows: dict[str, list[tuple]] = {"book": [], "book_ticker": [], "ticker": []}
        self._stop_event: asyncio.Event | None = None
        self.store = None
        self.on_record = None
        self._urls: set[str] = set()

    def stop(self, reason: str = "stopped") -> None:
        if not self.stop_reason:
            self.stop_reason = reason
        if self._stop_event is not None:
            self._stop_event.set()

    def _on_connected(self, client=None) -> None:
        self.stats.connections += 1
        url = str(getattr(client, "url", ""))
        if url in self._urls:  # CCXT opens one connection per subscription kind: a known URL is a reconnect
            self.stats.reconnects += 1
            log.info("reconnected (#%d) to %s", self.stats.reconnects, self.venue.label())
        else:
            self._urls.add(url)
            log.info("connected to %s websocket", self.venue.label())

    async def run(self):
        import ccxt

        from S1.book_store import BookFiles, BookStore
        from S1.book_stream import BookSummary

        cfg = self.config
        t0 = time.monotonic()
        self._stop_event = asyncio.Event()
        if self.stop_reason:
            self._stop_event.set()
        self.store = (BookStore(cfg.db_path, busy_timeout_s=1.0) if cfg.book_format == "sqlite"
                      else BookFiles(cfg.db_path, fmt=cfg.book_format))
        self.ex = ex = make_exchange(self.venue, self.settings, pro=True, extra=_taps)
        ex.toolkit_on_connected = self._on_connected
        self._net_error, self._nonce_error = ccxt.NetworkError, ccxt.InvalidNonce
        fatal: BaseException | None = None
        tasks: list[asyncio.Task] = []
        try:
            await ex.load_markets()
            unified = {f: ex.market(g)["symbol"] for f, g in self.markets_in.items()}
            named = []
            for fsym, sym in unified.items():
                if "depth" in cfg.streams:
                    named.append((f"book-{fsym}", self._watch(fsym, sym, "book")))
                if "ticker" in cfg.streams:
                    named.append((f"ticker-{fsym}", self._watch(fsym, sym, "ticker")))
                if "bookTicker" in cfg.streams and ex.has.get("watchBidsAsks"):
                    named.append((f"bbo-{fsym}", self._watch(fsym, sym, "bbo")))
            if "bookTicker" in cfg.streams and not ex.has.get("watchBidsAsks"):
                log.warning("%s has no best bid/ask stream in CCXT: bookTicker skipped", self.venue.label())
            if "depth" in cfg.streams and cfg.book_every:
                named.append(("recorder", self._record_loop()))
            named.append(("writer", self._flush_loop()))
            tasks = [asyncio.create_task(c, name=n) for n, c in named]
            timer = (asyncio.get_running_loop().call_later(cfg.duration, self.stop, "duration reached")
                     if cfg.duration else None)
            waiter = asyncio.create_task(self._stop_event.wait())
            done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
            if timer is not None:
                timer.cancel()
            for t in done:
                if t is not waiter and not t.cancelled() and t.exception() is not None:
                    fatal = t.exception()
                    self.stop_reason = self.stop_reason or f"error: {fatal}"
            waiter.cancel()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                self._flush()
            finally:
                self.store.close()
                ex.timeout_on_exit = 0
                await ex.close()
        if fatal is not None:
            raise fatal
        s = self.stats
        return BookSummary(db_path=cfg.db_path, seconds=time.monotonic() - t0, stop_reason=self.stop_reason or "stopped",
                           messages=s.messages, depth_events=s.depth_events, applied=s.applied, gaps=s.gaps,
                           snapshots=s.snapshots, crossed=s.crossed, books_recorded=s.books_recorded,
                           book_tickers=s.book_tickers, tickers=s.tickers, reconnects=s.reconnects,
                           last_update_ids=dict(self._recorded))

    async def _watch(self, fsym: str, sym: str, what: str) -> None:
        cfg = self.config
        wait = backoff(cfg)
        failures = 0
        while True:
            try:
                if what == "book":
                    data = await self.ex.watch_order_book(sym, None if cfg.snapshot_limit > 1000 else cfg.snapshot_limit)
                elif what == "ticker":  # Binance: the full 24 h ticker (CCXT's default is miniTicker, no bid/ask)
                    data = await self.ex.watch_ticker(sym, {"name": "ticker"} if self.venue.exchange.startswith(
                        "binance") else {})
                else:
                    data = await self.ex.watch_bids_asks([sym])
                failures = 0
            except self._nonce_error as exc:  # CCXT saw a gap: it rebuilds the book from a new snapshot
                self.stats.gaps += 1
                self.books.pop(fsym, None)
                log.info("%s %s order book: %s; watching it again", self.venue.label(), fsym,
                         (str(exc).splitlines() or [""])[0][:120])
                continue
            except self._net_error as exc:
                failures += 1
                self.stats.failed_connects += 1
                if failures > cfg.max_failures:
                    raise NetworkError(f"{self.venue.label()} websocket failed {failures - 1} times in a row ({exc})",
                                       "check the network and CCXT_WS_URLS / BINANCE_WS_URL") from None
                self.books.pop(fsym, None)
                delay = wait(_Attempt(failures))
                log.warning("%s %s websocket: %s; reconnecting in %.1fs", self.venue.label(), fsym,
                            (str(exc).splitlines() or [""])[0][:200], delay)
                await asyncio.sleep(delay)
                continue
            self.stats.messages += 1
            if what == "book":
                self.stats.depth_events += 1
                self.stats.applied += 1
                self.books[fsym] = data
                if not cfg.book_every:
                    self._record(fsym, data)
            elif what == "ticker":
                self._on_ticker(fsym, data)
            else:
                for t in (data or {}).values():
                    self._on_bbo(fsym, t)

    def _text(self, x) -> str:
        return self.ex.number_to_string(x)

    def _record(self, fsym: str, ob) -> None:
        uid = ob.get("nonce")
        if uid is None:
            uid = ob.get("timestamp")
        if uid is None or self._recorded.get(fsym) == uid:
            return
        depth = self.config.depth
        bids, asks = list(ob["bids"][:depth]), list(ob["asks"][:depth])
        if bids and asks and bids[0][0] >= asks[0][0]:
            self.stats.crossed += 1
            return
        now = int(time.time() * 1000)
        ev = ob.get("timestamp")
        rows = self._rows["book"]
        rows.extend((fsym, int(uid), ev, now, "bid", i, self._text(p), self._text(q)) for i, (p, q, *_) in enumerate(bids))
        rows.extend((fsym, int(uid), ev, now, "ask", i, self._text(p), self._text(q)) for i, (p, q, *_) in enumerate(asks))
        self._recorded[fsym] = int(uid)
        self.stats.books_recorded += 1
        if self.on_record is not None:
            self.on_record(fsym, int(uid))

    async def _record_loop(self) -> None:
        every = self.config.book_every
        nxt = time.monotonic()
        while True:
            nxt += every
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            for fsym, ob in list(self.books.items()):
                self._record(fsym, ob)

    def _on_ticker(self, fsym: str, t: dict) -> None:
        def f(k):
            v = t.get(k)
            return float(v) if v is not None else None

        n = (t.get("info") or {}).get("n") if isinstance(t.get("info"), dict) else None
        ts = t.get("timestamp") or int(time.time() * 1000)
        self._rows["ticker"].append((fsym, int(ts), f("last"), f("open"), f("high"), f("low"), f("baseVolume"),
                                     f("quoteVolume"), f("percentage"), f("bid"), f("ask"),
                                     int(n) if n is not None else None))
        self.stats.tickers += 1

    def _on_bbo(self, fsym: str, t: dict) -> None:
        info = t.get("info") if isinstance(t.get("info"), dict) else {}
        uid = info.get("u") or t.get("timestamp") or int(time.time() * 1000)
        txt = [None if t.get(k) is None else self._text(t[k]) for k in ("bid", "bidVolume", "ask", "askVolume")]
        self._rows["book_ticker"].append((fsym, int(uid), int(time.time() * 1000), *txt))
        self.stats.book_tickers += 1

    def _flush(self) -> None:
        rows = self._rows
        if not any(rows.values()):
            return
        self._rows = {"book": [], "book_ticker": [], "ticker": []}
        self.store.write(**rows)
        self.stats.rows_written += sum(len(r) for r in rows.values())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval)
            self._flush()


def run_ccxt_book_streamer(symbols: list[str], *, venue: Venue, settings: Settings | None = None,
                           handle_signals: bool = True, **config: Any):
    """Resolve ``symbols`` on ``venue`` and record their books / tickers (``config``: the other
    :class:`S1.book_stream.BookConfig` fields) until the duration, Ctrl-C or SIGTERM."""
    import signal

    from S1.book_stream import BookConfig
    from S1.rest_client import run

    settings = settings or get_settings()
    markets = run(resolve_markets(list(symbols), venue, "1m", settings=settings))
    cfg = BookConfig(symbols=tuple(markets), exchange=venue.token, **config)

    async def main():
        streamer = CcxtBookStreamer(cfg, venue=venue, markets=markets, settings=settings)
        loop = asyncio.get_running_loop()
        installed = []
        if handle_signals:
            for sig, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
                try:
                    loop.add_signal_handler(sig, streamer.stop, name)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        try:
            return await streamer.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


__all__ = [
    "CcxtBookStreamer",
    "CcxtRest",
    "CcxtStreamer",
    "newest_candle",
    "resolve_markets",
    "run_ccxt_book_streamer",
    "run_ccxt_streamer",
    "tap_market_id",
    "tap_rows",
    "trade_fields",
]
