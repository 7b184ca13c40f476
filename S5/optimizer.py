"""Optuna search of a rule file's ``params`` ranges -- honest by construction.

- **Train first, test after.** The bars are split in time at ``train_frac``
  (default 70 %). The objective function only ever receives the training bars: the
  rules are evaluated on them (S4 is causal -- see the look-ahead check) and the
  backtest runs on them. The test bars are touched once, after the search, to
  report the chosen parameters' out-of-sample metrics beside the in-sample ones
  (and the rule file's default parameters on both segments, for reference).
  Each segment is backtested on its own, starting flat with the same cash.
- **Minimum trade count.** A trial with fewer than ``min_trades`` closed trades on
  the training bars (or an undefined objective) is *pruned*: TPE treats it as a
  failure, and it can never be "best" -- a strategy that traded twice and got
  lucky does not win.
- **Seeded TPE** (``TPESampler(seed, multivariate=True)``; the seed is offset by the
  number of finished trials so a resumed study does not replay its first draws).
- **Persisted and resumable.** ``storage`` is any Optuna storage URL (default
  ``sqlite:///<data dir>/optuna.db``); ``load_if_exists=True``; ``n_trials`` is the
  study's *total* (finished trials count), enforced with Optuna's
  ``MaxTrialsCallback`` -- so several machines running the same command against one
  PostgreSQL URL share the work and stop together. A study remembers what it was
  created for (market, window, rules' search space, objective, split, costs, risk):
  resuming it with different settings is refused.

>>> import pandas as pd
>>> from S1.offline import simulate_candles
>>> from S2.ta import add_indicators
>>> from S4.rules import parse_rules
>>> ta = add_indicators(simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-02-15"))
>>> rules = parse_rules("params: {lo: {value: 30, low: 20, high: 45}}\\n"
...                     "entry: {col: rsi14, op: crosses_above, param: lo}\\nexit: {col: rsi14, op: '>', value: 65}")
>>> res = optimize(ta, rules, interval="1h", config=OptimizeConfig(n_trials=12, min_trades=3), progress=False)
>>> sorted(res.best_params), res.best_rules.param("lo") == res.best_params["lo"], res.split.train_end < len(ta)
(['lo'], True, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.datasets import Dataset, best_rules_path, optuna_storage_url
from S1.errors import UserError
from S5.engine import BacktestResult, Costs, run_backtest
from S5.metrics import to_jsonable
from S5.trial_loop import (
    DEFAULT_HEARTBEAT,
    SAMPLERS,
    best_trial,
    make_sampler,
    open_storage,
    run_trials,
    trial_lock,
)

log = logging.getLogger(__name__)

OBJECTIVES = ("sharpe", "calmar", "sortino", "total_return")
#: Metrics shown side by side (in-sample / out-of-sample).
REPORT_METRICS = ("total_return", "cagr", "sharpe", "sortino", "calmar", "max_drawdown", "win_rate",
                  "profit_factor", "n_trades", "exposure", "fees_paid", "buy_and_hold_return")


@dataclass(frozen=True)
class OptimizeConfig:
    """Settings of a search (frozen, checked on creation)."""

    objective: str = "sharpe"
    n_trials: int = 200
    train_frac: float = 0.7
    min_trades: int = 20
    seed: int = 42
    costs: Costs = Costs()
    init_cash: float = 10_000.0
    risk: Any = None  # an S6 RiskConfig or None
    sampler: str = "tpe"
    heartbeat: int = DEFAULT_HEARTBEAT  # seconds; a trial silent for twice this is marked FAIL
    worker_index: int = 0  # 0: the command's own process; 1..: extra local workers (TPE seed offset)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown --sampler {self.sampler!r}", f"use one of {', '.join(SAMPLERS)}")
        if isinstance(self.heartbeat, bool) or not isinstance(self.heartbeat, int) or not 1 <= self.heartbeat <= 3600:
            raise UserError(f"--heartbeat must be whole seconds from 1 to 3600, got {self.heartbeat!r}",
                            "e.g. --heartbeat 30")
        if self.objective not in OBJECTIVES:
            raise UserError(f"unknown objective {self.objective!r}", f"use one of {', '.join(OBJECTIVES)}")
        if isinstance(self.n_trials, bool) or not isinstance(self.n_trials, int) or not 1 <= self.n_trials <= 100_000:
            raise UserError(f"--trials must be a whole number from 1 to 100000, got {self.n_trials!r}",
                            "e.g. --trials 200")
        if not (isinstance(self.train_frac, (int, float)) and 0.3 <= self.train_frac <= 0.95):
            raise UserError(f"--train-frac {self.train_frac!r} is out of range",
                            "use a share of the bars from 0.3 to 0.95 (e.g. 0.7: 70 % train, 30 % test)")
        if isinstance(self.min_trades, bool) or not isinstance(self.min_trades, int) or self.min_trades < 1:
            raise UserError(f"--min-trades must be a whole number >= 1, got {self.min_trades!r}",
                            "e.g. --min-trades 20")
        if not (np.isfinite(self.init_cash) and self.init_cash > 0):
            raise UserError(f"--init-cash must be positive, got {self.init_cash!r}", "e.g. --init-cash 10000")


@dataclass(frozen=True)
class Split:
    """Bars ``[0, train_end)`` train, ``[train_end, n)`` test."""

    n: int
    train_end: int
    train_start_time: pd.Timestamp
    test_start_time: pd.Timestamp
    end_time: pd.Timestamp

    @classmethod
    def of(cls, index: pd.DatetimeIndex, train_frac: float, *, min_bars: int = 50) -> Split:
        n = len(index)
        te = round(n * train_frac)
        if te < min_bars or n - te < min_bars:
            raise UserError(f"{n} bars split at {train_frac:.0%} leave {te} train / {n - te} test bars",
                            f"use a longer window (at least {min_bars} bars on each side) or another --train-frac")
        return cls(n, te, index[0], index[te], index[-1])

    def as_dict(self) -> dict[str, Any]:
        return {"bars": self.n, "train_bars": self.train_end, "test_bars": self.n - self.train_end,
                "train": [self.train_start_time.isoformat(), self.test_start_time.isoformat()],
                "test": [self.test_start_time.isoformat(), self.end_time.isoformat()]}


@dataclass
class OptimizeResult:
    """The study, the chosen parameters and their in-/out-of-sample backtests."""

    study: Any
    best_params: dict[str, Any]
    best_rules: Any
    best_value: float
    split: Split
    config: OptimizeConfig
    in_sample: BacktestResult
    out_of_sample: BacktestResult
    default_in_sample: BacktestResult
    default_out_of_sample: BacktestResult
    counts: dict[str, int] = field(default_factory=dict)
    default_params: dict[str, Any] = field(default_factory=dict)
    edges: dict[str, str] = field(default_factory=dict)   # params that ended on an edge of their range

    @property
    def defaults_win_out_of_sample(self) -> bool:
        """True when the rule file's defaults beat the optimised params on the test bars (the objective)."""
        b = self.out_of_sample.metrics.get(self.config.objective)
        d = self.default_out_of_sample.metrics.get(self.config.objective)
        return b is not None and d is not None and np.isfinite(b) and np.isfinite(d) and d > b

    def verdicts(self) -> list[str]:
        """Plain sentences a user should read before trusting the result."""
        out = []
        if self.defaults_win_out_of_sample:
            out.append(f"The rule file's DEFAULT params beat the optimised ones out of sample "
                       f"({self.config.objective}): the search fitted noise in the training bars.")
        for k, side in self.edges.items():
            out.append(f"{k} = {self.best_params[k]} is on the {side} edge of its range: the best value may lie "
                       f"outside it -- widen the range and search again.")
        n = self.out_of_sample.metrics.get("n_trades")
        if n is not None and n < 30:
            out.append(f"Only {int(n)} trades out of sample: too few to tell skill from luck.")
        return out

    def comparison(self) -> pd.DataFrame:
        """Rows: metrics; columns: best in-sample / out-of-sample, defaults in / out."""
        cols = {"best: in-sample (train)": self.in_sample, "best: out-of-sample (test)": self.out_of_sample,
                "defaults: in-sample": self.default_in_sample, "defaults: out-of-sample": self.default_out_of_sample}
        return pd.DataFrame({k: [v.metrics.get(m) for m in REPORT_METRICS] for k, v in cols.items()},
                            index=list(REPORT_METRICS))

    def summary(self) -> dict[str, Any]:
        return to_jsonable({
            "objective": self.config.objective, "best_value_in_sample": self.best_value,
            "best_params": self.best_params, "default_params": self.default_params,
            "split": self.split.as_dict(), "min_trades": self.config.min_trades,
            "trials": self.counts, "study_name": self.study.study_name,
            "in_sample": {m: self.in_sample.metrics.get(m) for m in REPORT_METRICS},
            "out_of_sample": {m: self.out_of_sample.metrics.get(m) for m in REPORT_METRICS},
            "defaults_in_sample": {m: self.default_in_sample.metrics.get(m) for m in REPORT_METRICS},
            "defaults_out_of_sample": {m: self.default_out_of_sample.metrics.get(m) for m in REPORT_METRICS},
            "costs": self.config.costs.as_dict(),
            "init_cash": self.config.init_cash,
            "params_on_range_edge": self.edges,
            "defaults_win_out_of_sample": self.defaults_win_out_of_sample,
            "verdicts": self.verdicts(),
        })


# --------------------------------------------------------------------------- study
def default_storage() -> str:
    """``sqlite:///<data dir>/optuna.db``."""
    return optuna_storage_url()


def _hide_password(text: str, url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        pw = make_url(url).password
    except Exception:
        pw = None
    return text.replace(str(pw), "***") if pw else text


def redact_url(url: str) -> str:
    """A storage URL without its password (``postgresql://u:***@host/db``)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


#: what each part of a study's fingerprint is called in messages (and the option that sets it)
FINGERPRINT_PARTS = {"rules": "the rule file's conditions or search space (--rules)", "objective": "--objective",
                     "split": "the train/test split (--train-frac, or a longer/shorter data window)",
                     "min_trades": "--min-trades", "costs": "costs (--fees, --slippage, fee model, filters)",
                     "init_cash": "--init-cash", "risk": "risk settings (--risk)",
                     "market": "the market or data window (--symbol, --interval, --days, new candles)"}


def fingerprint_parts(rules, *, objective: str, split: Split, config: OptimizeConfig,
                      market: dict[str, Any]) -> dict[str, str]:
    """A short hash per part of what a study was created for (see :data:`FINGERPRINT_PARTS`)."""
    structure = rules.to_dict()
    structure["params"] = rules.param_space()  # the search space, not the current values
    doc = {"rules": structure, "objective": objective, "split": split.as_dict(), "min_trades": config.min_trades,
           "costs": [config.costs.fees, config.costs.slippage] + ([] if config.costs.is_plain
                                                                   else [config.costs.as_dict()]),
           "init_cash": config.init_cash,
           "risk": config.risk.model_dump() if config.risk is not None else None, "market": market}
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:12]
            for k, v in doc.items()}


def fingerprint(rules, *, objective: str, split: Split, config: OptimizeConfig, market: dict[str, Any]) -> str:
    """What a study was created for (a resumed study must match it); its parts are stored beside it."""
    parts = fingerprint_parts(rules, objective=objective, split=split, config=config, market=market)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _study(storage: str | None, study_name: str | None, fp: str, config: OptimizeConfig, *,
           description: dict[str, Any], parts: dict[str, str] | None = None, fresh: bool = False):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if fresh and storage is not None:
        with contextlib.suppress(Exception):  # an unreadable storage is reported by create_study below
            delete_stored_study(storage, study_name)
    try:
        probe = optuna.create_study(storage=open_storage(storage, heartbeat=config.heartbeat),
                                    study_name=study_name, direction="maximize", load_if_exists=True)
    except (ImportError, ModuleNotFoundError) as exc:
        raise UserError(f"the storage {redact_url(storage or '')} needs a missing driver ({exc})",
                        "install it: pip install 'psycopg[binary]' for postgresql:// URLs (psycopg2-binary for postgresql+psycopg2://)") from None
    except UserError:
        raise
    except Exception as exc:  # bad URL, unreachable server, locked/corrupt file
        first = _hide_password(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, storage or "")
        raise UserError(f"cannot open the Optuna storage {redact_url(storage or '')}: {first[:200]}",
                        "pass a valid URL, e.g. --storage sqlite:///data/optuna.db or "
                        "postgresql://user:pass@host/db") from None
    if probe.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"study {study_name!r} minimises its objective", "pass a new --study-name")
    old = probe.user_attrs.get("fingerprint")
    finished = [t for t in probe.get_trials(deepcopy=False)
                if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    if old is None:
        if finished:
            raise UserError(f"study {study_name!r} already holds {len(finished)} trials from another tool",
                            "pass a new --study-name")
        probe.set_user_attr("fingerprint", fp)
        if parts:
            probe.set_user_attr("fingerprint_parts", parts)
        for k, v in description.items():
            probe.set_user_attr(k, to_jsonable(v))
    elif old != fp:
        stored = probe.user_attrs.get("fingerprint_parts") or {}
        differ = [FINGERPRINT_PARTS[k] for k in FINGERPRINT_PARTS if parts and stored and stored.get(k) != parts.get(k)]
        what = "; ".join(differ) if differ else "market, window, search space, objective, split, costs or risk"
        raise UserError(f"study {study_name!r} was created with other settings -- differs: {what}",
                        "add --fresh to start it again, pass a new --study, or the same settings to resume it")
    probe.sampler = make_sampler(config.sampler, config.seed, offset=len(finished) + 100_003 * config.worker_index)
    return probe


@dataclass
class _Data:
    frame: pd.DataFrame
    arrays: dict[str, np.ndarray]
    split: Split
    interval: str


def _segment_backtest(data: _Data, rules, config: OptimizeConfig, lo: int, hi: int,
                      signals=None) -> BacktestResult:
    from S4.evaluate import evaluate_arrays

    if signals is None:
        arrays = {k: v[:hi] for k, v in data.arrays.items()}
        signals = evaluate_arrays(arrays, rules, hi)
    part = data.frame.iloc[lo:hi]
    return run_backtest(part, interval=data.interval, costs=config.costs, init_cash=config.init_cash,
                        entries=signals.entry[lo:hi], exits=signals.exit[lo:hi], risk=config.risk)


def objective_value(metrics: dict[str, Any], objective: str) -> float:
    v = metrics.get(objective)
    return float(v) if v is not None else float("nan")


def trial_score(metrics: dict[str, Any], config) -> float:
    """A trial's value: ``config.objective`` of its training ``metrics``. The trial is
    pruned (``optuna.TrialPruned`` with the reason) when it made fewer than
    ``config.min_trades`` trades or the objective is undefined (e.g. Sharpe of a flat
    curve). The one scoring rule of the single-market and portfolio searches.

    >>> trial_score({"n_trades": 40, "sharpe": 1.5}, OptimizeConfig(min_trades=20))
    1.5
    >>> trial_score({"n_trades": 3, "sharpe": 1.5}, OptimizeConfig(min_trades=20))
    Traceback (most recent call last):
    ...
    optuna.exceptions.TrialPruned: 3 trades < min 20
    """
    import optuna

    n = int(metrics["n_trades"])
    if n < config.min_trades:
        raise optuna.TrialPruned(f"{n} trades < min {config.min_trades}")
    value = objective_value(metrics, config.objective)
    if not np.isfinite(value):
        raise optuna.TrialPruned(f"{config.objective} is undefined")
    return value


def search(data: _Data, rules, study, config: OptimizeConfig, lo: int, hi: int, *, progress: bool = True,
           storage: str | None = None, report_only: bool = False, search_only: bool = False):
    """Run ``study`` to ``config.n_trials`` finished trials on the bars ``[lo, hi)``:
    the rules are evaluated on the rows before ``hi`` only (the later rows are not even
    passed in) and backtested on ``[lo, hi)``, starting flat. Returns the best trial
    and the trial counts by state; no complete trial is a :class:`UserError`.
    Several workers (processes, machines) may run this on one study at once (see
    :mod:`S5.trial_loop`): the study ends with exactly ``n_trials`` finished trials.
    ``report_only``: run no trial, read the study as it is; ``search_only``: a worker
    that only adds trials (returns ``(None, {})``)."""
    import optuna

    from S4.evaluate import evaluate_arrays

    past = {k: v[:hi] for k, v in data.arrays.items()}

    def objective(trial) -> float:
        r = rules.suggest(trial)
        sig = evaluate_arrays(past, r, hi)
        res = _segment_backtest(data, r, config, lo, hi, signals=sig)
        m = res.metrics
        trial.set_user_attr("train", to_jsonable({k: m.get(k) for k in (
            "n_trades", "total_return", "sharpe", "sortino", "calmar", "max_drawdown")}))
        return trial_score(m, config)

    if not report_only:
        run_trials(study, objective, config.n_trials, lock=trial_lock(storage, study.study_name),
                   progress=progress, heartbeat=config.heartbeat)
    if search_only:
        return None, {}
    trials = study.get_trials(deepcopy=False)
    if report_only and not trials:
        raise UserError(f"study {study.study_name!r} holds no trial yet", "run the same command without --report-only")
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    counts = {k: v for k, v in counts.items() if v}
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        seen = [int(t.user_attrs["train"]["n_trades"]) for t in trials
                if isinstance(t.user_attrs.get("train"), dict) and t.user_attrs["train"].get("n_trades") is not None]
        best_seen = f"; the most any trial made was {max(seen)}" if seen else ""
        raise UserError(f"no trial reached {config.min_trades} trades on the training bars "
                        f"({counts.get('pruned', 0)} pruned{best_seen})",
                        f"lower --min-trades (e.g. --min-trades {max(1, max(seen) if seen else 1)}), widen the "
                        "params ranges, or use a longer window")
    return best_trial(study), counts


def optimize(frame: pd.DataFrame, rules, *, interval: str, config: OptimizeConfig = OptimizeConfig(),
             storage: str | None = None, study_name: str | None = None, market: dict[str, Any] | None = None,
             progress: bool = True, report_only: bool = False, search_only: bool = False, fresh: bool = False,
             add_trials: int | None = None) -> OptimizeResult | None:
    """Search ``rules.param_space()`` on the training bars of ``frame`` (the ``_ta``
    frame with any sentiment / ML columns the rules read already joined)."""
    from S4.evaluate import evaluate_arrays, prepare_arrays

    space = rules.param_space()
    if not space:
        raise UserError("the rule file has no searchable params (no low/high or choices)",
                        "give params ranges, e.g. rsi_buy: {value: 30, low: 20, high: 40}")
    split = Split.of(frame.index, config.train_frac)
    data = _Data(frame, prepare_arrays(frame, rules), split, interval)
    te = split.train_end
    parts = fingerprint_parts(rules, objective=config.objective, split=split, config=config, market=market or {})
    fp = fingerprint(rules, objective=config.objective, split=split, config=config, market=market or {})
    study = _study(storage, study_name, fp, config, parts=parts, fresh=fresh,
                   description={"objective": config.objective, "split": split.as_dict(), "market": market or {},
                                "search_space": space})
    if add_trials is not None:
        config = _with_added_trials(study, config, add_trials)
    default_train = _segment_backtest(data, rules, config, 0, te) if not (search_only or report_only) else None
    if default_train is not None:
        n_def = int(default_train.metrics["n_trades"])
        say = log.warning if n_def < config.min_trades else log.info
        say("the rule file's default params make %d trades on the training bars (--min-trades %d)%s", n_def,
            config.min_trades, ": trials near the defaults will be pruned; lower --min-trades or widen the ranges"
            if n_def < config.min_trades else "")

    best, counts = search(data, rules, study, config, 0, te, progress=progress, storage=storage,
                          report_only=report_only, search_only=search_only)
    if search_only:
        return None
    best_rules = rules.with_params(**{k: v for k, v in best.params.items() if k in space})
    best_params = {k: best_rules.param(k) for k in space}  # checked values (no 0.30000000000000004)
    n = split.n
    full_arrays = data.arrays
    best_sig = evaluate_arrays(full_arrays, best_rules, n)
    default_sig = evaluate_arrays(full_arrays, rules, n)
    ins = _segment_backtest(data, best_rules, config, 0, te, signals=best_sig)
    oos = _segment_backtest(data, best_rules, config, te, n, signals=best_sig)
    d_ins = _segment_backtest(data, rules, config, 0, te, signals=default_sig)
    d_oos = _segment_backtest(data, rules, config, te, n, signals=default_sig)
    return OptimizeResult(study, best_params, best_rules, float(best.value), split, config, ins, oos, d_ins, d_oos,
                          counts, rules.params, edges=params_on_edges(best_params, space))


def default_study_name(dataset: Dataset, rules_path: str | Path, objective: str) -> str:
    """``<symbol>_<interval>_<days>d_<rules>_<objective>``, the study ``python S5/optimize.py`` uses by default."""
    from S1.datasets import dataset_stem

    return f"{dataset_stem(dataset)}_{Path(rules_path).stem}_{objective}"


def finished_trials(storage: str, study_name: str) -> int:
    """Complete + pruned trials stored for ``study_name`` (0 when there is no such study)."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage, heartbeat=None))
    except KeyError:
        return 0
    S = optuna.trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED)))


def delete_stored_study(storage: str, study_name: str) -> bool:
    """``--fresh``: delete ``study_name`` and its trials from ``storage`` (True when there was one)."""
    import optuna

    try:
        optuna.delete_study(study_name=study_name, storage=open_storage(storage, heartbeat=None))
    except KeyError:
        return False
    log.warning("--fresh: deleted the stored study %r and its trials", study_name)
    return True


def _with_added_trials(study, config: OptimizeConfig, add: int) -> OptimizeConfig:
    """``--add-trials N``: the budget becomes the finished trials already stored + N."""
    from dataclasses import replace

    import optuna

    if isinstance(add, bool) or not isinstance(add, int) or not 1 <= add <= 100_000:
        raise UserError(f"--add-trials must be a whole number from 1 to 100000, got {add!r}", "e.g. --add-trials 50")
    S = optuna.trial.TrialState
    done = len(study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED)))
    return replace(config, n_trials=done + add)


def params_on_edges(best: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Best params that ended on an edge of their range (``{"rsi_buy": "low"}``): the optimum may lie
    outside the range searched -- widen it before trusting the value.

    >>> params_on_edges({"a": 20, "b": 30, "c": 0.5}, {"a": {"low": 20, "high": 40, "step": 1},
    ...     "b": {"low": 20, "high": 40, "step": 1}, "c": {"choices": [0.5, 1.0]}})
    {'a': 'low'}
    """
    out = {}
    for k, v in best.items():
        sp = space.get(k) or {}
        if sp.get("low") is None or sp.get("high") is None:
            continue
        lo, hi = float(sp["low"]), float(sp["high"])
        tol = float(sp.get("step") or 0) / 2 or (hi - lo) * 1e-3
        if float(v) <= lo + tol:
            out[k] = "low"
        elif float(v) >= hi - tol:
            out[k] = "high"
    return out


# --------------------------------------------------------------------------- files
def optimization_html(res: OptimizeResult, *, title: str, simulated: bool) -> str:
    """History, parameter importances, slices and the in-/out-of-sample table."""
    import html as _html

    import optuna.visualization as ov

    from S5.metrics import format_metric
    from S5.report import figure_div, html_page

    if simulated and "simulated" not in title.lower():
        title += " -- SIMULATED market data"
    comp = res.comparison()
    head = "".join(f"<th>{_html.escape(c)}</th>" for c in ["metric", *comp.columns])
    rows = "".join("<tr><th>" + m.replace("_", " ") + "</th>"
                   + "".join(f"<td>{format_metric(m, comp.loc[m, c])}</td>" for c in comp.columns) + "</tr>"
                   for m in comp.index)
    sp = res.split.as_dict()
    intro = (f"<p class='note'>Objective <b>{res.config.objective}</b> maximised on the training bars "
             f"{sp['train'][0]} .. {sp['train'][1]} ({sp['train_bars']:,} bars); parameters evaluated once on the "
             f"test bars {sp['test'][0]} .. {sp['test'][1]} ({sp['test_bars']:,} bars). Trials: "
             f"{_html.escape(json.dumps(res.counts))}; pruned = fewer than {res.config.min_trades} trades or an "
             f"undefined objective.</p>")
    body = [intro,
            f"<h2>Chosen on train, checked on test</h2><table><tr>{head}</tr>{rows}</table>",
            "<h2>Best parameters</h2><table><tr><th>param</th><th>best</th><th>rule file default</th></tr>"
            + "".join(f"<tr><th>{_html.escape(k)}</th><td>{v}</td><td>{res.default_params.get(k, '')}</td></tr>"
                      for k, v in res.best_params.items())
            + "</table>"]
    verdicts = res.verdicts()
    if verdicts:
        body.insert(0, "<div class='warn'><b>Read this first</b><ul>"
                    + "".join(f"<li>{_html.escape(v)}</li>" for v in verdicts) + "</ul></div>")
    figs = [("Best vs default parameters: equity, train then test", lambda: _equity_figure(res)),
            ("Optimisation history", lambda: ov.plot_optimization_history(res.study)),
            ("Parameter importances (fANOVA)", lambda: ov.plot_param_importances(res.study))]
    figs += [(f"Slice: {p}", lambda p=p: _slice_figure(res.study, p)) for p in res.best_params]
    for name, make in figs:
        try:
            body.append(f"<h2>{name}</h2>" + figure_div(make()))
        except Exception as exc:  # e.g. importances need 2+ complete trials with varied params
            body.append(f"<h2>{name}</h2><p class='note'>not available: {_html.escape(str(exc))}</p>")
    return html_page(title, "".join(body))


def _slice_figure(study, param: str):
    """One parameter's slice plot, sized for the page (Optuna's all-in-one slice is cut off past ~4 params)."""
    import optuna.visualization as ov

    fig = ov.plot_slice(study, params=[param])
    fig.update_layout(height=380, width=None, autosize=True, margin={"l": 60, "r": 20, "t": 40, "b": 50})
    return fig


def _equity_figure(res: OptimizeResult):
    """Equity of the best and the default params on the training bars then the test bars, the split marked.
    Each segment starts flat with the same cash (as the search and the out-of-sample check did)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, ins, oos, color in (("optimised", res.in_sample, res.out_of_sample, "#1f77b4"),
                                  ("rule file defaults", res.default_in_sample, res.default_out_of_sample, "#999999")):
        for seg, r, dash in (("train", ins, "solid"), ("test", oos, "dot")):
            fig.add_trace(go.Scatter(x=r.equity.index, y=r.equity.to_numpy(), name=f"{name} ({seg})",
                                     line={"color": color, "dash": dash}, legendgroup=name))
    split_at = res.split.test_start_time
    fig.add_vline(x=split_at, line_dash="dash", line_color="#d62728")
    fig.add_annotation(x=split_at, y=1, yref="paper", text="train | test", showarrow=False, yanchor="bottom")
    fig.update_layout(height=420, yaxis_title="equity (quote)", legend={"orientation": "h", "y": -0.15},
                      margin={"l": 60, "r": 20, "t": 30, "b": 40})
    return fig


@dataclass
class OptimizeRun:
    result: OptimizeResult
    simulated: bool
    paths: dict[str, Path]
    storage: str


def optimize_files(dataset: Dataset, rules_path: str | Path, *,
                   config: OptimizeConfig = OptimizeConfig(), storage: str | None = None,
                   study_name: str | None = None, progress: bool = True, report: bool = True,
                   report_only: bool = False, search_only: bool = False, fresh: bool = False,
                   add_trials: int | None = None) -> OptimizeRun | None:
    """The job behind ``python S5/optimize.py``: search, then write the best rules YAML,
    the HTML report and a JSON summary. ``search_only`` (an extra worker): add trials to
    the study and write nothing; ``report_only``: add no trial, report the study as it is."""
    from S1.datasets import atomic_write_text, report_path
    from S4.rules import load_rules
    from S4.signals import load_rule_inputs

    rules = load_rules(rules_path)  # fail fast on the file itself, before reading data
    inputs = load_rule_inputs(dataset, rules, rules_path=rules_path)
    frame, simulated, sources = inputs
    storage = storage or default_storage()
    study_name = study_name or default_study_name(dataset, rules_path, config.objective)
    market = {"symbol": dataset.symbol, "interval": dataset.interval, "days": dataset.days,
              "first": frame.index[0].isoformat() if len(frame) else None,
              "last": frame.index[-1].isoformat() if len(frame) else None, "rows": len(frame)}
    res = optimize(frame, rules, interval=dataset.interval, config=config, storage=storage,
                   study_name=study_name,
                   market=market, progress=progress, report_only=report_only, search_only=search_only,
                   fresh=fresh, add_trials=add_trials)
    if res is None:
        return None
    ins, oos = res.in_sample.metrics, res.out_of_sample.metrics
    header = (f"# Optimised by S5/optimize.py from {Path(rules_path).as_posix()} on {dataset.symbol} "
              f"{dataset.interval} {dataset.days}d{' (SIMULATED data)' if simulated else ''}\n"
              f"# objective {config.objective}: in-sample {res.best_value:.4f} on "
              f"{res.split.train_start_time:%Y-%m-%d}..{res.split.test_start_time:%Y-%m-%d}; out-of-sample "
              f"{config.objective} {_fmt(oos.get(config.objective))}, total return {_fmt(oos.get('total_return'))} "
              f"({_fmt(oos.get('n_trades'))} trades) on {res.split.test_start_time:%Y-%m-%d}.."
              f"{res.split.end_time:%Y-%m-%d}\n# study {study_name!r} in {redact_url(storage)}\n"
              f"# use it: python S4/decision.py --symbol {dataset.symbol} --interval {dataset.interval} "
              f"--days {dataset.days} --rules <this file>\n")
    paths = {"rules": best_rules_path(dataset, rules_path),
             "json": report_path(dataset, "optimize", "json", rules=rules_path)}
    summary = {"symbol": dataset.symbol, "interval": dataset.interval, "days": dataset.days,
               "rules": str(rules_path), "simulated": simulated, "sources": sources,
               "storage": redact_url(storage), **res.summary(),
               "in_sample_objective_check": ins.get(config.objective)}
    html_text = None
    if report:
        paths["html"] = report_path(dataset, "optimize", "html", rules=rules_path)
        html_text = optimization_html(res, title=f"{dataset.label}: optimising "
                                      f"{Path(rules_path).name} ({config.objective})", simulated=simulated)
    atomic_write_text(paths["rules"], header + res.best_rules.to_yaml())
    atomic_write_text(paths["json"], json.dumps(to_jsonable(summary), indent=2, allow_nan=False))
    if html_text is not None:
        from S1.report_page import write_page

        write_page(paths["html"], html_text)
    return OptimizeRun(res, simulated, paths, storage)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.4g}" if np.isfinite(f) else "n/a"


__all__ = [
    "OBJECTIVES",
    "OptimizeConfig",
    "OptimizeResult",
    "Split",
    "best_rules_path",
    "default_storage",
    "fingerprint",
    "optimization_html",
    "optimize",
    "optimize_files",
    "redact_url",
    "search",
]
