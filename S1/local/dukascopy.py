"""A local Dukascopy datafeed: real-format ``.bi5`` hourly tick files over HTTP on 127.0.0.1.

``GET /datafeed/<SYMBOL>/<YYYY>/<MM>/<DD>/<HH>h_ticks.bi5`` (month 0-based) answers the LZMA
("alone") body of the 20-byte big-endian tick records the server holds for that hour, an
**empty body** for a past hour without ticks (weekends, holidays: what Dukascopy sends), and 404
for an hour that has not ended by the server clock or an unknown symbol. Faults through the shared
:class:`S1.local.faults.FaultQueue` (``"status"`` with a code, ``"drop"``, ``"corrupt"``: a body
that is not LZMA). :func:`encode_bi5` builds the files (tests build their ticks and corrupt ones).

    with LocalDukascopy(now_ms=to_ms("2024-01-10")) as srv:
        srv.add_ticks("EURUSD", ticks, decimals=5)       # DUKASCOPY_URL=srv.datafeed_url
"""

from __future__ import annotations

import asyncio
import lzma
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from aiohttp import web

from S1.local.faults import Fault, FaultQueue
from S1.local.server import LocalServer

HOUR_MS = 3_600_000
RECORD = np.dtype([("ms", ">u4"), ("ask", ">u4"), ("bid", ">u4"), ("ask_volume", ">f4"), ("bid_volume", ">f4")])


def encode_bi5(ms: np.ndarray, ask_points: np.ndarray, bid_points: np.ndarray, ask_volume: np.ndarray,
               bid_volume: np.ndarray) -> bytes:
    """One hour's ticks (ms since the hour, integer prices in points, float volumes) as a ``.bi5``
    body; no ticks -> ``b""``."""
    if len(ms) == 0:
        return b""
    rec = np.empty(len(ms), dtype=RECORD)
    rec["ms"], rec["ask"], rec["bid"] = ms, ask_points, bid_points
    rec["ask_volume"], rec["bid_volume"] = ask_volume, bid_volume
    return lzma.compress(rec.tobytes(), format=lzma.FORMAT_ALONE)


@dataclass
class Request:
    path: str
    status: int
    t: float


class LocalDukascopy(LocalServer):
    thread_name = "local-dukascopy"

    def __init__(self, *, now_ms: int | None = None, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self._now = now_ms
        self.files: dict[tuple[str, int], bytes] = {}
        self.symbols: set[str] = set()
        self.faults = FaultQueue()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self.app = web.Application()
        self.app.router.add_get("/datafeed/{symbol}/{year}/{month}/{day}/{name}", self._hour)

    @property
    def datafeed_url(self) -> str:
        return f"{self.url}/datafeed"

    def now_ms(self) -> int:
        return int(time.time() * 1000) if self._now is None else int(self._now)

    def inject(self, kind: str, *, path: str = "h_ticks", count: int = 1, **kw) -> Fault:
        return self.faults.add(Fault(kind=kind, path=path, count=count, **kw))

    def add_ticks(self, symbol: str, ticks: pd.DataFrame, *, decimals: int) -> None:
        """Serve ``ticks`` (index: UTC tick times; columns ``ask bid ask_volume bid_volume``, prices
        as floats) as hour files, prices rounded to points of ``10^-decimals``."""
        symbol = symbol.upper()
        self.symbols.add(symbol)
        t = ticks.index.as_unit("ms").asi8
        hours = t // HOUR_MS * HOUR_MS
        scale = 10 ** decimals
        for h in np.unique(hours):
            m = hours == h
            self.files[(symbol, int(h))] = encode_bi5(
                t[m] - h, np.rint(ticks["ask"].to_numpy()[m] * scale).astype(np.uint32),
                np.rint(ticks["bid"].to_numpy()[m] * scale).astype(np.uint32),
                ticks["ask_volume"].to_numpy(np.float32)[m], ticks["bid_volume"].to_numpy(np.float32)[m])

    def put_file(self, symbol: str, hour_ms: int, body: bytes) -> None:
        """Serve ``body`` as-is for one hour (e.g. a corrupt file)."""
        self.symbols.add(symbol.upper())
        self.files[(symbol.upper(), int(hour_ms))] = body

    def _record(self, path: str, status: int) -> None:
        with self._lock:
            self.requests.append(Request(path, status, time.time()))

    async def _hour(self, request: web.Request):
        path = request.path
        m = request.match_info
        fault = self.faults.take(path)
        if fault is not None:
            if fault.kind == "status":
                self._record(path, fault.status)
                return web.Response(status=fault.status, text="unavailable")
            if fault.kind == "drop":
                self._record(path, 0)
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError()
            if fault.kind == "corrupt":
                self._record(path, 200)
                return web.Response(body=b"\x5d\x00\x00\x80\x00garbage-not-lzma", content_type="application/octet-stream")
        try:
            name = m["name"]
            if not name.endswith("h_ticks.bi5"):
                raise ValueError
            hour = pd.Timestamp(year=int(m["year"]), month=int(m["month"]) + 1, day=int(m["day"]),
                                hour=int(name[:2]), tz="UTC")
        except (ValueError, KeyError):
            self._record(path, 404)
            return web.Response(status=404, text="not found")
        h = int(hour.value // 1_000_000)
        sym = m["symbol"].upper()
        if sym not in self.symbols or h + HOUR_MS > self.now_ms():
            self._record(path, 404)
            return web.Response(status=404, text="not found")
        self._record(path, 200)
        return web.Response(body=self.files.get((sym, h), b""), content_type="application/octet-stream")
