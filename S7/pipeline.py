"""The main job: the whole chain for one market, online or offline.

    python S7/pipeline.py                       # BTCUSDT 1h, one year: S1 -> S2 -> S3 -> S4 -> S5 -> S7 dry-run
    python S7/pipeline.py --offline             # force the local simulated market
    python S7/pipeline.py --symbol ETHUSDC --days 180

Every step is the sprint script a user would run (same code paths, same files).
With internet it talks to the real Binance and news endpoints (no keys needed;
the offline sentiment classifier when no OpenAI key is set). Without internet it
says so in one line, starts the project's local Binance-compatible replay server
(through :mod:`S1.offline`) with a deterministic simulated market and a local news
feed, and labels every output "simulated" (file metadata, report titles).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.datasets import Dataset, dataset_path, orders_log_path, report_path, sentiment_path
from S1.errors import UserError
from S1.offline import local_market
from S1.options import add_offline_option
from S1.settings import get_settings
from S3.offline import local_news

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    name: str
    argv: list[str]
    outputs: list[Path]


def online(api_url: str, timeout: float = 4.0) -> bool:
    """True when the Binance REST API answers ``/v3/ping``."""
    try:
        with urllib.request.urlopen(f"{api_url}/v3/ping", timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False


def build_steps(dataset: Dataset, *, rules: str, sources: str, dry_run_seconds: int,
                since: str) -> list[Step]:
    py = sys.executable
    common = ["--symbol", dataset.symbol, "--interval", dataset.interval, "--days", str(dataset.days)]
    return [
        Step("S1 history", [py, "S1/historical.py", *common], [dataset_path(dataset)]),
        Step("S2 indicators", [py, "S2/indicators.py", *common], [dataset_path(dataset, "ta")]),
        Step("S3 sentiment", [py, "S3/sentiment.py", "--since", since, "--interval", dataset.interval,
                              "--sources", sources], [sentiment_path(dataset.interval)]),
        Step("S4 signals", [py, "S4/decision.py", *common, "--rules", rules],
             [dataset_path(dataset, "signals", rules=rules)]),
        Step("S5 backtest", [py, "S5/backtest.py", *common, "--rules", rules],
             [report_path(dataset, "backtest", "html", rules=rules),
              dataset_path(dataset, "backtest", rules=rules)]),
        Step("S7 dry-run", [py, "S7/executor.py", "--symbol", dataset.symbol, "--interval", dataset.interval,
                            "--rules", rules,
                            "--dry-run", "--replay-days", "60", "--duration", str(dry_run_seconds)],
             []),
    ]


STEP_IDS = ("S1", "S2", "S3", "S4", "S5", "S7")


def validate_args(args) -> Dataset:
    """Every argument checked before any step runs (a typo must not cost a download);
    returns the dataset the chain makes."""
    from S1.history import MAX_DAYS
    from S4.rules import load_rules

    if not 0 < args.days <= MAX_DAYS:
        raise UserError(f"--days must be from 1 to {MAX_DAYS:,}, got {args.days}", "e.g. --days 365")
    dataset = Dataset.from_args(args)
    if not 0 < args.dry_run_seconds <= 86_400:
        raise UserError(f"--dry-run-seconds must be from 1 to 86400, got {args.dry_run_seconds}", "e.g. 20")
    bad = [s for s in args.skip if s.upper() not in STEP_IDS]
    if bad:
        raise UserError(f"--skip {' '.join(bad)}: unknown step(s)", f"use step ids among {' '.join(STEP_IDS)}")
    args.skip = [s.upper() for s in args.skip]
    if "S4" not in args.skip or "S7" not in args.skip:   # the rules are read by S4 and the S7 dry-run
        load_rules(REPO / args.rules)                     # exists, and parses (the steps run in REPO)
    return dataset


def main(argv=None) -> int:
    p = ArgumentParser(prog="python S7/pipeline.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", default="BTCUSDT", help="e.g. BTCUSDT")
    p.add_argument("--interval", default="1h", help="Binance interval, e.g. 1h")
    p.add_argument("--days", type=int, default=365, help="window length in days up to now")
    p.add_argument("--rules", default="S4/rules.yaml", help="S4 rule file; every output carries its name")
    add_offline_option(p)
    p.add_argument("--dry-run-seconds", type=int, default=20, help="length of the S7 dry-run session")
    p.add_argument("--skip", nargs="*", default=[], type=str.upper, choices=STEP_IDS, metavar="STEP",
                   help=f"steps to skip, among {' '.join(STEP_IDS)} (e.g. --skip S3 S7)")
    add_common_args(p)
    args = p.parse_args(argv)
    dataset = validate_args(args)
    settings = get_settings()
    env = dict(os.environ)
    offline = args.offline or settings.offline or not online(settings.binance_api_url)
    sources = "rss"
    if offline and not args.offline:
        print(f"no internet ({settings.binance_api_url} unreachable): running offline on a local simulated "
              "market; every output is labelled 'simulated'", flush=True)
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - args.days * 86400))
    steps = [s for s in build_steps(dataset, rules=args.rules, sources=sources,
                                    dry_run_seconds=args.dry_run_seconds, since=since)
             if s.name.split()[0] not in args.skip]
    with ExitStack() as stack:
        if offline:
            env.update(stack.enter_context(local_market(days=args.days + 30)))
            env.update(stack.enter_context(local_news(symbol=dataset.symbol, days=dataset.days)))
        failed = _run_steps(steps, env)
    if failed:
        raise UserError(f"the chain stopped at {failed.name} (its error is above)",
                        "fix that and re-run: completed steps are reused, nothing is fetched twice")
    print("\nOutputs" + (" (SIMULATED market, labelled as such)" if offline else "") + ":")
    for step in steps:
        for out in step.outputs:
            shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
            print(f"  {step.name:14s} {shown}")
    log_file = orders_log_path()
    print(f"  {'S7 order log':14s} {_rel(log_file)}" + ("" if log_file.exists() else " (no order yet)"))
    print("Next: open the backtest report in a browser, or `streamlit run S7/dashboard.py` for everything.")
    return 0


def _run_steps(steps: list[Step], env: dict) -> Step | None:
    """Run each step's script; return the first that failed (its own error is already printed)."""
    for step in steps:
        t0 = time.perf_counter()
        print(f"==> {step.name}: {' '.join(Path(a).name if i == 0 else a for i, a in enumerate(step.argv))}",
              flush=True)
        if subprocess.run(step.argv, cwd=REPO, env=env).returncode != 0:
            return step
        print(f"    ({time.perf_counter() - t0:.1f}s)", flush=True)
    return None


def _rel(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


if __name__ == "__main__":
    main_entry(main)
