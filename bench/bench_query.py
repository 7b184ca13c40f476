"""Benchmark SQL over the lake: DuckDB against pandas on the same Parquet files, same run.

    .venv/bin/python bench/bench_query.py                 # 10 symbols x one year of 1m candles (5.27 M rows)
    .venv/bin/python bench/bench_query.py --symbols 3 --days 30   # quick

The data: ``--symbols`` simulated markets (S1.local.simulated.simulate_candles), one year of
1m candles each (2024, 527,040 per symbol), written with S1's own ``write_parquet``
as ``<symbol>_1m_<days>d.parquet`` into a temporary data directory (``--data-dir`` to
keep and reuse it).

The job, both ways, from the files to a DataFrame in memory: **daily OHLCV and the
daily close-to-close return per symbol** (first open, max high, min low, last close,
summed volume, then ``close / previous close - 1``).

- DuckDB: one SQL query over the lake's ``candles`` view (S1.lake.connect), result
  converted to pandas; days bucketed with the lake's ``utc_day()`` macro, and once more
  with DuckDB's ``date_trunc('day', ...)`` (time-zone aware through ICU, slower) for reference;
- pandas: ``read_parquet`` of the five needed columns per file, ``resample('1D')``
  aggregations, ``pct_change``, ``concat`` -- the idiomatic pandas way.

Then the streamer's SQLite database (``--sqlite-days`` of 1m candles of every symbol in a
``btcusdt_1m_realtime.db`` written by S1.stream_store.KlineStore, ``WITHOUT ROWID`` as the
streamer writes it), opened both ways S1.lake offers: **attached** through DuckDB's sqlite
extension from the ``duckdb-ext-sqlite`` package (read live by each query) against the
**snapshot** fallback (read through Python's ``sqlite3`` when the connection opens); timed
connect alone and connect + a daily OHLCV query over the table, results checked equal.
(Skipped with a note when the extension package is not installed.)

The variants run interleaved, ``--repeat`` rounds (a change in machine load hits all of
them alike; the first round also warms the OS file cache); the best and median times
are printed with the ratios, and the results are checked equal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SQL = """
WITH d AS (
    SELECT symbol, utc_day(open_time) AS day,
           arg_min(open, open_time) AS open, max(high) AS high, min(low) AS low,
           arg_max(close, open_time) AS close, sum(volume) AS volume
    FROM candles
    GROUP BY ALL
)
SELECT symbol, day, open, high, low, close, volume,
       close / lag(close) OVER (PARTITION BY symbol ORDER BY day) - 1 AS ret
FROM d ORDER BY symbol, day
"""


#: The same query spelled with DuckDB's date_trunc (time-zone aware, through ICU).
SQL_DATE_TRUNC = SQL.replace("utc_day(open_time)", "date_trunc('day', open_time)")


def generate(data_dir: Path, symbols: list[str], start: str, end: str, days: int) -> int:
    from S1.datasets import Dataset, dataset_path, write_parquet
    from S1.offline import simulate_candles

    rows = 0
    for i, sym in enumerate(symbols, 1):
        path = dataset_path(Dataset(sym, "1m", days), data_dir=data_dir)
        if not path.exists():
            t0 = time.perf_counter()
            df = simulate_candles(sym, "1m", start, end)
            write_parquet(df, path, metadata={"symbol": sym, "interval": "1m", "days": days, "simulated": True})
            print(f"  generated {sym}: {len(df):,} candles ({time.perf_counter() - t0:.1f}s) [{i}/{len(symbols)}]",
                  flush=True)
        import pyarrow.parquet as pq

        rows += pq.read_metadata(path).num_rows
    return rows


def run_duckdb(data_dir: Path, sql: str = SQL, threads: int | None = None) -> pd.DataFrame:
    from S1.lake import connect, to_frame

    con = connect(data_dir, sqlite=False, threads=threads)
    try:
        return to_frame(con.sql(sql))
    finally:
        con.close()


SQLITE_SQL = """
SELECT symbol, utc_day(to_timestamp(open_time / 1000)) AS day,
       arg_min(open, open_time) AS open, max(high) AS high, min(low) AS low,
       arg_max(close, open_time) AS close, sum(volume) AS volume, count(*) AS n
FROM btcusdt_1m_realtime.kline WHERE is_closed = 1
GROUP BY ALL ORDER BY symbol, day
"""


def generate_sqlite(data_dir: Path, symbols: list[str], end: pd.Timestamp, days: int) -> tuple[Path, int]:
    """The streamer's database: ``days`` of 1m candles of every symbol, as S1/streamer.py writes it."""
    import sqlite3

    from S1.datasets import candles_to_rows, realtime_db_path
    from S1.offline import simulate_candles
    from S1.stream_store import KlineStore, rows_from_klines

    db = realtime_db_path(["BTCUSDT"], "1m", data_dir=data_dir)
    if not db.exists():
        t0 = time.perf_counter()
        store = KlineStore(db, checkpoint_every_s=None)
        try:
            for sym in symbols:
                rows = candles_to_rows(simulate_candles(sym, "1m", end - pd.Timedelta(days=days), end))
                store.write(rows_from_klines(sym, "1m", rows), {(sym, "1m"): int(rows[-1, 0])})
        finally:
            store.close()
        print(f"  generated {db.name} ({time.perf_counter() - t0:.1f}s)", flush=True)
    con = sqlite3.connect(db)
    try:
        n = con.execute("SELECT count(*) FROM kline").fetchall()[0][0]
    finally:
        con.close()
    return db, n


def run_sqlite(data_dir: Path, mode: str, sql: str | None = SQLITE_SQL, threads: int | None = None):
    """Connect with the SQLite files read ``mode`` (attach / snapshot), run ``sql`` (None: connect only)."""
    from S1.lake import connect, sqlite_source, to_frame

    con = connect(data_dir, sqlite=mode, threads=threads)
    try:
        source = sqlite_source(con)["btcusdt_1m_realtime"]
        return (to_frame(con.sql(sql)) if sql else None), source
    finally:
        con.close()


def bench_sqlite(data_dir: Path, symbols: list[str], end: pd.Timestamp, days: int, repeat: int,
                 threads: int | None) -> dict:
    from S1.lake import SOURCE_ATTACH, SOURCE_SNAPSHOT, UserError

    db, n = generate_sqlite(data_dir, symbols, end, days)
    print(f"\nstreamer database {db.name}: {n:,} rows (kline, WITHOUT ROWID), {db.stat().st_size / 1e6:.0f} MB",
          flush=True)
    try:
        run_sqlite(data_dir, "attach", None)
    except UserError as exc:
        print(f"  skipped: {exc}")
        return {"skipped": str(exc)}
    times, res = interleaved({
        "attach_connect": lambda: run_sqlite(data_dir, "attach", None, threads),
        "snapshot_connect": lambda: run_sqlite(data_dir, "snapshot", None, threads),
        "attach_query": lambda: run_sqlite(data_dir, "attach", SQLITE_SQL, threads),
        "snapshot_query": lambda: run_sqlite(data_dir, "snapshot", SQLITE_SQL, threads)}, repeat)
    assert res["attach_query"][1] == SOURCE_ATTACH and res["snapshot_query"][1] == SOURCE_SNAPSHOT
    a, b = res["attach_query"][0], res["snapshot_query"][0]
    # exact, but for the summed volume: a parallel float sum depends on the order threads add in
    pd.testing.assert_frame_equal(a.drop(columns="volume"), b.drop(columns="volume"), check_exact=True)
    np.testing.assert_allclose(a["volume"].to_numpy(), b["volume"].to_numpy(), rtol=1e-12)
    assert int(a["n"].sum()) == n
    print(f"daily OHLCV over the streamer's table -> {len(a):,} rows (results equal both ways)")
    labels = {"attach_connect": "attach:   connect", "snapshot_connect": "snapshot: connect",
              "attach_query": "attach:   connect + query", "snapshot_query": "snapshot: connect + query"}
    for k, label in labels.items():
        t = times[k]
        print(f"  {label:27s} best {min(t):6.3f}s  median {statistics.median(t):6.3f}s  "
              f"runs {', '.join(f'{x:.3f}' for x in t)}")
    print(f"  ratio snapshot / attach (connect + query): {min(times['snapshot_query']) / min(times['attach_query']):.1f}x"
          f" (best), {statistics.median(times['snapshot_query']) / statistics.median(times['attach_query']):.1f}x"
          " (median)")
    return {"rows": n, "db_mb": round(db.stat().st_size / 1e6, 1), **{f"{k}_s": v for k, v in times.items()}}


def run_pandas(data_dir: Path, symbols: list[str], days: int) -> pd.DataFrame:
    from S1.datasets import Dataset, dataset_path

    out = []
    for sym in symbols:
        df = pd.read_parquet(dataset_path(Dataset(sym, "1m", days), data_dir=data_dir),
                             columns=["open_time", "open", "high", "low", "close", "volume"])
        if "open_time" in df.columns:
            df = df.set_index("open_time")
        g = df.resample("1D")
        d = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                          "close": g["close"].last(), "volume": g["volume"].sum()}).dropna(subset=["open"])
        d["ret"] = d["close"].pct_change()
        d.insert(0, "symbol", sym)
        out.append(d)
    return pd.concat(out).rename_axis("day").reset_index()


def interleaved(fns: dict, repeat: int) -> tuple[dict[str, list[float]], dict[str, pd.DataFrame]]:
    """Run every variant once per round, in a rotating order, so that a change in machine
    load affects all variants alike; returns the times and the last result of each."""
    times = {k: [] for k in fns}
    results = {}
    names = list(fns)
    for i in range(repeat):
        for k in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            results[k] = fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times, results


def check_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a = a.sort_values(["symbol", "day"], ignore_index=True)
    b = b.sort_values(["symbol", "day"], ignore_index=True)
    assert len(a) == len(b), (len(a), len(b))
    assert a["day"].tolist() == b["day"].tolist() and a["symbol"].tolist() == b["symbol"].tolist()
    for c in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy())
    for c in ("volume", "ret"):
        np.testing.assert_allclose(a[c].to_numpy(dtype=float), b[c].to_numpy(dtype=float), rtol=1e-10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--days", type=int, default=366, help="days of 1m candles per symbol (default 366: all of 2024)")
    p.add_argument("--repeat", type=int, default=5, help="rounds (each runs every variant once, interleaved)")
    p.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    p.add_argument("--data-dir", type=Path, default=None, help="keep the generated files here (reused if present)")
    p.add_argument("--sqlite-days", type=int, default=30,
                   help="days of 1m candles per symbol in the streamer database (0: skip the SQLite part)")
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/query.json")
    args = p.parse_args()

    symbols = [f"S{i:02d}USDT" for i in range(1, args.symbols + 1)]
    start = pd.Timestamp("2024-01-01", tz="UTC")
    end = start + pd.Timedelta(days=args.days)
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_lake_")
        data_dir = Path(tmp.name)
    else:
        data_dir = args.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
    print(f"data: {len(symbols)} symbols x {args.days} days of 1m candles in {data_dir}", flush=True)
    rows = generate(data_dir, symbols, str(start), str(end), args.days)
    size = sum(f.stat().st_size for f in data_dir.glob("*.parquet"))
    print(f"  {rows:,} candles, {size / 1e6:.0f} MB of Parquet; {os.cpu_count()} CPU(s)", flush=True)

    times, res = interleaved({
        "duckdb": lambda: run_duckdb(data_dir, threads=args.threads),
        "pandas": lambda: run_pandas(data_dir, symbols, args.days),
        "date_trunc": lambda: run_duckdb(data_dir, SQL_DATE_TRUNC, threads=args.threads)}, args.repeat)
    duck_t, pandas_t, trunc_t = times["duckdb"], times["pandas"], times["date_trunc"]
    duck = res["duckdb"]
    check_equal(duck, res["pandas"])
    check_equal(res["date_trunc"], res["pandas"])
    best_d, best_p = min(duck_t), min(pandas_t)
    med_d, med_p = statistics.median(duck_t), statistics.median(pandas_t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\ndaily OHLCV + daily return per symbol -> {len(duck):,} rows (results equal)")
    print(f"  DuckDB (S1.lake, SQL)      best {best_d:6.3f}s  median {med_d:6.3f}s  "
          f"({rows / best_d / 1e6:5.1f} M candles/s)  runs {', '.join(f'{t:.3f}' for t in duck_t)}")
    print(f"  pandas (read + resample)   best {best_p:6.3f}s  median {med_p:6.3f}s  "
          f"({rows / best_p / 1e6:5.1f} M candles/s)  runs {', '.join(f'{t:.3f}' for t in pandas_t)}")
    print(f"  DuckDB with date_trunc     best {min(trunc_t):6.3f}s  median {statistics.median(trunc_t):6.3f}s  "
          f"({rows / min(trunc_t) / 1e6:5.1f} M candles/s)  runs {', '.join(f'{t:.3f}' for t in trunc_t)}")
    print(f"  ratio pandas / DuckDB: {best_p / best_d:.1f}x (best), {med_p / med_d:.1f}x (median); "
          f"with date_trunc {best_p / min(trunc_t):.1f}x (best); peak RSS of this process {peak_mb:.0f} MB")
    print(f"  load average during the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"(figures are only comparable on an otherwise idle machine)")
    sqlite_figures = (bench_sqlite(data_dir, symbols, end, min(args.sqlite_days, args.days), args.repeat,
                                   args.threads) if args.sqlite_days > 0 else {"skipped": "--sqlite-days 0"})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "symbols": len(symbols), "days": args.days, "candles": rows, "parquet_mb": round(size / 1e6, 1),
        "cpus": os.cpu_count(), "duckdb_s": duck_t, "pandas_s": pandas_t, "duckdb_date_trunc_s": trunc_t,
        "loadavg": os.getloadavg(), "duckdb_threads": args.threads or os.cpu_count(),
        "ratio_best": best_p / best_d, "ratio_median": med_p / med_d, "peak_rss_mb": round(peak_mb),
        "sqlite": sqlite_figures,
        "when": pd.Timestamp.now(tz="UTC").isoformat()}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
