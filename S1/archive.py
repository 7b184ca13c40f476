"""Binance public-data archive (data.binance.vision layout): plan, download, verify, cache.

Monthly zips cover whole past months, daily zips whole past days; each has a
``.CHECKSUM`` (SHA-256) beside it, verified before a zip is cached or read.
Verified zips are cached under ``data/archive/`` so a second run reads them
from disk. A missing file (404: not yet published, or before the listing) is
reported as ``None`` and the caller falls back to REST for that period.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pandas as pd
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from S1.datasets import archive_cache_dir, atomic_write_bytes
from S1.errors import NetworkError, UserError
from S1.intervals import to_ms

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


@dataclass(frozen=True)
class ArchiveFile:
    """One archive zip: ``period`` is ``monthly`` or ``daily``; ``[start_ms, end_ms)`` its span."""

    symbol: str
    interval: str
    period: str
    stamp: str  # YYYY-MM or YYYY-MM-DD
    start_ms: int
    end_ms: int

    @property
    def name(self) -> str:
        return f"{self.symbol}-{self.interval}-{self.stamp}.zip"

    @property
    def rel_path(self) -> str:
        return f"data/spot/{self.period}/klines/{self.symbol}/{self.interval}/{self.name}"

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.rel_path}"


def plan_archive(symbol: str, interval: str, start_ms: int, end_ms: int, *, today_ms: int) -> tuple[
        list[ArchiveFile], list[tuple[int, int]]]:
    """Split ``[start_ms, end_ms)`` into whole past months, whole past days (in
    partial months) and the rest (ranges for REST). Only periods that ended
    before ``today_ms`` (UTC midnight of today) can be in the archive.

    >>> files, rest = plan_archive("BTCUSDT", "1h", to_ms("2023-01-15"), to_ms("2023-03-02 06:00"),
    ...                            today_ms=to_ms("2024-01-01"))
    >>> [f.stamp for f in files][:2], [f.stamp for f in files][-2:]
    (['2023-01-15', '2023-01-16'], ['2023-02', '2023-03-01'])
    >>> [(str(pd.Timestamp(a, unit="ms")), str(pd.Timestamp(b, unit="ms"))) for a, b in rest]
    [('2023-03-02 00:00:00', '2023-03-02 06:00:00')]
    """
    files: list[ArchiveFile] = []
    rest: list[tuple[int, int]] = []
    t = start_ms
    limit = min(end_ms, today_ms)
    while t < limit:
        ts = pd.Timestamp(t, unit="ms", tz="UTC")
        month_start = to_ms(ts.normalize().replace(day=1))
        month_end = to_ms(pd.Timestamp(month_start, unit="ms", tz="UTC") + pd.offsets.MonthBegin(1))
        if t == month_start and month_end <= limit:
            files.append(ArchiveFile(symbol, interval, "monthly", ts.strftime("%Y-%m"), month_start, month_end))
            t = month_end
            continue
        day_start = t - t % DAY_MS
        day_end = day_start + DAY_MS
        if t == day_start and day_end <= limit:
            files.append(ArchiveFile(symbol, interval, "daily", ts.strftime("%Y-%m-%d"), day_start, day_end))
            t = day_end
            continue
        nxt = min(day_end, limit)
        _append(rest, t, nxt)
        t = nxt
    if limit < end_ms:
        _append(rest, max(limit, start_ms), end_ms)
    return files, rest


def _append(ranges: list[tuple[int, int]], a: int, b: int) -> None:
    if b <= a:
        return
    if ranges and ranges[-1][1] == a:
        ranges[-1] = (ranges[-1][0], b)
    else:
        ranges.append((a, b))


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, _ChecksumMismatch)) and not isinstance(
        exc, aiohttp.ClientResponseError) or (isinstance(exc, aiohttp.ClientResponseError) and exc.status >= 500)


class _ChecksumMismatch(Exception):
    pass


class ArchiveClient:
    """Downloads archive zips concurrently (``async with``), verifying ``.CHECKSUM``."""

    def __init__(self, base_url: str, *, cache_dir: Path | None = None, timeout: float = 30.0,
                 max_retries: int = 4, concurrency: int = 8, progress=None):
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else archive_cache_dir()
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.progress = progress
        self.downloaded = 0
        self.cached = 0
        self.missing = 0
        self._session: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(concurrency)

    async def __aenter__(self):
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc):
        if self._session:
            await self._session.close()

    def cache_path(self, f: ArchiveFile) -> Path:
        return self.cache_dir / f.rel_path.removeprefix("data/")

    async def fetch(self, f: ArchiveFile) -> bytes | None:
        """The verified zip bytes of ``f`` (from cache or network), or None on 404."""
        path = self.cache_path(f)
        if path.exists():
            self.cached += 1
            if self.progress:
                self.progress(1)
            return path.read_bytes()
        async with self._sem:
            try:
                async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(self.max_retries + 1), reraise=True,
                        wait=wait_exponential_jitter(multiplier=0.2, max=8), retry=retry_if_exception(_retryable)):
                    with attempt:
                        data = await self._get_verified(f)
            except _ChecksumMismatch as exc:
                raise UserError(f"archive file {f.name} failed its SHA-256 check {self.max_retries + 1} times",
                                "the download is corrupt; re-run later or use --source rest") from exc
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise NetworkError(f"cannot download {f.url(self.base_url)}: {exc or type(exc).__name__}",
                                   "check BINANCE_ARCHIVE_URL or use --source rest") from exc
        if self.progress:
            self.progress(1)
        if data is None:
            self.missing += 1
            return None
        atomic_write_bytes(path, data)
        self.downloaded += 1
        return data

    async def _get_verified(self, f: ArchiveFile) -> bytes | None:
        assert self._session is not None
        url = f.url(self.base_url)
        async with self._session.get(url) as resp:
            if resp.status == 404:
                return None
            resp.raise_for_status()
            data = await resp.read()
        async with self._session.get(url + ".CHECKSUM") as resp:
            if resp.status == 404:
                log.warning("%s has no .CHECKSUM; accepted unverified", f.name)
                return data
            resp.raise_for_status()
            expected = (await resp.text()).split()[0].strip().lower()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            log.warning("checksum mismatch for %s (got %s, want %s): retrying", f.name, actual[:12], expected[:12])
            raise _ChecksumMismatch(f.name)
        return data
