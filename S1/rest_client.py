"""Binance REST market data through python-binance, made fast and polite.

python-binance's :class:`binance.AsyncClient` is the client. It lacks three
things a bulk downloader needs, added here by subclassing rather than by
hand-writing an HTTP client:

1. **Header access.** ``AsyncClient`` keeps only the *last* response
   (``self.response``), which is meaningless with requests in flight. We
   override ``_handle_response`` to feed every response's
   ``X-MBX-USED-WEIGHT-1M`` and ``Retry-After`` into a shared :class:`WeightBudget`.
2. **Parallel paging inside the weight budget.** ``get_historical_klines`` pages
   sequentially and sleeps 1 s every 3 pages. :meth:`BinanceRest.klines_range`
   splits a window into exact 1,000-candle pages (the last page of a fixed
   interval is known in advance) and keeps ``REST_MAX_IN_FLIGHT`` of them in
   flight; the budget gate never lets the minute's weight exceed
   ``REST_WEIGHT_BUDGET`` x the limit read from ``exchangeInfo.rateLimits``.
3. **Bounded retries.** ``tenacity`` retries 5xx, timeouts, dropped
   connections and truncated bodies with exponential backoff and jitter. 429/418
   set a ban window from ``Retry-After``; *every* request waits for it to pass
   (nobody sends into a back-off window), and a ban longer than
   :data:`MAX_BAN_WAIT` seconds is reported instead of waited out.

The base URL comes from ``BINANCE_API_URL`` (tests point it at
:mod:`S1.local.exchange`).
"""

from __future__ import annotations

import asyncio
import difflib
import io
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from binance import AsyncClient
from binance.exceptions import BinanceAPIException, BinanceRequestException
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from S1.errors import NetworkError, UserError
from S1.intervals import INTERVAL_MS, check_interval
from S1.settings import Settings, get_settings

log = logging.getLogger(__name__)

KLINES_LIMIT = 1000
KLINES_WEIGHT = 2
EXCHANGE_INFO_WEIGHT = 20
#: Longest Retry-After we wait out before giving up with a clear message (s).
MAX_BAN_WAIT = 150.0


class RateLimited(Exception):
    """429/418 seen; the budget already holds the ban window."""

    def __init__(self, status: int, retry_after: float):
        super().__init__(f"HTTP {status}, Retry-After {retry_after:g}s")
        self.status, self.retry_after = status, retry_after


@dataclass
class WeightBudget:
    """Request-weight accounting shared by every request of one client.

    ``used`` is the larger of what we sent this minute and what the server last
    reported (``X-MBX-USED-WEIGHT-1M`` counts every process on this IP).
    """

    limit: float = 1200
    share: float = 0.8
    clock: Callable[[], float] = time.time
    used: float = 0
    minute: int = -1
    blocked_until: float = 0.0
    requests: int = 0
    waits: int = 0
    bans: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def cap(self) -> float:
        return self.limit * self.share

    def _roll(self, now: float) -> None:
        m = int(now // 60)
        if m != self.minute:
            self.minute, self.used = m, 0

    async def acquire(self, weight: float) -> None:
        """Wait until ``weight`` fits in this minute's budget and no ban window is open."""
        async with self._lock:
            while True:
                now = self.clock()
                if now < self.blocked_until:
                    wait = self.blocked_until - now
                    if wait > MAX_BAN_WAIT:
                        raise NetworkError(
                            f"Binance asked us to back off for {wait:.0f}s (HTTP 429/418 Retry-After)",
                            "wait that long before re-running; the existing file is untouched")
                    self.waits += 1
                    log.warning("rate limited: waiting %.1fs as the server asked (Retry-After)", wait)
                    await asyncio.sleep(wait)
                    continue
                self._roll(now)
                if self.used + weight <= self.cap:
                    self.used += weight
                    self.requests += 1
                    return
                wait = (self.minute + 1) * 60 - now + 0.05
                self.waits += 1
                log.info("weight budget %.0f/%.0f used: waiting %.1fs for the next minute",
                         self.used, self.cap, wait)
                await asyncio.sleep(wait)

    def observe(self, status: int, headers) -> None:
        """Take what a response says: used weight, and Retry-After on 429/418."""
        now = self.clock()
        self._roll(now)
        used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
        if used is not None:
            try:
                self.used = max(self.used, float(used))
            except ValueError:
                pass
        if status in (429, 418):
            self.bans += 1
            retry_after = _retry_after(headers)
            self.blocked_until = max(self.blocked_until, now + retry_after)


def _retry_after(headers) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", 1)))
    except ValueError:
        return 1.0


class _HeaderAwareClient(AsyncClient):
    """``AsyncClient`` that reports every response's status and headers."""

    def __init__(self, *, base_url: str, budget: WeightBudget, timeout: float, **kwargs):
        super().__init__(**kwargs)
        self.API_URL = base_url
        self.REQUEST_TIMEOUT = timeout
        self._budget = budget

    async def _handle_response(self, response: aiohttp.ClientResponse):
        self._budget.observe(response.status, response.headers)
        if response.status in (429, 418):
            raise RateLimited(response.status, _retry_after(response.headers))
        if response.status == 200 and response.url.path.endswith("/klines"):
            return parse_klines_body(await response.read())
        return await super()._handle_response(response)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (RateLimited, aiohttp.ClientError, asyncio.TimeoutError,
                        BinanceRequestException, ConnectionError)):
        return True
    return isinstance(exc, BinanceAPIException) and exc.status_code >= 500


def _wait(retry_state) -> float:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(exc, RateLimited):
        return 0.0  # the budget gate holds every request until Retry-After passes
    return _backoff(retry_state)


_backoff = wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2)


class BinanceRest:
    """Async Binance REST market-data client (use as ``async with``).

    >>> async def demo():                                   # doctest: +SKIP
    ...     async with BinanceRest() as api:
    ...         rows = await api.klines_range("BTCUSDT", "1h", 1700000000000, 1700360000000)
    """

    def __init__(self, settings: Settings | None = None, *, max_in_flight: int | None = None,
                 max_retries: int | None = None, progress: Callable[[int], None] | None = None):
        self.settings = settings or get_settings()
        self.max_in_flight = max_in_flight or self.settings.rest_max_in_flight
        self.max_retries = self.settings.http_max_retries if max_retries is None else max_retries
        self.budget = WeightBudget(share=self.settings.rest_weight_budget)
        self.progress = progress
        self.retries = 0
        self._client: _HeaderAwareClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._limits_known = False

    async def __aenter__(self) -> "BinanceRest":
        self._client = _HeaderAwareClient(
            base_url=self.settings.binance_api_url, budget=self.budget,
            timeout=self.settings.http_timeout,
            session_params={"connector": aiohttp.TCPConnector(limit=self.max_in_flight + 4)},
        )
        self._sem = asyncio.Semaphore(self.max_in_flight)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._client is not None:
            await self._client.close_connection()

    # ------------------------------------------------------------------ requests
    async def _call(self, what: str, weight: float, fn, **params):
        assert self._client is not None and self._sem is not None, "use 'async with BinanceRest()'"
        attempt_no = 0
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1), wait=_wait,
                                               retry=retry_if_exception(_retryable), reraise=True):
                with attempt:
                    attempt_no += 1
                    if attempt_no > 1:
                        self.retries += 1
                    async with self._sem:  # the ban gate is checked once a slot is ours, not before
                        await self.budget.acquire(weight)
                        return await fn(**params)
        except BinanceAPIException as exc:
            if exc.status_code >= 500:
                raise NetworkError(f"{what}: server error HTTP {exc.status_code} after "
                                   f"{attempt_no} attempts", "try again later; nothing was written") from exc
            raise self._api_error(exc, params) from exc
        except (RateLimited, aiohttp.ClientError, asyncio.TimeoutError, BinanceRequestException,
                ConnectionError) as exc:
            reason = str(exc) or type(exc).__name__
            raise NetworkError(
                f"cannot reach {self.settings.binance_api_url} ({what}: {reason}) after {attempt_no} attempts",
                "check your connection or BINANCE_API_URL in .env, or run it with --offline (OFFLINE=1 in .env) "
                "on the local simulated market; nothing was written") from exc

    def _api_error(self, exc: BinanceAPIException, params: dict) -> UserError:
        symbol = params.get("symbol", "")
        if exc.code == -1121:
            return UserError(f"unknown symbol {symbol!r} on {self.settings.binance_api_url}",
                             "check the spelling (run with --plan to test quickly)")
        if exc.code == -1120:
            return UserError(f"interval {params.get('interval')!r} rejected by the exchange",
                             "use one of 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M")
        return UserError(f"Binance rejected the request (code {exc.code}): {exc.message}", "check the arguments")

    # ----------------------------------------------------------------- endpoints
    async def server_time(self) -> int:
        return int((await self.server_clock())["serverTime"])

    async def server_clock(self) -> dict:
        """The ``GET /api/v3/time`` body (``serverTime``; the local servers add ``simulated``)."""
        return await self._call("server time", 1, self._client.get_server_time)

    async def exchange_info(self, symbol: str | None = None) -> dict:
        """``GET /api/v3/exchangeInfo`` (one symbol when given); also loads the weight limit."""
        if symbol:
            info = await self._call("exchangeInfo", KLINES_WEIGHT, self._client._get, path="exchangeInfo",
                                    data={"symbol": symbol})
        else:
            info = await self._call("exchangeInfo", EXCHANGE_INFO_WEIGHT, self._client.get_exchange_info)
        self._load_limits(info)
        return info

    def _load_limits(self, info: dict) -> None:
        for lim in info.get("rateLimits", []):
            if lim.get("rateLimitType") == "REQUEST_WEIGHT" and lim.get("interval") == "MINUTE":
                self.budget.limit = float(lim["limit"]) / max(1, int(lim.get("intervalNum", 1)))
                self._limits_known = True

    async def check_symbol(self, symbol: str) -> dict:
        """The symbol's exchangeInfo entry; an unknown symbol raises a :class:`UserError`
        that suggests close matches from the full symbol list."""
        try:
            info = await self.exchange_info(symbol)
        except UserError as exc:
            if "unknown symbol" not in str(exc):
                raise
            full = await self.exchange_info()
            names = [s["symbol"] for s in full.get("symbols", [])]
            near = difflib.get_close_matches(symbol, names, n=4, cutoff=0.6)
            raise UserError(f"unknown symbol {symbol!r} on {self.settings.binance_api_url}",
                            f"did you mean {', '.join(near)}?" if near else
                            "see the exchange's symbol list (e.g. BTCUSDT, ETHUSDC)") from None
        entries = [s for s in info.get("symbols", []) if s.get("symbol") == symbol]
        return entries[0] if entries else {}

    async def klines(self, symbol: str, interval: str, start_ms: int | None = None,
                     end_ms: int | None = None, limit: int = KLINES_LIMIT) -> np.ndarray:
        """Raw klines as an ``(n, 11)`` float array (see :func:`parse_klines_body`)."""
        params = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        return await self._call("klines", KLINES_WEIGHT, self._client.get_klines, **params)

    async def first_open_ms(self, symbol: str, interval: str) -> int | None:
        """Open time of the symbol's first kline (None if it has none)."""
        rows = await self.klines(symbol, interval, start_ms=0, limit=1)
        return int(rows[0, 0]) if len(rows) else None

    async def order_book(self, symbol: str, limit: int = 1000) -> dict:
        """``GET /api/v3/depth``: ``{"lastUpdateId", "bids", "asks"}`` (levels as exact text)."""
        weight = 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
        return await self._call("depth", weight, self._client.get_order_book, symbol=symbol, limit=limit)

    async def klines_range(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        """All klines with ``start_ms <= open_time < end_ms`` as an ``(n, 11)`` float array,
        fetched in parallel exact pages, sorted, in-progress candles *not* removed."""
        check_interval(interval)
        pages = page_windows(start_ms, end_ms, interval)

        async def one(page):
            arr = await self.klines(symbol, interval, page[0], page[1])
            if self.progress:
                self.progress(1)
            return arr

        parts = await asyncio.gather(*(one(p) for p in pages))
        if not parts:
            return np.empty((0, 11))
        return sorted_unique(np.concatenate(parts), start_ms, end_ms)


def sorted_unique(arr: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    """Rows with ``start_ms <= open < end_ms``, sorted by open time, one per open time
    (copies only when something has to change)."""
    t = arr[:, 0]
    if len(t) and (t[0] < start_ms or t[-1] >= end_ms):
        arr = arr[(t >= start_ms) & (t < end_ms)]
        t = arr[:, 0]
    if len(t) > 1:
        d = np.diff(t)
        if (d <= 0).any():
            arr = arr[np.argsort(t, kind="stable")]
            arr = arr[np.r_[True, np.diff(arr[:, 0]) > 0]]
    return arr


def page_windows(start_ms: int, end_ms: int, interval: str) -> list[tuple[int, int]]:
    """Exact request windows ``(startTime, endTime)`` of at most 1,000 candles each."""
    if end_ms <= start_ms:
        return []
    if interval == "1M":  # 1,000 months cover any window the exchange has
        return [(start_ms, end_ms - 1)]
    span = INTERVAL_MS[interval] * KLINES_LIMIT
    starts = range(int(start_ms), int(end_ms), span)
    return [(s, min(s + span, end_ms) - 1) for s in starts]


_KLINE_CSV_READ = pacsv.ReadOptions(column_names=[f"f{i}" for i in range(12)], use_threads=False)
_KLINE_CSV_CONVERT = pacsv.ConvertOptions(column_types={f"f{i}": pa.float64() for i in range(12)})


def parse_klines_body(body: bytes) -> np.ndarray:
    """A ``/klines`` JSON body -> ``(n, 11)`` float64 array, 3x faster than ``json.loads``.

    A kline body is a list of 12-field numeric rows (decimals quoted), so deleting
    ``"`` and ``[`` and turning ``],`` into newlines makes it a CSV that
    ``pyarrow.csv`` parses in C++. Anything else (an error object, a truncated
    body, a row of another width) raises :class:`BinanceRequestException` (retried).

    >>> parse_klines_body(b'[[1,"2.5","3","1","2","10",59999,"20",7,"4","8","0"]]')[0, [0, 1, 8]]
    array([1. , 2.5, 7. ])
    """
    body = body.translate(None, b" \n\r\t")
    if body == b"[]":
        return np.empty((0, 11))
    if not (body.startswith(b"[[") and body.endswith(b"]]")):
        raise BinanceRequestException(f"malformed klines body: {body[:80]!r}")
    csv = body.translate(None, b'"[').replace(b"],", b"\n").rstrip(b"]")
    try:
        table = pacsv.read_csv(io.BytesIO(csv), read_options=_KLINE_CSV_READ, convert_options=_KLINE_CSV_CONVERT)
    except pa.ArrowInvalid as exc:
        raise BinanceRequestException(f"malformed kline rows: {str(exc).splitlines()[0]}") from exc
    return np.column_stack([table.column(i).to_numpy() for i in range(11)])


def run(coro):
    """Run a coroutine from synchronous code (scripts, notebooks with no running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("an event loop is running here (Jupyter?): use 'await' on the coroutine instead")
