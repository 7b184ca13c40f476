"""A dry-run replay of a candle file: the S7 engine and the dry-run simulator over the
closed candles of an S4 signals (or S2 ``_ta``) file, with its precomputed columns.

    python -m S7.paper_replay --frame data/btcusdt_1h_365d_signals.parquet --symbol BTCUSDT --interval 1h \\
        --rules rules.yaml --risk S6/risk.yaml --out trades.json

This is how :mod:`S5.parity_check` runs the paper side of ``python S5/parity.py`` (in
its own process: S7 imports S5, so S5 never imports S7). Each candle goes through the
same path as ``S7/executor.py --dry-run --replay-days``: its open price first (the
simulator fills the MARKET order sent on the previous close there), then the closed
candle (:meth:`S7.engine.Engine.on_candle`: kill-switch, S4's decision, the order). The
engine reads the rules' columns from the file (:class:`S7.engine.FrameFeed`) instead of
computing its own indicators on a window, so both sides see the same numbers.
The state (SQLite store, kill-switch, simulated account, order log) lives in a fresh
folder (``--state-dir``, default a temporary one in ``/dev/shm`` when there is one).

``--market usdm`` (USD-M perpetuals: shorts, ``--leverage N``, ``--funding FILE`` -- an S1
funding parquet -- and liquidation at the first bracket's maintenance margin) replays through
:mod:`S7.futures_engine` (its simulated futures account) instead of the spot engine.

Writes ``{"trades": [...], "orders": {status: count}, "candles": n}``; a trade is
``side, entry_time, exit_time, entry_price, exit_price, qty, exit_reason`` (times ISO UTC;
a position still open at the end is closed at the last close, ``exit_reason`` ``end``,
as the backtest does).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import UserError
from S1.options import DEFAULT_SLIPPAGE_BPS


def _iso(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat()


def exit_reason(order_reason: str | None) -> str:
    """The decision's exit reason of an S7 SELL order (``stop_loss:26690`` -> ``stop_loss``)."""
    r = order_reason or ""
    for code in ("stop_loss", "trailing_stop", "take_profit", "kill_switch"):
        if r.startswith(code):
            return code
    return r


def paper_trades(store, symbol: str, *, last_close: float | None = None, last_open_ms: int | None = None
                 ) -> list[dict[str, Any]]:
    """Round trips from the store's fills (BUY order -> the SELL order after it); an open
    position is closed at ``last_close`` (``end``) when given."""
    orders = {o["client_order_id"]: o for o in store.orders(symbol)}
    by_order: dict[str, list[dict]] = {}
    for f in store.fills(symbol):
        by_order.setdefault(f["client_order_id"], []).append(f)
    seq = sorted(by_order.items(), key=lambda kv: (kv[1][0]["time_ms"], kv[1][0]["trade_id"]))
    trades: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for cid, fills in seq:
        q = sum(Decimal(f["qty"]) for f in fills)
        px = sum(Decimal(f["qty"]) * Decimal(f["price"]) for f in fills) / q
        side = orders[cid]["side"]
        if side == "BUY":
            cur = {"side": "long", "entry_time": _iso(fills[0]["time_ms"]), "entry_price": float(px),
                   "qty": float(q)}
        elif cur is not None:
            trades.append({**cur, "exit_time": _iso(fills[0]["time_ms"]), "exit_price": float(px),
                           "exit_reason": exit_reason(orders[cid]["reason"])})
            cur = None
    if cur is not None and last_close is not None:
        trades.append({**cur, "exit_time": _iso(last_open_ms), "exit_price": float(last_close), "exit_reason": "end"})
    return trades


def candle_frame(frame: pd.DataFrame, interval: str) -> pd.DataFrame:
    """The frame with the engine's candle columns (missing volume columns as 0, ``close_time``)."""
    from S1.intervals import interval_ms
    from S7.engine import WINDOW_COLUMNS

    out = frame.copy()
    for c in WINDOW_COLUMNS:
        if c not in out.columns:
            out[c] = 0.0
    if "close_time" not in out.columns:
        out["close_time"] = out.index + pd.Timedelta(milliseconds=interval_ms(interval) - 1)
    return out


async def replay_frame(frame: pd.DataFrame, *, symbol: str, interval: str, rules, risk, filters,
                       state_dir: Path, use_stops: bool = True, flatten_on_trip: bool | None = None,
                       balance: float = 10_000.0, fee_rate: float = 0.001, fee_asset: str = "quote",
                       slippage_bps: float = DEFAULT_SLIPPAGE_BPS, market: str = "spot", futures=None
                       ) -> dict[str, Any]:
    """Run the engine over every candle of ``frame`` (see the module docstring)."""
    from S5.hooks import check_market

    check_market(rules, market)
    if market == "usdm":
        from S5.futures import FuturesSpec
        from S7.feeds import FrameFeed
        from S7.futures_engine import replay_usdm

        state_dir.mkdir(parents=True, exist_ok=True)
        feats = [c for c in rules.required_columns() if c in frame.columns]
        atr_col = f"atr{risk.stops.atr_period}"
        if atr_col in frame.columns and atr_col not in feats:
            feats.append(atr_col)
        return replay_usdm(frame, rules=rules, risk=risk, interval=interval, filters=filters,
                           spec=futures or FuturesSpec(), balance=balance, fee_rate=fee_rate, use_stops=use_stops,
                           state_dir=state_dir, features=FrameFeed(frame, feats), slippage=slippage_bps / 1e4)
    from S6.killswitch import KillSwitch
    from S7.engine import Engine, EngineConfig
    from S7.feeds import FrameFeed
    from S7.ledger import Ledger
    from S7.order_log import OrderLog
    from S7.session import _min_tradable
    from S7.simulator import SimulatedExchange
    from S7.store import ExecutorStore

    state_dir.mkdir(parents=True, exist_ok=True)
    frame = candle_frame(frame, interval)
    feats = [c for c in rules.required_columns() if c in frame.columns]
    atr_col = f"atr{risk.stops.atr_period}"
    if atr_col in frame.columns and atr_col not in feats:
        feats.append(atr_col)
    venue = SimulatedExchange(filters, balance=balance, fee_rate=fee_rate, slippage_bps=slippage_bps,
                              fee_asset=fee_asset)
    store = ExecutorStore(state_dir / "paper.db")
    order_log = OrderLog(state_dir / "orders.jsonl", mode="dry-run replay", simulated=True)
    try:
        ks = KillSwitch(risk, path=state_dir / "kill_switch.json")
        ledger = Ledger(store, order_log, symbol=symbol, interval=interval, base_asset=filters.base_asset,
                        quote_asset=filters.quote_asset, min_tradable=_min_tradable(filters),
                        clock_ms=lambda: venue.now_ms)
        engine = Engine(EngineConfig(symbol=symbol, interval=interval, mode="dry-run", strategy="parity",
                                     window=max(rules.lookback() + 3, 10), max_candle_age_s=0,
                                     flatten_on_trip=flatten_on_trip, use_stops=use_stops),
                        rules=rules, venue=venue, ledger=ledger, filters=filters, kill_switch=ks, risk=risk,
                        features=FrameFeed(frame, feats))
        await engine.start()
        opens = frame.index.as_unit("ms").asi8.astype(np.int64)
        closes = frame["close_time"].dt.as_unit("ms").astype("int64").to_numpy()
        o = frame["open"].to_numpy(np.float64)
        for i in range(len(frame)):
            await engine.on_price(float(o[i]), int(opens[i]))
            await engine.on_candle(frame.iloc[i:i + 1], int(closes[i]) + 1)
        # the position still open is closed at the last close as the backtest does: a MARKET sell, slipped
        from S5.costs import fill_price, price_grid

        tick, base = price_grid(filters)
        last = fill_price(float(frame["close"].iloc[-1]), buy=False, slippage=slippage_bps / 1e4, tick=tick, base=base)
        trades = paper_trades(store, symbol, last_close=last, last_open_ms=int(opens[-1]))
        return {"trades": trades, "orders": dict(Counter(r["status"] for r in store.orders(symbol))),
                "candles": len(frame), "decisions": dict(Counter(d.action for d in engine.decisions))}
    finally:
        store.close()
        await venue.close()


def scratch_dir() -> str | None:
    """Where a throw-away replay state goes: memory (``/dev/shm``) when there is one -- the
    store and the kill-switch fsync every write, which on a disk costs more than the replay."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m S7.paper_replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--frame", required=True, type=Path, help="Parquet file: candles + the columns the rules read")
    p.add_argument("--symbol", required=True)
    p.add_argument("--interval", required=True)
    p.add_argument("--rules", required=True, type=Path, help="rule file (its params resolved)")
    p.add_argument("--risk", required=True, type=Path, help="S6 risk config")
    p.add_argument("--exchange-info", required=True, type=Path, help="exchangeInfo body with the symbol's filters")
    p.add_argument("--out", required=True, type=Path, help="JSON file for the trades")
    p.add_argument("--no-stops", action="store_true", help="do not act on stop-loss / take-profit levels")
    from S1.options import add_cash_option, add_fee_options

    add_cash_option(p)
    add_fee_options(p)      # --slippage-bps: the backtest's default (5 bp)
    p.add_argument("--fee-asset", choices=("quote", "received"), default="quote")
    p.add_argument("--state-dir", type=Path, default=None, help="state folder (default: a temporary one)")
    p.add_argument("--market", choices=("spot", "usdm"), default="spot",
                   help="spot (long only) or usdm: Binance USD-M perpetuals (shorts, leverage, funding, liquidation)")
    p.add_argument("--leverage", type=float, default=1.0, help="USD-M leverage (isolated margin = notional / N)")
    p.add_argument("--funding", type=Path, default=None, help="USD-M: funding-rate parquet (python S1/funding.py)")
    p.add_argument("--maint-margin-rate", type=float, default=None,
                   help="USD-M: an explicit maintenance margin rate (default: S5.futures.lookup_brackets -- the "
                        "cached leverageBracket answer, else the built-in table)")
    p.add_argument("--leverage-brackets", type=Path, default=None, metavar="FILE",
                   help="USD-M: the leverage brackets to use (S5.futures.save_brackets' JSON; the parity check's)")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from S1.datasets import atomic_write_text, read_parquet
    from S4.rules import load_rules
    from S6.config import RiskConfig
    from S6.filters import read_exchange_info_file, symbol_filters

    if not args.frame.exists():
        raise UserError(f"{args.frame} does not exist", "pass the S4 signals file of the candles to replay")
    frame = read_parquet(args.frame)
    rules = load_rules(args.rules)
    risk = RiskConfig.load(args.risk)
    filters = symbol_filters(read_exchange_info_file(args.exchange_info), args.symbol.upper())
    futures = None
    if args.market == "usdm":
        from S5.futures import FuturesSpec

        funding = read_parquet(args.funding) if args.funding is not None else None
        from S5.futures import read_brackets_file, resolve_brackets

        brackets = (read_brackets_file(args.leverage_brackets, args.symbol) if args.leverage_brackets is not None
                    and args.maint_margin_rate is None else resolve_brackets(args.symbol, args.maint_margin_rate))
        futures = FuturesSpec.for_symbol(args.symbol, leverage=args.leverage, funding=funding, brackets=brackets)

    def go(state_dir: Path) -> dict:
        return asyncio.run(replay_frame(frame, symbol=args.symbol.upper(), interval=args.interval, rules=rules,
                                        risk=risk, filters=filters, state_dir=state_dir,
                                        use_stops=not args.no_stops, balance=args.cash, fee_rate=args.fee,
                                        fee_asset=args.fee_asset, slippage_bps=args.slippage_bps,
                                        market=args.market, futures=futures))

    if args.state_dir is not None:
        out = go(args.state_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="s7_paper_", dir=scratch_dir()) as tmp:
            out = go(Path(tmp))
    atomic_write_text(args.out, json.dumps(out, indent=1))
    print(f"paper replay: {out['candles']} candles, {len(out['trades'])} trades -> {args.out}")
    return 0


if __name__ == "__main__":
    main_entry(main)
