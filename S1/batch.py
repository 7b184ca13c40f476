"""Run named batch tasks -- history downloads, the 1m lake, live streams -- from one YAML file.

    python S1/batch.py --config S1/batch.yaml
    python S1/batch.py --config S1/batch.yaml --tasks majors-1h,lake-majors
    python S1/batch.py --config S1/batch.yaml --filter 'btc.*1h' --plan
    python S1/batch.py --config S1/batch.yaml --derive 4h 1d   # resample from each downloaded interval
    python S1/batch.py --config S1/batch.yaml --derive-only    # rebuild derived files from disk, no network

Continue-on-error: every dataset gets a row in the summary table; the exit code is
1 when any failed.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from S1.batch_runner import expand, load_config, plan_lines, run_job, sorted_targets
from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import UserError
from S1.fanout import check_scheduler, fan_out
from S1.resample import can_derive
from S1.settings import get_settings


def main(argv=None) -> int:
    p = ArgumentParser(prog="python S1/batch.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="YAML file (see S1/batch.yaml)")
    p.add_argument("--tasks", default=None, metavar="NAME,...", help="run only these named tasks (default: all)")
    p.add_argument("--filter", default=None, help="regex on task or dataset names, e.g. 'btcusdt_1h'")
    p.add_argument("--plan", action="store_true",
                   help="show what exists and what is missing (streams: the outputs and connections); "
                        "download nothing")
    p.add_argument("--derive-only", action="store_true",
                   help="only rebuild the derived intervals (the tasks' derive: and --derive) from the files and "
                        "lake partitions on disk; no network request")
    p.add_argument("--derive", nargs="+", default=[], metavar="INTERVAL",
                   help="also write these intervals resampled from each downloaded one (e.g. 5m 1h 4h)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the datasets in N local processes (1: one after the other, here). The REST weight "
                        "budget is shared: each process gets 1/N of it")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the datasets on a Dask cluster, e.g. tcp://10.0.0.5:8786 (workers need this repo "
                        "and a shared DATA_DIR; see S1/README.md)")
    from S1.options import add_offline_option

    add_offline_option(p)
    add_common_args(p)
    args = p.parse_args(argv)
    check_scheduler(args.scheduler, args.workers)
    tasks = expand(load_config(args.config), args.filter, names=args.tasks)
    if not tasks:
        raise UserError(f"--filter {args.filter!r} matches no task or dataset", "drop --filter or loosen the regex")
    targets = sorted_targets(args.derive)
    console = Console()
    if args.plan:
        for line in plan_lines(tasks):
            print(line)
        return 0
    table = Table(title="batch summary")
    for col in ("dataset", "status", "steps", "detail", "s"):
        table.add_column(col)
    failed = 0
    jobs = [(task, [t for t in sorted_targets([*task.job.derive, *targets]) if can_derive(task.interval, t)],
             args.derive_only) for task in tasks]
    budget = get_settings().rest_weight_budget / args.workers
    from S1.offline import offline_mode, offline_requested

    if offline_requested(args.offline) and args.scheduler:
        raise UserError("--offline runs on this machine's local simulated market, not on a Dask cluster",
                        "drop --scheduler (use --workers N) or drop --offline")
    with offline_mode(args.offline, days=max(int(t.days or 0) for t in tasks) + 30) as env:
        outcomes = fan_out(run_job, jobs, scheduler=args.scheduler, workers=args.workers,
                           env={"REST_WEIGHT_BUDGET": f"{budget:.6f}", **(env or {})})
    for task, out in zip(tasks, outcomes, strict=True):
        failed += out.status == "FAILED"
        style = "green" if out.status == "ok" else "red"
        style = "yellow" if out.status == "skipped" else style
        table.add_row(f"{task.job.name}: {task.stem}", f"[{style}]{out.status}[/{style}]", ", ".join(out.steps), out.detail,
                      f"{out.seconds:.1f}")
    console.print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    main_entry(main)
