"""The file job behind ``python S5/portfolio.py``: read each symbol's rule inputs (fanned out),
run the portfolio loop (:mod:`S5.portfolio_backtest`), write equity / trades / JSON / HTML
(each atomically, only after everything was computed).

Outputs for ``--name majors`` (names from :func:`S1.datasets.portfolio_path`):

- ``data/portfolio_majors_equity.parquet``: index ``time`` (UTC bar open times, the union of
  the symbols' bars), columns ``cash``, ``equity`` and one value column per symbol
  (quantity held x the symbol's latest close);
- ``data/portfolio_majors_trades.parquet``: S5's trade columns plus ``symbol``,
  ``entry_rule`` and ``exit_reason``;
- ``data/portfolio_majors_backtest.json``: ``metrics`` (S5's), ``params``, ``skipped``
  entries by reason, kill-switch trips;
- ``reports/portfolio_majors.html``.

``--rules`` is one S4 rule file for every symbol, or a YAML map of rule files::

    symbols:
      BTCUSDT: S4/rules.yaml
      ETHUSDT: S4/rules_ta_only.yaml
    default: S4/rules.yaml        # the symbols not listed (optional)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.datasets import Dataset, atomic_write_text, normalize_symbol, portfolio_path, write_parquet
from S1.errors import UserError
from S5.costs import Costs
from S5.portfolio_backtest import PortfolioResult, SymbolInputs, prepare_symbol, run_portfolio


def parse_symbols(text: str | list[str]) -> list[str]:
    """``"BTCUSDT,ethusdt"`` -> ``["BTCUSDT", "ETHUSDT"]`` (each once, order kept)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [normalize_symbol(s) for s in items if str(s).strip()]
    if not out:
        raise UserError("no symbols given", "pass --symbols BTCUSDT,ETHUSDT")
    if len(set(out)) != len(out):
        raise UserError(f"a symbol is listed twice in {','.join(out)}", "list each symbol once")
    return out


def rules_map(rules: str | Path, symbols: list[str]) -> dict[str, str]:
    """The rule file of each symbol: ``rules`` itself when it is an S4 rule file, else the
    map it holds (``symbols: {SYM: file}``, optional ``default: file``)."""
    from S1.yaml_load import safe_load

    path = Path(rules)
    if not path.exists():
        raise UserError(f"rules file {path} does not exist", "pass --rules S4/rules.yaml")
    doc = safe_load(path.read_text(encoding="utf-8"), source=str(path))
    if not isinstance(doc, dict) or "entry" in doc or "symbols" not in doc:
        return {s: str(path) for s in symbols}
    table = doc.get("symbols") or {}
    if not isinstance(table, dict):
        raise UserError(f"{path}: 'symbols' must map symbols to rule files", "e.g. symbols: {BTCUSDT: S4/rules.yaml}")
    table = {normalize_symbol(k): str(v) for k, v in table.items()}
    default = doc.get("default")
    out = {}
    for s in symbols:
        f = table.get(s, default)
        if f is None:
            raise UserError(f"{path} has no rule file for {s}", f"add '{s}: S4/rules.yaml' or a 'default:' file")
        out[s] = str(f)
    return out


@dataclass(frozen=True)
class PrepareJob:
    """One symbol's preparation (picklable: it runs in worker processes or on a Dask cluster)."""

    symbol: str
    interval: str
    days: int
    rules: str
    risk: Any
    rank_lookback: int = 24
    exchange_filters: str = "auto"
    exchange_info: str | None = None
    params: dict = field(default_factory=dict)
    start: Any = None          #: keep bars from this time on (None: all) -- the optimiser's splits
    end: Any = None            #: keep bars before this time (None: all)


def prepare_job(job: PrepareJob) -> SymbolInputs:
    """Read the symbol's rule inputs (:func:`S4.signals.load_rule_inputs`), compute its arrays."""
    from S4.signals import load_rule_inputs
    from S5.backtest_files import resolve_filters

    inp = load_rule_inputs(Dataset(job.symbol, job.interval, job.days), job.rules, params=job.params or None)
    frame = inp.frame
    if job.start is not None or job.end is not None:
        keep = np.ones(len(frame), dtype=bool)
        if job.start is not None:
            keep &= frame.index >= pd.Timestamp(job.start)
        if job.end is not None:
            keep &= frame.index < pd.Timestamp(job.end)
        frame = frame.loc[keep]
    filters = None
    if job.exchange_filters != "off" and len(frame):
        filters = resolve_filters(job.symbol, mode=job.exchange_filters, file=job.exchange_info,
                                  simulated=inp.simulated, price=float(frame["close"].iloc[-1]))
    return prepare_symbol(frame, inp.rules, symbol=job.symbol, risk=job.risk, rank_lookback=job.rank_lookback,
                          filters=filters, simulated=inp.simulated, sources=inp.sources)


def prepare_symbols(symbols: list[str], interval: str, days: int, rules: str | Path, *, risk, rank_lookback: int = 24,
                    exchange_filters: str = "auto", exchange_info=None, params: dict | None = None,
                    scheduler: str | None = None, workers: int = 1, start=None, end=None) -> list[SymbolInputs]:
    """Every symbol's arrays via :func:`S1.fanout.fan_out` (same result whatever runs it)."""
    from S1.fanout import fan_out

    table = rules_map(rules, symbols)
    jobs = [PrepareJob(s, interval, int(days), table[s], risk, int(rank_lookback), exchange_filters,
                       None if exchange_info is None else str(exchange_info), dict(params or {}), start, end)
            for s in symbols]
    return fan_out(prepare_job, jobs, scheduler=scheduler, workers=workers)


@dataclass
class PortfolioRun:
    result: PortfolioResult
    simulated: bool
    summary: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    warning: str | None = None


def portfolio_files(symbols, interval: str, days: int, *, rules: str | Path = "S4/rules.yaml", max_open: int,
                    name: str | None = None, costs: Costs = Costs(), init_cash: float = 10_000.0, risk=None,
                    rank_lookback: int = 24, exchange_filters: str = "auto", exchange_info=None,
                    use_stops: bool = True, scheduler: str | None = None, workers: int = 1, report: bool = True,
                    write: bool = True) -> PortfolioRun:
    """Prepare every symbol, run the portfolio, write its files (see the module docstring).
    ``risk``: default ``S6/risk.yaml`` (what S7 trades with), a file or a RiskConfig."""
    from S5.backtest_files import risk_choice
    from S5.metrics import to_jsonable

    syms = parse_symbols(symbols)
    name = name or "_".join(s.lower() for s in syms[:4]) + (f"_{len(syms)}" if len(syms) > 4 else "")
    paths = {k: portfolio_path(name, k) for k in ("equity", "trades", "backtest")}   # bad names fail up front
    if risk is not None and isinstance(risk, str) and risk.lower() == "none":
        raise UserError("the portfolio backtest sizes every entry with S6 (--risk none is not supported)",
                        "drop --risk or pass a risk YAML")
    risk_cfg, warning = risk_choice(risk)
    inputs = prepare_symbols(syms, interval, days, rules, risk=risk_cfg, rank_lookback=rank_lookback,
                             exchange_filters=exchange_filters, exchange_info=exchange_info, scheduler=scheduler,
                             workers=workers)
    res = run_portfolio(inputs, risk=risk_cfg, interval=interval, max_open=int(max_open), costs=costs,
                        init_cash=init_cash, use_stops=use_stops)
    simulated = any(s.simulated for s in inputs)
    res.params.update({"days": int(days), "rules": rules_map(rules, syms), "rank_lookback": int(rank_lookback),
                       "risk_warning": warning})
    summary = to_jsonable({
        "name": name, "symbols": syms, "interval": interval, "days": int(days), "simulated": simulated,
        "metrics": res.metrics, "params": res.params, "skipped": res.skips, "kill_switch": res.trips,
        "sources": {s.symbol: s.sources for s in inputs}, "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "definitions": "see S5/metrics.py; buy_and_hold_* = equal-weight buy-and-hold of the same symbols; "
                       "exposure = share of bars with any position open; final equity = init_cash + sum(pnl) - "
                       "funding (spot: funding 0)"})
    run = PortfolioRun(res, simulated, summary, warning=warning)
    if not write:
        return run
    html_text = None
    if report:
        from S5.portfolio_report import portfolio_html

        html_text = portfolio_html(res, title=f"Portfolio {name}: {', '.join(syms)} {interval} {int(days)}d",
                                   simulated=simulated)
        paths["report"] = portfolio_path(name, "report")
    meta = {"simulated": simulated, "kind": "portfolio", "params": to_jsonable(res.params)}
    write_parquet(res.equity, paths["equity"], metadata=meta)
    write_parquet(res.trades.drop(columns=["entry_bar", "exit_bar"]), paths["trades"], metadata=meta)
    atomic_write_text(paths["backtest"], json.dumps(summary, indent=2, allow_nan=False))
    if html_text is not None:
        from S1.report_page import write_page

        write_page(paths["report"], html_text)
    run.paths = paths
    return run


__all__ = ["PortfolioRun", "PrepareJob", "parse_symbols", "portfolio_files", "prepare_job", "prepare_symbols",
           "rules_map"]
