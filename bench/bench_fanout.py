"""The batch runner over many datasets: sequential vs 2 local processes vs a 2-worker Dask cluster.

    .venv/bin/python bench/bench_fanout.py [--datasets 20] [--days 180] [--interval 1h]

Each dataset is one download from the project's local Binance-compatible server (simulated market,
its own process), written to a fresh temp ``DATA_DIR`` per mode; the three runs must give equal
files (checked) and are timed whole (``S1/batch.py`` main in this process; the workers are started
before the clock runs, as a standing cluster would be). Ratios are against the sequential run in
the same process. On a 2-core machine 2 workers can at best halve the time; the local server shares
those cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "LTCUSDT", "DOTUSDT",
           "LINKUSDT"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=20)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--interval", default="1h")
    args = ap.parse_args()
    import distributed

    from S1.batch import main as batch_main
    from S1.datasets import read_candles
    from S1.settings import get_settings
    from tests.real_servers import free_port, wait_for

    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "S1.local.exchange", "--port", str(port),
                               "--days", str(args.days + 30)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api"
    import urllib.request

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"{api}/v3/ping", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, what="the local server")
    n_sym = min(len(SYMBOLS), args.datasets)
    windows = [args.days - 10 * k for k in range((args.datasets + n_sym - 1) // n_sym)]
    lines = ["defaults: {source: rest}", "jobs:"]
    for w in windows:
        lines += [f"  - symbols: [{', '.join(SYMBOLS[:n_sym])}]", f"    intervals: [{args.interval}]", f"    days: [{w}]"]
    cfg = tmp / "batch.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    (tmp / "none.env").write_text("")
    os.environ.update(TOOLKIT_ENV_FILE=str(tmp / "none.env"), BINANCE_API_URL=api,
                      BINANCE_ARCHIVE_URL=f"http://127.0.0.1:{port}", PYTHONPATH=str(REPO))
    results, files = {}, {}
    warm = tmp / "warm.yaml"   # imports and first-request costs, paid once before any clock runs
    warm.write_text(f"defaults: {{source: rest}}\njobs:\n  - symbols: [{SYMBOLS[0]}]\n    intervals: [{args.interval}]\n"
                    f"    days: [{args.days}]\n")
    os.environ["DATA_DIR"] = str(tmp / "warm")
    get_settings.cache_clear()
    batch_main(["--config", str(warm)])
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      host="127.0.0.1") as cluster:
            for mode, extra in (("sequential", []), ("2 processes", ["--workers", "2"]),
                                ("Dask, 2 workers", ["--scheduler", cluster.scheduler_address])):
                data = tmp / mode.replace(" ", "_").replace(",", "")
                os.environ["DATA_DIR"] = str(data)
                get_settings.cache_clear()
                if mode.startswith("Dask"):   # the workers read the environment of their own process
                    with distributed.Client(cluster) as c:
                        c.run(lambda d=str(data): os.environ.update(DATA_DIR=d, BINANCE_API_URL=api))
                t0 = time.perf_counter()
                code = batch_main(["--config", str(cfg), *extra])
                results[mode] = time.perf_counter() - t0
                if code != 0:
                    print(f"{mode}: batch failed ({code})")
                    return 1
                files[mode] = {p.name: read_candles(p) for p in sorted(data.glob("*.parquet"))}
                print(f"{mode:16s} {len(files[mode])} datasets in {results[mode]:6.2f} s", flush=True)
    finally:
        server.terminate()
    base = files["sequential"]
    for mode, got in files.items():
        assert got.keys() == base.keys() and all(got[k].equals(base[k]) for k in base), f"{mode} differs"
    print("\nall three runs wrote equal files; ratios vs sequential (< 1 is faster):")
    for mode, dt in results.items():
        print(f"  {mode:16s} {dt / results['sequential']:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
