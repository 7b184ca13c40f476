"""The file job behind ``python S5/backtest.py``: read the S4 signals file, run the
engine, write the equity, trades, JSON and HTML outputs (each atomically, only after
everything was computed -- a failed run leaves the previous files intact).

Outputs for ``--symbol ETHUSDC --interval 1h --days 365`` (names from S1.datasets):

- ``data/ethusdc_1h_365d_equity.parquet``: UTC ``open_time`` index, column ``equity``
  (the account value at each bar's close);
- ``data/ethusdc_1h_365d_trades.parquet``: exactly ``entry_time, exit_time, side,
  size, entry_price, exit_price, fees, pnl, return`` (closed trades, after fees;
  times are the open time of the bar whose open -- or, for stops, whose range --
  filled the order; ``return = pnl / (size x entry_price)``);
- ``data/ethusdc_1h_365d_backtest.json``: ``metrics``, ``params``, ``simulated``,
  ``kill_switch`` trips, file names (strict JSON: undefined values are ``null``);
- ``reports/ethusdc_1h_365d_backtest.html``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.datasets import (
    Dataset,
    atomic_write_text,
    dataset_path,
    existing_dataset_path,
    normalize_symbol,
    read_metadata,
    read_parquet,
    report_path,
    write_parquet,
)
from S1.errors import UserError
from S5.engine import TRADE_COLUMNS, BacktestResult, Costs, run_backtest
from S5.metrics import METRIC_FORMATS, format_metric, to_jsonable

DEFAULT_RULES = "S4/rules.yaml"


def signals_command(dataset: Dataset, rules: str | None = DEFAULT_RULES) -> str:
    """The exact S4 command that writes the ``_signals`` file."""
    return (f"python S4/decision.py --symbol {dataset.symbol} --interval {dataset.interval} "
            f"--days {dataset.days} --rules {rules or DEFAULT_RULES}")


def backtest_command(dataset: Dataset, rules: str | None = None) -> str:
    extra = f" --rules {rules}" if rules and str(rules) != DEFAULT_RULES else ""
    return (f"python S5/backtest.py --symbol {dataset.symbol} --interval {dataset.interval} "
            f"--days {dataset.days}{extra}")


def load_signals(dataset: Dataset, *,
                 rules: str | Path | None = None) -> tuple[pd.DataFrame, Path, dict[str, Any]]:
    """The ``_signals`` frame of ``rules`` (default S4/rules.yaml; a file of the older name
    without the rules name is read with a note), its path and metadata; a missing file names the S4 command."""
    path = existing_dataset_path(dataset, "signals", rules=rules)
    if not path.exists():
        raise UserError(f"{path} does not exist",
                        f"create it first with: {signals_command(dataset, rules)}")
    frame = read_parquet(path)
    missing = [c for c in ("open", "high", "low", "close", "entry", "exit") if c not in frame.columns]
    if missing or not isinstance(frame.index, pd.DatetimeIndex):
        raise UserError(f"{path} is not a signals file (missing {missing or 'the open_time index'})",
                        f"re-create it with: {signals_command(dataset)}")
    return frame, path, read_metadata(path)


@dataclass
class BacktestRun:
    """What :func:`backtest_files` computed and wrote."""

    result: BacktestResult
    simulated: bool
    summary: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    warning: str | None = None     #: the loud line when the risk settings differ from paper trading


def summary_dict(result: BacktestResult, *, dataset: Dataset, simulated: bool,
                 sources: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document (strict JSON once passed through :func:`to_jsonable`)."""
    return to_jsonable({
        "symbol": dataset.symbol, "interval": dataset.interval, "days": dataset.days,
        "simulated": bool(simulated),
        "metrics": result.metrics, "params": result.params, "kill_switch": result.kill_switch,
        "sources": sources or {}, "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "definitions": "see S5/metrics.py: returns per bar vs the previous close, 365-day years, max_drawdown "
                       "positive, trade return = pnl / (size x entry_price), exposure = share of bars holding "
                       "a position at the close",
    })


def equity_frame(result: BacktestResult) -> pd.DataFrame:
    return pd.DataFrame({"equity": result.equity.to_numpy(np.float64)}, index=result.equity.index.rename("open_time"))


#: The risk settings backtests and paper trading share by default.
DEFAULT_RISK = Path(__file__).resolve().parents[1] / "S6" / "risk.yaml"
#: ``--risk none``: every entry all in, no stops, no kill-switch (the old default).
NO_RISK = "none"


def risk_choice(risk) -> tuple[Any, str | None]:
    """``(risk config or None, loud warning or None)`` for ``--risk``: default S6/risk.yaml
    (what S7 trades with), ``none`` (all in, no stops), a file or a RiskConfig."""
    from S5.hooks import load_risk

    if risk is None:
        return load_risk(DEFAULT_RISK), None
    if isinstance(risk, str) and risk.lower() == NO_RISK:
        return None, ("RISK OFF: --risk none -- every entry all in, no stop-loss / take-profit, no kill-switch; "
                      "paper trading (S7) sizes and stops with S6/risk.yaml, so its trades will differ")
    cfg = load_risk(risk)
    if isinstance(risk, (str, Path)) and Path(risk).resolve() == DEFAULT_RISK:
        return cfg, None
    what = str(risk) if isinstance(risk, (str, Path)) else "a custom RiskConfig"
    return cfg, (f"RISK SETTINGS DIFFER FROM PAPER TRADING: {what} -- S7 trades with S6/risk.yaml unless "
                 "started with the same --risk-config")


def resolve_filters(symbol: str, *, mode: str = "auto", file=None, simulated: bool = False,
                    price: float | None = None, generic: bool = False):
    """The symbol's S6 SymbolFilters for the decided backtest (None: none known), found as
    :func:`S5.exchange.resolve_lot_rules` finds its lot rules; ``generic``: fall back to
    the generic filters S7's dry-run uses without exchangeInfo (also for real data)."""
    from S5.exchange import resolve_lot_rules
    from S6.filters import SymbolFilters, read_exchange_info_file, symbol_filters

    sym = normalize_symbol(symbol)
    if file is not None:
        return symbol_filters(read_exchange_info_file(file), sym)
    lot = resolve_lot_rules(sym, mode=mode, simulated=simulated, price=price) if mode != "off" else None
    if lot is not None and lot.source.startswith("cached"):
        from S1.datasets import exchange_info_path

        return symbol_filters(read_exchange_info_file(exchange_info_path()), sym)
    if lot is not None and lot.source == "exchangeInfo":
        from S6.filters import filters_for

        return filters_for(sym)
    if lot is not None or generic:
        from S1.offline import simulated_symbol_info

        return SymbolFilters.from_symbol_info(simulated_symbol_info(sym, float(price) if price else 100.0))
    return None


def decided_rules(meta: dict[str, Any], frame: pd.DataFrame):
    """The RuleSet that made a signals file (its metadata keeps the YAML with the params)."""
    from S4.rules import parse_rules

    sig = meta.get("signals") if isinstance(meta.get("signals"), dict) else {}
    text = sig.get("rules_yaml")
    if text:
        return parse_rules(text, source="the signals file's rules", columns=list(frame.columns))
    path = sig.get("rules_file")
    if path and Path(path).exists():       # older files: the rule file and its params
        from S4.rules import load_rules

        rules = load_rules(path, columns=list(frame.columns))
        params = {k: v for k, v in (sig.get("params") or {}).items() if k in rules.params}
        return rules.with_params(**params) if params else rules
    return None


def backtest_files(dataset: Dataset, *, costs: Costs = Costs(), init_cash: float = 10_000.0,
                   risk=None, report: bool = True, write: bool = True, exchange_filters: str = "off",
                   exchange_info=None, use_stops: bool = True, rules_file: str | Path | None = None,
                   decided_options: dict | None = None) -> BacktestRun:
    """Read ``_signals``, backtest, and write equity / trades / JSON / HTML.

    ``risk``: default ``S6/risk.yaml`` -- the settings paper trading uses -- run through
    S4's decision function bar by bar as S7 trades (:func:`S5.engine.run_decided`);
    ``"none"``: the vectorised signals all in without stops (:func:`S5.engine.run_backtest`);
    any other file or RiskConfig: decided with those settings. A choice other than the
    default is recorded in the JSON (``params.risk_warning``) and in ``run.warning``.

    ``exchange_filters`` (``auto``/``on``/``off``, see :func:`S5.exchange.resolve_lot_rules`)
    adds the symbol's LOT_SIZE / MIN_NOTIONAL rules to ``costs`` (``exchange_info``: a
    saved exchangeInfo file).

    ``decided_options`` (``--market usdm --leverage N [--no-funding] [--detail 1m]``): the
    arguments of :func:`S5.futures.decided_kwargs` -- USD-M perpetuals (shorts, funding,
    liquidation) and lower-timeframe stop resolution; spot refuses rule files with short rules."""
    from S5.exchange import with_filters

    frame, spath, meta = load_signals(dataset, rules=rules_file)
    simulated = bool(meta.get("simulated", False))
    price = float(frame["close"].iloc[-1])
    costs = with_filters(costs, dataset.symbol, mode=exchange_filters, file=exchange_info, simulated=simulated,
                         price=price)
    risk_cfg, warning = risk_choice(risk)
    if risk_cfg is not None and not use_stops:
        warning = "STOPS OFF: --no-stops -- the stop-loss / take-profit of the risk settings are not used" + (
            f"; {warning}" if warning else "")
    sig_meta = meta.get("signals", {}) if isinstance(meta.get("signals"), dict) else {}
    extra = {"symbol": dataset.symbol, "days": dataset.days, "signals_file": spath.name,
             "rules_file": sig_meta.get("rules_file"), "rules_params": sig_meta.get("params"),
             "risk_file": (str(risk) if isinstance(risk, (str, Path)) else
                           str(DEFAULT_RISK.relative_to(DEFAULT_RISK.parents[1])) if risk is None else None),
             "risk_warning": warning}
    opts = dict(decided_options or {})
    market = opts.get("market", "spot")
    if (market != "spot" or opts.get("detail")) and risk_cfg is None:
        from S5.hooks import all_in_risk  # USD-M / --detail run bar by bar: 'none' = all in, no stops

        risk_cfg, use_stops = all_in_risk(), False
    rules = decided_rules(meta, frame) if risk_cfg is not None else None
    if rules is None:
        from S5.hooks import check_market

        check_market(decided_rules(meta, frame), market)    # spot refuses short rules in one line
        if market != "spot":
            raise UserError(f"{spath.name} does not record its rules: --market {market} needs them",
                            f"re-create it with: {signals_command(dataset)}")
    elif opts:
        from S5.futures import decided_kwargs

        opts = decided_kwargs(dataset, frame, **opts)
    if risk_cfg is None:
        result = run_backtest(frame, interval=dataset.interval, costs=costs, init_cash=init_cash,
                              params=extra)
    elif rules is None:
        # an older signals file without its rules: the vectorised risk hooks (stops inside the bars)
        warning = (f"NOT THE PAPER-TRADING DECISION: {spath.name} does not record its rules, so the risk settings "
                   "run as vectorised hooks (stops fill inside bars; S7 checks them on closed bars) -- re-create "
                   f"it with: {signals_command(dataset)}") + (f"; {warning}" if warning else "")
        extra["risk_warning"] = warning
        result = run_backtest(frame, interval=dataset.interval, costs=costs, init_cash=init_cash,
                              risk=risk_cfg, params=extra)
    else:
        from S5.engine import run_decided

        filters = resolve_filters(dataset.symbol, mode=exchange_filters, file=exchange_info, simulated=simulated,
                                  price=price) if costs.lot is not None else None
        result = run_decided(frame, rules=rules, interval=dataset.interval, risk=risk_cfg, costs=costs,
                             init_cash=init_cash,
                             filters=filters, use_stops=use_stops, params=extra, **opts)
    summary = summary_dict(result, dataset=dataset, simulated=simulated,
                           sources={"signals": spath.name})
    run = BacktestRun(result, simulated, summary, warning=warning)
    if not write:
        return run
    paths = {"equity": dataset_path(dataset, "equity", rules=rules_file),
             "trades": dataset_path(dataset, "trades", rules=rules_file),
             "json": dataset_path(dataset, "backtest", rules=rules_file)}
    html_text = None
    if report:
        from S5.report import backtest_html

        title = (f"{dataset.label} backtest -- "
                 f"{Path(str(rules_file or DEFAULT_RULES)).name}")
        html_text = backtest_html(result, title=title, simulated=simulated)
        paths["html"] = report_path(dataset, "backtest", "html", rules=rules_file)
    file_meta = {"simulated": simulated, "kind": "backtest", "source_file": spath.name,
                 "params": to_jsonable(result.params)}
    write_parquet(equity_frame(result), paths["equity"], metadata=file_meta)
    write_parquet(result.trades.loc[:, list(TRADE_COLUMNS)], paths["trades"], metadata=file_meta)
    atomic_write_text(paths["json"], json.dumps(summary, indent=2, allow_nan=False))
    if html_text is not None:
        from S1.report_page import write_page

        write_page(paths["html"], html_text)
    run.paths = paths
    return run


def metrics_table(metrics: dict[str, Any], *, title: str = "Backtest"):
    """A rich Table of the metrics (two columns)."""
    from rich.table import Table

    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in METRIC_FORMATS:
        if k in metrics:
            t.add_row(k.replace("_", " "), format_metric(k, metrics[k]))
    return t


__all__ = [
    "DEFAULT_RISK",
    "NO_RISK",
    "BacktestRun",
    "backtest_command",
    "backtest_files",
    "decided_rules",
    "equity_frame",
    "load_signals",
    "metrics_table",
    "resolve_filters",
    "risk_choice",
    "signals_command",
    "summary_dict",
]
