"""Kline history: download a window, merge it into the dataset file, report gaps.

Importable for notebooks and later sprints::

    from S1.history import download, update_dataset
    df = download("BTCUSDT", "1h", "2024-01-01", "2024-02-01")      # a DataFrame, nothing written
    summary = update_dataset(symbol="ETHUSDC", interval="1h", days=365)  # data/ethusdc_1h_365d.parquet

Guarantees:

- only **closed** candles: a candle is kept when its whole span lies before
  ``end`` (which defaults to the exchange's clock, so the candle in progress is
  never written) -- the window is ``[end - days, end)``;
- **incremental and idempotent**: the file's metadata records the window it
  covers; a re-run with the same or a wider window fetches only what is missing
  before and after, and a narrower one fetches nothing;
- **atomic**: the file is replaced by a rename only after everything succeeded,
  so a failed or killed run leaves the previous file intact;
- **gaps are data**: missing candles inside the window are reported (count and
  first ranges) and kept as gaps, never filled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from S1.archive import ArchiveClient, plan_archive
from S1.datasets import (
    Dataset,
    candles_from_arrays,
    candles_to_rows,
    dataset_path,
    empty_candles,
    normalize_symbol,
    read_metadata,
    read_parquet,
    validate_candles,
    write_parquet,
)
from S1.errors import NetworkError, UserError
from S1.intervals import (
    ceil_ms,
    check_interval,
    close_time_ms,
    floor_ms,
    interval_ms,
    ms_to_ts,
    open_times,
    to_ms,
)
from S1.kline_files import ImportReport, sniff_and_read
from S1.rest_client import BinanceRest, page_windows, run, sorted_unique
from S1.settings import Settings, get_settings

log = logging.getLogger(__name__)
SOURCES = ("auto", "rest", "archive")
DAY_MS = 86_400_000


# ------------------------------------------------------------------ coverage & gaps
@dataclass(frozen=True)
class Gap:
    start: pd.Timestamp  # first missing open time
    end: pd.Timestamp    # last missing open time
    missing: int

    def __str__(self) -> str:
        if self.missing == 1:
            return f"{self.start:%Y-%m-%d %H:%M}"
        return f"{self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} ({self.missing})"


def find_gaps(index: pd.DatetimeIndex, interval: str) -> list[Gap]:
    """Missing candles between the first and last open time of ``index``."""
    if len(index) < 2:
        return []
    t = index.as_unit("ms").asi8
    expected = open_times(int(t[0]), int(close_time_ms(int(t[-1]), interval)) + 1, interval)
    missing = np.setdiff1d(expected, t, assume_unique=True)
    if len(missing) == 0:
        return []
    pos = np.searchsorted(expected, missing)
    breaks = np.flatnonzero(np.diff(pos) != 1) + 1
    gaps = []
    for run_ in np.split(np.arange(len(missing)), breaks):
        a, b = missing[run_[0]], missing[run_[-1]]
        gaps.append(Gap(ms_to_ts(a), ms_to_ts(b), len(run_)))
    return gaps


def missing_ranges(have: tuple[int, int] | None, want: tuple[int, int]) -> list[tuple[int, int]]:
    """Parts of the wanted window ``[a, b)`` outside the covered window ``have``."""
    a, b = want
    if have is None or have[1] <= a or have[0] >= b:
        return [(a, b)] if b > a else []
    out = []
    if a < have[0]:
        out.append((a, have[0]))
    if have[1] < b:
        out.append((have[1], b))
    return out


# ----------------------------------------------------------------------- fetching
@dataclass
class FetchStats:
    rest_requests: int = 0
    rest_retries: int = 0
    rate_limit_waits: int = 0
    archive_downloaded: int = 0
    archive_cached: int = 0
    archive_missing: int = 0
    local_files: int = 0
    sources: set = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


async def _fetch_async(symbol: str, interval: str, ranges: list[tuple[int, int]], *, source: str,
                       settings: Settings, today_ms: int, stats: FetchStats, progress: bool) -> list[np.ndarray]:
    """Fetch ``ranges`` (``[a, b)`` in ms) as raw kline rows from the archive and/or REST."""
    archive_files, rest_ranges = [], []
    for a, b in ranges:
        if source == "rest":
            rest_ranges.append((a, b))
            continue
        files, rest = plan_archive(symbol, interval, a, b, today_ms=today_ms)
        archive_files += files
        if source == "archive" and rest:
            # strict archive mode: partial days come from the day's file, trimmed
            for ra, rb in rest:
                day = ra - ra % DAY_MS
                while day < rb and day + DAY_MS <= today_ms:
                    archive_files.append(plan_archive(symbol, interval, day, day + DAY_MS, today_ms=today_ms)[0][0])
                    day += DAY_MS
                if day < rb:
                    stats.notes.append(f"{ms_to_ts(max(day, ra)):%Y-%m-%d %H:%M} .. {ms_to_ts(rb):%Y-%m-%d %H:%M} "
                                       "is not in the archive yet (use --source auto to fetch it over REST)")
        else:
            rest_ranges += rest
    n_pages = sum(len(page_windows(a, b, interval)) for a, b in rest_ranges)
    bar = tqdm(total=len(archive_files) + n_pages, unit="req", desc=f"{symbol} {interval}",
               disable=True if not progress or (len(archive_files) + n_pages) < 3 else None, leave=False)
    parts: list[np.ndarray] = []
    api = BinanceRest(settings, progress=bar.update)
    try:
        await api.__aenter__()
        try:  # symbol check (suggests close matches) and the exchange's weight limit
            await api.check_symbol(symbol)
        except NetworkError:
            if rest_ranges or source != "archive":
                raise
        if archive_files:
            async with ArchiveClient(settings.binance_archive_url, progress=bar.update) as arc:
                blobs = await asyncio.gather(*(arc.fetch(f) for f in archive_files))
            stats.archive_downloaded += arc.downloaded
            stats.archive_cached += arc.cached
            stats.archive_missing += arc.missing
            from S1.kline_files import read_zip
            for f, blob in zip(archive_files, blobs):
                if blob is None:
                    if source == "auto":
                        rest_ranges.append((f.start_ms, f.end_ms))
                    else:
                        stats.notes.append(f"{f.name} is not in the archive")
                    continue
                stats.sources.add("archive")
                df = read_zip(blob)
                parts.append(candles_to_rows(df))
            if source == "auto" and stats.archive_missing:
                bar.total += sum(len(page_windows(a, b, interval)) for a, b in rest_ranges) - n_pages
        if rest_ranges:
            for a, b in _merge_ranges(rest_ranges):
                parts.append(await api.klines_range(symbol, interval, a, b))
            stats.sources.add("rest")
    finally:
        stats.rest_requests += api.budget.requests
        stats.rest_retries += api.retries
        stats.rate_limit_waits += api.budget.waits
        await api.__aexit__(None, None, None)
        bar.close()
    return parts


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _rows_to_frame(parts: list[np.ndarray], start_ms: int, end_ms: int, interval: str) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_candles()
    rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
    # closed candles only: the whole span before end (drops the candle in progress)
    last_open = end_ms - (interval_ms(interval) if interval != "1M" else 0)
    rows = sorted_unique(rows, start_ms, last_open + 1)
    if interval == "1M" and len(rows):
        rows = rows[close_time_ms(rows[:, 0].astype(np.int64), interval) < end_ms]
    return candles_from_arrays(rows)


def _local_files(archive_dir: Path, symbol: str, interval: str, start_ms: int, end_ms: int,
                 stats: FetchStats) -> pd.DataFrame:
    """Candles from local archive files (zip/csv of any supported layout) in ``archive_dir``."""
    archive_dir = Path(archive_dir)
    if not archive_dir.is_dir():
        raise UserError(f"--archive-dir {archive_dir} is not a folder", "pass the folder holding the zip/csv files")
    token = "1mo" if interval == "1M" else interval
    files = sorted(p for p in archive_dir.rglob("*")
                   if p.suffix.lower() in (".zip", ".csv") and symbol in p.name.upper().replace("_", "-")
                   .replace("-", "") and f"-{interval}-" in f"-{p.stem.replace('_', '-')}-".replace(token, interval))
    if not files:
        raise UserError(f"no {symbol} {interval} files in {archive_dir}",
                        f"expected names like {symbol}-{interval}-2023-01.zip (or .csv)")
    report = ImportReport()
    frames = [sniff_and_read(p, interval, report=report) for p in files]
    stats.local_files += len(files)
    stats.sources.add("local files")
    stats.notes.extend(report.lines())
    return _closed_window(_sorted_unique_frame(frames), start_ms, end_ms, interval)


def _sorted_unique_frame(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One frame, sorted by open time, one row per open time (the later frame wins);
    no copy or sort when the frames are already in order."""
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return empty_candles()
    df = frames[0] if len(frames) == 1 else pd.concat(frames)
    if not (df.index.is_monotonic_increasing and df.index.is_unique):
        df = df.sort_index(kind="stable")
        df = df[~df.index.duplicated(keep="last")]
    return df


def _closed_window(df: pd.DataFrame, start_ms: int, end_ms: int, interval: str) -> pd.DataFrame:
    """Candles opening at or after ``start_ms`` whose whole span ends by ``end_ms``."""
    if interval == "1M":
        keep = (df.index >= ms_to_ts(start_ms)) & (df["close_time"] < ms_to_ts(end_ms))
    else:
        keep = (df.index >= ms_to_ts(start_ms)) & (df.index <= ms_to_ts(end_ms - interval_ms(interval)))
    return df if keep.all() else df[keep]


# -------------------------------------------------------------------- public API
#: the longest window accepted (``--days``): 100 years
MAX_DAYS = 36_500


def _exchange_clock(settings: Settings) -> tuple[int, bool]:
    """The exchange's clock (ms) and whether the server says it serves a simulated market
    (the local servers of :mod:`S1.local` do, whatever the environment says)."""
    async def ask():
        async with BinanceRest(settings, max_retries=min(2, settings.http_max_retries)) as api:
            return await api.server_clock()
    body = run(ask())
    return int(body["serverTime"]), bool(body.get("simulated"))


def _resolve_end(end, settings: Settings, *, clock: tuple[int, bool] | None = None) -> int:
    """``end`` in ms: the exchange's clock by default; a given ``end`` past the exchange's
    clock is cut to it, so closure is always judged by the exchange's time (clock skew)."""
    now_local = int(time.time() * 1000)
    if end is None:
        return (clock or _exchange_clock(settings))[0]
    end_ms = to_ms(end)
    server_now = clock[0] if clock is not None else now_local
    if end_ms > max(now_local, server_now) + 60_000:
        raise UserError(f"--end {ms_to_ts(end_ms):%Y-%m-%d %H:%M} is in the future",
                        "omit --end (= now) or pass a past UTC date such as 2024-01-01")
    return min(end_ms, server_now) if clock is not None else end_ms


def _check_days(days) -> None:
    if not isinstance(days, int) or isinstance(days, bool) or not 0 < days <= MAX_DAYS:
        raise UserError(f"--days must be a positive whole number up to {MAX_DAYS:,}, got {days!r}", "e.g. --days 365")


def _check_window(start_ms: int, end_ms: int, interval: str, days: int) -> None:
    """At least one whole candle must fit in ``[start, end)``."""
    if interval == "1M":
        from S1.intervals import next_open_ms
        fits = next_open_ms(start_ms, interval) <= end_ms
    else:
        fits = start_ms + interval_ms(interval) <= end_ms
    if not fits:
        raise UserError(f"--days {days} is shorter than one {interval} candle: the window holds no closed candle",
                        "pass a longer --days (e.g. --days 62 for 1M) or a shorter --interval")


def download(symbol: str, interval: str, start, end=None, *, source: str = "auto",
             archive_dir: Path | None = None, settings: Settings | None = None,
             progress: bool = True, stats: FetchStats | None = None) -> pd.DataFrame:
    """Closed candles of ``symbol``/``interval`` with open time in ``[start, end)``.

    ``source``: ``rest``, ``archive`` (public zips), or ``auto`` (archive for whole
    past months/days, REST for the rest); ``archive_dir`` reads local files instead.
    """
    settings = settings or get_settings()
    symbol = normalize_symbol(symbol)
    check_interval(interval)
    if source not in SOURCES:
        raise UserError(f"unknown --source {source!r}", f"use one of {', '.join(SOURCES)}")
    end_ms = (_resolve_end(end, settings, clock=_exchange_clock(settings)) if archive_dir is None
              else to_ms(end or pd.Timestamp.now(tz="UTC")))
    start_ms = to_ms(start)
    return _download_ms(symbol, interval, start_ms, end_ms, source=source, archive_dir=archive_dir,
                        settings=settings, progress=progress, stats=stats or FetchStats())


def _download_ms(symbol, interval, start_ms, end_ms, *, source, archive_dir, settings, progress, stats):
    if end_ms <= start_ms:
        return empty_candles()
    if archive_dir is not None:
        return _local_files(archive_dir, symbol, interval, start_ms, end_ms, stats)
    today_ms = end_ms - end_ms % DAY_MS  # periods that ended before today's UTC midnight may be archived
    parts = run(_fetch_async(symbol, interval, [(start_ms, end_ms)], source=source, settings=settings,
                             today_ms=today_ms, stats=stats, progress=progress))
    return _rows_to_frame(parts, start_ms, end_ms, interval)


@dataclass
class Summary:
    path: Path
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    gaps: list[Gap]
    fetched: list[tuple[int, int]]
    new_rows: int
    seconds: float
    stats: FetchStats
    planned: bool = False
    listing_note: str | None = None

    def line(self) -> str:
        span = f"{self.first:%Y-%m-%d %H:%M} .. {self.last:%Y-%m-%d %H:%M} UTC" if self.rows else "no candles"
        n_missing = sum(g.missing for g in self.gaps)
        gaps = (f"{len(self.gaps)} gap(s), {n_missing} candle(s) missing: "
                + ", ".join(str(g) for g in self.gaps[:3]) + (" ..." if len(self.gaps) > 3 else "")
                ) if self.gaps else "no gaps"
        how = ", ".join(sorted(self.stats.sources)) or "nothing fetched (file already covers the window)"
        return (f"{self.path}: {self.rows:,} candles, {span}; {gaps}; +{self.new_rows:,} new via {how}; "
                f"{self.seconds:.1f}s")


def update_dataset(*, symbol: str, interval: str, days: int, end=None, out: Path | None = None,
                   source: str = "auto", archive_dir: Path | None = None, plan: bool = False,
                   settings: Settings | None = None, progress: bool = True, exchange: str | None = None,
                   market: str = "spot", price: str = "last", client: str = "auto") -> Summary:
    """Bring ``data/<symbol>_<interval>_<days>d.parquet`` (or ``out``) to the window
    ``[end - days, end)``, fetching only what the file does not cover yet.

    ``exchange``/``market``/``price`` select another venue through CCXT
    (:mod:`S1.ccxt_source`; the file is then ``data/<venue>_<symbol>_...``);
    ``client="ccxt"`` uses CCXT for Binance spot too. Binance spot defaults to python-binance."""
    t0 = time.perf_counter()
    settings = settings or get_settings()
    check_interval(interval)
    _check_days(days)
    if source not in SOURCES:
        raise UserError(f"unknown --source {source!r}", f"use one of {', '.join(SOURCES)}")
    from S1.ccxt_source import Venue

    venue = Venue(exchange or "binance", market, price)
    if venue.uses_ccxt(client):
        return _update_ccxt(venue, symbol=symbol, interval=interval, days=days, end=end, out=out, source=source,
                            archive_dir=archive_dir, plan=plan, settings=settings, progress=progress, t0=t0)
    symbol = normalize_symbol(symbol)
    from S1.storage import as_path  # --out s3://bucket/key.parquet: the object store, not a folder 's3:'

    path = as_path(out) if out is not None else dataset_path(Dataset(symbol, interval, days))
    existing, have = _existing(path, symbol, interval)     # a damaged file is reported before any request
    if plan:
        end_ms = to_ms(end) if end is not None else int(time.time() * 1000)
        clock = None
    elif archive_dir is not None:   # local files: nothing is asked of an exchange
        end_ms = to_ms(end) if end is not None else int(time.time() * 1000)
        clock = (end_ms, False)
    else:   # no --end: the exchange's clock; a given --end is checked against it before fetching
        clock = _exchange_clock(settings) if end is None else None
        end_ms = _resolve_end(end, settings, clock=clock)
    start_ms = ceil_ms(end_ms - days * DAY_MS, interval)
    _check_window(start_ms, end_ms, interval, days)
    todo = missing_ranges(have, (start_ms, end_ms))
    stats = FetchStats()
    if plan:
        return _plan(path, existing, have, todo, interval, stats, t0)
    if clock is None and todo and archive_dir is None:
        # candles will come from the exchange: its clock judges which are closed (clock skew; a
        # --end past it would take the forming candle), and it says whether it serves a simulated market
        clock = _exchange_clock(settings)
        end_ms = _resolve_end(end, settings, clock=clock)
        start_ms = ceil_ms(end_ms - days * DAY_MS, interval)
        _check_window(start_ms, end_ms, interval, days)
        todo = missing_ranges(have, (start_ms, end_ms))
    if clock is not None:
        simulated = bool(settings.simulated_market or clock[1])
    else:                                   # nothing fetched, no server asked: the file keeps its label
        simulated = bool(settings.simulated_market or (read_metadata(path).get("simulated") if path.exists()
                                                       else False))
    meta = {
        "symbol": symbol, "interval": interval, "days": days,
        "coverage_start_ms": start_ms, "coverage_end_ms": end_ms,
        "exchange": "binance", "market": "spot", "price": "last",
        "source_url": settings.redact(settings.binance_api_url),
        "simulated": simulated,
    }
    _check_provenance(path, meta)
    fetched = [_download_ms(symbol, interval, a, b, source=source, archive_dir=archive_dir,
                            settings=settings, progress=progress, stats=stats) for a, b in todo]
    return _finish(path, existing, have, todo, fetched, start_ms, end_ms, interval, meta, stats, settings, t0)


def _finish(path: Path, existing: pd.DataFrame | None, have, todo, fetched: list[pd.DataFrame], start_ms: int,
            end_ms: int, interval: str, meta: dict, stats: FetchStats, settings: Settings, t0: float) -> Summary:
    """Merge the fetched frames into the existing file's candles, keep the window, report
    gaps, and write the file atomically when anything changed."""
    parts = ([existing] if existing is not None else []) + list(fetched)
    window = _closed_window(_sorted_unique_frame(parts), start_ms, end_ms, interval)
    window = validate_candles(window, what=str(path))
    new_rows = len(window) - (0 if existing is None else int(
        ((existing.index >= ms_to_ts(start_ms)) & (existing["close_time"] < ms_to_ts(end_ms))).sum()))
    gaps = find_gaps(window.index, interval)
    listing = None
    if len(window) and window.index[0] > ms_to_ts(start_ms):
        listing = f"no candles before {window.index[0]:%Y-%m-%d %H:%M} UTC (listing date or exchange history start)"
    meta = {
        **meta,
        "sources": sorted(stats.sources | set(read_metadata(path).get("sources", []) if path.exists() else [])),
        "simulated": bool(meta.get("simulated") or settings.simulated_market),
        "gaps": [str(g) for g in gaps[:50]],
        "updated_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    if not len(window):
        where = (f"{path} was left untouched" if path.exists() else "nothing was written")
        raise UserError(f"no closed {interval} candle between {ms_to_ts(start_ms):%Y-%m-%d %H:%M} and "
                        f"{ms_to_ts(end_ms):%Y-%m-%d %H:%M} UTC ({where})",
                        "check --end and --days: the symbol may not trade yet at that time (its listing date)")
    if todo or have != (start_ms, end_ms) or not path.exists():
        write_parquet(window, path, metadata=meta)
    return Summary(path, len(window), window.index[0] if len(window) else None,
                   window.index[-1] if len(window) else None, gaps, todo, max(0, new_rows),
                   time.perf_counter() - t0, stats, listing_note=listing)


def _update_ccxt(venue, *, symbol: str, interval: str, days: int, end, out: Path | None, source: str,
                 archive_dir: Path | None, plan: bool, settings: Settings, progress: bool, t0: float) -> Summary:
    """:func:`update_dataset` through CCXT (any exchange, market type, price type)."""
    from S1.ccxt_source import CcxtHistory, closed_rows, rows_to_frame, unreported_columns
    from S1.ccxt_source import page_windows as ccxt_pages

    if archive_dir is not None or source == "archive":
        raise UserError("--source archive and --archive-dir read Binance's public spot archive",
                        "leave them out with --exchange/--market/--price/--client ccxt (CCXT pages over REST)")
    if end is not None:
        end_given = to_ms(end)
        if end_given > int(time.time() * 1000) + 60_000:
            raise UserError(f"--end {ms_to_ts(end_given):%Y-%m-%d %H:%M} is in the future",
                            "omit --end (= now) or pass a past UTC date such as 2024-01-01")
    else:
        end_given = None
    stats = FetchStats()

    async def go():
        bar = tqdm(total=0, unit="req", desc=f"{venue.label()} {symbol} {interval}", leave=False,
                   disable=True if not progress else None)
        try:
            async with CcxtHistory(venue, symbol, interval, settings=settings, progress=bar.update) as h:
                fsym = h.file_symbol
                from S1.storage import as_path

                path = as_path(out) if out is not None else dataset_path(Dataset(fsym, interval, days, exchange=venue.token))
                if plan:
                    end_ms = end_given if end_given is not None else int(time.time() * 1000)
                else:   # closure is judged by the exchange's clock, also for a given --end
                    h.ex.enableLastJsonResponse = True     # to read the time answer's simulated label
                    server_now = await h.server_time()
                    end_ms = server_now if end_given is None else min(end_given, server_now)
                # the local servers label a simulated market in their time endpoint's answer
                body = getattr(h.ex, "last_json_response", None)
                served_simulated = isinstance(body, dict) and bool(body.get("simulated")) and not plan
                start_ms = ceil_ms(end_ms - days * DAY_MS, interval)
                existing, have = _existing(path, fsym, interval)
                _check_venue(path, venue)
                if not plan:
                    _check_window(start_ms, end_ms, interval, days)
                    _check_provenance(path, {"exchange": venue.exchange, "market": venue.market,
                                             "price": venue.price, "source_url": h.source_url,
                                             "simulated": bool(settings.simulated_market or served_simulated)})
                todo = missing_ranges(have, (start_ms, end_ms))
                if plan:
                    return dict(path=path, existing=existing, have=have, todo=todo, plan=True)
                bar.total = sum(len(ccxt_pages(a, b, interval, h.limit)) for a, b in todo)
                if bar.total < 3:
                    bar.disable = True
                fetched, raw, covered = [], [], end_ms
                for a, b in todo:
                    rows = await h.fetch_range(a, b)
                    kept, cov = closed_rows(rows, a, b, interval)
                    if cov < b:
                        stats.notes.append(f"{ms_to_ts(cov):%Y-%m-%d %H:%M} UTC is not final on {venue.exchange} "
                                           "yet (unconfirmed): left for the next run")
                        if b == end_ms:
                            covered = cov
                    raw.append(rows)
                    fetched.append(rows_to_frame(kept, interval))
                stats.sources.add(f"ccxt {venue.exchange}")
                stats.rest_requests += h.stats.requests
                stats.rest_retries += h.stats.retries
                stats.rate_limit_waits += h.ex.toolkit_gate.waits
                got = np.concatenate(raw) if raw else np.empty((0, 12))
                old = read_metadata(path) if path.exists() else {}
                meta = {
                    "symbol": fsym, "interval": interval, "days": days,
                    "coverage_start_ms": start_ms, "coverage_end_ms": covered,
                    "exchange": venue.exchange, "market": venue.market, "price": venue.price, "client": "ccxt",
                    "ccxt_symbol": h.market["symbol"], "market_id": h.market["id"],
                    "source_url": h.source_url, "simulated": bool(settings.simulated_market or served_simulated),
                    "unreported_columns": unreported_columns(got) if len(got) else old.get("unreported_columns", []),
                }
                return dict(path=path, existing=existing, have=have, todo=todo, fetched=fetched, start_ms=start_ms,
                            end_ms=covered, meta=meta, plan=False)
        finally:
            bar.close()

    r = run(go())
    if r["plan"]:
        return _plan(r["path"], r["existing"], r["have"], r["todo"], interval, stats, t0)
    return _finish(r["path"], r["existing"], r["have"], r["todo"], r["fetched"], r["start_ms"], r["end_ms"],
                   interval, r["meta"], stats, settings, t0)


def _check_venue(path: Path, venue) -> None:
    """Refuse to merge candles of another venue into an existing file."""
    if not path.exists():
        return
    meta = read_metadata(path)
    have = (meta.get("exchange", "binance"), meta.get("market", "spot"), meta.get("price", "last"))
    if have != (venue.exchange, venue.market, venue.price):
        raise UserError(f"{path} holds {'/'.join(have)} candles, not {venue.exchange}/{venue.market}/{venue.price}",
                        "pass --out to write elsewhere")


def _host(url) -> str:
    from urllib.parse import urlsplit

    try:
        return (urlsplit(str(url)).hostname or str(url)).lower()
    except ValueError:
        return str(url)


def _check_provenance(path: Path, new: dict) -> None:
    """A dataset's provenance is part of its identity: candles from another exchange, market,
    price, server or of another kind (simulated / real) are never merged into, nor relabel,
    an existing file. (A local server on another port is the same source.)"""
    if not path.exists():
        return
    old = read_metadata(path)
    if not old:
        return
    diffs = []
    for key in ("exchange", "market", "price"):
        default = {"exchange": "binance", "market": "spot", "price": "last"}[key]
        if str(old.get(key, default)) != str(new.get(key, default)):
            diffs.append(f"{key} {old.get(key, default)} -> {new.get(key, default)}")
    if "simulated" in old and bool(old["simulated"]) != bool(new.get("simulated")):
        kind = lambda b: "simulated" if b else "real"  # noqa: E731
        diffs.append(f"{kind(old['simulated'])} candles -> {kind(new.get('simulated'))}")
    if old.get("source_url") and new.get("source_url") and _host(old["source_url"]) != _host(new["source_url"]):
        diffs.append(f"source {old['source_url']} -> {new['source_url']}")
    if diffs:
        raise UserError(f"{path} comes from another source ({'; '.join(diffs)}): not mixed, not relabelled",
                        "pass --out to write this source elsewhere, or move the file away to refetch it")


def _existing(path: Path, symbol: str, interval: str) -> tuple[pd.DataFrame | None, tuple[int, int] | None]:
    if not path.exists():
        return None, None
    try:
        meta = read_metadata(path)
        df = validate_candles(read_parquet(path), what=str(path))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path} exists but cannot be read ({exc})",
                        "move it away (it is left untouched) or pass --out to write elsewhere") from exc
    if meta.get("symbol", symbol) != symbol or meta.get("interval", interval) != interval:
        raise UserError(f"{path} holds {meta.get('symbol')} {meta.get('interval')}, not {symbol} {interval}",
                        "pass --out to write elsewhere")
    if "coverage_start_ms" in meta:
        # a window ending inside a candle (the one in progress when the file was written) covers
        # only up to that candle's open: the next run must fetch it once it has closed
        have = (int(meta["coverage_start_ms"]), floor_ms(int(meta["coverage_end_ms"]), interval))
    elif len(df):
        t = df.index.as_unit("ms").asi8
        have = (int(t[0]), int(close_time_ms(int(t[-1]), interval)) + 1)
    else:
        have = None
    return df, have


def _plan(path, existing, have, todo, interval, stats, t0) -> Summary:
    lines = []
    if existing is None:
        lines.append(f"{path}: does not exist yet")
    else:
        gaps = find_gaps(existing.index, interval)
        lines.append(f"{path}: {len(existing):,} candles covering {ms_to_ts(have[0]):%Y-%m-%d %H:%M} .. "
                     f"{ms_to_ts(have[1]):%Y-%m-%d %H:%M} UTC, {len(gaps)} gap(s)"
                     + (": " + ", ".join(str(g) for g in gaps[:5]) if gaps else ""))
    if not todo:
        lines.append("missing: nothing -- a run would fetch nothing")
    for a, b in todo:
        n = len(open_times(a, b, interval)) if interval != "1M" else "?"
        pages = len(page_windows(a, b, interval))
        lines.append(f"missing: {ms_to_ts(a):%Y-%m-%d %H:%M} .. {ms_to_ts(b):%Y-%m-%d %H:%M} UTC "
                     f"(up to {n} candles, {pages} REST request(s) or archive files)")
    stats.notes.extend(lines)
    return Summary(path, 0 if existing is None else len(existing),
                   existing.index[0] if existing is not None and len(existing) else None,
                   existing.index[-1] if existing is not None and len(existing) else None,
                   [], todo, 0, time.perf_counter() - t0, stats, planned=True)
