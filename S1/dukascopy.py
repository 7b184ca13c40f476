"""FX (and metals) candles from Dukascopy's public hourly tick files.

    python S1/historical.py --source dukascopy --symbol EURUSD --interval 1h --days 365
    python S1/historical.py --source dukascopy --symbol USDJPY --interval 15m --days 30 --side mid

**Files.** ``<DUKASCOPY_URL>/<SYMBOL>/<YYYY>/<MM>/<DD>/<HH>h_ticks.bi5`` (default base
``https://datafeed.dukascopy.com/datafeed``), **month 0-based** (``00`` = January). Body: LZMA
("alone" format) of 20-byte big-endian records ``uint32 ms since the hour, uint32 ask, uint32 bid,
float32 ask volume, float32 bid volume``; prices are integers in points -- divided by 10^5 for most
FX pairs, 10^3 for JPY-quoted pairs and gold/silver (:data:`POINT_DECIMALS`; other instruments are
refused rather than guessed). An hour without ticks (weekend, holiday) is an empty body.

**Candles.** UTC buckets of the interval (1m .. 1d; a day is the UTC day, not the 17:00 New York
FX day), from the **bid** by default (``side="ask"`` or ``"mid"`` = (ask + bid) / 2): first, max,
min and last price; ``volume`` = the side's summed tick volumes as Dukascopy stores them (mid: ask +
bid volumes); ``trades`` = the number of ticks; ``quote_volume`` = sum(price x volume); taker
columns 0 (not known). **No tick, no candle**: weekends and holidays are gaps, never zero-volume
or carried-forward candles. Only buckets that have fully passed are written.

Why not the ``dukascopy-python`` package (evaluated, 4.0.1): it reads the web chart's JSONP feed
(``freeserv.dukascopy.com/2.0/index.php?path=chart/json3``) with a hard-coded URL, a spoofed browser
``User-Agent``/``Referer``, no request timeout, and retries every exception forever when no end is
given -- not the documented tick files, and the base URL cannot come from the settings. The tick
format is 20 bytes of ``struct`` + the standard library's ``lzma``, read here with NumPy.

Incremental and atomic like the Binance files: the metadata keeps the covered window; a re-run
fetches only the hours outside it; a failed run (HTTP errors after retries, a corrupt file) writes
nothing. Hour files are fetched in parallel (``DUKASCOPY_MAX_IN_FLIGHT`` = 8) with retries of
5xx / dropped connections / a corrupt body (exponential backoff with jitter).

>>> parse_bi5(b"", 0, 5)["bid"].size
0
>>> point_decimals("usdjpy"), point_decimals("EURUSD"), point_decimals("XAUUSD")
(3, 5, 3)
"""

from __future__ import annotations

import asyncio
import lzma
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from S1.datasets import (
    Dataset,
    candles_from_arrays,
    dataset_path,
    normalize_symbol,
    read_candles,
    read_metadata,
    write_parquet,
)
from S1.errors import NetworkError, UserError
from S1.intervals import INTERVAL_MS, check_interval, close_time_ms, to_ms
from S1.settings import Settings, get_settings

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MAX_IN_FLIGHT = 8
SIDES = ("bid", "ask", "mid")
#: intervals built from ticks (whole divisors of a day, 1 minute and up)
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
RECORD = np.dtype([("ms", ">u4"), ("ask", ">u4"), ("bid", ">u4"), ("ask_volume", ">f4"), ("bid_volume", ">f4")])
_FX = ("EUR", "USD", "GBP", "JPY", "CHF", "AUD", "NZD", "CAD")
#: decimals of a point (prices are integers of 10^-decimals)
POINT_DECIMALS = {"XAUUSD": 3, "XAGUSD": 3}

default_url = "https://datafeed.dukascopy.com/datafeed"


class CorruptFile(Exception):
    """A ``.bi5`` body that is not LZMA of whole 20-byte records."""


def point_decimals(symbol: str) -> int:
    """Decimals of ``symbol``'s price points: 3 for JPY-quoted pairs and gold/silver, 5 for the
    other pairs of EUR USD GBP JPY CHF AUD NZD CAD; anything else is refused."""
    s = normalize_symbol(symbol)
    if s in POINT_DECIMALS:
        return POINT_DECIMALS[s]
    if len(s) == 6 and s[:3] in _FX and s[3:] in _FX and s[:3] != s[3:]:
        return 3 if s[3:] == "JPY" else 5
    raise UserError(f"unknown Dukascopy instrument {symbol!r} (its point size is not known here)",
                    f"use an FX pair of {' '.join(_FX)} (e.g. EURUSD, USDJPY) or XAUUSD / XAGUSD")


def hour_path(symbol: str, hour_ms: int) -> str:
    """``EURUSD/2024/00/15/13h_ticks.bi5`` for 2024-01-15 13:00 UTC (month 0-based).

    >>> hour_path("EURUSD", to_ms("2024-01-15 13:00"))
    'EURUSD/2024/00/15/13h_ticks.bi5'
    """
    t = pd.Timestamp(int(hour_ms), unit="ms", tz="UTC")
    return f"{normalize_symbol(symbol)}/{t.year:04d}/{t.month - 1:02d}/{t.day:02d}/{t.hour:02d}h_ticks.bi5"


def parse_bi5(body: bytes, hour_ms: int, decimals: int) -> dict[str, np.ndarray]:
    """An hour file -> ``{"t": ms, "ask", "bid", "ask_volume", "bid_volume"}`` (prices scaled)."""
    if not body:
        raw = b""
    else:
        try:
            raw = lzma.decompress(body, format=lzma.FORMAT_ALONE)
        except lzma.LZMAError as exc:
            raise CorruptFile(f"not LZMA ({exc})") from None
    if len(raw) % RECORD.itemsize:
        raise CorruptFile(f"{len(raw)} bytes is not a whole number of {RECORD.itemsize}-byte records")
    rec = np.frombuffer(raw, dtype=RECORD)
    scale = 10.0 ** decimals
    t = int(hour_ms) + rec["ms"].astype(np.int64)
    if len(t) and (t[-1] >= hour_ms + HOUR_MS or (np.diff(t) < 0).any()):
        raise CorruptFile("tick times outside the hour or not in order")
    return {"t": t, "ask": rec["ask"].astype(np.float64) / scale, "bid": rec["bid"].astype(np.float64) / scale,
            "ask_volume": rec["ask_volume"].astype(np.float64), "bid_volume": rec["bid_volume"].astype(np.float64)}


def ticks_to_candles(t: np.ndarray, price: np.ndarray, volume: np.ndarray, interval: str) -> np.ndarray:
    """Ticks (ascending ``t`` in ms) -> ``(n, 11)`` kline rows, one per bucket that has a tick."""
    if len(t) == 0:
        return np.empty((0, 11))
    step = INTERVAL_MS[interval]
    b = t // step * step
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    ends = np.r_[starts[1:], len(t)] - 1
    opens = b[starts]
    n = np.diff(np.r_[starts, len(t)])
    zeros = np.zeros(len(starts))
    return np.column_stack([
        opens, price[starts], np.maximum.reduceat(price, starts), np.minimum.reduceat(price, starts), price[ends],
        np.add.reduceat(volume, starts), close_time_ms(opens, interval), np.add.reduceat(price * volume, starts),
        n, zeros, zeros,
    ]).astype(np.float64)


def side_values(ticks: dict[str, np.ndarray], side: str) -> tuple[np.ndarray, np.ndarray]:
    if side == "bid":
        return ticks["bid"], ticks["bid_volume"]
    if side == "ask":
        return ticks["ask"], ticks["ask_volume"]
    return (ticks["ask"] + ticks["bid"]) / 2.0, ticks["ask_volume"] + ticks["bid_volume"]


# ------------------------------------------------------------------------- fetching
def base_url(settings: Settings) -> str:
    return str(getattr(settings, "dukascopy_url", None) or default_url).rstrip("/")


async def _fetch_hours(symbol: str, hours: list[int], settings: Settings, *, max_in_flight: int = MAX_IN_FLIGHT,
                       decimals: int) -> dict[int, dict[str, np.ndarray]]:
    import aiohttp
    from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

    base = base_url(settings)
    sem = asyncio.Semaphore(max_in_flight)
    out: dict[int, dict[str, np.ndarray]] = {}
    timeout = aiohttp.ClientTimeout(total=settings.http_timeout)

    class Retry(Exception):
        pass

    async def one(session, hour: int):
        url = f"{base}/{hour_path(symbol, hour)}"
        last = ""
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(settings.http_max_retries + 1), reraise=True,
                                               wait=wait_exponential_jitter(multiplier=0.2, max=10, jitter=0.2),
                                               retry=retry_if_exception_type(Retry)):
                with attempt:
                    async with sem:
                        try:
                            async with session.get(url) as resp:
                                if resp.status == 404:
                                    raise UserError(f"{url} does not exist (HTTP 404)",
                                                    "check the symbol; the current hour is published later")
                                if resp.status == 429 or resp.status >= 500:
                                    last = f"HTTP {resp.status}"
                                    if resp.status == 429:
                                        await asyncio.sleep(min(float(resp.headers.get("Retry-After", 1)), 60))
                                    raise Retry(last)
                                if resp.status != 200:
                                    raise UserError(f"{url}: HTTP {resp.status}", "check DUKASCOPY_URL")
                                body = await resp.read()
                        except (TimeoutError, aiohttp.ClientError) as exc:
                            last = str(exc) or type(exc).__name__
                            raise Retry(last) from exc
                        try:
                            out[hour] = parse_bi5(body, hour, decimals)
                        except CorruptFile as exc:
                            last = f"corrupt file: {exc}"
                            raise Retry(last) from exc
        except Retry:
            raise NetworkError(f"{url}: {last} after {settings.http_max_retries + 1} attempts",
                               "try again later; nothing was written") from None

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, h) for h in hours))
    return out


def download_fx(symbol: str, interval: str, start, end, *, side: str = "bid",
                settings: Settings | None = None) -> pd.DataFrame:
    """Candles of ``symbol`` with ``start <= open`` and ``close <= end`` (nothing written)."""
    sym, interval, side = _check(symbol, interval, side)
    settings = settings or get_settings()
    start_ms, end_ms = to_ms(start), to_ms(end)
    return candles_from_arrays(_candles(sym, interval, side, start_ms, end_ms, settings))


def _candles(sym: str, interval: str, side: str, start_ms: int, end_ms: int, settings: Settings) -> np.ndarray:
    if end_ms <= start_ms:
        return np.empty((0, 11))
    decimals = point_decimals(sym)
    hours = list(range(start_ms // HOUR_MS * HOUR_MS, end_ms, HOUR_MS))
    from S1.rest_client import run

    ticks = run(_fetch_hours(sym, hours, settings, decimals=decimals))
    parts = [ticks[h] for h in hours]
    t = np.concatenate([p["t"] for p in parts])
    keep = (t >= start_ms) & (t < end_ms)
    price, volume = side_values({k: np.concatenate([p[k] for p in parts])[keep] for k in parts[0]}, side)
    rows = ticks_to_candles(t[keep], price, volume, interval)
    return rows[(rows[:, 6] + 1 <= end_ms)] if len(rows) else rows


def _check(symbol: str, interval: str, side: str) -> tuple[str, str, str]:
    sym = normalize_symbol(symbol)
    point_decimals(sym)
    check_interval(interval)
    if interval not in INTERVALS:
        raise UserError(f"interval {interval} is not built from Dukascopy ticks here",
                        f"use one of {' '.join(INTERVALS)}")
    if side not in SIDES:
        raise UserError(f"unknown price side {side!r}", "use bid (default), ask or mid")
    return sym, interval, side


# ----------------------------------------------------------------------------- file
@dataclass(frozen=True)
class FxSummary:
    path: Path
    rows: int
    new_rows: int
    hours_fetched: int
    start: pd.Timestamp
    end: pd.Timestamp
    gaps: int
    side: str

    def line(self) -> str:
        return (f"wrote {self.path}: {self.rows:,} candles ({self.new_rows:+,} new from {self.hours_fetched:,} "
                f"hourly tick files, {self.side} prices), {self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} UTC; "
                f"{self.gaps:,} gaps (weekends, holidays: no ticks, no candle)")


def update_fx_dataset(dataset: Dataset, *, end=None, side: str = "bid", out: Path | None = None,
                      settings: Settings | None = None) -> FxSummary:
    """Download (or extend) ``data/<symbol>_<interval>_<days>d.parquet`` (``dataset``) from Dukascopy's
    tick files over ``[end - days, end)`` (``end`` default: now; only whole candles)."""
    sym, interval, side = _check(dataset.symbol, dataset.interval, side)
    days = dataset.days
    if days > 36_500:
        raise UserError(f"--days must be a whole number from 1 to 36500, got {days!r}", "e.g. --days 365")
    settings = settings or get_settings()
    step = INTERVAL_MS[interval]
    end_ms = (to_ms(end) if end is not None else int(time.time() * 1000)) // step * step
    start_ms = -(-(end_ms - int(days) * DAY_MS) // step) * step
    from S1.storage import as_path  # --out s3://bucket/key.parquet: one PUT to the object store

    path = as_path(out) if out is not None else dataset_path(dataset)
    meta_old: dict = {}
    old = None
    if path.exists():
        meta_old = read_metadata(path)
        if meta_old.get("exchange") != "dukascopy" or meta_old.get("price") != side:
            raise UserError(f"{path} holds {meta_old.get('exchange', 'other')} {meta_old.get('price', '')} candles, "
                            f"not Dukascopy {side} prices", "pass --out to write elsewhere, or move the file away")
        old = read_candles(path)
    todo, hi = [(start_ms, end_ms)], end_ms
    if meta_old:
        a, b = int(meta_old["coverage_start_ms"]), int(meta_old["coverage_end_ms"])
        if a <= end_ms and b >= start_ms:  # overlapping: fetch only what lies outside the file
            hi = max(b, end_ms)
            todo = [r for r in ((start_ms, a), (b, end_ms)) if r[1] > r[0]]
        else:
            old = None
    parts = [_candles(sym, interval, side, a, b, settings) for a, b in todo]
    new = candles_from_arrays(np.concatenate(parts) if parts else np.empty((0, 11)))
    first = pd.Timestamp(start_ms, unit="ms", tz="UTC")
    kept = old[old.index >= first] if old is not None else None  # the file is the asked window
    df = pd.concat([kept, new]).sort_index() if kept is not None else new
    df = df[~df.index.duplicated(keep="last")]
    gaps = int((np.diff(df.index.as_unit("ms").asi8) > step).sum()) if len(df) > 1 else 0
    meta = {"symbol": sym, "interval": interval, "days": int(days), "coverage_start_ms": start_ms,
            "coverage_end_ms": hi, "exchange": "dukascopy", "market": "fx", "price": side,
            "point_decimals": point_decimals(sym), "source_url": settings.redact(base_url(settings)),
            "simulated": bool(settings.simulated_market), "gaps": gaps,
            "note": "weekends and holidays have no ticks and so no candles"}
    write_parquet(df, path, metadata=meta)
    hours = sum(len(range(a // HOUR_MS * HOUR_MS, b, HOUR_MS)) for a, b in todo)
    return FxSummary(path, len(df), len(df) - (0 if kept is None else len(kept)), hours, first,
                     pd.Timestamp(hi, unit="ms", tz="UTC"), gaps, side)


__all__ = ["INTERVALS", "POINT_DECIMALS", "SIDES", "CorruptFile", "FxSummary", "download_fx", "hour_path",
           "parse_bi5", "point_decimals", "ticks_to_candles", "update_fx_dataset"]
