"""Readers for kline files people actually have: Binance public-archive CSVs (inside
zips or not, with or without a header, ms or µs timestamps) and the messy
CryptoDataDownload layout (newest first, seconds *and* ms, duplicates, ``NULL``).

All readers return a frame validated by :func:`S1.datasets.validate_candles`.
Parsing goes through ``pyarrow.csv`` (multi-threaded C++), which is why an import
of a year of 1m candles costs about as much as a bare pyarrow read.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from S1.datasets import candles_from_arrays, empty_candles, validate_candles
from S1.errors import UserError
from S1.intervals import close_time_ms, interval_ms

ARCHIVE_COLUMNS = ["open_time", "open", "high", "low", "close", "volume", "close_time",
                   "quote_volume", "trades", "taker_buy_base", "taker_buy_quote", "ignore"]
_ARCHIVE_TYPES = {c: pa.float64() for c in ARCHIVE_COLUMNS}
_ARCHIVE_TYPES.update(open_time=pa.int64(), close_time=pa.int64(), trades=pa.int64(), ignore=pa.string())

#: Timestamps above this are µs (ms values stay below it until the year 5138).
_US_THRESHOLD = 10**14
#: Timestamps below this are seconds (s values stay below it until the year 5138).
_S_THRESHOLD = 10**11


@dataclass
class ImportReport:
    """What an import found besides candles: anything a person should know."""

    rows_read: int = 0
    duplicates_dropped: int = 0
    unit_fixes: dict[str, int] = field(default_factory=dict)
    suspicious: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        if self.duplicates_dropped:
            out.append(f"{self.duplicates_dropped} duplicate rows dropped")
        for unit, n in self.unit_fixes.items():
            out.append(f"{n} timestamps in {unit} normalised to ms")
        out.extend(self.suspicious)
        return out


def to_ms_array(values: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Normalise epoch timestamps in s, ms or µs (mixed is fine) to integer ms."""
    v = np.asarray(values, dtype=np.float64)
    fixes: dict[str, int] = {}
    us = v >= _US_THRESHOLD
    s = v < _S_THRESHOLD
    if us.any():
        fixes["µs"] = int(us.sum())
    if s.any():
        fixes["seconds"] = int(s.sum())
    out = np.where(us, v // 1000, np.where(s, v * 1000, v))
    return np.round(out).astype(np.int64), fixes


def _has_header(first_bytes: bytes) -> bool:
    line = first_bytes.lstrip().split(b"\n", 1)[0]
    return bool(line) and not line[:1].isdigit()


def read_archive_csv(data: bytes, *, report: ImportReport | None = None) -> pd.DataFrame:
    """Parse one Binance archive CSV (12 columns; header optional; ms or µs)."""
    if not data.strip():
        return empty_candles()
    opts = pacsv.ReadOptions(column_names=ARCHIVE_COLUMNS, skip_rows=1 if _has_header(data[:200]) else 0)
    try:
        table = pacsv.read_csv(io.BytesIO(data), read_options=opts,
                               convert_options=pacsv.ConvertOptions(column_types=_ARCHIVE_TYPES))
    except pa.ArrowInvalid as exc:
        raise UserError(f"not a Binance kline CSV ({str(exc).splitlines()[0]})",
                        "expected 12 columns: open_time,open,high,low,close,volume,close_time,...") from exc
    return _table_to_candles(table, report)


def _table_to_candles(table: pa.Table, report: ImportReport | None) -> pd.DataFrame:
    n = table.num_rows
    if n == 0:
        return empty_candles()
    open_ms, fx1 = to_ms_array(table.column("open_time").to_numpy())
    close_ms, fx2 = to_ms_array(table.column("close_time").to_numpy())
    if report is not None:
        report.rows_read += n
        for k, v in fx1.items():
            report.unit_fixes[k] = report.unit_fixes.get(k, 0) + v
    col = lambda name: np.asarray(pc.fill_null(table.column(name), 0).to_numpy(), dtype=np.float64)  # noqa: E731
    frame = pd.DataFrame(
        {"open": col("open"), "high": col("high"), "low": col("low"), "close": col("close"),
         "volume": col("volume"),
         "close_time": pd.to_datetime(close_ms, unit="ms", utc=True).as_unit("ns"),
         "quote_volume": col("quote_volume"), "trades": col("trades").astype(np.int64),
         "taker_buy_base": col("taker_buy_base"), "taker_buy_quote": col("taker_buy_quote")},
        index=pd.DatetimeIndex(pd.to_datetime(open_ms, unit="ms", utc=True).as_unit("ns"), name="open_time"))
    return frame


def read_zip(path_or_bytes: Path | bytes, *, report: ImportReport | None = None) -> pd.DataFrame:
    """Read the single CSV inside a Binance archive zip."""
    try:
        src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
        with zipfile.ZipFile(src) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
            if len(names) != 1:
                raise UserError(f"archive zip {path_or_bytes if not isinstance(path_or_bytes, bytes) else ''}"
                                f" holds {len(names)} CSV files, expected 1", "re-download it")
            return read_archive_csv(zf.read(names[0]), report=report)
    except zipfile.BadZipFile as exc:
        name = path_or_bytes if not isinstance(path_or_bytes, bytes) else "downloaded archive"
        raise UserError(f"corrupt archive zip {name}", "delete it and download again (--source rest also works)") from exc


def read_cryptodatadownload_csv(path: Path, interval: str, *, report: ImportReport | None = None) -> pd.DataFrame:
    """Read a CryptoDataDownload export (``unix,date,symbol,open,high,low,close,Volume X,Volume Y,tradecount``).

    Newest-first order, duplicate rows, timestamps in seconds and ms, ``NULL``
    trade counts are all handled; fields the layout lacks (taker volumes) are NaN,
    missing trade counts are 0. Suspicious rows are *reported*, never altered.
    """
    raw = Path(path).read_bytes()
    if raw.startswith(b"http"):  # CDD files often start with a URL line
        raw = raw.split(b"\n", 1)[1]
    table = pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(
        null_values=["NULL", "", "NaN"], strings_can_be_null=True))
    names = [c.lower() for c in table.column_names]
    table = table.rename_columns(names)
    need = {"unix", "open", "high", "low", "close"}
    if not need <= set(names):
        raise UserError(f"{path}: not a CryptoDataDownload file (columns {names})",
                        "expected unix,date,symbol,open,high,low,close,Volume <base>,Volume <quote>,tradecount")
    vol_cols = [c for c in names if c.startswith("volume")]
    unix, fixes = to_ms_array(table.column("unix").to_numpy(zero_copy_only=False))
    n = len(unix)
    get = lambda c: np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)  # noqa: E731
    trades = (np.nan_to_num(get("tradecount"), nan=0.0) if "tradecount" in names else np.zeros(n))
    rows = np.column_stack([
        unix, get("open"), get("high"), get("low"), get("close"),
        get(vol_cols[0]) if vol_cols else np.full(n, np.nan),
        close_time_ms(unix, interval),
        get(vol_cols[1]) if len(vol_cols) > 1 else np.full(n, np.nan),
        trades, np.full(n, np.nan), np.full(n, np.nan),
    ])
    frame = candles_from_arrays(rows).sort_index(kind="stable")
    dup = frame.index.duplicated(keep="last")
    if report is not None:
        report.rows_read += n
        report.duplicates_dropped += int(dup.sum())
        for k, v in fixes.items():
            report.unit_fixes[k] = report.unit_fixes.get(k, 0) + v
    frame = frame[~dup]
    if report is not None:
        report.suspicious.extend(suspicious_candles(frame, interval))
    return validate_candles(frame, what=str(path))


def suspicious_candles(df: pd.DataFrame, interval: str, *, max_jump: float = 0.5) -> list[str]:
    """Describe candles that break OHLC rules or jump implausibly (kept, only reported)."""
    out = []
    bad = (df["high"] < df[["open", "close"]].max(axis=1)) | (df["low"] > df[["open", "close"]].min(axis=1))
    if bad.any():
        out.append(f"{int(bad.sum())} candles break high>=open,close>=low (first {df.index[bad][0]})")
    prev_close = df["close"].shift(1)
    nxt_open = df["open"].shift(-1)
    jump = ((df["open"] / prev_close - 1).abs() > max_jump) | ((df["close"] / nxt_open - 1).abs() > max_jump)
    spread = (df["high"] / df["low"] - 1) > max_jump * 2 if interval_ms(interval) <= 3_600_000 else False
    flag = jump | spread
    if np.any(flag):
        first = df.index[np.asarray(flag)][0]
        out.append(f"{int(np.sum(flag))} candles with a price jump over {max_jump:.0%} (first {first}): check them")
    return out


def sniff_and_read(path: Path, interval: str, *, report: ImportReport | None = None) -> pd.DataFrame:
    """Read a local kline file of any supported layout (``.zip`` or ``.csv``)."""
    path = Path(path)
    if path.suffix.lower() == ".zip":
        return read_zip(path, report=report)
    head = path.read_bytes()[:300].lower()
    if b"unix" in head.split(b"\n", 2)[0] or head.startswith(b"http"):
        return read_cryptodatadownload_csv(path, interval, report=report)
    return read_archive_csv(path.read_bytes(), report=report)
