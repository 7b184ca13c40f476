"""Backtest / paper-trading parity: the same candles, rules, sizing, fees and filters
through the S5 backtest and an S7 dry-run replay, and their trade lists compared.

:func:`run_parity` runs

- the **backtest**: :func:`S5.engine.run_decided` (S4's decision function bar by bar,
  orders through vectorbt);
- the **paper** side: ``python -m S7.paper_replay`` -- the S7 engine and its dry-run
  simulator (the executor's ``--dry-run --replay`` path) over the same candles, in its
  own process (S7 imports S5, so S5 never imports S7);

with the same settings on both sides: the rule file, S6 risk settings (``risk=None``:
all in with no stops and no kill-switch), the exchange filters (both round the same
way), the fee rate (the simulator charges it in the quote asset, as the backtest books
it), the slippage (default :data:`S5.costs.DEFAULT_SLIPPAGE`, 5 bp: both sides fill MARKET
orders at :func:`S5.costs.fill_price` -- slipped against the side, then onto the tick grid,
buys up and sells down), the starting cash. Then :func:`compare_trades`: entry / exit times must be equal,
prices and quantities equal to ``rtol`` (1e-9 relative), sides and exit reasons equal.

A trade is ``{"side", "entry_time", "exit_time", "entry_price", "exit_price", "qty",
"exit_reason"}``, times ISO UTC (the open time of the bar whose open filled the order;
``end``: still open at the last close). Entries that would fill on the last bar are no
trade on either side.

>>> a = [{"side": "long", "entry_time": "2024-01-01T01:00:00+00:00", "exit_time": "2024-01-01T05:00:00+00:00",
...       "entry_price": 100.0, "exit_price": 110.0, "qty": 1.5, "exit_reason": "signal:x"}]
>>> compare_trades(a, [dict(a[0])])
[]
>>> [m["field"] for m in compare_trades(a, [dict(a[0], qty=1.5 * (1 + 1e-6))])]
['qty']
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from S1.datasets import Dataset
from S1.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TRADE_FIELDS = ("side", "entry_time", "exit_time", "entry_price", "exit_price", "qty", "exit_reason")
EXACT_FIELDS = ("side", "entry_time", "exit_time", "exit_reason")
CLOSE_FIELDS = ("entry_price", "exit_price", "qty")
RTOL = 1e-9


@dataclass
class ParityResult:
    """Both trade lists, their differences and the settings they ran with."""

    backtest: list[dict[str, Any]]
    paper: list[dict[str, Any]]
    mismatches: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    paper_info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def line(self) -> str:
        n = max(len(self.backtest), len(self.paper))
        return f"{n} trades, {len(self.mismatches)} mismatches"

    def as_dict(self) -> dict[str, Any]:
        return {"backtest": self.backtest, "paper": self.paper, "mismatches": self.mismatches,
                "ok": self.ok, "settings": self.settings, "paper_replay": self.paper_info,
                "risk_warning": self.warning}


def _iso(t) -> str:
    return pd.Timestamp(t).tz_convert("UTC").isoformat() if pd.Timestamp(t).tzinfo else \
        pd.Timestamp(t).tz_localize("UTC").isoformat()


def backtest_trades(result) -> list[dict[str, Any]]:
    """The trade list of a :func:`S5.engine.run_decided` result (from vectorbt's trades,
    with the decision's exit reasons)."""
    d = result.trade_details.sort_values("entry_time", kind="stable")
    usdm = result.params.get("market") == "usdm"
    return [{"side": str(r.side), "entry_time": _iso(r.entry_time), "exit_time": _iso(r.exit_time),
             "entry_price": float(r.entry_price), "exit_price": float(r.exit_price), "qty": float(r.size),
             "exit_reason": str(r.exit_reason), **({"funding": float(r.funding)} if usdm else {})}
            for r in d.itertuples(index=False)]


def compare_trades(backtest: list[dict], paper: list[dict], *, rtol: float = RTOL) -> list[dict[str, Any]]:
    """The differences between two trade lists, one entry per (trade, field) -- plus one
    per trade only one side has (``field`` ``missing``)."""
    out: list[dict[str, Any]] = []
    for i in range(max(len(backtest), len(paper))):
        a = backtest[i] if i < len(backtest) else None
        b = paper[i] if i < len(paper) else None
        if a is None or b is None:
            out.append({"trade": i, "field": "missing", "backtest": a, "paper": b})
            continue
        for f in EXACT_FIELDS:
            if a.get(f) != b.get(f):
                out.append({"trade": i, "field": f, "backtest": a.get(f), "paper": b.get(f)})
        for f in CLOSE_FIELDS + (("funding",) if "funding" in a and "funding" in b else ()):
            x, y = float(a[f]), float(b[f])
            if not math.isclose(x, y, rel_tol=rtol, abs_tol=0.0):
                out.append({"trade": i, "field": f, "backtest": x, "paper": y})
    return out


from S5.hooks import all_in_risk  # noqa: E402  (``risk=None``'s settings; defined beside the decided path)


def _risk_yaml(cfg) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _exchange_info(filters) -> dict[str, Any]:
    raw = filters.raw
    if not raw:
        raise UserError(f"the filters of {filters.symbol} carry no exchangeInfo entry", "pass --exchange-info FILE")
    return {"symbols": [raw]}


def paper_command(work: Path, *, symbol: str, interval: str, use_stops: bool, balance: float, fee: float,
                  futures=None, slippage: float = 0.0) -> list[str]:
    cmd = [sys.executable, "-m", "S7.paper_replay", "--frame", str(work / "frame.parquet"), "--symbol", symbol,
           "--interval", interval, "--rules", str(work / "rules.yaml"), "--risk", str(work / "risk.yaml"),
           "--exchange-info", str(work / "exchange_info.json"), "--out", str(work / "paper.json"),
           "--cash", repr(float(balance)), "--fee", repr(float(fee)), "--fee-asset", "quote",
           "--slippage-bps", repr(float(slippage) * 1e4),
           "--state-dir", str(work / "state")]
    if futures is not None:
        cmd += ["--market", "usdm", "--leverage", repr(float(futures.leverage)),
                "--leverage-brackets", str(work / "brackets.json")]     # the backtest's brackets, as they are
        if len(futures.funding_times):
            cmd += ["--funding", str(work / "funding.parquet")]
        if not futures.liquidation:  # pragma: no cover - the CLI always liquidates
            raise UserError("the paper side always liquidates", "keep liquidation on for the parity check")
    return cmd + (["--no-stops"] if not use_stops else [])


def run_paper(frame: pd.DataFrame, rules, *, symbol: str, interval: str, risk, filters, use_stops: bool,
              init_cash: float, fee: float, timeout: float = 1800.0, futures=None, slippage: float = 0.0
              ) -> dict[str, Any]:
    """The S7 side in its own process (``python -m S7.paper_replay``); returns its JSON."""
    from S1.datasets import write_parquet

    scratch = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="parity_", dir=scratch) as tmp:
        work = Path(tmp)
        write_parquet(frame, work / "frame.parquet", metadata={"kind": "parity"})
        (work / "rules.yaml").write_text(rules.to_yaml(), encoding="utf-8")
        (work / "risk.yaml").write_text(_risk_yaml(risk), encoding="utf-8")
        (work / "exchange_info.json").write_text(json.dumps(_exchange_info(filters)), encoding="utf-8")
        if futures is not None and len(futures.funding_times):
            fr = pd.DataFrame({"funding_rate": futures.funding_rates, "mark_price": futures.funding_marks},
                              index=pd.DatetimeIndex(futures.funding_times, tz="UTC", name="funding_time"))
            write_parquet(fr, work / "funding.parquet", metadata={"kind": "parity"})
        if futures is not None:
            from S5.futures import save_brackets

            save_brackets(symbol, futures.brackets.rows(), source="S5 parity check", path=work / "brackets.json",
                          origin=futures.maint_origin)
        cmd = paper_command(work, symbol=symbol, interval=interval, use_stops=use_stops, balance=init_cash, fee=fee,
                            futures=futures, slippage=slippage)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"the S7 paper replay failed ({tail[0]})",
                            "run it by hand: " + " ".join(cmd[1:]))
        return json.loads((work / "paper.json").read_text(encoding="utf-8"))


def run_parity(frame: pd.DataFrame, rules, *, symbol: str, interval: str, risk=None, use_stops: bool = True,
               filters, fee: float = 0.001, init_cash: float = 10_000.0, rtol: float = RTOL,
               market: str = "spot", futures=None, slippage: float | None = None) -> ParityResult:
    """Backtest ``frame`` (candles + the columns ``rules`` read) and replay it through S7,
    then compare (see the module docstring). ``risk``: an S6 RiskConfig, or None for all
    in without stops. ``filters``: S6 SymbolFilters (with their exchangeInfo entry).
    ``market="usdm"`` (``futures``: an :class:`S5.futures.FuturesSpec`): both sides trade
    USD-M (shorts, leverage, funding, liquidation; the paper side is :mod:`S7.futures_engine`).
    ``slippage``: a fraction per side (None: the backtest's default, 5 bp)."""
    from S5.futures import FuturesSpec

    if market == "usdm" and futures is None:
        futures = FuturesSpec()
    from S5.costs import Costs
    from S5.engine import run_decided

    if not isinstance(frame.index, pd.DatetimeIndex) or len(frame) < 3:
        raise UserError("the parity check needs a frame of at least 3 candles (index open_time, UTC)",
                        "pass the S4 signals frame")
    cfg = risk if risk is not None else all_in_risk()
    stops = bool(use_stops and risk is not None)
    from S5.costs import DEFAULT_SLIPPAGE

    slippage = DEFAULT_SLIPPAGE if slippage is None else float(slippage)
    res = run_decided(frame, rules=rules, interval=interval, risk=cfg, costs=Costs(fees=fee, slippage=slippage),
                      init_cash=init_cash, filters=filters, use_stops=stops, market=market, futures=futures)
    backtest = backtest_trades(res)
    paper_out = run_paper(frame, rules, symbol=symbol, interval=interval, risk=cfg, filters=filters, use_stops=stops,
                          init_cash=init_cash, fee=fee, futures=futures if market == "usdm" else None,
                          slippage=slippage)
    paper = paper_out["trades"]
    settings = {"symbol": symbol, "interval": interval, "bars": len(frame), "start": _iso(frame.index[0]),
                "end": _iso(frame.index[-1]), "rules_yaml": rules.to_yaml(),
                "risk": "none (all in, no stops, no kill-switch)" if risk is None else cfg.model_dump(mode="json"),
                "stops": stops, "fee": fee, "fee_asset": "quote", "slippage": slippage, "init_cash": init_cash,
                "filters": {"tick_size": str(filters.tick_size), "step_size": str(filters.step_size),
                            "min_qty": str(filters.min_qty), "min_notional": str(filters.min_notional)},
                "rtol": rtol, "backtest_skips": res.params.get("decisions", {}).get("skipped", {}),
                "market": market}
    if market == "usdm":
        settings.update(leverage=futures.leverage, maint_margin_rate=futures.maint_margin_rate,
                        maint_amount=futures.maint_amount, maint_margin_origin=futures.maint_origin,
                        funding_events=len(futures.funding_times))
    info = {k: v for k, v in paper_out.items() if k != "trades"}
    return ParityResult(backtest, paper, compare_trades(backtest, paper, rtol=rtol), settings, info)


def parity_files(dataset: Dataset, rules_path: str | Path, *, risk: str | Path | None = None,
                 use_stops: bool = True, fee: float = 0.001, init_cash: float = 10_000.0,
                 exchange_info: str | Path | None = None, write: bool = True, market: str = "spot",
                 leverage: float = 1.0, funding: bool = True, maint_margin_rate: float | None = None,
                 slippage: float | None = None) -> ParityResult:
    """``python S5/parity.py``: build the S4 signals frame of ``rules_path`` from the S2 /
    S3 / S4 files (nothing written), run :func:`run_parity` and write
    ``data/<stem>__<rules>_parity.json`` (``dataset``: the market and window). ``risk``: default S6/risk.yaml, ``"none"``: all in;
    ``slippage``: a fraction per side (None: the backtest's default, 5 bp)."""
    from S1.datasets import atomic_write_text, parity_path
    from S4.signals import build_signals
    from S5.backtest_files import resolve_filters, risk_choice

    sym = dataset.symbol
    sig = build_signals(dataset, rules_path, write=False)
    frame = sig.frame
    cfg, warning = risk_choice(risk)
    if cfg is not None and not use_stops:
        warning = "STOPS OFF: --no-stops -- both sides ignore the stop-loss / take-profit" + (
            f"; {warning}" if warning else "")
    filters = resolve_filters(sym, file=exchange_info, simulated=sig.simulated,
                              price=float(frame["close"].iloc[-1]), generic=True)
    futures = None
    if market != "spot":      # USD-M: leverage, data/<symbol>_funding.parquet, the first bracket (S5.futures)
        from S5.futures import decided_kwargs

        futures = decided_kwargs(dataset, frame, market=market, leverage=leverage,
                                 funding=funding, maint_margin_rate=maint_margin_rate)["futures"]
    out = run_parity(frame, sig.rules, symbol=sym, interval=dataset.interval, risk=cfg, use_stops=use_stops,
                     filters=filters, fee=fee, init_cash=init_cash, market=market, futures=futures,
                     slippage=slippage)
    out.warning = warning
    out.settings.update({"days": dataset.days, "rules_file": str(rules_path), "simulated": bool(sig.simulated),
                         "risk_file": str(risk) if risk is not None else "S6/risk.yaml"})
    if write:
        from S5.metrics import to_jsonable

        path = parity_path(dataset, rules=rules_path)
        atomic_write_text(path, json.dumps(to_jsonable(out.as_dict()), indent=1, allow_nan=False))
        out.path = path
    return out


__all__ = ["RTOL", "TRADE_FIELDS", "ParityResult", "all_in_risk", "backtest_trades", "compare_trades",
           "parity_files", "run_paper", "run_parity"]
