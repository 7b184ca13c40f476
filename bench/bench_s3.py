"""Benchmark DATA_DIR on S3-compatible storage (issue 20) against the local disk: one year of
simulated 1m candles (2024: 527,040 rows) written and read back through :mod:`S1.datasets`.

    python bench/bench_s3.py [--repeat 3] [--endpoint http://127.0.0.1:9000 --bucket data]

Without ``--endpoint`` a moto S3 server (``moto[server]``, the same one the tests use) is started
on a free port in this process; with one, a real store (e.g. MinIO) is used, with the keys from
settings (``S3_ACCESS_KEY_ID`` / ``S3_SECRET_ACCESS_KEY``). Both sides go through the same
functions: :func:`S1.datasets.write_parquet` (local: temp file + rename; S3: serialised in memory,
one PUT or multipart upload) and :func:`S1.datasets.read_candles` (local: file; S3: one GET), and
the lake as monthly partitions (:func:`S1.lake_store.write_partition` / :func:`S1.lake_store.read_lake`,
12 objects). Printed: the best of ``--repeat`` runs per case and the S3 / local ratio. The moto
server is a Python process on the same machine: figures say what the toolkit's own overhead
(serialisation, HTTP, request count) costs, not what a networked store would.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--endpoint", default=None, help="a running S3-compatible server (default: start moto)")
    ap.add_argument("--bucket", default="bench")
    args = ap.parse_args(argv)

    server = None
    if args.endpoint is None:
        from moto.server import ThreadedMotoServer

        from tests.real_servers import free_port

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        args.endpoint = f"http://127.0.0.1:{port}"
        os.environ.setdefault("S3_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("S3_SECRET_ACCESS_KEY", "bench-secret")
        os.environ.setdefault("S3_REGION", "us-east-1")
    os.environ["S3_ENDPOINT_URL"] = args.endpoint
    from S1 import storage
    from S1.datasets import Dataset, dataset_path, read_candles, write_parquet
    from S1.lake_store import read_lake, write_partition
    from S1.offline import simulate_candles
    from S1.settings import get_settings

    get_settings.cache_clear()
    storage.clear_cache()
    fs = storage.s3_filesystem()
    if not fs.exists(args.bucket):
        fs.call_s3("create_bucket", Bucket=args.bucket)
    remote = storage.as_path(f"s3://{args.bucket}/bench-{uuid.uuid4().hex[:8]}")
    local = Path(tempfile.mkdtemp(prefix="bench_s3_"))

    df = simulate_candles("BTCUSDT", "1m", "2024-01-01", "2025-01-01")
    months = list(df.groupby(df.index.strftime("%Y-%m")))
    print(f"one year of 1m: {len(df):,} rows; S3 endpoint {args.endpoint}"
          f"{' (moto, this process)' if server else ''}; best of {args.repeat}")
    rows = []
    for where, base in (("local", local), ("s3", remote)):
        path = dataset_path(Dataset("BTCUSDT", "1m", 366), data_dir=base)
        w = _best(lambda: write_parquet(df, path), args.repeat)
        r = _best(lambda: read_candles(path), args.repeat)
        size = path.stat().st_size

        def lake_write(base=base):
            for month, part in months:
                write_partition(part, exchange="binance", market="spot", symbol="BTCUSDT", month=month,
                                data_dir=base)

        lw = _best(lake_write, args.repeat)
        lr = _best(lambda base=base: read_lake("BTCUSDT", "1m", data_dir=base), args.repeat)
        assert len(read_lake("BTCUSDT", "1m", data_dir=base)) == len(df)
        rows.append((where, w, r, lw, lr, size))
    (_, lw_, lr_, llw, llr, size), (_, sw, sr, slw, slr, _) = rows
    print(f"{'case':32s} {'local s':>9s} {'s3 s':>9s} {'s3/local':>9s}")
    for name, a, b in (("write one file (write_parquet)", lw_, sw), ("read one file (read_candles)", lr_, sr),
                       ("write lake, 12 partitions", llw, slw), ("read lake (read_lake 1m)", llr, slr)):
        print(f"{name:32s} {a:9.3f} {b:9.3f} {b / a:8.2f}x")
    print(f"file size {size / 1e6:.1f} MB; throughput s3 write {size / sw / 1e6:.0f} MB/s, "
          f"read {size / sr / 1e6:.0f} MB/s")
    fs.rm(remote.key, recursive=True)
    if server is not None:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
