"""Backtest / paper-trading parity on REAL data: every S4 rule file, stops on and off.

    .venv/bin/python bench/parity_real.py                      # the backtest's default slippage (5 bp)
    .venv/bin/python bench/parity_real.py --slippage-bps 0     # and without slippage
    .venv/bin/python bench/parity_real.py --days 120 --keep /tmp/parity_real   # keep the data folder

Builds a real 120-day BTCUSDT 1h dataset from ``../shared`` with the project's own commands, in a
temporary DATA_DIR (never the repository's ``data/``):

1. ``python S1/historical.py --symbol BTCUSDT --interval 1h --days 120 --end 2023-06-01 --source archive
   --archive-dir ../shared/data/klines/binance_dump`` -- the real Binance archive files (Jan-May 2023);
2. ``python S2/indicators.py --symbol BTCUSDT --interval 1h --days 120``;
3. ``python S3/sentiment.py --since 2023-02-01 --until 2023-06-01 --interval 1h --offline`` -- the offline
   news feed (simulated headlines, labelled so), for the rule files that read sentiment;
4. ``python S4/model.py --symbol BTCUSDT --interval 1h --days 120`` -- the ML score of ``rules_ml.yaml``;

then, for each ``S4/*.yaml``, what ``python S5/parity.py --symbol BTCUSDT --interval 1h --days 120
--rules S4/<file> --exchange-info ../shared/data/api/rest_exchangeInfo_2021-10-12.json [--no-stops]``
runs (:func:`S5.parity_check.parity_files`, in this process; the paper side is its own S7
process as always), with the real exchangeInfo filters. A rule file with short rules runs on
USD-M (``--market usdm --no-funding``: ``../shared`` has no funding history). Prints one line per
rule file and stop setting -- ``rules.yaml stops on: N trades, M mismatches`` -- and exits 1 when
any differs. Without ``../shared`` it prints why it skipped and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from S1.cli import ArgumentParser
from S1.options import DEFAULT_SLIPPAGE_BPS

SYMBOL, INTERVAL = "BTCUSDT", "1h"
END = "2023-06-01"            # the archive files end on 2023-05-31 23:00 UTC
EXCHANGE_INFO = "data/api/rest_exchangeInfo_2021-10-12.json"
ARCHIVE = "data/klines/binance_dump"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python bench/parity_real.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared data folder (../shared)")
    p.add_argument("--days", type=int, default=120, help="window ending 2023-06-01 (default 120; at most 150)")
    p.add_argument("--slippage-bps", type=float, default=DEFAULT_SLIPPAGE_BPS,
                   help="slippage per side on both sides, basis points (default: the backtest's)")
    p.add_argument("--rules", nargs="*", type=Path, default=None, help="rule files (default: every S4/*.yaml)")
    p.add_argument("--keep", type=Path, default=None, help="build the data here and keep it (default: a temp folder)")
    return p


def _step(cmd: list[str], env: dict) -> None:
    print("$ " + " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"error: {' '.join(cmd[1:3])} failed: {tail[0]}")


def build_dataset(shared: Path, days: int, env: dict) -> None:
    """S1 -> S2 -> S3 (offline) -> S4 model, with the project's commands."""
    import pandas as pd

    py = sys.executable
    since = (pd.Timestamp(END) - pd.Timedelta(days=days)).strftime("%Y-%m-%d")
    _step([py, "S1/historical.py", "--symbol", SYMBOL, "--interval", INTERVAL, "--days", str(days), "--end", END,
           "--source", "archive", "--archive-dir", str(shared / ARCHIVE), "--no-progress"], env)
    _step([py, "S2/indicators.py", "--symbol", SYMBOL, "--interval", INTERVAL, "--days", str(days)], env)
    _step([py, "S3/sentiment.py", "--since", since, "--until", END, "--interval", INTERVAL, "--offline"], env)
    _step([py, "S4/model.py", "--symbol", SYMBOL, "--interval", INTERVAL, "--days", str(days)], env)


def run_all(rule_files: list[Path], *, days: int, slippage_bps: float, exchange_info: Path) -> int:
    from S1.datasets import Dataset
    from S4.rules import load_rules
    from S5.parity_check import parity_files

    bad = 0
    for path in rule_files:
        usdm = load_rules(path).has_short
        for stops in (True, False):
            t0 = time.perf_counter()
            res = parity_files(Dataset(SYMBOL, INTERVAL, days), path, use_stops=stops, exchange_info=exchange_info,
                               slippage=slippage_bps / 1e4, market="usdm" if usdm else "spot", funding=False)
            bad += not res.ok
            extra = " (usdm, no funding)" if usdm else ""
            print(f"{path.name} stops {'on' if stops else 'off'}: {res.line()}{extra}  [{time.perf_counter() - t0:.0f} s]",
                  flush=True)
    return 1 if bad else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    shared = args.shared.resolve()
    if not (shared / ARCHIVE).is_dir() or not (shared / EXCHANGE_INFO).is_file():
        print(f"skipped: the real data folder {shared} (with {ARCHIVE} and {EXCHANGE_INFO}) is absent "
              "-- pass --shared DIR", flush=True)
        return 0
    if not 30 <= args.days <= 150:
        raise SystemExit("error: --days must be from 30 to 150 (the archive files cover Jan-May 2023)")
    rule_files = args.rules or sorted((REPO / "S4").glob("*.yaml"))
    if args.keep is not None:
        return run_in(args.keep, args, shared, rule_files)
    with tempfile.TemporaryDirectory(prefix="parity_real_") as tmp:
        return run_in(Path(tmp), args, shared, rule_files)


def run_in(work: Path, args, shared: Path, rule_files: list[Path]) -> int:
    work.mkdir(parents=True, exist_ok=True)
    empty_env = work / "empty.env"
    empty_env.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "OPENAI_", "OFFLINE"))}
    env.update(DATA_DIR=str(work / "data"), REPORTS_DIR=str(work / "reports"), TOOLKIT_ENV_FILE=str(empty_env),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    os.environ.update({k: env[k] for k in ("DATA_DIR", "REPORTS_DIR", "TOOLKIT_ENV_FILE")})
    print(f"data folder: {work} (BTCUSDT 1h, {args.days} days to {END}, real candles from {shared / ARCHIVE})")
    build_dataset(shared, args.days, env)
    from S1.settings import get_settings

    if hasattr(get_settings, "cache_clear"):
        get_settings.cache_clear()
    print(f"parity: slippage {args.slippage_bps:g} bp, fee 0.001 (quote), S6/risk.yaml, real filters "
          f"({EXCHANGE_INFO})", flush=True)
    return run_all(rule_files, days=args.days, slippage_bps=args.slippage_bps, exchange_info=shared / EXCHANGE_INFO)


if __name__ == "__main__":
    raise SystemExit(main())
