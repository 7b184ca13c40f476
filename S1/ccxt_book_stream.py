"""Order books and tickers from any exchange ccxt.pro knows (``python S1/streamer.py --exchange okx
--streams orderbook,ticker``), into the tables / files of :mod:`S1.book_store` -- the CCXT
counterpart of :mod:`S1.book_stream` (whose own Binance client keeps the book itself).

From a notebook::

    from S1.ccxt_source import Venue
    from S1.ccxt_book_stream import run_ccxt_book_streamer
    summary = run_ccxt_book_streamer(["BTC/USDT"], venue=Venue("okx"), streams=("depth", "ticker"), duration=60)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from S1.ccxt_source import Venue, make_exchange
from S1.ccxt_stream import _taps, resolve_markets
from S1.errors import NetworkError
from S1.settings import Settings, get_settings
from S1.stream_config import _Attempt, backoff
from S1.stream_connection import run_until_stopped, run_with_signals
from S1.stream_store import remove_if_empty

log = logging.getLogger("S1.streamer")


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
        self.store = None
        self.ex = ex = make_exchange(self.venue, self.settings, pro=True, extra=_taps)
        ex.toolkit_on_connected = self._on_connected
        self._net_error, self._nonce_error = (ccxt.NetworkError, ConnectionError), ccxt.InvalidNonce
        fatal: BaseException | None = None
        failed = False
        created = not cfg.db_path.exists()
        try:
            await ex.load_markets()
            unified = {f: ex.market(g)["symbol"] for f, g in self.markets_in.items()}
            # opened after the markets resolve: an unknown symbol leaves no empty file
            self.store = (BookStore(cfg.db_path, busy_timeout_s=1.0, simulated=bool(self.settings.simulated_market))
                          if cfg.book_format == "sqlite"
                          else BookFiles(cfg.db_path, fmt=cfg.book_format))
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
            fatal = await run_until_stopped(named, stop_event=self._stop_event, duration=cfg.duration,
                                            on_duration=self.stop)
            if fatal is not None:
                self.stop_reason = self.stop_reason or f"error: {fatal}"
        except BaseException:
            failed = True
            raise
        finally:
            try:
                if self.store is not None:
                    self._flush()
            finally:
                if self.store is not None:
                    self.store.close()
                ex.timeout_on_exit = 0
                await ex.close()
            if ((failed or fatal is not None) and created and cfg.book_format == "sqlite"
                    and remove_if_empty(cfg.db_path)):
                log.debug("removed %s: this run created it and wrote no row before failing", cfg.db_path)
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

    from S1.book_stream import BookConfig
    from S1.rest_client import run

    settings = settings or get_settings()
    markets = run(resolve_markets(list(symbols), venue, "1m", settings=settings))
    cfg = BookConfig(symbols=tuple(markets), exchange=venue.token, **config)

    return run_with_signals(lambda: CcxtBookStreamer(cfg, venue=venue, markets=markets, settings=settings),
                            handle_signals=handle_signals)
