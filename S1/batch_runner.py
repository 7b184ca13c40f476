"""Batch runs: many markets x intervals x windows, then the sprints that follow.

The YAML (see ``S1/batch.yaml``) is data: a validated list of jobs, never eval-ed::

    defaults: {days: 365, source: auto}
    jobs:
      - symbols: [BTCUSDT, ETHUSDC]
        intervals: [1h]
        days: [365, 30]
        then: [S2]            # sprints to run after each download: S2, S4, S5
        rules: S4/rules.yaml  # for S4/S5

Each job runs on its own: a failure is recorded and the batch goes on; the
summary table at the end says what happened to every dataset, and the exit code
is non-zero if anything failed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from S1.datasets import (
    dataset_path,
    dataset_stem,
    normalize_symbol,
    read_candles,
    read_metadata,
    write_parquet,
)
from S1.errors import UserError
from S1.yaml_load import safe_load
from S1.intervals import INTERVAL_MS, INTERVALS, check_interval
from S1.resample import can_derive, resample_candles

REPO = Path(__file__).resolve().parents[1]
Sprint = Literal["S2", "S4", "S5"]


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    symbols: list[str] = Field(min_length=1)
    intervals: list[str] = Field(min_length=1)
    days: list[int] = Field(default_factory=lambda: [365])
    source: Literal["auto", "rest", "archive"] = "auto"
    end: str | None = None
    then: list[Sprint] = Field(default_factory=list)
    rules: str = "S4/rules.yaml"

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v):
        return [normalize_symbol(s) for s in v]

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, v):
        for i in v:
            if i not in INTERVALS:
                raise ValueError(f"unsupported interval {i!r}; use one of {', '.join(INTERVALS)}")
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v):
        if any(d <= 0 for d in v):
            raise ValueError("days must be positive")
        return v


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    defaults: dict = Field(default_factory=dict)
    jobs: list[Job] = Field(min_length=1)


def load_config(path: Path) -> BatchConfig:
    path = Path(path)
    if not path.exists():
        raise UserError(f"batch config {path} does not exist", "start from S1/batch.yaml")
    try:
        raw = safe_load(path.read_text(), source=str(path)) or {}
        defaults = raw.get("defaults", {}) if isinstance(raw, dict) else {}
        jobs = [{**defaults, **j} for j in raw.get("jobs", [])] if isinstance(raw, dict) else []
        return BatchConfig(defaults=defaults, jobs=jobs)
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})", "fix the syntax") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise UserError(f"{path}: {where}: {err['msg']}", "see S1/batch.yaml for the layout") from exc


@dataclass
class Task:
    symbol: str
    interval: str
    days: int
    job: Job

    @property
    def stem(self) -> str:
        return dataset_stem(self.symbol, self.interval, self.days)


@dataclass
class Outcome:
    task: Task
    status: str = "ok"
    detail: str = ""
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)


def expand(config: BatchConfig, pattern: str | None = None) -> list[Task]:
    rx = re.compile(pattern, re.IGNORECASE) if pattern else None
    tasks = [Task(s, i, d, job) for job in config.jobs for s in job.symbols for i in job.intervals for d in job.days]
    return [t for t in tasks if rx is None or rx.search(t.stem)]


def sprint_command(step: str, task: Task) -> list[str]:
    common = ["--symbol", task.symbol, "--interval", task.interval, "--days", str(task.days)]
    if step == "S2":
        return [sys.executable, "S2/indicators.py", *common]
    if step == "S4":
        return [sys.executable, "S4/decision.py", *common, "--rules", task.job.rules]
    if step == "S5":
        return [sys.executable, "S5/backtest.py", *common]
    raise UserError(f"unknown sprint step {step!r}", "use S2, S4 or S5")


def plan_lines(tasks: list[Task]) -> list[str]:
    from S1.history import find_gaps

    lines = []
    for t in tasks:
        path = dataset_path(t.symbol, t.interval, t.days)
        if not path.exists():
            lines.append(f"{t.stem:32s} missing")
            continue
        meta = read_metadata(path)
        df = read_candles(path)
        gaps = find_gaps(df.index, t.interval)
        covered = (f"{df.index[0]:%Y-%m-%d %H:%M} .. {df.index[-1]:%Y-%m-%d %H:%M}" if len(df) else "empty")
        lines.append(f"{t.stem:32s} {len(df):>9,} candles {covered}  gaps {len(gaps)}  "
                     f"updated {meta.get('updated_at', '?')[:16]}")
    return lines


def run_task(task: Task, *, derive: list[str], progress: bool = False) -> Outcome:
    from S1.history import update_dataset

    out = Outcome(task)
    t0 = time.perf_counter()
    try:
        s = update_dataset(symbol=task.symbol, interval=task.interval, days=task.days, end=task.job.end,
                           source=task.job.source, progress=progress)
        out.detail = f"{s.rows:,} candles, +{s.new_rows:,}, gaps {len(s.gaps)}"
        out.steps.append("S1")
        for target in derive:
            derive_dataset(task.symbol, task.interval, target, task.days)
            out.steps.append(f"derive {target}")
        for step in task.job.then:
            r = subprocess.run(sprint_command(step, task), cwd=REPO, capture_output=True, text=True)
            if r.returncode != 0:
                msg = (r.stderr.strip().splitlines() or ["failed"])[-1]
                raise UserError(f"{step} failed: {msg}")
            out.steps.append(step)
    except UserError as exc:
        out.status, out.detail = "FAILED", str(exc)
    except Exception as exc:  # continue-on-error: one job never stops the batch
        out.status, out.detail = "FAILED", f"{type(exc).__name__}: {exc}"
    out.seconds = time.perf_counter() - t0
    return out


def run_job(job: tuple[Task, list[str]]) -> Outcome:
    """:func:`run_task` of one ``(task, derive)`` pair: what :func:`S1.fanout.fan_out` sends to a worker."""
    task, derive = job
    return run_task(task, derive=derive)


def derive_dataset(symbol: str, source: str, target: str, days: int) -> Path | None:
    """Write ``<symbol>_<target>_<days>d.parquet`` resampled from the ``source`` file."""
    if target == source:
        return None
    check_interval(target)
    if not can_derive(source, target):
        raise UserError(f"cannot derive {target} from {source}", "derive only whole multiples (1m -> 5m, 1h -> 4h)")
    src = dataset_path(symbol, source, days)
    df = read_candles(src)
    meta = read_metadata(src)
    cov = (meta["coverage_start_ms"], meta["coverage_end_ms"]) if "coverage_start_ms" in meta else None
    out = resample_candles(df, source, target, coverage=cov)
    path = dataset_path(symbol, target, days)
    write_parquet(out, path, metadata={**meta, "interval": target, "derived_from": source,
                                       "sources": meta.get("sources", []) + [f"derived from {source}"]})
    return path


def sorted_targets(derive: list[str]) -> list[str]:
    for d in derive:
        check_interval(d)
    return sorted(set(derive), key=lambda i: INTERVAL_MS.get(i, 31 * 86_400_000))
