"""The 1m lake: one-minute candles as the source of truth, in monthly Parquet partitions,
and the intervals derived from them.

Layout (paths only through :func:`S1.datasets.lake_path`)::

    data/lake/<exchange>/<market>/<SYMBOL>/1m/<YYYY-MM>.parquet     the source of truth
    data/lake/<exchange>/<market>/<SYMBOL>/1h/<YYYY-MM>.parquet     derived (5m 15m 1h 4h 1d ...)

Guarantees of :func:`update_lake`:

- **incremental**: each partition records the window it covers (``coverage_start_ms`` /
  ``coverage_end_ms`` in its metadata); only what a partition lacks is fetched -- the open
  month and missing months. A complete month is never asked for again (no request at all);
- **idempotent**: a re-run with nothing new writes nothing (the partitions stay byte-identical);
  the metadata holds no wall-clock time, so the same candles always give the same bytes;
- **atomic per partition**: each partition is written through a temp file and a rename
  (:func:`S1.datasets.write_parquet`); a failed run leaves the partitions it did not finish intact;
- **closed candles only**, judged by the exchange's clock (as :mod:`S1.history`).

:func:`derive_lake` rebuilds ``<interval>/<YYYY-MM>.parquet`` from the 1m partition of the same
month with :func:`S1.resample.resample_candles` (Binance's bucket rules: UTC buckets, first open,
max high, min low, last close, summed volumes; a bucket only when the 1m partition *covers* its
span). Every interval from 2m to 1d divides a month, so each derived partition depends on one 1m
partition only; 1w (weeks straddle months) is refused, 1M is one candle per complete month.
Nothing is fetched by a derive.

>>> import tempfile, pathlib
>>> from S1.offline import simulate_candles
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> p = write_partition(simulate_candles("BTCUSDT", "1m", "2024-01-01", "2024-01-03"), exchange="binance",
...                     market="spot", symbol="BTCUSDT", month="2024-01", data_dir=d)
>>> [x.name for x in derive_lake(symbol="BTCUSDT", targets=["1h", "1d"], data_dir=d)]
['2024-01.parquet', '2024-01.parquet']
>>> len(read_lake("BTCUSDT", "1d", data_dir=d))
2
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from S1.datasets import (
    Dataset,
    candles_from_arrays,
    candles_to_rows,
    empty_candles,
    lake_dir,
    lake_path,
    normalize_symbol,
    parquet_rows,
    read_candles,
    read_metadata,
    validate_candles,
    write_parquet,
)
from S1.errors import UserError
from S1.intervals import INTERVAL_MS, ceil_ms, check_interval, floor_ms, ms_to_ts, next_open_ms, to_ms
from S1.resample import can_derive, resample_candles

DAY_MS = 86_400_000
SOURCE = "1m"
#: the markets a lake partition can hold (dated futures change symbol every quarter: not in the lake)
LAKE_MARKETS = ("spot", "swap")


# ----------------------------------------------------------------------------- names
def lake_symbol(symbol: str) -> str:
    """``BTC/USDT``, ``BTC/USDT:USDT``, ``btcusdt`` -> ``BTCUSDT`` (the partition folder)."""
    return normalize_symbol(str(symbol).split(":")[0])


def check_market(exchange: str, market: str) -> tuple[str, str]:
    exchange = str(exchange or "binance").strip().lower()
    if market not in LAKE_MARKETS:
        raise UserError(f"the lake holds spot and swap (perpetual) candles, not market {market!r}",
                        "use market: spot or swap (dated futures go to <venue>_<symbol>... files, not the lake)")
    return exchange, market


@dataclass(frozen=True)
class Month:
    label: str      # YYYY-MM
    start_ms: int
    end_ms: int


def months(start_ms: int, end_ms: int) -> list[Month]:
    """The calendar months (UTC) overlapping ``[start_ms, end_ms)``.

    >>> [m.label for m in months(to_ms("2024-01-31"), to_ms("2024-03-01"))]
    ['2024-01', '2024-02']
    """
    out, t = [], floor_ms(int(start_ms), "1M")
    while t < end_ms:
        nxt = next_open_ms(t, "1M")
        out.append(Month(ms_to_ts(t).strftime("%Y-%m"), t, nxt))
        t = nxt
    return out


def month_of(label: str) -> Month:
    t = to_ms(f"{label}-01")
    return Month(label, t, next_open_ms(t, "1M"))


def coverage(path: Path) -> tuple[int, int] | None:
    """The ``[start, end)`` window (ms) a partition covers (None: no such partition)."""
    if not path.exists():
        return None
    meta = read_metadata(path)
    if "coverage_start_ms" not in meta:
        raise UserError(f"{path} is not a lake partition (no coverage in its metadata)",
                        "move it out of data/lake; the lake rebuilds it")
    return int(meta["coverage_start_ms"]), floor_ms(int(meta["coverage_end_ms"]), SOURCE)


def _missing(have: tuple[int, int] | None, want: tuple[int, int]) -> list[tuple[int, int]]:
    from S1.history import missing_ranges

    return missing_ranges(have, want) if want[1] > want[0] else []


# ----------------------------------------------------------------------------- plan
@dataclass
class PartitionPlan:
    month: Month
    path: Path
    have: tuple[int, int] | None
    todo: list[tuple[int, int]]

    def line(self) -> str:
        state = "missing" if self.have is None else (
            f"{ms_to_ts(self.have[0]):%Y-%m-%d %H:%M} .. {ms_to_ts(self.have[1]):%Y-%m-%d %H:%M}")
        need = ", ".join(f"{ms_to_ts(a):%m-%d %H:%M}..{ms_to_ts(b):%m-%d %H:%M}" for a, b in self.todo)
        return f"{self.month.label}  {state:35s} " + (f"fetch {need}" if self.todo else "complete for the window")


def window(days: int, end=None) -> tuple[int, int]:
    """``[end - days, end)`` in ms on the 1m grid (``end``: now by this machine's clock)."""
    if not isinstance(days, int) or isinstance(days, bool) or days <= 0:
        raise UserError(f"days must be a positive whole number, got {days!r}", "e.g. days: 365")
    end_ms = to_ms(end) if end is not None else int(time.time() * 1000)
    end_ms = floor_ms(end_ms, SOURCE)
    return ceil_ms(end_ms - days * DAY_MS, SOURCE), end_ms


def plan_lake(*, symbol: str, days: int, end=None, exchange: str = "binance", market: str = "spot",
              data_dir: Path | None = None) -> list[PartitionPlan]:
    """What :func:`update_lake` would fetch, month by month (reads metadata only; no request)."""
    exchange, market = check_market(exchange, market)
    sym = lake_symbol(symbol)
    a, b = window(days, end)
    out = []
    for m in months(a, b):
        path = lake_path(exchange, market, sym, SOURCE, m.label, data_dir=data_dir)
        have = coverage(path)
        out.append(PartitionPlan(m, path, have, _missing(have, (max(a, m.start_ms), min(b, m.end_ms)))))
    return out


# ----------------------------------------------------------------------------- write
def write_partition(df: pd.DataFrame, *, exchange: str, market: str, symbol: str, month: str,
                    cover: tuple[int, int] | None = None, meta: dict | None = None,
                    data_dir: Path | None = None, interval: str = SOURCE) -> Path:
    """Write one partition atomically (candles outside the month are refused). ``cover``: the window
    the candles cover (default: the month's span of the rows given)."""
    exchange, market = check_market(exchange, market)
    m = month_of(month)
    df = validate_candles(df)
    if len(df) and (df.index[0] < ms_to_ts(m.start_ms) or df.index[-1] >= ms_to_ts(m.end_ms)):
        raise UserError(f"candles outside {month} given for the {month} partition", "split the frame by month")
    if cover is None:
        t = df.index.as_unit("ms").asi8
        cover = (m.start_ms, m.end_ms) if not len(t) else (int(t[0]), next_open_ms(int(t[-1]), interval))
    path = lake_path(exchange, market, lake_symbol(symbol), interval, month, data_dir=data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"exchange": exchange, "market": market, "symbol": lake_symbol(symbol), "interval": interval,
                "month": month, "coverage_start_ms": int(cover[0]), "coverage_end_ms": int(cover[1]),
                **(meta or {})}
    return write_parquet(df, path, metadata=metadata)


@dataclass
class LakeSummary:
    exchange: str
    market: str
    symbol: str
    written: list[Path] = field(default_factory=list)
    complete: int = 0          # partitions already complete for the window (not asked for)
    new_rows: int = 0
    requests: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"lake {self.exchange}/{self.market}/{self.symbol}: {len(self.written)} partition(s) written, "
                f"{self.complete} already complete, +{self.new_rows:,} candles, {self.requests} request(s)")


def update_lake(*, symbol: str, days: int, end=None, exchange: str = "binance", market: str = "spot",
                source: str = "auto", data_dir: Path | None = None, settings=None, lake_name: str | None = None,
                price_scale: float = 1.0) -> LakeSummary:
    """Bring the 1m partitions of one market to the window ``[end - days, end)`` (see the module
    docstring). Binance spot goes through :mod:`S1.history` (public archive + REST), any other
    exchange/market through CCXT (:mod:`S1.ccxt_source`). ``symbol``: as the exchange knows it;
    ``lake_name``: the partition folder (default: ``symbol`` without separators, an instruments.csv
    ``name``); ``price_scale`` is recorded in the metadata and applied by :func:`read_lake`."""
    from S1.settings import get_settings

    settings = settings or get_settings()
    exchange, market = check_market(exchange, market)
    sym = lake_symbol(lake_name or symbol)
    summary = LakeSummary(exchange, market, sym)
    plan = plan_lake(symbol=sym, days=days, end=end, exchange=exchange, market=market, data_dir=data_dir)
    summary.complete = sum(not p.todo for p in plan)
    if all(not p.todo for p in plan):
        return summary

    def replan(end_ms: int) -> list[PartitionPlan]:   # the window by the exchange's clock
        plan[:] = plan_lake(symbol=sym, days=days, end=ms_to_ts(end_ms), exchange=exchange, market=market,
                            data_dir=data_dir)
        summary.complete = sum(not p.todo for p in plan)
        return plan

    binance_spot = exchange == "binance" and market == "spot"
    fetch = _fetch_binance if binance_spot else _fetch_ccxt
    results, info = fetch(symbol, replan, end=end, source=source, settings=settings, exchange=exchange,
                          market=market, summary=summary)
    if price_scale != 1.0:
        info["price_scale"] = float(price_scale)
    for p, (frames, covered) in zip(plan, results, strict=True):
        if not p.todo or covered is None:
            continue
        old = read_candles(p.path) if p.path.exists() else None
        parts = [f for f in ([old] if old is not None else []) + frames if f is not None and len(f)]
        df = _merge(parts)
        lo = min([covered[0]] + ([p.have[0]] if p.have else []))
        hi = max([covered[1]] + ([p.have[1]] if p.have else []))
        if hi <= lo:
            continue
        df = df[(df.index >= ms_to_ts(lo)) & (df.index < ms_to_ts(hi))]
        if p.have == (lo, hi):
            continue
        prev = read_metadata(p.path) if p.path.exists() else {}
        if prev and bool(prev.get("simulated")) != bool(info.get("simulated")):
            raise UserError(f"{p.path} holds {'simulated' if prev.get('simulated') else 'real'} candles: "
                            "not mixed with candles of another kind", "point DATA_DIR elsewhere, or move it away")
        summary.new_rows += len(df) - (0 if old is None else len(old))
        summary.written.append(write_partition(df, exchange=exchange, market=market, symbol=sym, month=p.month.label,
                                               cover=(lo, hi), meta=info, data_dir=data_dir))
    return summary


def _merge(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return empty_candles()
    rows = np.concatenate([candles_to_rows(f) for f in frames])
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    keep = np.r_[rows[1:, 0] != rows[:-1, 0], True]      # one row per open time, the later one wins
    return candles_from_arrays(rows[keep])


def _fetch_binance(symbol, replan, *, end, source, settings, summary, **_):
    from S1.history import FetchStats, _download_ms, _exchange_clock, _resolve_end

    clock = _exchange_clock(settings)
    plan = replan(_resolve_end(end, settings, clock=clock))
    stats = FetchStats()
    results = []
    for p in plan:
        todo = p.todo
        frames = [_download_ms(lake_symbol(symbol), SOURCE, a, b, source=source, archive_dir=None,
                               settings=settings, progress=False, stats=stats) for a, b in todo]
        results.append((frames, (min(x for x, _ in todo), max(y for _, y in todo)) if todo else None))
    summary.requests += stats.rest_requests + stats.archive_downloaded + 1
    info = {"source_url": settings.redact(settings.binance_api_url), "sources": sorted(stats.sources),
            "simulated": bool(settings.simulated_market or clock[1])}
    return results, info


def _fetch_ccxt(symbol, replan, *, end, settings, summary, exchange, market, **_):
    from S1.ccxt_source import CcxtHistory, Venue, closed_rows, rows_to_frame
    from S1.rest_client import run

    venue = Venue(exchange, market)

    async def go():
        async with CcxtHistory(venue, symbol, SOURCE, settings=settings) as h:
            now = await h.server_time()
            plan = replan(min(now, to_ms(end)) if end is not None else now)
            results = []
            for p in plan:
                frames, span = [], None
                for a, b in p.todo:
                    kept, cov = closed_rows(await h.fetch_range(a, b), a, b, SOURCE)
                    frames.append(rows_to_frame(kept, SOURCE))
                    span = (a if span is None else span[0], cov)
                    if cov < b:
                        summary.notes.append(f"{ms_to_ts(cov):%Y-%m-%d %H:%M} is not final yet: left for the next run")
                        break
                results.append((frames, span))
            summary.requests += h.stats.requests
            info = {"source_url": h.source_url, "sources": [f"ccxt {venue.exchange}"],
                    "ccxt_symbol": h.market["symbol"], "simulated": bool(settings.simulated_market)}
            return results, info

    return run(go())


# ----------------------------------------------------------------------------- derive
def check_targets(targets: list[str]) -> list[str]:
    out = []
    for t in targets:
        check_interval(t)
        if t == SOURCE:
            continue
        if t == "1w" or not can_derive(SOURCE, t):
            raise UserError(f"cannot derive {t} partitions from the 1m lake",
                            "derive whole divisors of a day (2m..1d, e.g. 5m 1h 4h 1d) or 1M; weeks straddle months")
        out.append(t)
    return sorted(set(out), key=lambda i: INTERVAL_MS.get(i, 31 * DAY_MS))


def markets(data_dir: Path | None = None) -> list[tuple[str, str, str]]:
    """Every ``(exchange, market, SYMBOL)`` that has 1m partitions."""
    base = lake_dir(data_dir=data_dir)
    return sorted((p.parts[-4], p.parts[-3], p.parts[-2]) for p in base.glob(f"*/*/*/{SOURCE}") if p.is_dir())


def derive_lake(*, symbol: str | None = None, targets: list[str], exchange: str | None = None,
                market: str | None = None, data_dir: Path | None = None) -> list[Path]:
    """Rebuild the derived partitions of ``targets`` from the 1m partitions on disk (no network).
    A derived partition whose metadata already names the same 1m coverage and row count is kept
    as it is (so a re-derive is byte-identical and cheap). Returns the partitions (re)written."""
    targets = check_targets(targets)
    sym = lake_symbol(symbol) if symbol else None
    written = []
    for ex, mk, s in markets(data_dir):
        if (sym and s != sym) or (exchange and ex != exchange) or (market and mk != market):
            continue
        for src in sorted(lake_path(ex, mk, s, SOURCE, "2000-01", data_dir=data_dir).parent.glob("*.parquet")):
            written += derive_partition(src, targets)
    return written


def derive_partition(src: Path, targets: list[str]) -> list[Path]:
    """Derived partitions of one 1m partition (see :func:`derive_lake`)."""
    meta = read_metadata(src)
    cov = (int(meta["coverage_start_ms"]), int(meta["coverage_end_ms"]))
    df = None
    out = []
    for t in targets:
        path = src.parent.parent / t.replace("1M", "1mo") / src.name
        n_src = None
        if path.exists():
            old = read_metadata(path)
            n_src = parquet_rows(src)
            if old.get("source_coverage") == list(cov) and old.get("source_rows") == n_src:
                continue
        if df is None:
            df = read_candles(src)
        d = resample_candles(df, SOURCE, t, coverage=cov)
        if not len(d):
            continue
        first = ceil_ms(cov[0], t)
        last = int(d.index[-1].value // 1_000_000)
        keep = {k: meta[k] for k in ("source_url", "sources", "simulated", "ccxt_symbol", "price_scale") if k in meta}
        out.append(write_partition(d, exchange=meta["exchange"], market=meta["market"], symbol=meta["symbol"],
                                   month=meta["month"], interval=t, cover=(first, next_open_ms(last, t)),
                                   data_dir=src.parents[5],
                                   meta={**keep, "derived_from": SOURCE, "source_coverage": list(cov),
                                         "source_rows": len(df)}))
    return out


# ----------------------------------------------------------------------------- read
def read_lake(symbol: str, interval: str, *, exchange: str = "binance", market: str = "spot", start=None,
              end=None, data_dir: Path | None = None, scaled: bool = True) -> pd.DataFrame:
    """The candles of one market and interval from the lake, ``start <= open < end``: the derived
    partitions when there are any, else derived now (in memory) from the 1m partitions. ``scaled``:
    prices multiplied by the partition's ``price_scale`` (instruments.csv; 1 unless given)."""
    check_interval(interval)
    exchange, market = check_market(exchange, market)
    sym = lake_symbol(symbol)
    folder = lake_path(exchange, market, sym, interval, "2000-01", data_dir=data_dir).parent
    files = sorted(folder.glob("*.parquet"))
    derive_now = not files and interval != SOURCE
    if derive_now:
        if interval == "1w" or not can_derive(SOURCE, interval):
            raise UserError(f"no {interval} candles in the lake for {exchange}/{market}/{sym}",
                            "derive an interval of the 1m lake (5m 1h 4h 1d ...)")
        files = sorted(folder.parent.joinpath(SOURCE).glob("*.parquet"))
    if not files:
        raise UserError(f"the lake has no {exchange}/{market}/{sym} candles ({folder.parent})",
                        f"fill it first: python S1/batch.py --config S1/batch.yaml --tasks <a lake task> "
                        f"(or update_lake(symbol={sym!r}, days=...))")
    lo = ms_to_ts(to_ms(start)) if start is not None else None
    hi = ms_to_ts(to_ms(end)) if end is not None else None
    frames = []
    for f in files:
        m = month_of(f.stem)
        if (hi is not None and ms_to_ts(m.start_ms) >= hi) or (lo is not None and ms_to_ts(m.end_ms) <= lo):
            continue
        df = read_candles(f)
        meta = read_metadata(f)
        if derive_now:
            df = resample_candles(df, SOURCE, interval,
                                  coverage=(int(meta["coverage_start_ms"]), int(meta["coverage_end_ms"])))
        scale = float(meta.get("price_scale", 1.0))
        if scaled and scale != 1.0:
            df = df.copy()
            df[["open", "high", "low", "close"]] *= scale
        frames.append(df)
    df = _merge(frames) if frames else empty_candles()
    keep = np.ones(len(df), bool)
    if lo is not None:
        keep &= df.index >= lo
    if hi is not None:
        keep &= df.index < hi
    return df if keep.all() else df[keep]


def describe(data_dir: Path | None = None) -> str:
    """One JSON line per market of the lake: intervals and months present."""
    lines = []
    for ex, mk, s in markets(data_dir):
        base = lake_path(ex, mk, s, SOURCE, "2000-01", data_dir=data_dir).parent.parent
        ivs = {p.name: sorted(x.stem for x in p.glob("*.parquet")) for p in sorted(base.iterdir()) if p.is_dir()}
        lines.append(json.dumps({"exchange": ex, "market": mk, "symbol": s,
                                 "intervals": {k: f"{v[0]}..{v[-1]} ({len(v)})" for k, v in ivs.items() if v}}))
    return "\n".join(lines)


def lake_candles(dataset: Dataset, *, lake: str | None = "binance/spot",
                 data_dir: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The last ``days`` days of one market's ``interval`` candles in the lake (ending at the newest
    candle there) and the metadata a dataset file would carry -- what ``--from-lake`` gives the sprint
    scripts instead of ``data/<stem>.parquet``. ``lake``: ``EXCHANGE/MARKET`` (default binance/spot)."""
    exchange, _, market = (lake or "binance/spot").partition("/")
    exchange, market = check_market(exchange, market or "spot")
    symbol, interval, days = dataset.symbol, dataset.interval, dataset.days
    df = read_lake(symbol, interval, exchange=exchange, market=market, data_dir=data_dir)
    if not len(df):
        raise UserError(f"the lake has no {interval} candles of {exchange}/{market}/{lake_symbol(symbol)}",
                        "fill it with a lake task of S1/batch.py")
    end_ms = int(df["close_time"].iloc[-1].value // 1_000_000) + 1
    start_ms = end_ms - days * DAY_MS
    df = df[df.index >= ms_to_ts(start_ms)]
    folder = lake_path(exchange, market, lake_symbol(symbol), SOURCE, "2000-01", data_dir=data_dir).parent
    newest = max(folder.glob("*.parquet"), default=None)
    src_meta = read_metadata(newest) if newest is not None else {}
    meta = {k: src_meta[k] for k in ("source_url", "sources", "simulated", "price_scale") if k in src_meta}
    from S1.history import find_gaps

    meta.update({"symbol": lake_symbol(symbol), "interval": interval, "days": days, "exchange": exchange,
                 "market": market, "price": "last", "coverage_start_ms": start_ms, "coverage_end_ms": end_ms,
                 "from_lake": str(folder.parent), "gaps": [str(g) for g in find_gaps(df.index, interval)[:50]]})
    return df, meta
