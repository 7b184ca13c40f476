"""A local Binance-compatible market-data server on 127.0.0.1 (aiohttp).

It speaks the real protocol so the real client code can be tested offline and
the toolkit can run without internet:

- ``GET /api/v3/klines`` with ``startTime``/``endTime``/``limit`` (max 1,000),
  the Binance error codes (-1121 unknown symbol, -1120 bad interval), and the
  candle *in progress* at the server clock served with partial values;
- ``GET /api/v3/exchangeInfo`` (optionally ``?symbol=``), ``/api/v3/time``, ``/api/v3/ping``;
- ``X-MBX-USED-WEIGHT-1M`` on every response, 429 + ``Retry-After`` past the
  weight limit and 418 + ``Retry-After`` for a client that keeps sending inside
  a back-off window;
- the public archive layout (``/data/spot/{monthly,daily}/klines/...zip`` and
  ``.CHECKSUM``), µs timestamps from 2025-01-01 on, as data.binance.vision does;
- fault injection: :meth:`LocalBinance.inject` queues 5xx, 429, 418, dropped
  connections, truncated bodies, delays and corrupt zips for matching requests;
  ``latency`` delays every request.

Why our own server and not a mocking library: the tests need real sockets,
real headers, real paging and real connection drops through aiohttp, and the
offline mode of the toolkit needs the same server as a process. aiohttp (already
python-binance's transport) provides the HTTP and WebSocket server; this module
only holds the exchange semantics. Other modules add routes to ``server.app``
(the WebSocket streams of :mod:`S1.local.stream`, the signed order endpoints of
the S7 test exchange) before :meth:`start`.

Run it by hand (simulated market, offline mode)::

    python -m S1.local.exchange --port 8765 --symbols BTCUSDT,ETHUSDC
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from aiohttp import web

from S1.datasets import candles_to_rows
from S1.intervals import INTERVALS, next_open_ms, to_ms
from S1.local.faults import Fault, FaultQueue
from S1.local.server import LocalServer

log = logging.getLogger(__name__)

WEIGHTS = {"klines": 2, "exchangeInfo": 20, "time": 1, "ping": 1}
_US_FROM_MS = to_ms("2025-01-01")


@dataclass
class RequestRecord:
    path: str
    params: dict
    status: int
    t: float  # when the server answered
    arrived: float = 0.0  # when the request arrived


def _fmt(x: float) -> str:
    return f"{x:.8f}"


def kline_json_rows(rows: np.ndarray) -> list[list]:
    """Rows -> the exact JSON shape Binance sends (strings for decimals, ints for times)."""
    return [[int(r[0]), _fmt(r[1]), _fmt(r[2]), _fmt(r[3]), _fmt(r[4]), _fmt(r[5]), int(r[6]),
             _fmt(r[7]), int(r[8]), _fmt(r[9]), _fmt(r[10]), "0"] for r in rows]


def simulated_symbol_info(symbol: str, price: float) -> dict:
    tick = 10 ** np.floor(np.log10(max(price, 1e-8)) - 6)
    step = 10 ** max(-8, np.floor(-np.log10(max(price, 1e-8)) - 1))
    return {
        "symbol": symbol, "status": "TRADING",
        "baseAsset": symbol[:-4] if symbol.endswith(("USDT", "USDC", "BUSD")) else symbol[:-3],
        "quoteAsset": symbol[-4:] if symbol.endswith(("USDT", "USDC", "BUSD")) else symbol[-3:],
        "baseAssetPrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "isSpotTradingAllowed": True, "permissions": ["SPOT"],
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": _fmt(tick), "maxPrice": "1000000.00000000",
             "tickSize": _fmt(tick)},
            {"filterType": "LOT_SIZE", "minQty": _fmt(step), "maxQty": "9000.00000000", "stepSize": _fmt(step)},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
    }


def kline_window(rows: np.ndarray, now: int, start: int | None, end: int | None, limit: int) -> tuple[int, int]:
    """The ``[lo, hi)`` row slice a klines request returns, as Binance pages: candles opened
    by ``now``; ``startTime``/``endTime`` inclusive; without a start the newest ``limit``.

    >>> rows = np.array([[0.0], [60_000.0], [120_000.0], [180_000.0]])
    >>> kline_window(rows, 150_000, None, None, 2), kline_window(rows, 150_000, 60_000, None, 500)
    ((1, 3), (1, 3))
    """
    n_visible = int(np.searchsorted(rows[:, 0], now, side="right"))
    if start is None and end is None:
        return max(0, n_visible - limit), n_visible
    lo = 0 if start is None else int(np.searchsorted(rows[:n_visible, 0], start, side="left"))
    hi = n_visible if end is None else int(np.searchsorted(rows[:n_visible, 0], end, side="right"))
    if start is None:
        lo = max(lo, hi - limit)
    return lo, min(hi, lo + limit)


class LocalBinance(LocalServer):
    """The server. ``with LocalBinance() as ex: ...`` starts it on a free port.

    >>> from S1.local.simulated import simulate_candles
    >>> with LocalBinance(now_ms=to_ms("2024-01-02")) as ex:        # doctest: +SKIP
    ...     ex.add_candles("BTCUSDT", "1h", simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-03"))
    ...     ex.api_url
    'http://127.0.0.1:40123/api'
    """

    def __init__(self, *, now_ms: int | Callable[[], int] | None = None, weight_limit: int = 6000,
                 latency: float = 0.0, exchange_info: dict | None = None,
                 simulate: bool = False, simulate_days: int = 400, host: str = "127.0.0.1",
                 port: int = 0):
        self._now = now_ms
        self.weight_limit = weight_limit
        self.latency = latency
        self.base_exchange_info = exchange_info
        self.simulate = simulate
        self.simulate_days = simulate_days
        self.host, self.port = host, port
        self.market: dict[tuple[str, str], np.ndarray] = {}
        self._rendered: dict[tuple[str, str], np.ndarray] = {}  # pre-rendered JSON rows
        self.faults = FaultQueue()
        self.requests: list[RequestRecord] = []
        self.archive_header = False
        self._weight_minute = -1
        self._weight_used = 0
        self._ban_until = 0.0
        self.violations = 0
        #: path prefixes counted against the weight limit; other modules (S1.local.futures) extend them
        self.api_prefixes: tuple[str, ...] = ("/api/",)
        #: ``hook(path, params) -> weight | None``, asked before :data:`WEIGHTS` (e.g. the fapi weights)
        self.weight_hooks: list[Callable[[str, dict], int | None]] = []
        self._lock = threading.Lock()
        self.app = web.Application(middlewares=[self._middleware])
        self.app.router.add_get("/api/v3/klines", self._klines)
        self.app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        self.app.router.add_get("/api/v3/time", self._time)
        self.app.router.add_get("/api/v3/ping", self._ping)
        self.app.router.add_get("/data/spot/{period}/klines/{symbol}/{interval}/{name}", self._archive)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ control
    thread_name = "local-binance"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def now_ms(self) -> int:
        if self._now is None:
            return int(time.time() * 1000)
        return int(self._now()) if callable(self._now) else int(self._now)

    def set_now(self, now_ms: int | Callable[[], int] | None) -> None:
        self._now = now_ms

    def add_candles(self, symbol: str, interval: str, df: pd.DataFrame) -> None:
        """Serve ``df`` (a candle frame) as the exchange's klines of ``symbol``/``interval``."""
        rows = candles_to_rows(df)
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        rendered = np.array([json.dumps(r, separators=(",", ":")) for r in kline_json_rows(rows)], dtype=object)
        with self._lock:
            self.market[(symbol.upper(), interval)] = rows
            self._rendered[(symbol.upper(), interval)] = rendered

    def inject(self, kind: str, *, path: str = "klines", count: int = 1, **kw) -> Fault:
        """Queue a fault for the next ``count`` requests whose path contains ``path``."""
        return self.faults.add(Fault(kind=kind, path=path, count=count, **kw))

    def requests_to(self, path: str) -> list[RequestRecord]:
        return [r for r in self.requests if path in r.path]

    # --------------------------------------------------------------- plumbing
    def _take_fault(self, path: str) -> Fault | None:
        return self.faults.take(path)

    def _weight(self, path: str, params) -> int:
        for hook in self.weight_hooks:
            if (w := hook(path, params)) is not None:
                return w
        name = path.rsplit("/", 1)[-1]
        if name == "exchangeInfo" and ("symbol" in params or "symbols" in params):
            return 2
        return WEIGHTS.get(name, 1)

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        path = request.path
        params = dict(request.query)
        arrived = time.time()
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self._take_fault(path)
        is_api = path.startswith(self.api_prefixes)
        headers: dict[str, str] = {}
        now = time.time()
        if is_api:
            with self._lock:
                minute = int(now // 60)
                if minute != self._weight_minute:
                    self._weight_minute, self._weight_used = minute, 0
                if now < self._ban_until:
                    self.violations += 1
                    self._ban_until = max(self._ban_until, now + 120)  # escalate: 418 ban
                    retry = int(self._ban_until - now) + 1
                    self._record(path, params, 418, arrived)
                    return self._error(418, -1003, "Way too many requests; IP banned until later.",
                                       {"Retry-After": str(retry)})
                weight = self._weight(path, params)
                if self._weight_used + weight > self.weight_limit:
                    retry = int((minute + 1) * 60 - now) + 1
                    self._ban_until = now + retry
                    self._record(path, params, 429, arrived)
                    return self._error(429, -1003, "Too much request weight used; current limit is "
                                       f"{self.weight_limit} request weight per 1 MINUTE.",
                                       {"Retry-After": str(retry)})
                self._weight_used += weight
                headers["X-MBX-USED-WEIGHT-1M"] = str(self._weight_used)
        if fault is not None:
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            elif fault.kind in ("429", "418"):
                self._record(path, params, int(fault.kind), arrived)
                if is_api:
                    self._ban_until = max(self._ban_until, now + fault.retry_after) if fault.kind == "418" else self._ban_until
                hdr = {"Retry-After": str(int(fault.retry_after) if fault.retry_after == int(fault.retry_after)
                                          else fault.retry_after), **headers}
                return self._error(int(fault.kind), -1003, "Too many requests (injected).", hdr)
            elif fault.kind == "status":
                self._record(path, params, fault.status, arrived)
                return web.Response(status=fault.status, text="<html><body>Service Unavailable</body></html>",
                                    content_type="text/html", headers=headers)
            elif fault.kind == "drop":
                self._record(path, params, 0, arrived)
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError()
        response = await handler(request)
        if fault is not None and fault.kind == "truncate" and isinstance(response, web.Response):
            body = response.body or b""
            stream = web.StreamResponse(status=200, headers={**headers, "Content-Type": "application/json"})
            stream.content_length = len(body)
            await stream.prepare(request)
            await stream.write(body[: len(body) // 2])
            self._record(path, params, -200, arrived)
            if request.transport is not None:
                request.transport.abort()
            return stream
        if fault is not None and fault.kind in ("corrupt", "bad_checksum") and isinstance(response, web.Response):
            body = bytearray(response.body or b"")
            if fault.kind == "corrupt" and path.endswith(".zip"):
                body = body[: len(body) // 3] + b"garbage"
            elif fault.kind == "bad_checksum" and path.endswith(".CHECKSUM"):
                body = b"0" * 64 + bytes(body[64:])
            response = web.Response(body=bytes(body), status=response.status, headers=response.headers)
        for k, v in headers.items():
            response.headers[k] = v
        self._record(path, params, response.status, arrived)
        return response

    def _record(self, path: str, params: dict, status: int, arrived: float) -> None:
        with self._lock:
            self.requests.append(RequestRecord(path, params, status, time.time(), arrived))

    @staticmethod
    def _error(status: int, code: int, msg: str, headers: dict | None = None) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status, headers=headers or {})

    def rows_for(self, symbol: str, interval: str) -> np.ndarray | None:
        key = (symbol, interval)
        with self._lock:
            rows = self.market.get(key)
        if rows is None and self.simulate and interval in INTERVALS:
            from S1.local.simulated import simulate_candles

            end = self.now_ms()
            start = end - self.simulate_days * 86_400_000
            df = simulate_candles(symbol, interval, pd.Timestamp(start, unit="ms", tz="UTC"),
                                  pd.Timestamp(end + 2 * 86_400_000, unit="ms", tz="UTC"))
            self.add_candles(symbol, interval, df)
            rows = self.market[key]
        return rows

    def known_symbols(self) -> set[str]:
        if self.base_exchange_info:
            return {s["symbol"] for s in self.base_exchange_info.get("symbols", [])} | {k[0] for k in self.market}
        return {k[0] for k in self.market}

    def symbol_known(self, symbol: str) -> bool:
        return symbol in self.known_symbols() or (self.simulate and symbol.isalnum() and symbol.isupper()
                                                  and symbol.endswith(("USDT", "USDC", "BTC", "BUSD")))

    # ----------------------------------------------------------------- routes
    async def _ping(self, request):
        return web.json_response({})

    async def _time(self, request):
        # what a simulated market serves is labelled by the server itself (no environment variable)
        return web.json_response({"serverTime": self.now_ms(), **({"simulated": True} if self.simulate else {})})

    async def _exchange_info(self, request):
        info = json.loads(json.dumps(self.base_exchange_info)) if self.base_exchange_info else {
            "timezone": "UTC", "exchangeFilters": [], "symbols": []}
        info["serverTime"] = self.now_ms()
        info["rateLimits"] = [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weight_limit},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ]
        present = {s["symbol"] for s in info["symbols"]}
        for sym, interval in list(self.market):
            if sym not in present:
                rows = self.market[(sym, interval)]
                price = float(rows[-1, 4]) if len(rows) else 100.0
                info["symbols"].append(simulated_symbol_info(sym, price))
                present.add(sym)
        want = request.query.get("symbol")
        if want:
            if want not in present and not self.symbol_known(want):
                return self._error(400, -1121, "Invalid symbol.")
            if want not in present:
                info["symbols"].append(simulated_symbol_info(want, 100.0))
            info["symbols"] = [s for s in info["symbols"] if s["symbol"] == want]
        return web.json_response(info)

    async def _klines(self, request):
        q = request.query
        symbol, interval = q.get("symbol"), q.get("interval")
        if not symbol:
            return self._error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not interval:
            return self._error(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval not in INTERVALS:
            return self._error(400, -1120, "Invalid interval.")
        if not self.symbol_known(symbol):
            return self._error(400, -1121, "Invalid symbol.")
        try:
            limit = min(1000, max(1, int(q.get("limit", 500))))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return self._error(400, -1100, "Illegal characters found in a parameter.")
        rows = self.rows_for(symbol, interval)
        if rows is None or len(rows) == 0:
            return web.json_response([])
        now = self.now_ms()
        lo, hi = kline_window(rows, now, start, end, limit)
        parts = list(self._rendered[(symbol, interval)][lo:hi])
        if hi > lo and rows[hi - 1, 6] >= now:  # the candle in progress: partial values
            partial = self.partial_candle(rows[hi - 1], interval, now)
            parts[-1] = json.dumps(kline_json_rows(partial[None, :])[0], separators=(",", ":"))
        return web.Response(text="[" + ",".join(parts) + "]", content_type="application/json")

    @staticmethod
    def partial_candle(row: np.ndarray, interval: str, now: int) -> np.ndarray:
        length = (next_open_ms(int(row[0]), interval) - row[0])
        f = max(0.01, min(0.99, (now - row[0]) / length))
        out = row.copy()
        out[4] = row[1] + (row[4] - row[1]) * f          # close so far
        out[2] = max(row[1], out[4], row[1] + (row[2] - row[1]) * f)
        out[3] = min(row[1], out[4], row[1] - (row[1] - row[3]) * f)
        out[[5, 7, 9, 10]] = row[[5, 7, 9, 10]] * f
        out[8] = np.floor(row[8] * f)
        return out

    # ---------------------------------------------------------------- archive
    def archive_bytes(self, symbol: str, interval: str, period: str, stamp: str) -> bytes | None:
        """The zip that data.binance.vision would serve, or None (not published)."""
        start = pd.Timestamp(stamp + ("-01" if period == "monthly" else ""), tz="UTC")
        end = start + (pd.offsets.MonthBegin(1) if period == "monthly" else pd.Timedelta(days=1))
        start_ms, end_ms = to_ms(start), to_ms(end)
        if end_ms > self.now_ms():  # published only once the period is over
            return None
        rows = self.rows_for(symbol, interval)
        if rows is None:
            return None
        sel = rows[(rows[:, 0] >= start_ms) & (rows[:, 0] < end_ms)]
        if len(sel) == 0:
            return None
        out = io.StringIO()
        if self.archive_header:
            out.write("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                      "taker_buy_volume,taker_buy_quote_volume,ignore\n")
        scale = 1000 if start_ms >= _US_FROM_MS else 1
        for r in kline_json_rows(sel):
            r[0] = r[0] * scale
            r[6] = r[6] * scale + (999 if scale == 1000 else 0)
            out.write(",".join(str(x) for x in r) + "\n")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            # a fixed date_time: the same period gives the same bytes (and CHECKSUM) on every request
            info = zipfile.ZipInfo(f"{symbol}-{interval}-{stamp}.csv", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, out.getvalue())
        return buf.getvalue()

    async def _archive(self, request):
        m = request.match_info
        name = m["name"]
        checksum = name.endswith(".CHECKSUM")
        zip_name = name[: -len(".CHECKSUM")] if checksum else name
        prefix = f"{m['symbol']}-{m['interval']}-"
        if not (zip_name.startswith(prefix) and zip_name.endswith(".zip")) or m["period"] not in ("monthly", "daily"):
            raise web.HTTPNotFound()
        data = self.archive_bytes(m["symbol"], m["interval"], m["period"], zip_name[len(prefix):-4])
        if data is None:
            raise web.HTTPNotFound()
        if checksum:
            return web.Response(text=f"{hashlib.sha256(data).hexdigest()}  {zip_name}\n")
        return web.Response(body=data, content_type="application/zip")


def load_real_exchange_info(shared: Path) -> dict | None:
    path = shared / "data/api/rest_exchangeInfo_2021-10-12.json"
    return json.loads(path.read_text()) if path.exists() else None


def main(argv=None) -> int:
    from S1.cli import ArgumentParser

    p = ArgumentParser(prog="python -m S1.local.exchange",
                       description="Serve a simulated Binance market (REST + archive) on 127.0.0.1.")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    p.add_argument("--days", type=int, default=400, help="history to simulate per symbol")
    p.add_argument("--now", default=None, help="fixed server clock (ISO UTC); default: the real clock")
    p.add_argument("--preload", default="", help="SYMBOL:INTERVAL,... to simulate before serving")
    p.add_argument("--weight-limit", type=int, default=6000, help="REQUEST_WEIGHT per minute")
    args = p.parse_args(argv)
    now = to_ms(args.now) if args.now else None
    server = LocalBinance(simulate=True, simulate_days=args.days, latency=args.latency, port=args.port,
                          now_ms=now, weight_limit=args.weight_limit)
    for item in filter(None, args.preload.split(",")):
        sym, iv = item.split(":")
        server.rows_for(sym.upper(), iv)
    server.start()
    print(f"simulated Binance market on {server.api_url} (archive at {server.url}); Ctrl-C stops it", flush=True)
    print(f"  export BINANCE_API_URL={server.api_url} BINANCE_ARCHIVE_URL={server.url}", flush=True)
    server.serve_until_interrupted()
    return 0


if __name__ == "__main__":
    from S1.cli import main_entry

    main_entry(main)
