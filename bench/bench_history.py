"""Benchmark S1 history: REST download and archive import, against baselines in the same run.

    .venv/bin/python bench/bench_history.py            # everything (~4 min: the python-binance
                                                       #  baseline sleeps 1 s every 3 pages by design)
    .venv/bin/python bench/bench_history.py --quick    # skip the sleeping baseline

REST: one year of 1m klines (527,040 candles, 2024) from the local Binance server,
which runs in its own process (so client and server do not share a GIL):
- ours: ``python S1/historical.py --source rest`` (a fresh process: imports, download,
  validation, Parquet write), at 0 ms and at 100 ms injected latency per request;
- baseline: python-binance ``Client.get_historical_klines`` + DataFrame + Parquet write,
  as shipped (with its courtesy sleeps) and with ``time.sleep`` disabled.
Peak memory is each client process's max RSS.

Archive: twelve monthly 1m zips (2025, µs timestamps) imported with ``--archive-dir``
against the floor: ``zipfile`` + ``pyarrow.csv.read_csv`` + ``pyarrow.parquet.write_table``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE = r"""
import sys, time, pandas as pd
import binance.client
from binance import Client
if sys.argv[2] == "nosleep":
    binance.client.time.sleep = lambda s: None
c = Client(ping=False)
c.API_URL = sys.argv[1]
rows = c.get_historical_klines("BTCUSDT", "1m", "2024-01-01", "2025-01-01")
cols = ["open_time","open","high","low","close","volume","close_time","quote_volume","trades",
        "taker_buy_base","taker_buy_quote","ignore"]
df = pd.DataFrame(rows, columns=cols).drop(columns="ignore")
for col in cols[1:6] + cols[7:8] + cols[9:11]:
    df[col] = df[col].astype(float)
df["open_time"] = pd.to_datetime(df["open_time"], unit="ms", utc=True)
df = df.set_index("open_time")
df.to_parquet(sys.argv[3])
print(len(df))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float, now: str, preload: str, days: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "S1.local.exchange", "--port", str(port), "--now", now,
                             "--days", str(days), "--preload", preload, "--latency", str(latency)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/api/v3/ping", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("local server did not start")


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB, from the child's own rusage) and stdout of a child process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd[:3]} failed: {err.read().strip()[-400:]}")
        return wall, usage.ru_maxrss / 1024, out.read().strip()


def bench_rest(args) -> dict:
    res = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_rest_"))
    env = dict(os.environ, TOOLKIT_ENV_FILE="/dev/null", DATA_DIR=str(tmp))
    for latency in (0.0, 0.1):
        server, url = start_server(latency, "2025-01-01", "BTCUSDT:1m", 370)
        try:
            env["BINANCE_API_URL"] = url + "/api"
            out = tmp / f"ours_{latency}.parquet"
            wall, rss, _ = timed([sys.executable, "S1/historical.py", "--symbol", "BTCUSDT", "--interval", "1m",
                                  "--days", "366", "--end", "2025-01-01", "--source", "rest", "--out", str(out),
                                  "--no-progress"], env)
            res[f"ours_latency_{int(latency * 1000)}ms"] = {"seconds": wall, "candles_per_s": 527040 / wall,
                                                            "peak_rss_mb": rss}
            if latency == 0.0:
                modes = ["nosleep"] + ([] if args.quick else ["asis"])
                for mode in modes:
                    bout = tmp / f"baseline_{mode}.parquet"
                    wall_b, rss_b, n = timed([sys.executable, "-c", BASELINE, url + "/api", mode, str(bout)], env)
                    res[f"python_binance_{mode}"] = {"seconds": wall_b, "candles_per_s": int(n) / wall_b,
                                                     "rows": int(n), "peak_rss_mb": rss_b}
        finally:
            server.kill()
    return res


def bench_archive() -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from S1.history import update_dataset
    from S1.local.exchange import LocalBinance
    from S1.offline import simulate_candles
    from S1.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="bench_archive_"))
    src = tmp / "zips"
    src.mkdir()
    ex = LocalBinance(now_ms=int(pd_ts("2026-01-02")))
    ex.add_candles("BTCUSDT", "1m", simulate_candles("BTCUSDT", "1m", "2025-01-01", "2026-01-01"))
    for m in range(1, 13):
        stamp = f"2025-{m:02d}"
        (src / f"BTCUSDT-1m-{stamp}.zip").write_bytes(ex.archive_bytes("BTCUSDT", "1m", "monthly", stamp))
    files = sorted(src.glob("*.zip"))

    def floor():
        tables = []
        for f in files:
            with zipfile.ZipFile(f) as zf:
                data = zf.read(zf.namelist()[0])
            tables.append(pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(autogenerate_column_names=True)))
        pq.write_table(pa.concat_tables(tables), tmp / "floor.parquet", compression="zstd")

    settings = Settings(_env_file=None, data_dir=tmp / "data")

    def ours():
        out = tmp / "ours.parquet"
        out.unlink(missing_ok=True)
        s = update_dataset(symbol="BTCUSDT", interval="1m", days=365, end="2026-01-01", archive_dir=src,
                           out=out, settings=settings, progress=False)
        assert s.rows == 525600, s.line()

    best = {}
    for name, fn in (("floor", floor), ("ours", ours)):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        best[name] = min(times)
    return {"floor_seconds": best["floor"], "ours_seconds": best["ours"], "ratio": best["ours"] / best["floor"]}


def pd_ts(s):
    from S1.intervals import to_ms

    return to_ms(s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="skip python-binance as shipped (it sleeps ~3 min)")
    p.add_argument("--skip-rest", action="store_true")
    p.add_argument("--skip-archive", action="store_true")
    args = p.parse_args()
    report = {}
    if not args.skip_rest:
        rest = bench_rest(args)
        report["rest"] = rest
        ours = rest["ours_latency_0ms"]["seconds"]
        print("REST, one year of 1m klines (527,040 candles) from the local server:")
        for k, v in rest.items():
            print(f"  {k:28s} {v['seconds']:8.2f} s  {v['candles_per_s']:>10,.0f} candles/s  "
                  f"peak RSS {v['peak_rss_mb']:.0f} MB")
        for k in ("python_binance_nosleep", "python_binance_asis"):
            if k in rest:
                print(f"  speed-up vs {k}: {rest[k]['seconds'] / ours:.1f}x")
        pages = 528
        print(f"  at 100 ms latency a sequential client needs >= {pages * 0.1:.0f} s; "
              f"ours took {rest['ours_latency_100ms']['seconds']:.1f} s")
    if not args.skip_archive:
        arc = bench_archive()
        report["archive"] = arc
        print("Archive, twelve monthly 1m zips (525,600 candles, µs timestamps):")
        print(f"  floor (zipfile + pyarrow read_csv + write_table): {arc['floor_seconds']:.2f} s")
        print(f"  ours (--archive-dir: parse, normalise, validate, gaps, atomic write): {arc['ours_seconds']:.2f} s")
        print(f"  ratio: {arc['ratio']:.2f}x the floor (target <= 1.5x)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "history.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
