"""USDⓈ-M funding rates, premium index and open-interest history on the local futures server
(:class:`S1.local.futures.LocalFutures` attaches :class:`FundingRoutes`), speaking Binance's protocol:

- ``GET /fapi/v1/fundingRate`` -- ``symbol``, ``startTime``, ``endTime``, ``limit`` (default 100,
  max 1,000: -1130 above); ascending ``fundingTime``; only settled fundings (``fundingTime <=`` the
  server clock); with ``startTime`` the first ``limit`` records from it ("startTime + limit"), without
  it the last ``limit`` up to ``endTime`` (or now). Rows: ``symbol``, ``fundingRate`` and
  ``markPrice`` as strings, ``fundingTime`` in ms.
- ``GET /fapi/v1/premiumIndex`` -- one symbol's object (or the list of all): ``markPrice``,
  ``indexPrice``, ``estimatedSettlePrice``, ``lastFundingRate`` (the estimate for the next
  funding), ``interestRate``, ``nextFundingTime``, ``time``.
- ``GET /futures/data/openInterestHist`` -- ``symbol``, ``period`` (5m 15m 30m 1h 2h 4h 6h 12h 1d),
  ``limit`` (default 30, max 500), ``startTime``/``endTime``; **only the last 30 days** exist (as on
  Binance). Rows: ``symbol``, ``sumOpenInterest``, ``sumOpenInterestValue`` (strings), ``timestamp``.

Weights: 1 each (``premiumIndex`` without a symbol: 10) in the server's shared counter, with its
429/418 + ``Retry-After``, and every fault of :meth:`LocalBinance.inject` (``path="fundingRate"`` ...).
Binance limits ``fundingRate`` by a separate 500 requests / 5 min / IP budget; not modelled.

The simulated series are deterministic functions of the time (so a later window extends an
earlier one exactly): funding every 8 h at 00:00, 08:00, 16:00 UTC except inside ``four_hour``,
where it settles every 4 h (Binance moves contracts to 4 h or 1 h funding: nothing may assume 8 h).

>>> f = simulate_funding("BTCUSDT", "2024-01-01", "2024-01-03", four_hour=("2024-01-02", "2024-01-03"))
>>> [t.hour for t in f.index]
[0, 8, 16, 0, 4, 8, 12, 16, 20]
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from aiohttp import web

from S1.intervals import INTERVAL_MS, to_ms

FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT = 100, 1000
OI_DEFAULT_LIMIT, OI_MAX_LIMIT = 30, 500
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
OI_KEEP_MS = 30 * 86_400_000
_H = 3_600_000


# ------------------------------------------------------------------ simulation
def _noise(symbol: str, t_ms: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random numbers in [-1, 1) from (symbol, time): the same instant
    always gets the same value, whatever window is asked."""
    seed = zlib.crc32(symbol.encode()) + salt
    x = np.sin((np.asarray(t_ms, dtype=np.float64) / 1000.0 + seed) * 12.9898) * 43758.5453
    return 2.0 * (x - np.floor(x)) - 1.0


def sim_mark_price(symbol: str, t_ms) -> np.ndarray:
    """The simulated mark price at ``t_ms`` (8 decimals)."""
    t = np.asarray(t_ms, dtype=np.float64)
    base = 1000.0 + (zlib.crc32(symbol.encode()) % 30000)
    p = base * (1 + 0.2 * np.sin(2 * np.pi * t / (60 * 86_400_000))) * (1 + 0.002 * _noise(symbol, t, 1))
    return np.round(p, 8)


def funding_schedule(start_ms: int, end_ms: int, *, four_hour: tuple[int, int] | None = None) -> np.ndarray:
    """Funding times in ``[start_ms, end_ms)``: every 8 h from 00:00 UTC, every 4 h inside ``four_hour``."""
    eight = np.arange(-(-start_ms // (8 * _H)) * 8 * _H, end_ms, 8 * _H, dtype=np.int64)
    if four_hour is None:
        return eight
    a, b = four_hour
    four = np.arange(-(-max(a, start_ms) // (4 * _H)) * 4 * _H, min(b, end_ms), 4 * _H, dtype=np.int64)
    return np.union1d(eight[(eight < a) | (eight >= b)], four)


def simulate_funding(symbol: str, start, end, *, four_hour=None) -> pd.DataFrame:
    """Simulated funding history: index ``funding_time`` (UTC), ``funding_rate`` (8 decimals,
    around +0.01 %, sometimes negative), ``mark_price``."""
    fh = None if four_hour is None else (to_ms(four_hour[0]), to_ms(four_hour[1]))
    t = funding_schedule(to_ms(start), to_ms(end), four_hour=fh)
    rate = 0.0001 + 0.00025 * np.sin(2 * np.pi * t / (9 * 86_400_000)) + 0.00008 * _noise(symbol, t, 2)
    return pd.DataFrame({"funding_rate": np.round(rate, 8), "mark_price": sim_mark_price(symbol, t)},
                        index=pd.DatetimeIndex(pd.to_datetime(t, unit="ms", utc=True).as_unit("ns"), name="funding_time"))


def sim_open_interest(symbol: str, t_ms) -> tuple[np.ndarray, np.ndarray]:
    """Simulated (sumOpenInterest, sumOpenInterestValue) at ``t_ms``."""
    t = np.asarray(t_ms, dtype=np.float64)
    oi = np.round(80_000 + 12_000 * np.sin(2 * np.pi * t / (7 * 86_400_000)) + 800 * _noise(symbol, t, 3), 8)
    return oi, np.round(oi * sim_mark_price(symbol, t), 8)


# ---------------------------------------------------------------------- routes
def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _window(times: np.ndarray, start: int | None, end: int | None, limit: int) -> tuple[int, int]:
    """Binance's paging: from ``startTime`` the first ``limit`` (<= ``endTime``), without it the
    last ``limit`` up to ``endTime``."""
    lo = 0 if start is None else int(np.searchsorted(times, start, side="left"))
    hi = len(times) if end is None else int(np.searchsorted(times, end, side="right"))
    if hi <= lo:
        return lo, lo
    return (lo, min(hi, lo + limit)) if start is not None else (max(lo, hi - limit), hi)


class FundingRoutes:
    """The three routes on a :class:`LocalFutures`' server (created by it)."""

    def __init__(self, futures):  # an S1.local.futures.LocalFutures (not imported: no cycle)
        self.futures = futures
        self.server = futures.server
        #: symbol -> (funding times ms, rates, mark prices); schedules extend past now (only <= now is served)
        self.funding: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.simulated = False
        app = self.server.app
        app.router.add_get("/fapi/v1/fundingRate", self._funding_rate)
        app.router.add_get("/fapi/v1/premiumIndex", self._premium_index)
        app.router.add_get("/futures/data/openInterestHist", self._oi_hist)
        self.server.api_prefixes = tuple(dict.fromkeys((*self.server.api_prefixes, "/futures/data/")))
        self.server.weight_hooks.insert(0, self._weight)

    # ------------------------------------------------------------ data
    def add_funding(self, symbol: str, frame: pd.DataFrame) -> None:
        """Serve ``frame`` (index funding time, ``funding_rate``, optional ``mark_price``) as the
        funding history of ``symbol``."""
        frame = frame.sort_index()
        t = frame.index.as_unit("ms").asi8.astype(np.int64)
        mark = frame["mark_price"].to_numpy(np.float64) if "mark_price" in frame else np.full(len(t), np.nan)
        self.funding[symbol.upper()] = (t, frame["funding_rate"].to_numpy(np.float64), mark)

    def simulate(self, symbol: str, start, end, *, four_hour=None) -> pd.DataFrame:
        """Serve simulated funding for ``symbol`` over ``[start, end)`` (``four_hour``: a window with
        4-hourly funding); returns the frame (every value served, future ones once the clock passes them)."""
        df = simulate_funding(symbol.upper(), start, end, four_hour=four_hour)
        self.add_funding(symbol, df)
        self.simulated = True
        return df

    def _series(self, symbol: str):
        if symbol not in self.funding and self.server.simulate and symbol.isalnum() and symbol.isupper():
            now = self.server.now_ms()
            day = 86_400_000
            self.simulate(symbol, pd.Timestamp(now - 400 * day, unit="ms", tz="UTC").floor("D"),
                          pd.Timestamp(now + 3 * day, unit="ms", tz="UTC").floor("D"),
                          four_hour=(pd.Timestamp(now - 60 * day, unit="ms", tz="UTC").floor("D"),
                                     pd.Timestamp(now - 46 * day, unit="ms", tz="UTC").floor("D")))
        return self.funding.get(symbol)

    def _known(self, symbol: str) -> bool:
        return (symbol in self.funding or symbol in self.futures.contracts
                or (self.server.simulate and symbol.isalnum() and symbol.isupper()))

    def _weight(self, path: str, params: dict) -> int | None:
        if path.endswith("/premiumIndex"):
            return 1 if params.get("symbol") else 10
        if path.endswith(("/fundingRate", "/openInterestHist")):
            return 1
        return None

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _ints(q, *names):
        return tuple(int(q[n]) if n in q else None for n in names)

    # ------------------------------------------------------------ routes
    async def _funding_rate(self, request):
        q = request.query
        symbol = q.get("symbol", "")
        try:
            start, end, limit = self._ints(q, "startTime", "endTime", "limit")
        except ValueError:
            return _error(400, -1100, "Illegal characters found in a parameter.")
        limit = FUNDING_DEFAULT_LIMIT if limit is None else limit
        if not 1 <= limit <= FUNDING_MAX_LIMIT:
            return _error(400, -1130, "Data sent for parameter 'limit' is not valid.")
        if start is not None and end is not None and start > end:
            return _error(400, -1023, "Start time is greater than end time.")
        if not symbol or not self._known(symbol):
            return _error(400, -1121, "Invalid symbol.")
        series = self._series(symbol)
        if series is None:
            return web.json_response([])
        t, rate, mark = series
        now = self.server.now_ms()
        end = now if end is None else min(end, now)
        lo, hi = _window(t, start, end, limit)
        rows = [{"symbol": symbol, "fundingTime": int(t[i]), "fundingRate": f"{rate[i]:.8f}",
                 **({"markPrice": f"{mark[i]:.8f}"} if np.isfinite(mark[i]) else {})} for i in range(lo, hi)]
        return web.json_response(rows)

    def _premium(self, symbol: str) -> dict:
        now = self.server.now_ms()
        series = self._series(symbol)
        nxt, est = 0, 0.0
        mark = float(sim_mark_price(symbol, [now])[0])
        if series is not None:
            t, rate, marks = series
            i = int(np.searchsorted(t, now, side="right"))
            if i < len(t):
                nxt, est = int(t[i]), float(rate[i])
            if not self.simulated and i > 0 and np.isfinite(marks[i - 1]):
                mark = float(marks[i - 1])
        return {"symbol": symbol, "markPrice": f"{mark:.8f}", "indexPrice": f"{mark * 0.9997:.8f}",
                "estimatedSettlePrice": f"{mark * 0.9998:.8f}", "lastFundingRate": f"{est:.8f}",
                "interestRate": "0.00010000", "nextFundingTime": nxt, "time": now}

    async def _premium_index(self, request):
        symbol = request.query.get("symbol")
        if symbol is None:
            return web.json_response([self._premium(s) for s in sorted(set(self.funding) | set(self.futures.contracts))])
        if not self._known(symbol):
            return _error(400, -1121, "Invalid symbol.")
        return web.json_response(self._premium(symbol))

    async def _oi_hist(self, request):
        q = request.query
        symbol, period = q.get("symbol", ""), q.get("period")
        if not symbol:
            return _error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not period:
            return _error(400, -1102, "Mandatory parameter 'period' was not sent, was empty/null, or malformed.")
        if period not in OI_PERIODS:
            return _error(400, -1130, "Data sent for parameter 'period' is not valid.")
        try:
            start, end, limit = self._ints(q, "startTime", "endTime", "limit")
        except ValueError:
            return _error(400, -1100, "Illegal characters found in a parameter.")
        limit = OI_DEFAULT_LIMIT if limit is None else limit
        if not 1 <= limit <= OI_MAX_LIMIT:
            return _error(400, -1130, "Data sent for parameter 'limit' is not valid.")
        if start is not None and end is not None and start > end:
            return _error(400, -1023, "Start time is greater than end time.")
        if not self._known(symbol):
            return _error(400, -1121, "Invalid symbol.")
        step = INTERVAL_MS[period]
        now = self.server.now_ms()
        first = -(-(now - OI_KEEP_MS) // step) * step  # only the last 30 days are kept
        t = np.arange(first, now + 1, step, dtype=np.int64)
        lo, hi = _window(t, start, end, limit)
        oi, value = sim_open_interest(symbol, t[lo:hi])
        return web.json_response([{"symbol": symbol, "sumOpenInterest": f"{a:.8f}",
                                   "sumOpenInterestValue": f"{b:.8f}", "timestamp": int(x)}
                                  for a, b, x in zip(oi, value, t[lo:hi])])
