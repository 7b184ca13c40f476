"""Benchmark the 1m lake's derive: S1.lake_store.derive_lake against a bare DuckDB group-by, same run.

    .venv/bin/python bench/bench_lake.py                        # 10 symbols x one year of 1m (5.27 M rows)
    .venv/bin/python bench/bench_lake.py --symbols 3 --days 60  # quick

The data: ``--symbols`` simulated markets (S1.offline.simulate_candles), ``--days`` of 1m
candles each from 2024-01-01, written as monthly lake partitions
(``lake/binance/spot/<SYMBOL>/1m/<YYYY-MM>.parquet``, S1.lake_store.write_partition) into a
temporary data directory (``--data-dir`` to keep and reuse it). Not timed.

The job, both ways, from the 1m partitions on disk to derived 1h, 4h and 1d Parquet files on disk:

- **lake**: ``derive_lake(targets=["1h", "4h", "1d"])`` -- per 1m partition: read, validate,
  resample with Binance's bucket rules (coverage-aware, NumPy ``reduceat``), write one atomic
  partition per interval with its metadata (the derived partitions are deleted before each round);
- **duckdb**: one ``COPY (SELECT ... GROUP BY symbol, bucket) TO 'x.parquet'`` per interval over
  the glob of all 1m partitions (first open / last close with ``arg_min``/``arg_max``, max, min,
  sums): a bare group-by with none of the lake's checks, one output file per interval.

The variants run interleaved ``--repeat`` rounds; best and median seconds and the ratio
lake / duckdb are printed (target: <= 1.5x), and the derived candles are checked equal.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import pandas as pd

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT", "XRPUSDT", "DOGEUSDT", "LTCUSDT", "DOTUSDT",
           "LINKUSDT", "AVAXUSDT", "TRXUSDT"]
TARGETS = {"1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}


def make_lake(data: Path, symbols: list[str], days: int) -> int:
    from S1.intervals import to_ms
    from S1.lake_store import months, write_partition
    from S1.offline import simulate_candles

    start, end = to_ms("2024-01-01"), to_ms("2024-01-01") + days * 86_400_000
    rows = 0
    for s in symbols:
        df = simulate_candles(s, "1m", pd.Timestamp(start, unit="ms", tz="UTC"), pd.Timestamp(end, unit="ms", tz="UTC"))
        for m in months(start, end):
            part = df[(df.index >= pd.Timestamp(m.start_ms, unit="ms", tz="UTC"))
                      & (df.index < pd.Timestamp(m.end_ms, unit="ms", tz="UTC"))]
            write_partition(part, exchange="binance", market="spot", symbol=s, month=m.label,
                            cover=(max(m.start_ms, start), min(m.end_ms, end)), data_dir=data,
                            meta={"simulated": True})
        rows += len(df)
    return rows


def clear_derived(data: Path) -> None:
    for d in (data / "lake").glob("*/*/*/*"):
        if d.name != "1m":
            shutil.rmtree(d)


def run_lake(data: Path) -> float:
    from S1.lake_store import derive_lake

    clear_derived(data)
    t0 = time.perf_counter()
    derive_lake(targets=list(TARGETS), data_dir=data)
    return time.perf_counter() - t0


def run_duckdb(data: Path, out: Path) -> float:
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    glob = (data / "lake" / "*" / "*" / "*" / "1m" / "*.parquet").as_posix()
    t0 = time.perf_counter()
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    for iv, step in TARGETS.items():
        us = step * 1000
        con.execute(f"""COPY (
            SELECT string_split(filename, '/')[-3] AS symbol,
                   make_timestamptz(epoch_us(open_time) // {us} * {us}) AS open_time,
                   arg_min(open, open_time) AS open, max(high) AS high, min(low) AS low,
                   arg_max(close, open_time) AS close, sum(volume) AS volume,
                   sum(quote_volume) AS quote_volume, sum(trades) AS trades,
                   sum(taker_buy_base) AS taker_buy_base, sum(taker_buy_quote) AS taker_buy_quote
            FROM read_parquet('{glob}', filename = true) GROUP BY ALL
        ) TO '{(out / f"{iv}.parquet").as_posix()}' (FORMAT parquet, COMPRESSION zstd)""")
    con.close()
    return time.perf_counter() - t0


def check_equal(data: Path, out: Path, symbols: list[str]) -> None:
    from S1.lake_store import read_lake

    for iv in TARGETS:
        ref = pd.read_parquet(out / f"{iv}.parquet")
        for s in symbols[:3]:
            got = read_lake(s, iv, data_dir=data)
            r = ref[ref["symbol"] == s].sort_values("open_time").set_index("open_time")
            r = r.loc[got.index]          # the bare group-by also keeps partial edge buckets
            for col in ("open", "high", "low", "close"):
                assert np.array_equal(r[col].to_numpy(), got[col].to_numpy()), (iv, s, col)
            assert np.allclose(r["volume"].to_numpy(), got["volume"].to_numpy(), rtol=1e-9), (iv, s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--days", type=int, default=366)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--data-dir", type=Path, default=None, help="keep the generated lake here (reused if present)")
    a = p.parse_args()
    symbols = SYMBOLS[: a.symbols]
    tmp = None
    data = a.data_dir
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-lake-")
        data = Path(tmp.name)
    t0 = time.perf_counter()
    if not any((data / "lake").glob("*/*/*/1m/*.parquet")):
        rows = make_lake(data, symbols, a.days)
        print(f"generated {rows:,} 1m candles ({len(symbols)} symbols x {a.days} days) in "
              f"{time.perf_counter() - t0:.1f}s -> {data / 'lake'}")
    out = data / "duckdb_out"
    times = {"lake": [], "duckdb": []}
    for _ in range(a.repeat):
        times["duckdb"].append(run_duckdb(data, out))
        times["lake"].append(run_lake(data))
    check_equal(data, out, symbols)
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"derive 1h/4h/1d from {len(symbols)} symbols x {a.days} days of 1m, {a.repeat} rounds (results equal)")
    for k in ("lake", "duckdb"):
        print(f"  {k:7s} best {best[k]:7.2f}s  median {med[k]:7.2f}s")
    print(f"  ratio lake/duckdb: best {best['lake'] / best['duckdb']:.2f}x  median {med['lake'] / med['duckdb']:.2f}x "
          "(target <= 1.5x)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
