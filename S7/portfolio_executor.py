"""Paper-trade several symbols in one process against one balance: the S5 portfolio's ranking and --max-open, live.

    python S7/portfolio_executor.py --symbols BTCUSDT,ETHUSDT --interval 1h --rules S4/rules.yaml --max-open 2
    python S7/portfolio_executor.py --symbols BTCUSDT,ETHUSDT,BNBUSDT --interval 1m --max-open 2 --dry-run
    python S7/portfolio_executor.py --symbols BTCUSDT,ETHUSDT,BNBUSDT --interval 1h --days 365 --max-open 2 \\
        --dry-run --replay-days 30

On every closed candle of every symbol (the streamer's database of all of them, ``python S1/streamer.py
--symbols BTCUSDT,ETHUSDT --interval 1h``; or ``--source rest``): one S7 engine per symbol (indicators, S4's
decision, S6 sizing, S7's orders and ledger -- what ``S7/executor.py`` runs for one symbol) over ONE account
-- the spot testnet (default), a simulated account with ``--dry-run``, or with ``--live`` and
``--i-understand-this-trades-real-money`` real money -- one kill-switch, and the ranking and --max-open of
``python S5/portfolio.py`` (S7/portfolio_live.py, S7/portfolio_session.py). ``--replay-days N`` (dry-run) replays the last N days of
each symbol's ``_ta`` file (``--days``) instead and writes data/portfolio_<name>_paper.json. Options are spelled as
in every script (S1/options.py); the old --balance and --risk-config still work for one release. A separate
script rather than an option of S7/executor.py: it runs several engines over one account, which the
single-symbol executor's state files and S8 service hooks do not model. See S7/README.md.
"""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import UserError
from S1.options import (
    add_cash_option,
    add_fee_options,
    add_offline_option,
    add_portfolio_options,
    add_risk_option,
    add_rules_option,
    add_trading_mode_options,
)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S7/portfolio_executor.py", description=__doc__.split("\n\n")[0])
    add_portfolio_options(p, interval_default="1m")       # as S7/executor.py (the streamer's default too)
    add_rules_option(p, help="S4 rule file for every symbol (default S4/rules.yaml), or a YAML map "
                             "'symbols: {SYM: file}' (+ 'default:') as S5/portfolio.py takes")
    add_trading_mode_options(p, dry_run_help="a simulated account on the live candles: no keys, no orders leave "
                                             "this machine")
    src = p.add_argument_group("candles")
    src.add_argument("--source", choices=("db", "rest"), default="db",
                     help="db: the streamer's SQLite table of all the symbols (default); rest: poll REST klines")
    src.add_argument("--db", type=Path, help="streamer database (default data/<first symbol>_<interval>_realtime.db)")
    src.add_argument("--poll", type=float, default=0.02, help="seconds between database checks (default 0.02)")
    src.add_argument("--group-wait", type=float, default=5.0, metavar="SECONDS",
                     help="how long a candle time waits for the other symbols' candles before it is decided "
                          "without them (default 5)")
    src.add_argument("--duration", type=float, metavar="SECONDS", help="stop by itself after this long")
    src.add_argument("--max-candle-age", type=float, metavar="SECONDS",
                     help="act only on candles closed less than this ago (default one interval; 0: any)")
    src.add_argument("--replay-days", type=int, default=None, metavar="N",
                     help="dry-run only: replay the last N days of each symbol's _ta file (--days) instead")
    strat = p.add_argument_group("strategy and risk")
    add_risk_option(strat, allow_none=False)
    strat.add_argument("--window", type=int, help="closed candles kept for the indicators (default: from them)")
    strat.add_argument("--no-stops", action="store_true", help="do not act on stop-loss / take-profit levels")
    sim = p.add_argument_group("dry-run simulator")
    add_offline_option(sim)
    add_cash_option(sim)
    add_fee_options(sim)      # the backtest's defaults (S1/options.py): fee 0.001, slippage 5 bp
    sim.add_argument("--exchange-info", type=Path, metavar="FILE", help="saved exchangeInfo body for the filters")
    files = p.add_argument_group("files")
    files.add_argument("--order-log", type=Path, help="order log (default data/orders.jsonl)")
    files.add_argument("--recv-window", type=int, default=5000, help="recvWindow of signed requests, ms")
    add_common_args(p)
    return p


def config_from_args(args):
    from S7.portfolio_live import PortfolioConfig

    return PortfolioConfig(symbols=tuple(s for s in args.symbols.split(",") if s.strip()), interval=args.interval,
                           rules=args.rules, max_open=args.max_open, mode=args.mode,
                           i_understand_real_money=args.real_money, rank_lookback=args.rank_lookback,
                           source=args.source, db=args.db, poll=args.poll, duration=args.duration,
                           window=args.window, risk_config=Path(args.risk) if args.risk else None, balance=args.cash,
                           fee_rate=args.fee, slippage_bps=args.slippage_bps, exchange_info=args.exchange_info,
                           use_stops=not args.no_stops, max_candle_age_s=args.max_candle_age,
                           recv_window_ms=args.recv_window, group_wait=args.group_wait, name=args.name,
                           order_log=args.order_log)


async def _live(cfg) -> int:
    from S7.portfolio_live import PortfolioSession

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows
            pass
    session = PortfolioSession(cfg, stop=stop)
    session.check()                     # bad input: one line, before anything starts
    out = await session.run()
    label = " (simulated market)" if out["simulated"] else ""
    closed = [t for t in out["trades"] if "exit_price" in t]
    print(f"S7 {cfg.mode} portfolio {','.join(out['symbols'])} {cfg.interval}{label}: {out['candle_times']} candle "
          f"time(s) ({out['stopped_by']}); {len(closed)} round trip(s), {len(out['trades']) - len(closed)} open, "
          f"most open {out['most_open']} of --max-open {cfg.max_open}; skipped {out['skipped'] or 'none'}; "
          f"equity {out['equity']:,.2f}", flush=True)
    return 0


def _replay(args) -> int:
    import pandas as pd

    from S1.datasets import Dataset, atomic_write_text, portfolio_path
    from S4.signals import load_rule_inputs
    from S5.backtest_files import DEFAULT_RISK, resolve_filters
    from S5.hooks import load_risk
    from S5.portfolio_files import parse_symbols, rules_map
    from S7.paper_replay import scratch_dir
    from S7.portfolio_session import replay_portfolio

    if args.mode != "dry-run":
        raise UserError("--replay-days replays past candles and only works with --dry-run",
                        "add --dry-run (a replay never sends orders to an exchange)")
    if not 0 < args.replay_days <= 3650:
        raise UserError(f"--replay-days must be in 1..3650, got {args.replay_days}", "e.g. --replay-days 30")
    syms = parse_symbols(args.symbols)
    name = args.name or "_".join(s.lower() for s in syms[:4]) + (f"_{len(syms)}" if len(syms) > 4 else "")
    out_path = portfolio_path(name, "paper")
    risk = load_risk(args.risk or DEFAULT_RISK)
    table = rules_map(args.rules, syms)
    frames, rules, filters, simulated = {}, {}, {}, False
    for s in syms:
        inp = load_rule_inputs(Dataset(s, args.interval, args.days), table[s])
        frame = inp.frame
        frame = frame.loc[frame.index >= frame.index[-1] - pd.Timedelta(days=int(args.replay_days))]
        frames[s], rules[s], simulated = frame, inp.rules, simulated or inp.simulated
        filters[s] = resolve_filters(s, simulated=inp.simulated, price=float(frame["close"].iloc[-1]), generic=True)
    with tempfile.TemporaryDirectory(prefix="s7_portfolio_", dir=scratch_dir()) as tmp:
        out = asyncio.run(replay_portfolio(frames, interval=args.interval, rules=rules, risk=risk, filters=filters,
                                           state_dir=Path(tmp), max_open=args.max_open,
                                           rank_lookback=args.rank_lookback, use_stops=not args.no_stops,
                                           balance=args.cash, fee_rate=args.fee, slippage_bps=args.slippage_bps))
    out = {"symbols": syms, "interval": args.interval, "max_open": args.max_open, "simulated": simulated,
           "mode": "dry-run replay", **out}
    atomic_write_text(out_path, json.dumps(out, indent=1, default=str))
    label = " [SIMULATED market data]" if simulated else ""
    print(f"portfolio paper replay{label}: {len(out['trades'])} trades, skipped {out['skipped'] or 'none'}, "
          f"final equity {out['equity']:,.2f}")
    print(f"wrote {out_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.mode == "dry-run" or args.offline or args.replay_days is not None:
        from S5.costs import costs_warning

        line = costs_warning(fee=args.fee, slippage_bps=args.slippage_bps, who="the portfolio dry run")
        if line:
            print(f"WARNING: {line}", flush=True)
    if args.replay_days is not None:
        return _replay(args)
    from S1.offline import offline_mode, offline_requested

    if not offline_requested(args.offline):
        return asyncio.run(_live(config_from_args(args)))
    if args.mode == "live":
        raise UserError("--offline trades a simulated market: it cannot be --live", "drop --live or --offline")
    if args.mode != "dry-run":
        print("offline: the dry-run simulator fills the orders (no testnet without internet)", flush=True)
        args.mode = "dry-run"
    args.source = "rest"               # no streamer database offline: poll the local market's REST klines
    with offline_mode(True, days=30):
        return asyncio.run(_live(config_from_args(args)))


if __name__ == "__main__":
    main_entry(main)
