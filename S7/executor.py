"""Paper trading on the Binance spot testnet (default), a local dry-run, or -- with an
explicit flag and keys -- live.

    python S7/executor.py --symbol BTCUSDT --interval 1m --rules S4/rules.yaml            # testnet
    python S7/executor.py --symbol BTCUSDT --interval 1m --rules S4/rules.yaml --dry-run  # no keys, no orders out
    python S7/executor.py --symbol BTCUSDT --interval 1h --rules S4/rules.yaml --dry-run --replay-days 7 --duration 20
    python S7/executor.py --symbol BTCUSDT --interval 1h --offline --replay-days 7     # no internet: simulated market
    python S7/executor.py ... --order-type limit --post-only --limit-offset-bps 5 --limit-timeout-candles 2 --limit-fallback market
    python S7/executor.py ... --live --i-understand-this-trades-real-money
    python S7/executor.py --symbol BTCUSDT --interval 1h --rules S4/rules_long_short.yaml --market usdm --leverage 3
    python S7/executor.py ... --market usdm --leverage 3 --dry-run [--replay-days 7]   # USD-M without keys

On every closed candle (from the streamer's SQLite table, ``python S1/streamer.py``;
or ``--source rest``; or a fast replay of recent candles with ``--replay-days``):
indicators (S2), rules (S4), sizing and kill-switch (S6), then one idempotent
order. Orders, fills and positions persist in ``data/state/``; every order event
is appended to ``data/orders.jsonl``. Ctrl-C / SIGTERM stop cleanly (the order
in flight is finished first). See S7/README.md.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.options import (
    ORDER_TYPES,
    add_cash_option,
    add_fee_options,
    add_offline_option,
    add_risk_option,
    add_rules_option,
    add_trading_mode_options,
    order_type,
)

log = logging.getLogger("S7.executor")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S7/executor.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="e.g. BTCUSDT")
    p.add_argument("--interval", default="1m", help="candle interval (default 1m)")
    add_rules_option(p)
    add_trading_mode_options(p, dry_run_help="local fill simulator: no keys, no orders leave this machine")
    p.add_argument("--market", choices=("spot", "usdm"), default="spot",
                   help="spot (default); usdm: Binance USD-M perpetuals on the futures testnet "
                        "(BINANCE_FUTURES_TESTNET_* in .env) or --dry-run: shorts, leverage, funding, liquidation")
    p.add_argument("--leverage", type=float, default=None,
                   help="usdm: leverage, isolated margin = notional / N (default 1)")
    src = p.add_argument_group("candles")
    src.add_argument("--source", choices=("db", "rest"), default="db",
                     help="db: the streamer's SQLite table (default); rest: poll REST klines")
    src.add_argument("--db", type=Path, help="streamer database (default data/<symbol>_<interval>_realtime.db)")
    src.add_argument("--replay-days", type=float, metavar="N",
                     help="dry-run only: replay the last N days of closed candles, fast, then stop")
    src.add_argument("--duration", type=float, metavar="SECONDS", help="stop by itself after this long")
    src.add_argument("--poll", type=float, default=0.02, help="seconds between database checks (default 0.02)")
    src.add_argument("--max-candle-age", type=float, metavar="SECONDS",
                     help="act only on candles closed less than this ago (default one interval; 0: any)")
    strat = p.add_argument_group("strategy and risk")
    add_risk_option(strat, allow_none=False)
    strat.add_argument("--indicators", type=Path, help="S2 indicator lengths (default S2/config.yaml)")
    strat.add_argument("--window", type=int, help="closed candles kept for the indicators (default: from them)")
    flat = strat.add_mutually_exclusive_group()
    flat.add_argument("--flatten-on-trip", dest="flatten", action="store_const", const=True,
                      help="sell the position when the kill-switch trips")
    flat.add_argument("--no-flatten-on-trip", dest="flatten", action="store_const", const=False,
                      help="only stop new entries when the kill-switch trips")
    p.set_defaults(flatten=None)
    strat.add_argument("--no-stops", action="store_true", help="no stop-loss / take-profit exits (rules only)")
    lim = p.add_argument_group("order type (see S7/README.md)")
    lim.add_argument("--order-type", type=order_type, choices=ORDER_TYPES, default="market",
                     help="market (default): MARKET orders; limit: LIMIT orders priced from the close")
    lim.add_argument("--post-only", action="store_const", const=True, default=None,
                     help="limit: LIMIT_MAKER orders, refused by the exchange (-2010) when they would cross")
    lim.add_argument("--limit-offset-bps", type=float, metavar="N",
                     help="limit: BUY N bps below the close, SELL N bps above (default 0; rounded to the tick)")
    wait = lim.add_mutually_exclusive_group()
    wait.add_argument("--limit-timeout", dest="limit_timeout_s", type=float, metavar="SECONDS",
                      help="limit: cancel what is unfilled this long after placing")
    wait.add_argument("--limit-timeout-candles", type=int, metavar="N",
                      help="limit: cancel what is unfilled at the N-th candle close after the signal (default 1)")
    lim.add_argument("--limit-fallback", choices=("none", "market"),
                     help="limit: send the unfilled remainder as MARKET after the timeout or a post-only "
                          "refusal (default none)")
    sim = p.add_argument_group("dry-run simulator")
    add_offline_option(sim)
    add_cash_option(sim)
    # --fee / --slippage-bps: the backtest's defaults (S1/options.py); the dry-run simulator fills MARKET orders
    # at S5.costs.fill_price (slipped against the side, on the tick grid), as the backtest does
    add_fee_options(sim)
    sim.add_argument("--fee-asset", choices=("quote", "received"), default="quote",
                     help="quote (default): the commission paid in the quote asset, as S5's backtest and "
                          "S5/parity.py book it; received: in the asset received, as Binance charges without BNB "
                          "(the holding then leaves the lot grid and quantities drift from the backtest)")
    sim.add_argument("--exchange-info", type=Path, metavar="FILE", help="saved exchangeInfo body for the filters")
    files = p.add_argument_group("files")
    files.add_argument("--state", type=Path, help="executor database (default data/state/s7_<mode>_<sym>_<iv>.db)")
    files.add_argument("--kill-switch-state", type=Path, help="kill-switch file (default: per mode in data/state/)")
    files.add_argument("--order-log", type=Path, help="order log (default data/orders.jsonl)")
    files.add_argument("--recv-window", type=int, default=5000, help="recvWindow of signed requests, ms")
    files.add_argument("--no-user-stream", action="store_true",
                       help="testnet/live: no user-data WebSocket stream; order states from REST lookups only")
    files.add_argument("--control", type=Path, metavar="DIR",
                       help="control channel of the S8 service (pause flag in, heartbeat/status out; S7/control.py)")
    add_common_args(p)
    return p


def config_from_args(args):
    from S7.config import SessionConfig

    return SessionConfig(symbol=args.symbol, interval=args.interval, rules=Path(args.rules), mode=args.mode,
                         i_understand_real_money=args.real_money, source=args.source, db=args.db,
                         replay_days=args.replay_days, duration=args.duration, poll=args.poll, window=args.window,
                         risk_config=Path(args.risk) if args.risk else None, indicators_config=args.indicators,
                         state=args.state,
                         kill_switch_state=args.kill_switch_state, flatten_on_trip=args.flatten,
                         balance=args.cash, fee_rate=args.fee, slippage_bps=args.slippage_bps,
                         fee_asset=args.fee_asset, recv_window_ms=args.recv_window, max_candle_age_s=args.max_candle_age,
                         exchange_info=args.exchange_info, use_stops=not args.no_stops, order_log=args.order_log,
                         order_type=args.order_type, post_only=args.post_only,
                         limit_offset_bps=args.limit_offset_bps, limit_timeout_s=args.limit_timeout_s,
                         limit_timeout_candles=args.limit_timeout_candles, limit_fallback=args.limit_fallback,
                         user_stream=not args.no_user_stream)


async def _amain(cfg, control: Path | None = None, leverage: float | None = None) -> int:
    from S7.session import run_session, summary_lines

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(name: str):
        if stop.is_set():
            return
        log.warning("%s: stopping after the current step (the order in flight, if any, is finished first)", name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
        except (NotImplementedError, RuntimeError):  # Windows
            pass
    if leverage is not None:                 # --market usdm (S7.futures_session)
        from S7.futures_session import run_usdm_session, usdm_summary_lines

        res = await run_usdm_session(cfg, leverage=leverage, stop=stop)
        lines = usdm_summary_lines(res)
    else:
        lines = summary_lines(await run_session(cfg, stop=stop, control=control))
    for line in lines:
        print(line, flush=True)
    return 0


def _usdm_checks(args) -> float | None:
    """``--leverage`` for ``--market usdm`` (None for spot); the USD-M option checks, one line each."""
    from S1.errors import UserError

    if args.market != "usdm":
        if args.leverage is not None:
            raise UserError("--leverage needs --market usdm", "spot trading has no leverage: add --market usdm")
        return None
    if args.control is not None:
        raise UserError("--control (the S8 service) drives spot executors only", "drop --control with --market usdm")
    return 1.0 if args.leverage is None else float(args.leverage)


def _say_costs(args) -> None:
    """The dry run's simulator fills with --fee / --slippage-bps: one loud line when they are not
    the backtest's defaults (testnet and live fills are the exchange's own)."""
    if args.mode != "dry-run" and not args.offline:
        return
    from S5.costs import costs_warning

    line = costs_warning(fee=args.fee, slippage_bps=args.slippage_bps, fee_asset=args.fee_asset)
    if line:
        print(f"WARNING: {line}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    leverage = _usdm_checks(args)
    from S1.offline import offline_mode, offline_requested
    from S1.settings import get_settings
    from S7.config import check_config

    def checked(settings):
        """Bad input: one line, before anything starts (USD-M: its own keys, S7.futures_session)."""
        _say_costs(args)
        if leverage is None:
            return check_config(config_from_args(args), settings)
        from dataclasses import replace

        from S7.futures_session import check_usdm

        cfg = config_from_args(args)
        check_usdm(cfg, settings, leverage)
        return replace(check_config(replace(cfg, mode="dry-run"), settings), mode=cfg.mode)

    if not offline_requested(args.offline):
        cfg = checked(get_settings())
        return asyncio.run(_amain(cfg, args.control, leverage))
    from S1.errors import UserError

    if args.mode == "live":
        raise UserError("--offline trades a simulated market: it cannot be --live", "drop --live or --offline")
    if args.mode != "dry-run":
        print("offline: the dry-run simulator fills the orders (no testnet without internet)", flush=True)
        args.mode = "dry-run"
    if args.source == "db" and args.replay_days is None:
        args.source = "rest"          # no streamer database offline: poll the local market's REST klines
    days = int(args.replay_days or 0) + 30
    with offline_mode(True, days=days):
        cfg = checked(get_settings())
        return asyncio.run(_amain(cfg, args.control, leverage))


if __name__ == "__main__":
    main_entry(main)
