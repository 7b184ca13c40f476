"""Paper-trade several symbols in one process against one balance (dry-run replay).

    python S7/portfolio_executor.py --symbols BTCUSDT,ETHUSDT,BNBUSDT --interval 1h --days 365 \\
        --rules S4/rules.yaml --max-open 2 --dry-run [--replay-days 30] [--name majors]

replays the last --replay-days of each symbol's ``_ta`` file (python S2/indicators.py) through one S7 engine per
symbol (S4's decision, S7's orders and ledger) over ONE simulated account, one kill-switch, and the ranking and
--max-open of ``python S5/portfolio.py`` (S7/portfolio_session.py). Writes data/portfolio_<name>_paper.json (the
trades, skipped entries, final equity). Dry-run only: a live multi-symbol session is not implemented. A separate
script (not an option of S7/executor.py) because it runs several engines over one account, which the
single-symbol executor's session, state files and service hooks do not model. See S7/README.md.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import UserError


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S7/portfolio_executor.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", required=True, help="comma-separated, same quote asset, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--interval", required=True, help="Binance interval, e.g. 1h")
    p.add_argument("--days", required=True, type=int, help="window of the _ta files, e.g. 365")
    p.add_argument("--rules", default="S4/rules.yaml", help="an S4 rule file, or a YAML map as S5/portfolio.py takes")
    p.add_argument("--max-open", required=True, type=int, help="most positions open at once")
    p.add_argument("--rank-lookback", type=int, default=24, help="bars of trailing return that rank entries (24)")
    p.add_argument("--risk-config", default=None, metavar="YAML", help="S6 risk config (default S6/risk.yaml)")
    p.add_argument("--dry-run", action="store_true", help="required: the simulated account (no orders sent)")
    p.add_argument("--replay-days", type=int, default=None, help="replay only the last N days (default: all)")
    p.add_argument("--balance", type=float, default=10_000.0, help="starting quote balance (10000)")
    p.add_argument("--fee", type=float, default=0.001, help="simulated fee rate (0.001)")
    p.add_argument("--no-stops", action="store_true", help="do not act on stop-loss / take-profit levels")
    p.add_argument("--name", default=None, help="names the output file (default: from the symbols)")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.dry_run:
        raise UserError("only the dry-run replay of several symbols exists", "add --dry-run")
    import pandas as pd

    from S1.datasets import Dataset, atomic_write_text, portfolio_path
    from S4.signals import load_rule_inputs
    from S5.backtest_files import DEFAULT_RISK, resolve_filters
    from S5.hooks import load_risk
    from S5.portfolio_files import parse_symbols, rules_map
    from S7.paper_replay import scratch_dir
    from S7.portfolio_session import replay_portfolio

    syms = parse_symbols(args.symbols)
    name = args.name or "_".join(s.lower() for s in syms[:4]) + (f"_{len(syms)}" if len(syms) > 4 else "")
    out_path = portfolio_path(name, "paper")
    risk = load_risk(args.risk_config or DEFAULT_RISK)
    table = rules_map(args.rules, syms)
    frames, rules, filters, simulated = {}, {}, {}, False
    for s in syms:
        inp = load_rule_inputs(Dataset(s, args.interval, args.days), table[s])
        frame = inp.frame
        if args.replay_days is not None:
            frame = frame.loc[frame.index >= frame.index[-1] - pd.Timedelta(days=int(args.replay_days))]
        frames[s], rules[s], simulated = frame, inp.rules, simulated or inp.simulated
        filters[s] = resolve_filters(s, simulated=inp.simulated, price=float(frame["close"].iloc[-1]), generic=True)
    with tempfile.TemporaryDirectory(prefix="s7_portfolio_", dir=scratch_dir()) as tmp:
        out = asyncio.run(replay_portfolio(frames, interval=args.interval, rules=rules, risk=risk, filters=filters,
                                           state_dir=Path(tmp), max_open=args.max_open,
                                           rank_lookback=args.rank_lookback, use_stops=not args.no_stops,
                                           balance=args.balance, fee_rate=args.fee))
    out = {"symbols": syms, "interval": args.interval, "max_open": args.max_open, "simulated": simulated,
           "mode": "dry-run replay", **out}
    atomic_write_text(out_path, json.dumps(out, indent=1, default=str))
    label = " [SIMULATED market data]" if simulated else ""
    print(f"portfolio paper replay{label}: {len(out['trades'])} trades, skipped {out['skipped'] or 'none'}, "
          f"final equity {out['equity']:,.2f}")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    main_entry(main)
