"""Backtest / paper-trading parity over many symbols: ``python S5/parity.py --symbols A,B,C``.

Each symbol is one job (:func:`S5.parity_check.parity_files`: its own signals frame, both sides,
its own ``data/<stem>__<rules>_parity.json`` written atomically by the job), run in this process,
in N local processes or on a Dask cluster (:func:`S1.fanout.fan_out`); the results come back in
the order of ``--symbols``, so the lines and the files are those of a sequential run. A symbol
that cannot be checked (a missing file, bad filters) is reported on its line and the others go on.

>>> SymbolParity("BTCUSDT", trades=12, mismatches=0).line()
'BTCUSDT: 12 trades, 0 mismatches'
>>> total_line([SymbolParity("BTCUSDT", trades=12, mismatches=0),
...             SymbolParity("ETHUSDT", error="no _ta file -- run S2 first")])
'total: 2 symbols, 12 trades, 0 mismatches, 1 not checked'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from S1.errors import UserError


@dataclass(frozen=True)
class SymbolParity:
    """One symbol's outcome: trade and mismatch counts and the file, or the error that stopped it."""

    symbol: str
    trades: int = 0
    mismatches: int = 0
    path: str | None = None
    error: str | None = None
    warning: str | None = None
    simulated: bool = False
    first_mismatches: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and self.mismatches == 0

    def line(self) -> str:
        if self.error is not None:
            return f"{self.symbol}: not checked -- {self.error}"
        return f"{self.symbol}: {self.trades} trades, {self.mismatches} mismatches"


def check_symbol(job: tuple[str, str, int, str, dict[str, Any]]) -> SymbolParity:
    """One symbol's parity check (module level: pickled to worker processes and Dask workers)."""
    from S1.datasets import Dataset
    from S5.parity_check import parity_files

    symbol, interval, days, rules_path, kwargs = job
    try:
        res = parity_files(Dataset(symbol, interval, days), rules_path, **kwargs)
    except UserError as exc:
        return SymbolParity(symbol, error=f"{exc.problem} -- {exc.fix}" if exc.fix else exc.problem)
    first = tuple(f"trade {m['trade']}: {m['field']}: backtest {m['backtest']!r} != paper {m['paper']!r}"
                  for m in res.mismatches[:10])
    return SymbolParity(symbol, trades=max(len(res.backtest), len(res.paper)), mismatches=len(res.mismatches),
                        path=str(res.path) if res.path is not None else None, warning=res.warning,
                        simulated=bool(res.settings.get("simulated")), first_mismatches=first)


def parse_symbols(text: str) -> list[str]:
    """``"btcusdt, ETHUSDT"`` -> ``["BTCUSDT", "ETHUSDT"]`` (checked, duplicates refused).

    >>> parse_symbols("btcusdt, ETHUSDT")
    ['BTCUSDT', 'ETHUSDT']
    """
    from S1.datasets import normalize_symbol

    symbols = [normalize_symbol(s) for s in str(text).split(",") if s.strip()]
    if not symbols:
        raise UserError("--symbols names no symbol", "e.g. --symbols BTCUSDT,ETHUSDT")
    dup = sorted({s for s in symbols if symbols.count(s) > 1})
    if dup:
        raise UserError(f"--symbols lists {', '.join(dup)} more than once", "name each symbol once")
    return symbols


def parity_symbols(symbols: list[str], interval: str, days: int, rules_path, *, scheduler: str | None = None,
                   workers: int = 1, **kwargs) -> list[SymbolParity]:
    """:func:`check_symbol` for every symbol (``kwargs``: :func:`S5.parity_check.parity_files`'s
    options), in the order given, wherever ``scheduler`` / ``workers`` run them."""
    from S1.fanout import check_scheduler, fan_out

    check_scheduler(scheduler, workers)
    jobs = [(s, interval, int(days), str(rules_path), dict(kwargs)) for s in symbols]
    return fan_out(check_symbol, jobs, scheduler=scheduler, workers=workers)


def total_line(results: list[SymbolParity]) -> str:
    trades = sum(r.trades for r in results)
    mism = sum(r.mismatches for r in results)
    failed = sum(r.error is not None for r in results)
    return (f"total: {len(results)} symbols, {trades} trades, {mism} mismatches"
            + (f", {failed} not checked" if failed else ""))


__all__ = ["SymbolParity", "check_symbol", "parity_symbols", "parse_symbols", "total_line"]
