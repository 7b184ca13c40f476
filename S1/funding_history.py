"""USDⓈ-M funding-rate and open-interest history: paged, incremental, atomic downloads into
``data/<symbol>_funding.parquet`` and ``data/<symbol>_open_interest_<period>.parquet``.

Endpoints (Binance USDⓈ-M futures, ``fapi.binance.com``; see ``../shared/BINANCE_NOTES.md``):

- ``GET /fapi/v1/fundingRate?symbol=&startTime=&endTime=&limit=1000``: settled fundings in
  ascending ``fundingTime`` (ms), at most 1,000 per page, "startTime + limit" paging. Pages follow
  a cursor (``startTime`` = the last ``fundingTime`` + 1) because funding times are whatever the
  history says: most contracts settle every 8 h, some every 4 h or 1 h, and Binance moves
  contracts between schedules -- nothing here assumes 8 h.
- ``GET /fapi/v1/premiumIndex?symbol=``: the mark price, the estimated rate of the next funding
  (``lastFundingRate``) and ``nextFundingTime`` (shown by the script, not stored).
- ``GET /futures/data/openInterestHist?symbol=&period=&startTime=&endTime=&limit=500``: open
  interest (contracts and USDT value) every ``period`` (5m 15m 30m 1h 2h 4h 6h 12h 1d). **Binance
  keeps only the last 30 days**: older windows are clamped to that (and said so); re-running
  regularly grows the local file beyond 30 days, because downloads only ever add. Requested in
  exact windows of 500 periods (each page holds every record of its window, whatever the
  server's paging convention), in parallel within the weight budget.

The REST plumbing is :class:`S1.rest_client.BinanceRest` (python-binance's futures calls,
``Retry-After`` honoured, 5xx / dropped connections retried with backoff, the weight budget).
The futures base URL follows ``BINANCE_API_URL`` as CCXT's does (:mod:`S1.ccxt_source`): on a
Binance host it is ``https://fapi.binance.com``; on any other host (a local server, a proxy) the
same origin, under ``/fapi/v1`` and ``/futures/data``.

Incremental: the file's metadata holds the covered window ``[coverage_start_ms,
coverage_end_ms)``; a re-run fetches only what lies outside it (later fundings, or an earlier
start when ``--days`` grows) and writes the union atomically. Files made from a simulated server
(``/fapi/v1/time`` says ``simulated``, or ``SIMULATED_MARKET=1``) are labelled ``simulated`` and
never merged with real ones.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from S1.datasets import (
    funding_path,
    normalize_symbol,
    open_interest_path,
    read_metadata,
    read_parquet,
    write_parquet,
)
from S1.errors import UserError
from S1.intervals import INTERVAL_MS
from S1.rest_client import BinanceRest, run
from S1.settings import Settings, get_settings

DAY_MS = 86_400_000
MAX_DAYS = 36_500
FUNDING_LIMIT = 1000
OI_LIMIT = 500
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
OI_KEEP_DAYS = 30
FUNDING_COLUMNS = ("funding_rate", "mark_price")
OI_COLUMNS = ("open_interest", "open_interest_value")


def futures_root(settings: Settings) -> str:
    """Origin of the USDⓈ-M REST API for ``BINANCE_API_URL`` (see the module docstring).

    >>> from types import SimpleNamespace as S
    >>> futures_root(S(binance_api_url="https://api.binance.com/api"))
    'https://fapi.binance.com'
    >>> futures_root(S(binance_api_url="http://127.0.0.1:8123/api"))
    'http://127.0.0.1:8123'
    """
    from S1.ccxt_source import _is_binance_host, _origin_root

    url = settings.binance_api_url
    return "https://fapi.binance.com" if _is_binance_host(url) else _origin_root(url)


# ------------------------------------------------------------------------ parsing
def parse_funding(rows: list, symbol: str | None = None) -> pd.DataFrame:
    """``/fapi/v1/fundingRate`` rows -> frame indexed by ``funding_time`` (UTC) with
    ``funding_rate`` and ``mark_price`` (NaN when the row has none: older Binance answers).

    >>> parse_funding([{"symbol": "BTCUSDT", "fundingRate": "0.00010000", "fundingTime": 1570636800000}])
    ... # doctest: +NORMALIZE_WHITESPACE
                               funding_rate  mark_price
    funding_time
    2019-10-09 16:00:00+00:00        0.0001         NaN
    """
    if not isinstance(rows, list):
        raise UserError(f"unexpected fundingRate answer: {str(rows)[:120]}", "check BINANCE_API_URL")
    try:
        if symbol is not None and any(r["symbol"] != symbol for r in rows):
            raise UserError(f"the fundingRate answer holds another symbol than {symbol}", "check BINANCE_API_URL")
        t = np.array([int(r["fundingTime"]) for r in rows], dtype=np.int64)
        rate = np.array([float(r["fundingRate"]) for r in rows], dtype=np.float64)
        mark = np.array([float(r["markPrice"]) if r.get("markPrice") not in (None, "") else np.nan for r in rows],
                        dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"malformed fundingRate row ({type(exc).__name__}: {exc})", "check BINANCE_API_URL") from None
    idx = pd.DatetimeIndex(pd.to_datetime(t, unit="ms", utc=True).as_unit("ns"), name="funding_time")
    return pd.DataFrame({"funding_rate": rate, "mark_price": mark}, index=idx)


def parse_open_interest(rows: list) -> pd.DataFrame:
    """``/futures/data/openInterestHist`` rows -> frame indexed by ``timestamp`` (UTC) with
    ``open_interest`` (contracts) and ``open_interest_value`` (USDT)."""
    if not isinstance(rows, list):
        raise UserError(f"unexpected openInterestHist answer: {str(rows)[:120]}", "check BINANCE_API_URL")
    try:
        t = np.array([int(r["timestamp"]) for r in rows], dtype=np.int64)
        oi = np.array([float(r["sumOpenInterest"]) for r in rows], dtype=np.float64)
        val = np.array([float(r["sumOpenInterestValue"]) for r in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"malformed openInterestHist row ({type(exc).__name__}: {exc})",
                        "check BINANCE_API_URL") from None
    idx = pd.DatetimeIndex(pd.to_datetime(t, unit="ms", utc=True).as_unit("ns"), name="timestamp")
    return pd.DataFrame({"open_interest": oi, "open_interest_value": val}, index=idx)


# ------------------------------------------------------------------------- client
class FuturesRest(BinanceRest):
    """:class:`BinanceRest` with python-binance's futures calls pointed at :func:`futures_root`."""

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        root = futures_root(self.settings)
        self._client.FUTURES_URL = f"{root}/fapi"
        self._client.FUTURES_DATA_URL = f"{root}/futures/data"
        return self

    async def clock(self) -> dict:
        """``GET /fapi/v1/time`` (``serverTime``; the local server adds ``simulated``)."""
        return await self._call("futures server time", 1, self._client._request_futures_api, method="get",
                                path="time")

    async def funding_page(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        rows = await self._call("fundingRate", 1, self._client.futures_funding_rate, symbol=symbol,
                                startTime=int(start_ms), endTime=int(end_ms), limit=FUNDING_LIMIT)
        return parse_funding(rows, symbol)

    async def funding_range(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Every funding with ``start_ms <= fundingTime < end_ms``: cursor pages of 1,000."""
        parts, cursor = [], int(start_ms)
        while cursor < end_ms:
            page = await self.funding_page(symbol, cursor, end_ms - 1)
            if len(page):
                parts.append(page)
            if len(page) < FUNDING_LIMIT:
                break
            last = int(page.index[-1].value // 1_000_000)
            if last < cursor:
                raise UserError("the fundingRate pages do not advance", "check BINANCE_API_URL")
            cursor = last + 1
        return _concat(parts, FUNDING_COLUMNS, "funding_time")

    async def premium_index(self, symbol: str) -> dict:
        return await self._call("premiumIndex", 1, self._client._request_futures_api, method="get",
                                path="premiumIndex", data={"symbol": symbol})

    async def open_interest_range(self, symbol: str, period: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Open interest with ``start_ms <= timestamp < end_ms``: exact windows of 500 periods,
        fetched in parallel."""
        span = INTERVAL_MS[period] * OI_LIMIT

        async def one(a: int) -> pd.DataFrame:
            rows = await self._call("openInterestHist", 1, self._client.futures_open_interest_hist,
                                    symbol=symbol, period=period, startTime=a, endTime=min(a + span, end_ms) - 1,
                                    limit=OI_LIMIT)
            return parse_open_interest(rows)

        parts = await asyncio.gather(*(one(a) for a in range(int(start_ms), int(end_ms), span)))
        return _concat(list(parts), OI_COLUMNS, "timestamp")


def _concat(parts: list[pd.DataFrame], columns, name: str) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in columns},
                            index=pd.DatetimeIndex([], tz="UTC", name=name).as_unit("ns"))
    out = pd.concat(parts)
    out = out[~out.index.duplicated(keep="last")].sort_index()
    out.index.name = name
    return out


# -------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class DownloadResult:
    """What :func:`update_funding` / :func:`update_open_interest` did."""

    path: Path
    rows: int
    new_rows: int
    requests: int
    start: pd.Timestamp
    end: pd.Timestamp
    simulated: bool
    note: str = ""
    next_funding: dict | None = None
    written: bool = True


def _check_days(days) -> int:
    if isinstance(days, bool) or not isinstance(days, (int, np.integer)) or not 1 <= int(days) <= MAX_DAYS:
        raise UserError(f"--days must be a whole number from 1 to {MAX_DAYS}, got {days!r}", "e.g. --days 365")
    return int(days)


def _check_symbol(symbol: str) -> str:
    sym = normalize_symbol(symbol)
    if not sym.isalnum():
        raise UserError(f"{symbol!r} is not a USDⓈ-M perpetual symbol", "e.g. --symbol BTCUSDT")
    return sym


def _existing(path: Path, columns) -> tuple[pd.DataFrame | None, dict]:
    if not path.exists():
        return None, {}
    meta = read_metadata(path)
    df = read_parquet(path)
    if list(df.columns) != list(columns) or "coverage_start_ms" not in meta:
        raise UserError(f"{path} is not a file this command wrote", "move it away, then re-run")
    return df, meta


def _merge(old: pd.DataFrame | None, new: list[pd.DataFrame], name: str, columns) -> pd.DataFrame:
    return _concat([p for p in ([old] if old is not None else []) + new if len(p)], columns, name)


def _label(old_meta: dict, simulated: bool, path: Path) -> None:
    if old_meta and bool(old_meta.get("simulated")) != simulated:
        kind = lambda b: "simulated" if b else "real"
        raise UserError(f"{path} holds {kind(old_meta.get('simulated'))} data and the server serves "
                        f"{kind(simulated)} data", f"move {path.name} away (or point BINANCE_API_URL back), then re-run")


def _todo(meta: dict, start_ms: int, end_ms: int) -> tuple[int, int, list[tuple[int, int]]]:
    """New coverage and the ranges to fetch so the file stays one contiguous window."""
    if not meta:
        return start_ms, end_ms, [(start_ms, end_ms)]
    a, b = int(meta["coverage_start_ms"]), int(meta["coverage_end_ms"])
    lo, hi = min(start_ms, a), max(end_ms, b)
    return lo, hi, [r for r in ((lo, a), (b, hi)) if r[1] > r[0]]


def _write_if_changed(df: pd.DataFrame, path: Path, meta: dict, new_rows: int, old_meta: dict) -> bool:
    """Write atomically unless nothing changed (same rows, same coverage): an up-to-date file is left alone."""
    same = (old_meta and new_rows == 0 and path.exists()
            and (meta["coverage_start_ms"], meta["coverage_end_ms"])
            == (old_meta.get("coverage_start_ms"), old_meta.get("coverage_end_ms")))
    if same:
        return False
    write_parquet(df, path, metadata=meta)
    return True


def update_funding(symbol: str, days: int, *, settings: Settings | None = None) -> DownloadResult:
    """Download (or extend) the funding history of ``symbol`` over the last ``days`` days up to
    the exchange's clock into :func:`S1.datasets.funding_path`."""
    sym, days = _check_symbol(symbol), _check_days(days)
    settings = settings or get_settings()
    path = funding_path(sym)
    old, meta = _existing(path, FUNDING_COLUMNS)

    async def job():
        async with FuturesRest(settings, max_in_flight=4) as api:
            clock = await api.clock()
            end_ms = int(clock["serverTime"]) + 1  # every funding settled up to now
            simulated = bool(settings.simulated_market or clock.get("simulated"))
            _label(meta, simulated, path)
            lo, hi, todo = _todo(meta, end_ms - days * DAY_MS, end_ms)
            parts = [await api.funding_range(sym, a, b) for a, b in todo]
            nxt = await api.premium_index(sym)
            return lo, hi, parts, simulated, api.budget.requests, nxt

    lo, hi, parts, simulated, requests, nxt = run(job())
    df = _merge(old, parts, "funding_time", FUNDING_COLUMNS)
    new_rows = len(df) - (0 if old is None else len(old))
    out_meta = {"symbol": sym, "kind": "funding", "exchange": "binance", "market": "usdm",
                "coverage_start_ms": lo, "coverage_end_ms": hi, "simulated": simulated,
                "source_url": settings.redact(futures_root(settings)) + "/fapi/v1/fundingRate",
                "updated_at": pd.Timestamp(time.time(), unit="s", tz="UTC").isoformat()}
    written = _write_if_changed(df, path, out_meta, new_rows, meta)
    ts = lambda ms: pd.Timestamp(ms, unit="ms", tz="UTC")
    return DownloadResult(path, len(df), new_rows, requests, ts(lo), ts(hi), simulated, next_funding=nxt,
                          written=written)


def update_open_interest(symbol: str, days: int, period: str = "1h", *,
                         settings: Settings | None = None) -> DownloadResult:
    """Download (or extend) the open-interest history of ``symbol`` at ``period`` over the last
    ``min(days, 30)`` days (Binance keeps 30) into :func:`S1.datasets.open_interest_path`."""
    sym, days = _check_symbol(symbol), _check_days(days)
    if period not in OI_PERIODS:
        raise UserError(f"unsupported open-interest period {period!r}", f"use one of {', '.join(OI_PERIODS)}")
    settings = settings or get_settings()
    path = open_interest_path(sym, period)
    old, meta = _existing(path, OI_COLUMNS)
    step = INTERVAL_MS[period]
    note = ""
    if days > OI_KEEP_DAYS:
        note = (f"Binance keeps open interest for the last {OI_KEEP_DAYS} days only: fetched those "
                f"(re-run regularly to grow the file)")

    async def job():
        async with FuturesRest(settings, max_in_flight=4) as api:
            clock = await api.clock()
            now = int(clock["serverTime"])
            simulated = bool(settings.simulated_market or clock.get("simulated"))
            _label(meta, simulated, path)
            end_ms = now // step * step + 1  # the record stamped at the last period start included
            start_ms = -(-(end_ms - min(days, OI_KEEP_DAYS) * DAY_MS + step) // step) * step  # inside the 30 days
            cover, gap = meta, ""
            if meta and int(meta["coverage_end_ms"]) < start_ms:  # the file stopped before what Binance keeps
                gap = (f"; the file's rows stop at {pd.Timestamp(int(meta['coverage_end_ms']), unit='ms', tz='UTC')}: "
                       "the gap up to the 30 days Binance keeps cannot be filled (coverage restarts)")
                cover = {}
            lo, hi, todo = _todo(cover, start_ms, end_ms)
            parts = [await api.open_interest_range(sym, period, a, b) for a, b in todo]
            return lo, hi, parts, simulated, api.budget.requests, gap

    lo, hi, parts, simulated, requests, gap = run(job())
    note += gap
    df = _merge(old, parts, "timestamp", OI_COLUMNS)
    new_rows = len(df) - (0 if old is None else len(old))
    out_meta = {"symbol": sym, "kind": "open_interest", "period": period, "exchange": "binance",
                "market": "usdm", "coverage_start_ms": lo, "coverage_end_ms": hi, "simulated": simulated,
                "source_url": settings.redact(futures_root(settings)) + "/futures/data/openInterestHist",
                "updated_at": pd.Timestamp(time.time(), unit="s", tz="UTC").isoformat()}
    written = _write_if_changed(df, path, out_meta, new_rows, meta)
    ts = lambda ms: pd.Timestamp(ms, unit="ms", tz="UTC")
    return DownloadResult(path, len(df), new_rows, requests, ts(lo), ts(hi), simulated, note, written=written)


__all__ = ["OI_PERIODS", "DownloadResult", "FuturesRest", "futures_root", "parse_funding", "parse_open_interest",
           "update_funding", "update_open_interest"]
