"""Batch runs: named tasks across exchanges and modes, then the sprints that follow.

The YAML (see ``S1/batch.yaml``) is data: a validated list of tasks, never eval-ed::

    defaults: {days: [365], source: auto}
    tasks:
      - name: majors-1h                 # history: candle files data/<venue>_<symbol>_<interval>_<days>d.parquet
        mode: history
        exchange: binance               # any CCXT id too (okx, bybit ...)
        market: spot                    # spot | swap | future
        symbols: [BTCUSDT, ETHUSDC]
        intervals: [1h]
        days: [365, 30]
        format: csv                     # also export: parquet (only) | csv | feather | sqlite
        then: [S2]                      # sprints to run after each download: S2, S4, S5
      - name: lake-majors               # the 1m lake: data/lake/<exchange>/<market>/<SYMBOL>/1m/<YYYY-MM>.parquet
        lake: true
        instruments: S1/instruments.csv # instead of symbols (name,source,source_symbol,exchange,price_scale)
        derive: [5m, 1h, 4h, 1d]
      - name: live-books                # stream: S1/streamer.py, one process (one connection) per exchange
        mode: stream
        exchange: [binance, okx]
        symbols: [BTC/USDT]
        streams: [depth, bookTicker]
        format: parquet
        duration: 600

The old layout (``jobs:``, entries without ``name``/``mode``) still loads: each job is a history
task named ``job1``, ``job2`` ...

Each unit of work (one dataset, one lake market, one stream task) runs on its own: a failure is
recorded and the batch goes on; the summary table says what happened to every unit, and the exit
code is non-zero if anything failed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from S1.datasets import (
    Dataset,
    dataset_path,
    normalize_symbol,
    read_candles,
    read_metadata,
    write_parquet,
)
from S1.errors import UserError
from S1.intervals import INTERVAL_MS, INTERVALS, check_interval
from S1.resample import can_derive, resample_candles
from S1.yaml_load import safe_load

REPO = Path(__file__).resolve().parents[1]
Sprint = Literal["S2", "S4", "S5"]
Market = Literal["spot", "swap", "future"]
Format = Literal["parquet", "csv", "feather", "sqlite"]
KLINE_STREAMS = ("kline", "trades")
BOOK_STREAMS = ("depth", "orderbook", "bookTicker", "ticker")
INSTRUMENT_COLUMNS = ("name", "source", "source_symbol", "exchange", "price_scale")


def _check_intervals(v: list[str]) -> list[str]:
    for i in v:
        if i not in INTERVALS:
            raise ValueError(f"unsupported interval {i!r}; use one of {', '.join(INTERVALS)}")
    return v


class Job(BaseModel):
    """One entry of the old ``jobs:`` list (a history task without a name)."""

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

    _intervals = field_validator("intervals")(classmethod(lambda cls, v: _check_intervals(v)))

    @field_validator("days")
    @classmethod
    def _days(cls, v):
        if any(d <= 0 for d in v):
            raise ValueError("days must be positive")
        return v


class TaskSpec(BaseModel):
    """One named task of ``tasks:`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    mode: Literal["history", "stream"] = "history"
    exchange: str | list[str] = "binance"
    market: Market = "spot"
    symbols: list[str] | None = None
    instruments: str | None = None
    instruments_filter: str | None = None
    intervals: list[str] | None = None
    days: list[int] = Field(default_factory=lambda: [365])
    source: Literal["auto", "rest", "archive"] = "auto"
    end: str | None = None
    format: Format = "parquet"
    lake: bool = False
    derive: list[str] = Field(default_factory=list)
    then: list[Sprint] = Field(default_factory=list)
    rules: str = "S4/rules.yaml"
    streams: list[str] | None = None
    duration: float | None = Field(default=None, gt=0, le=7 * 86_400)

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, v):
        items = [v] if isinstance(v, str) else list(v)
        if not items:
            raise ValueError("name at least one exchange")
        for x in items:
            if not re.fullmatch(r"[a-z0-9]+", x.strip().lower()):
                raise ValueError(f"invalid exchange {x!r}; use a CCXT id such as binance, okx, bybit")
        return [x.strip().lower() for x in items] if isinstance(v, list) else v.strip().lower()

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v):
        if v is not None and not v:
            raise ValueError("list at least one symbol")
        return v

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, v):
        return None if v is None else _check_intervals(v)

    @field_validator("derive")
    @classmethod
    def _derive(cls, v):
        return _check_intervals(v)

    @field_validator("days")
    @classmethod
    def _days(cls, v):
        if not v or any(d <= 0 for d in v):
            raise ValueError("days must be positive")
        return v

    @field_validator("instruments_filter")
    @classmethod
    def _regex(cls, v):
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a regular expression ({exc})") from None
        return v

    @field_validator("streams")
    @classmethod
    def _streams(cls, v):
        if v is None:
            return v
        known = KLINE_STREAMS + BOOK_STREAMS
        for s in v:
            if s not in known:
                raise ValueError(f"unknown stream {s!r}; use one of {', '.join(known)}")
        if any(s in KLINE_STREAMS for s in v) and (len(v) > 1):
            raise ValueError("kline/trades is one stream per task; order-book streams (depth, bookTicker, ticker) "
                             "may be combined")
        return v

    @model_validator(mode="after")
    def _modes(self):
        if (self.symbols is None) == (self.instruments is None):
            raise ValueError("give either symbols or instruments (a CSV file)")
        if self.instruments_filter and not self.instruments:
            raise ValueError("instruments_filter needs instruments")
        if self.mode == "stream":
            if self.duration is None:
                raise ValueError("a stream task needs duration (seconds)")
            bad = [f for f in ("lake", "derive", "then", "end") if getattr(self, f)]
            if bad:
                raise ValueError(f"{', '.join(bad)} apply to history tasks, not streams")
            if self.intervals and len(self.intervals) > 1:
                raise ValueError("a kline stream takes one interval (one connection per exchange)")
            if self.format == "csv":
                raise ValueError("streams write sqlite, parquet or feather")
        else:
            if self.streams is not None or self.duration is not None:
                raise ValueError("streams/duration apply to stream tasks (mode: stream)")
            if self.lake and self.intervals not in (None, ["1m"]):
                raise ValueError("the lake stores 1m candles; list the other intervals under derive")
            if self.lake and (self.then or self.format != "parquet"):
                raise ValueError("then/format apply to candle files, not to the lake")
            if self.lake and self.market == "future":
                raise ValueError("the lake holds spot and swap markets")
            if self.then and (self.exchanges != ["binance"] or self.market != "spot" or self.instruments):
                raise ValueError("then (S2/S4/S5) runs on Binance spot files named by symbols; run the sprints "
                                 "of other venues by hand")
        return self

    @property
    def exchanges(self) -> list[str]:
        return [self.exchange] if isinstance(self.exchange, str) else list(self.exchange)


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    defaults: dict = Field(default_factory=dict)
    jobs: list[Job] = Field(default_factory=list)
    tasks: list[TaskSpec] = Field(default_factory=list)
    base: str = "."      # the folder of the YAML file (instruments paths are relative to it or to the repo)

    @model_validator(mode="after")
    def _some(self):
        if not self.jobs and not self.tasks:
            raise ValueError("list at least one task under tasks: (or jobs:)")
        names = [t.name for t in self.all_tasks()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task names must be unique: {', '.join(dup)}")
        return self

    def all_tasks(self) -> list[TaskSpec]:
        """The tasks, old ``jobs:`` entries first (named ``job1``, ``job2`` ...)."""
        old = [TaskSpec(name=f"job{i}", **j.model_dump()) for i, j in enumerate(self.jobs, start=1)]
        return old + list(self.tasks)


def _error_line(path: Path, exc: ValidationError, raw_tasks: list) -> str:
    err = exc.errors()[0]
    loc = [str(x) for x in err["loc"]]
    msg = err["msg"].removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] == "tasks" and loc[1].isdigit():
        i = int(loc[1])
        raw = raw_tasks[i] if i < len(raw_tasks) and isinstance(raw_tasks[i], dict) else {}
        name = raw.get("name", f"#{i + 1}")
        fld = ".".join(loc[2:]) or "(task)"
        return f"{path}: task {name!r} (tasks.{i}): {fld}: {msg}"
    return f"{path}: {'.'.join(loc) or '(file)'}: {msg}"


def load_config(path: Path) -> BatchConfig:
    path = Path(path)
    if not path.exists():
        raise UserError(f"batch config {path} does not exist", "start from S1/batch.yaml")
    raw_tasks: list = []
    try:
        raw = safe_load(path.read_text(), source=str(path)) or {}
        if not isinstance(raw, dict):
            raise UserError(f"{path} must be a mapping with tasks: (or jobs:)", "see S1/batch.yaml for the layout")
        defaults = raw.get("defaults", {}) or {}
        if not isinstance(defaults, dict):
            raise UserError(f"{path}: defaults must be a mapping", "e.g. defaults: {days: [365], source: auto}")
        old_keys = set(Job.model_fields)
        jobs = [{**{k: v for k, v in defaults.items() if k in old_keys}, **j} if isinstance(j, dict) else j
                for j in raw.get("jobs", []) or []]
        history_only = {"end", "then", "derive", "lake", "rules"}
        raw_tasks = [{**{k: v for k, v in defaults.items() if t.get("mode") != "stream" or k not in history_only},
                      **t} if isinstance(t, dict) else t for t in raw.get("tasks", []) or []]
        extra = {k: v for k, v in raw.items() if k not in ("defaults", "jobs", "tasks")}
        return BatchConfig(defaults=defaults, jobs=jobs, tasks=raw_tasks, base=str(path.resolve().parent), **extra)
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})", "fix the syntax") from exc
    except ValidationError as exc:
        raise UserError(_error_line(path, exc, raw_tasks), "see S1/batch.yaml for the layout") from exc


# ----------------------------------------------------------------------- instruments
@dataclass(frozen=True)
class Instrument:
    name: str            # internal name (the lake's symbol folder, e.g. BTCUSDT)
    source: str          # the market the candles come from: spot | swap | future
    source_symbol: str   # the symbol as the exchange knows it (BTCUSDT, BTC/USDT, BTC-USDT-SWAP ...)
    exchange: str        # binance, okx ... (a CCXT id)
    price_scale: float   # multiply the exchange's prices by this to get the internal price (1000SHIB: 0.001)


def load_instruments(path: Path | str, pattern: str | None = None) -> list[Instrument]:
    """Rows of an ``instruments.csv`` (columns :data:`INSTRUMENT_COLUMNS`); ``pattern``: a regex
    searched in each row's ``name,source,source_symbol,exchange`` text.

    >>> [i.name for i in load_instruments(REPO / "S1/instruments.csv", "okx")]
    ['BTCUSDT-PERP']
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"instruments file {path} does not exist", "see S1/instruments.csv for the columns")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(line for line in f if line.strip() and not line.startswith("#")))
    if not rows or set(INSTRUMENT_COLUMNS) - set(rows[0]):
        raise UserError(f"{path} needs the columns {','.join(INSTRUMENT_COLUMNS)}", "see S1/instruments.csv")
    rx = re.compile(pattern, re.IGNORECASE) if pattern else None
    out = []
    for n, r in enumerate(rows, start=2):
        text = ",".join(str(r[c]).strip() for c in INSTRUMENT_COLUMNS[:4])
        if rx is not None and not rx.search(text):
            continue
        try:
            scale = float(r["price_scale"] or 1)
            if not scale > 0:
                raise ValueError
        except ValueError:
            raise UserError(f"{path} line {n}: price_scale {r['price_scale']!r} is not a positive number",
                            "e.g. 1 (or 0.001 for a 1000x contract)") from None
        source = (r["source"] or "spot").strip()
        if source not in ("spot", "swap", "future"):
            raise UserError(f"{path} line {n}: source {source!r} is not a market", "use spot, swap or future")
        out.append(Instrument(r["name"].strip(), source, r["source_symbol"].strip(),
                              (r["exchange"] or "binance").strip().lower(), scale))
    if not out:
        raise UserError(f"{path}: instruments_filter {pattern!r} matches no row" if pattern else f"{path} lists no "
                        "instrument", "loosen the filter or add rows")
    return out


# ----------------------------------------------------------------------- units of work
@dataclass
class Task:
    """One unit of work: a candle dataset (``kind="dataset"``), one market of the 1m lake
    (``"lake"``), or a whole stream task (``"stream"``: every exchange at once)."""

    symbol: str
    interval: str
    days: int
    job: TaskSpec
    kind: str = "dataset"
    exchange: str = "binance"
    market: str = "spot"
    name: str = ""                       # internal name (instruments) or the symbol
    price_scale: float = 1.0
    streams_by_exchange: dict = field(default_factory=dict)  # stream: {exchange: (market, [symbols])}

    @property
    def venue_token(self) -> str | None:
        from S1.ccxt_source import Venue

        return Venue(self.exchange, self.market).token

    @property
    def stem(self) -> str:
        if self.kind == "lake":
            return f"lake:{self.exchange}/{self.market}/{self.name}_{self.days}d"
        if self.kind == "stream":
            return f"stream:{self.job.name}"
        return self.dataset.stem

    @property
    def dataset(self) -> Dataset:
        return Dataset(self.symbol, self.interval, self.days, exchange=self.venue_token)

    @property
    def path(self) -> Path:
        return dataset_path(self.dataset)


@dataclass
class Outcome:
    task: Task
    status: str = "ok"
    detail: str = ""
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)


def _rows(spec: TaskSpec, base: str) -> list[tuple[str, str, str, str, float]]:
    """``(exchange, market, source_symbol, name, price_scale)`` of every market a task names."""
    if spec.instruments:
        p = Path(spec.instruments)
        if not p.is_absolute():
            p = next((c for c in (Path(base) / p, REPO / p) if c.is_file()), Path(base) / p)
        return [(i.exchange, i.source, i.source_symbol, i.name, i.price_scale)
                for i in load_instruments(p, spec.instruments_filter)]
    return [(ex, spec.market, s, s, 1.0) for ex in spec.exchanges for s in spec.symbols or []]


def select(config: BatchConfig, names: str | list[str] | None) -> list[TaskSpec]:
    """The tasks named in ``--tasks a,b`` (all when None); an unknown name lists the known ones."""
    tasks = config.all_tasks()
    if not names:
        return tasks
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    known = [t.name for t in tasks]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise UserError(f"unknown task {', '.join(map(repr, unknown))}", f"known tasks: {', '.join(known)}")
    return [t for t in tasks if t.name in wanted]


def expand(config: BatchConfig, pattern: str | None = None, *, names: str | list[str] | None = None) -> list[Task]:
    """The units of work of the selected tasks whose name or unit name matches ``pattern``."""
    rx = re.compile(pattern, re.IGNORECASE) if pattern else None
    units: list[Task] = []
    for spec in select(config, names):
        rows = _rows(spec, config.base)
        if spec.mode == "stream":
            by_ex: dict[str, tuple[str, list[str]]] = {}
            for ex, market, sym, _name, _scale in rows:
                by_ex.setdefault(ex, (market, []))[1].append(sym)
            units.append(Task("", (spec.intervals or ["1m"])[0], 0, spec, kind="stream", name=spec.name,
                              streams_by_exchange=by_ex))
            continue
        for ex, market, sym, name, scale in rows:
            for d in spec.days:
                if spec.lake:
                    units.append(Task(sym, "1m", d, spec, kind="lake", exchange=ex, market=market,
                                      name=_lake_name(name), price_scale=scale))
                    continue
                for i in spec.intervals or ["1h"]:
                    units.append(Task(sym, i, d, spec, exchange=ex, market=market, name=name, price_scale=scale))
    return [u for u in units if rx is None or rx.search(u.stem) or rx.search(u.job.name)]


def _lake_name(name: str) -> str:
    from S1.lake_store import lake_symbol

    return lake_symbol(name)


def sprint_command(step: str, task: Task) -> list[str]:
    common = ["--symbol", task.symbol, "--interval", task.interval, "--days", str(task.days)]
    if step == "S2":
        return [sys.executable, "S2/indicators.py", *common]
    if step == "S4":
        return [sys.executable, "S4/decision.py", *common, "--rules", task.job.rules]
    if step == "S5":
        return [sys.executable, "S5/backtest.py", *common]
    raise UserError(f"unknown sprint step {step!r}", "use S2, S4 or S5")


# ------------------------------------------------------------------------------- plan
def plan_lines(tasks: list[Task]) -> list[str]:
    from S1.history import find_gaps

    lines = []
    for t in tasks:
        if t.kind == "stream":
            lines += stream_plan(t)
            continue
        if t.kind == "lake":
            lines += lake_plan(t)
            continue
        path = t.path
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


def lake_plan(t: Task) -> list[str]:
    from S1.lake_store import plan_lake

    plan = plan_lake(symbol=t.name, days=t.days, end=t.job.end, exchange=t.exchange, market=t.market)
    todo = [p for p in plan if p.todo]
    lines = [f"{t.stem:32s} {len(plan)} month(s): {len(plan) - len(todo)} complete, {len(todo)} to fetch"
             + (f"; derive {' '.join(t.job.derive)}" if t.job.derive else "")]
    lines += [f"    {p.line()}" for p in plan]
    return lines


def stream_plan(t: Task) -> list[str]:
    spec = t.job
    streams = spec.streams or ["kline"]
    lines = [(f"{t.stem:32s} {len(t.streams_by_exchange)} connection(s) (one streamer per exchange) "
              f"for {spec.duration:g}s, streams {','.join(streams)}")]
    for ex, (market, symbols) in t.streams_by_exchange.items():
        out = stream_output(t, ex, market, symbols)
        lines.append(f"    {ex}/{market}: {','.join(symbols)} -> {out} ({'exists' if out.exists() else 'new'})")
    return lines


# ------------------------------------------------------------------------------- run
def run_task(task: Task, *, derive: list[str], progress: bool = False) -> Outcome:
    if task.kind == "stream":
        return run_stream(task)
    if task.kind == "lake":
        return run_lake(task, derive=derive)
    from S1.history import update_dataset

    out = Outcome(task)
    t0 = time.perf_counter()
    try:
        s = update_dataset(symbol=task.symbol, interval=task.interval, days=task.days, end=task.job.end,
                           source=task.job.source, progress=progress, exchange=task.exchange, market=task.market)
        out.detail = f"{s.rows:,} candles, +{s.new_rows:,}, gaps {len(s.gaps)}"
        out.steps.append("S1")
        if task.job.format != "parquet":
            from S1.formats import export_dataset

            export_dataset(s.path, task.job.format)
            out.steps.append(task.job.format)
        for target in derive:
            derive_dataset(task.symbol, task.interval, target, task.days, exchange=task.venue_token)
            out.steps.append(f"derive {target}")
        for step in task.job.then:
            r = subprocess.run(sprint_command(step, task), cwd=REPO, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                msg = (r.stderr.strip().splitlines() or ["failed"])[-1]
                raise UserError(f"{step} failed: {msg}")
            out.steps.append(step)
    except UserError as exc:
        out.status, out.detail = "FAILED", str(exc)
    except Exception as exc:  # noqa: BLE001 - continue-on-error: one job never stops the batch
        out.status, out.detail = "FAILED", f"{type(exc).__name__}: {exc}"
    out.seconds = time.perf_counter() - t0
    return out


def run_lake(task: Task, *, derive: list[str]) -> Outcome:
    from S1.lake_store import derive_lake, update_lake

    out = Outcome(task)
    t0 = time.perf_counter()
    try:
        s = update_lake(symbol=task.symbol, lake_name=task.name, days=task.days, end=task.job.end,
                        exchange=task.exchange, market=task.market, source=task.job.source,
                        price_scale=task.price_scale)
        out.detail = s.line()
        out.steps.append("lake 1m")
        targets = [t for t in derive if t != "1m"]
        if targets:
            n = derive_lake(symbol=task.name, targets=targets, exchange=task.exchange, market=task.market)
            out.steps.append(f"derive {' '.join(targets)} ({len(n)} partitions)")
    except UserError as exc:
        out.status, out.detail = "FAILED", str(exc)
    except Exception as exc:  # noqa: BLE001 - continue-on-error
        out.status, out.detail = "FAILED", f"{type(exc).__name__}: {exc}"
    out.seconds = time.perf_counter() - t0
    return out


def derive_only(task: Task, *, derive: list[str]) -> Outcome:
    """Rebuild derived files/partitions from what is on disk (no network request)."""
    out = Outcome(task)
    t0 = time.perf_counter()
    try:
        if task.kind == "stream":
            out.status, out.detail = "skipped", "a stream task has nothing to derive"
        elif task.kind == "lake":
            from S1.lake_store import derive_lake

            targets = [t for t in derive if t != "1m"]
            n = derive_lake(symbol=task.name, targets=targets, exchange=task.exchange, market=task.market)
            out.detail = f"{len(n)} partition(s) rebuilt"
            out.steps.append(f"derive {' '.join(targets)}")
        else:
            if not task.path.exists():
                raise UserError(f"{task.path} does not exist: nothing to derive from", "run the task once without "
                                "--derive-only")
            for target in derive:
                if can_derive(task.interval, target):
                    derive_dataset(task.symbol, task.interval, target, task.days, exchange=task.venue_token)
                    out.steps.append(f"derive {target}")
            out.detail = "derived from the file on disk"
    except UserError as exc:
        out.status, out.detail = "FAILED", str(exc)
    out.seconds = time.perf_counter() - t0
    return out


def run_job(job: tuple) -> Outcome:
    """:func:`run_task` of one ``(task, derive[, derive_only])`` tuple: what :func:`S1.fanout.fan_out`
    sends to a worker."""
    task, derive, *rest = job
    if rest and rest[0]:
        return derive_only(task, derive=derive)
    return run_task(task, derive=derive)


def derive_dataset(symbol: str, source: str, target: str, days: int, *, exchange: str | None = None) -> Path | None:
    """Write ``<symbol>_<target>_<days>d.parquet`` resampled from the ``source`` file."""
    if target == source:
        return None
    check_interval(target)
    if not can_derive(source, target):
        raise UserError(f"cannot derive {target} from {source}", "derive only whole multiples (1m -> 5m, 1h -> 4h)")
    src = dataset_path(Dataset(symbol, source, days, exchange=exchange))
    df = read_candles(src)
    meta = read_metadata(src)
    cov = (meta["coverage_start_ms"], meta["coverage_end_ms"]) if "coverage_start_ms" in meta else None
    out = resample_candles(df, source, target, coverage=cov)
    path = dataset_path(Dataset(symbol, target, days, exchange=exchange))
    write_parquet(out, path, metadata={**meta, "interval": target, "derived_from": source,
                                       "sources": meta.get("sources", []) + [f"derived from {source}"]})
    return path


def sorted_targets(derive: list[str]) -> list[str]:
    for d in derive:
        check_interval(d)
    return sorted(set(derive), key=lambda i: INTERVAL_MS.get(i, 31 * 86_400_000))


# ----------------------------------------------------------------------------- streams
def stream_output(t: Task, exchange: str, market: str, symbols: list[str]) -> Path:
    """The one file the streamer of ``exchange`` writes (its own default name)."""
    from S1.ccxt_source import Venue
    from S1.datasets import book_realtime_path, realtime_db_path

    token = Venue(exchange, market).token
    syms = [normalize_symbol(s.split(":")[0]) for s in symbols]
    if t.job.streams and t.job.streams[0] in BOOK_STREAMS:
        return book_realtime_path(syms, fmt=t.job.format if t.job.format != "csv" else "sqlite", exchange=token)
    kind = "kline" if not t.job.streams or t.job.streams[0] == "kline" else "trades"
    return realtime_db_path(syms, t.interval, kind=kind, exchange=token)


def streamer_command(t: Task, exchange: str, market: str, symbols: list[str], stats: Path) -> list[str]:
    spec = t.job
    if exchange == "binance" and market == "spot":
        symbols = [normalize_symbol(s) for s in symbols]
    cmd = [sys.executable, "S1/streamer.py", "--exchange", exchange, "--market", market,
           "--symbols", ",".join(symbols), "--duration", f"{spec.duration:g}", "--stats-json", str(stats),
           "--status-every", "3600"]
    streams = spec.streams or ["kline"]
    if streams[0] in BOOK_STREAMS:
        cmd += ["--streams", ",".join(streams), "--book-format", spec.format if spec.format != "csv" else "sqlite"]
    else:
        cmd += ["--interval", t.interval]
        if streams[0] == "trades":
            cmd += ["--stream", "trades"]
    return cmd


def run_stream(task: Task) -> Outcome:
    """Start one ``S1/streamer.py`` per exchange (at once), let them run ``duration`` seconds, stop
    them cleanly (they stop themselves; SIGTERM after a grace period), report the rows written."""
    out = Outcome(task)
    t0 = time.perf_counter()
    spec = task.job
    with tempfile.TemporaryDirectory(prefix="batch-stream-") as tmp:
        procs = {}
        for ex, (market, symbols) in task.streams_by_exchange.items():
            stats = Path(tmp) / f"{ex}-{market}.json"
            log = open(Path(tmp) / f"{ex}-{market}.log", "w+")  # noqa: SIM115 - closed once the streamer ends
            procs[ex] = (subprocess.Popen(streamer_command(task, ex, market, symbols, stats), cwd=REPO,
                                          stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()),
                         stats, log, market, symbols)
        details, failed = [], False
        deadline = time.monotonic() + float(spec.duration) + 120.0
        for ex, (proc, stats, log, market, symbols) in procs.items():
            try:
                code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)     # the streamer flushes and exits 0 on SIGTERM
                try:
                    code = proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
            log.seek(0)
            text = log.read()
            log.close()
            if code != 0 or not stats.exists():
                failed = True
                last = (text.strip().splitlines() or [f"exit {code}"])[-1]
                details.append(f"{ex}: FAILED ({last})")
                continue
            d = json.loads(stats.read_text())
            rows = d.get("rows_committed")
            if rows is None:
                rows = sum(int(d.get(k, 0)) for k in ("books_recorded", "book_tickers", "tickers"))
            details.append(f"{ex}: {rows:,} rows -> {d.get('db_path')}")
            out.steps.append(f"stream {ex}")
    out.status = "FAILED" if failed else "ok"
    out.detail = "; ".join(details)
    out.seconds = time.perf_counter() - t0
    return out
