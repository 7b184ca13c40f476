"""S2's files: reading the S1 candle files and the ``_ta`` indicator files (names
always from :mod:`S1.datasets`), writing the ``_ta`` file (:func:`make_ta_file`), a
listing of what the data directory holds (for the pickers of the app and the
notebooks), and the last closed candles of the streamer's SQLite table.

>>> parse_dataset_name("ethusdc_1h_365d_ta.parquet")
DatasetName(symbol='ETHUSDC', interval='1h', days=365, kind='ta', exchange=None)
>>> parse_dataset_name("okx_btcusdt_1mo_30d.parquet").interval
'1M'
>>> parse_dataset_name("notes.parquet") is None
True
>>> indicators_command(Dataset("ethusdc", "1h", 365))
'python S2/indicators.py --symbol ETHUSDC --interval 1h --days 365'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import talib

from S1.datasets import (  Dataset, # noqa: F401
    CANDLE_COLUMNS,
    FLOAT_COLUMNS,
    KINDS,
    DatasetName,
    candles_from_arrays,
    data_dir,
    dataset_path,
    empty_candles,
    history_command,
    indicators_command,
    normalize_symbol,
    parse_dataset_name,
    read_candles,
    read_metadata,
    read_parquet,
    validate_candles,
    write_parquet,
)
from S1.errors import UserError
from S2.ta import IndicatorConfig, add_indicators, warmup_rows

_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


def load_candles(dataset: Dataset) -> pd.DataFrame:
    """The validated S1 candle file; a missing one names the S1 command that makes it."""
    path = dataset_path(dataset)
    return read_candles(path, how_to_create=history_command(dataset))


def read_ta(path: Path, *, how_to_create: str | None = None) -> pd.DataFrame:
    """Read an indicator (``_ta``) file; a missing one names the command that makes it."""
    from S1.storage import as_path

    path = as_path(path)   # a Path, or an S3Path when DATA_DIR is s3://
    if not path.exists():
        raise UserError(f"{path} does not exist",
                        f"create it first with: {how_to_create}" if how_to_create
                        else "run S2/indicators.py first")
    df = read_parquet(path)
    if not isinstance(df.index, pd.DatetimeIndex) or "close" not in df.columns:
        raise UserError(f"{path} is not a candle/indicator file (no open_time index or close column)",
                        "re-create it with S2/indicators.py")
    return df


def load_ta(dataset: Dataset) -> pd.DataFrame:
    """The ``_ta`` file of a market and window (see :func:`read_ta`)."""
    return read_ta(dataset_path(dataset, "ta"),
                   how_to_create=indicators_command(dataset))


# --------------------------------------------------------------------------- listing
def list_datasets(kinds: tuple[str, ...] = ("candles", "ta"), *,
                  directory: Path | None = None) -> pd.DataFrame:
    """The Parquet datasets in the data directory, newest first: one row per file
    with ``name, label, symbol, interval, days, kind, exchange, path, size_mb, modified``."""
    base = data_dir(directory)
    rows = []
    if base.is_dir():
        for p in base.glob("*.parquet"):
            parsed = parse_dataset_name(p.name)   # p may be an S3Path (no os.fspath)
            if parsed is None or parsed.kind not in kinds:
                continue
            st = p.stat()
            rows.append({"name": p.name, "label": parsed.label, "symbol": parsed.symbol,
                         "interval": parsed.interval, "days": parsed.days, "kind": parsed.kind,
                         "exchange": parsed.exchange, "path": p, "size_mb": round(st.st_size / 1e6, 3),
                         "modified": pd.Timestamp(st.st_mtime, unit="s", tz="UTC")})
    cols = ["name", "label", "symbol", "interval", "days", "kind", "exchange", "path", "size_mb", "modified"]
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["modified", "name"], ascending=[False, True], ignore_index=True)


def is_simulated(path: Path) -> bool:
    """True when the file's toolkit metadata says it was made from the simulated market."""
    try:
        return bool(read_metadata(path).get("simulated", False))
    except Exception:
        return False


# ---------------------------------------------------------------------------- SQLite
def read_kline_sqlite(db: Path | str, *, symbol: str, interval: str, limit: int = 500) -> pd.DataFrame:
    """The last ``limit`` **closed** candles of one market from the streamer's SQLite
    ``kline`` table, oldest first, as a candle frame (read-only: safe while the streamer
    writes). A thin call to :func:`S1.stream_store.read_klines`.

    >>> import sqlite3, tempfile, os
    >>> db = os.path.join(tempfile.mkdtemp(), "k.db")
    >>> con = sqlite3.connect(db)
    >>> _ = con.execute("CREATE TABLE kline (symbol TEXT, interval TEXT, open_time INTEGER,"
    ...     " close_time INTEGER, open REAL, high REAL, low REAL, close REAL, volume REAL,"
    ...     " quote_volume REAL, trades INTEGER, taker_buy_base REAL, taker_buy_quote REAL,"
    ...     " is_closed INTEGER, updated_at INTEGER)")
    >>> rows = [("BTCUSDT", "1m", t * 60000, t * 60000 + 59999, 1, 2, 0.5, 1.5, 10, 15, 3, 5, 7.5,
    ...          int(t < 2), 0) for t in range(3)]
    >>> _ = con.executemany("INSERT INTO kline VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows); con.commit()
    >>> read_kline_sqlite(db, symbol="btcusdt", interval="1m", limit=10)["close"].tolist()
    [1.5, 1.5]
    """
    from S1.stream_store import read_klines

    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise UserError(f"limit must be a positive whole number of rows, got {limit!r}", "e.g. limit=500")
    return read_klines(db, symbol, interval, closed_only=True, last_n=int(limit))

# ---------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class TaResult:
    """What :func:`make_ta_file` wrote."""

    path: Path
    source: Path
    rows: int
    columns: tuple[str, ...]
    warmup: int
    simulated: bool
    metadata: dict
    informative: tuple[str, ...] = ()


def make_ta_file(dataset: Dataset, *, config: IndicatorConfig | None = None,
                 informative: tuple[str, ...] | list[str] = (), from_lake: str | None = None) -> TaResult:
    """Read the S1 candle file of a market and window, add the indicators and write
    the ``_ta`` file atomically (nothing is written if any step fails).

    The source file's toolkit metadata is kept (``simulated``, coverage, gaps …)
    and an ``indicators`` entry records the lengths, columns and warm-up rows.
    ``informative`` (e.g. ``("4h", "1d")``) adds the higher-timeframe columns of
    :func:`S2.informative.add_informative` (``rsi14_4h``, ``close_1d`` ...), recorded
    under ``informative`` in the metadata.
    """
    from S2.informative import add_informative, informative_columns, parse_intervals

    config = config or IndicatorConfig()
    informative = parse_intervals(list(informative))
    src = dataset_path(dataset)
    out_path = dataset_path(dataset, "ta")
    if from_lake:   # the last `days` of the 1m lake's candles (S1.lake_store) instead of the S1 file
        from S1.lake_store import lake_candles

        candles, lake_meta = lake_candles(dataset, lake=from_lake)
    else:
        candles = read_candles(src, how_to_create=history_command(dataset))
    ta = add_indicators(candles, config=config, what=str(src))
    if informative:
        ta = add_informative(ta, informative, config=config, base_interval=dataset.interval)
    warm = warmup_rows(config)
    meta = dict(lake_meta if from_lake else read_metadata(src))
    meta["indicators"] = {
        "config": config.to_dict(), "columns": list(warm), "warmup_rows": warm,
        "source_file": src.name, "rows": len(ta), "engine": f"TA-Lib {talib.__version__}",
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    if informative:
        cols = [c for i in informative for c in informative_columns(config, i)]
        meta["informative"] = {
            "intervals": list(informative), "columns": cols, "source": "resampled from the base candles",
            "first_valid": {c: (str(ta[c].first_valid_index()) if ta[c].notna().any() else None) for c in cols},
            "rule": "value of the last higher-timeframe candle closed by the base candle's close",
        }
    write_parquet(ta, out_path, metadata=meta)
    return TaResult(out_path, src, len(ta), tuple(warm), max(warm.values()),
                    bool(meta.get("simulated", False)), meta, informative)
