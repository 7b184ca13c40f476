"""Risk command line: position size, kill-switch status / reset / trip, alert test.

    python S6/risk.py size --equity 10000 --price 43000 --atr 350 --method atr --risk-per-trade 0.01 --k 2 --symbol BTCUSDT
    python S6/risk.py size --equity 10000 --price 43000 --method kelly --win-rate 0.55 --payoff 1.5 --n-trades 80
    python S6/risk.py status            # every kill-switch state S7 wrote (live, testnet, dry-run, replays)
    python S6/risk.py status --mode dry-run
    python S6/risk.py reset             # a person clears a trip (logged: who, when)
    python S6/risk.py trip --reason "going on holiday"
    python S6/risk.py alert-test        # send a test alert to ALERT_WEBHOOK_URL

Exit codes: 0 ok, 2 bad input, 3 network, 4 the order cannot meet the exchange filters.
The logic lives in S6.sizing, S6.filters, S6.killswitch and S6.alerts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import UserError

EXIT_REFUSED = 4


def build_parser() -> ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_common_args(common)
    common.add_argument("--config", type=Path, help="risk settings YAML (default S6/risk.yaml)")
    common.add_argument("--state", type=Path, help="kill-switch state file (default: the one of --mode)")
    common.add_argument("--mode", choices=("live", "testnet", "dry-run"),
                        help="the trading mode whose kill-switch to use (S7 keeps one per mode); status without "
                             "--mode or --state shows all of them, reset/trip default to live")
    p = ArgumentParser(prog="python S6/risk.py", description="Position sizing, kill-switch and alerts.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{size,status,reset,trip,alert-test,config}")

    s = sub.add_parser("size", parents=[common], help="size a position and check it against the exchange filters")
    s.add_argument("--equity", type=float, required=True, help="account equity in quote currency")
    s.add_argument("--price", type=float, required=True, help="entry price")
    s.add_argument("--method", choices=("fixed", "atr", "kelly"), help="default: sizing.method of the config")
    s.add_argument("--atr", type=float, help="current ATR in price units (atr method; also sets the stop)")
    from S1.options import add_rules_option, deprecated

    s.add_argument("--risk-per-trade", dest="risk", type=float,
                   help="atr method: share of equity lost at the stop (0.01 = 1 %%)")
    # --risk names the risk FILE everywhere else (S1/options.py): the old spelling here still works
    s.add_argument("--risk", dest="risk", type=float, action=deprecated("--risk-per-trade"))
    s.add_argument("--k", type=float, help="stop distance in ATRs")
    s.add_argument("--stop-pct", type=float, help="fixed stop distance as a fraction of the price (instead of ATR)")
    s.add_argument("--fraction", type=float, help="fixed method: share of equity in the position")
    s.add_argument("--win-rate", type=float, help="kelly: share of winning trades")
    s.add_argument("--payoff", type=float, help="kelly: average win / average loss")
    s.add_argument("--n-trades", type=int, help="kelly: number of closed trades behind those figures")
    s.add_argument("--from-backtest", action="store_true",
                   help="kelly: take win rate, payoff and count from the S5 trades of --symbol/--interval/--days")
    s.add_argument("--interval", default="1h", help="with --from-backtest (default 1h)")
    s.add_argument("--days", type=int, help="with --from-backtest")
    add_rules_option(s, help="with --from-backtest: the rules whose S5 trades are read (default S4/rules.yaml)")
    s.add_argument("--symbol", help="check the exchange filters of this symbol (e.g. BTCUSDT)")
    from S1.options import ORDER_TYPES, order_type

    s.add_argument("--order-type", type=order_type, choices=ORDER_TYPES, default="limit",
                   help="order type the filters are checked for (market or limit, any case)")
    s.add_argument("--exchange-info", type=Path, metavar="FILE", help="use this exchangeInfo JSON instead of the cache/API")
    s.add_argument("--refresh", action="store_true", help="re-fetch exchangeInfo even if the cache is fresh")
    s.add_argument("--json", action="store_true", help="print the result as JSON")

    st = sub.add_parser("status", parents=[common], help="show the kill-switch state(s)")
    st.add_argument("--json", action="store_true",
                    help="print JSON: one object with --state/--mode, else a list (each with mode and label)")

    r = sub.add_parser("reset", parents=[common], help="clear a tripped kill-switch (asks nothing; logs who and when)")
    r.add_argument("--by", help="who resets (default user@host)")
    r.add_argument("--note", help="why (kept in the state file's history)")

    t = sub.add_parser("trip", parents=[common], help="trip the kill-switch by hand (stops new entries until reset)")
    t.add_argument("--reason", default="tripped by hand")
    t.add_argument("--by")

    a = sub.add_parser("alert-test", parents=[common], help="send a test alert to ALERT_WEBHOOK_URL")
    a.add_argument("--message", default="test alert from S6/risk.py")

    sub.add_parser("config", parents=[common], help="print the effective risk settings")
    return p


def _config(args):
    from S6.config import RiskConfig

    cfg = RiskConfig.load(args.config)
    if args.command != "size":
        return cfg
    sizing, stops = {}, {}
    if args.risk is not None:
        sizing["risk_per_trade"] = args.risk
    if args.fraction is not None:
        sizing["fixed_fraction"] = args.fraction
    if args.k is not None:
        stops["atr_k"] = args.k
    if args.stop_pct is not None:
        stops["stop_loss_pct"] = args.stop_pct
    return cfg.replace(sizing=sizing, stops=stops) if (sizing or stops) else cfg


def _alerter(cfg):
    from S6.alerts import WebhookAlerter

    return WebhookAlerter.from_settings(config=cfg.alerts)


def cmd_size(args, cfg) -> int:
    from S6.filters import load_exchange_info, plain, symbol_filters
    from S6.sizing import kelly_stats, size_position

    method = args.method or cfg.sizing.method
    win_rate, payoff, n = args.win_rate, args.payoff, args.n_trades
    if method == "kelly" and args.from_backtest:
        from S1.datasets import Dataset
        from S6.stress_analysis import load_backtest

        if not args.symbol or not args.days:
            raise UserError("--from-backtest needs --symbol, --interval and --days", "e.g. --symbol BTCUSDT --days 365")
        bt = load_backtest(Dataset.from_args(args), rules=args.rules)
        win_rate, payoff, n = kelly_stats(bt.trades["return"].to_numpy())
    res = size_position(equity=args.equity, price=args.price, config=cfg, atr=args.atr, win_rate=win_rate,
                        payoff=payoff, n_trades=n, method=method)
    out: dict = {"method": method, "equity": args.equity, "price": args.price, "size": res.size,
                 "notional": res.notional, "fraction_of_equity": res.fraction, "stop": res.stop,
                 "take_profit": res.take_profit, "risk_amount": res.risk_amount, "capped": res.capped,
                 "kelly_fraction": res.kelly, "filters": None}
    check = None
    if res.size == 0:
        out["note"] = "size 0: Kelly finds no edge in these figures -- do not open a position"
    elif args.symbol:
        info = load_exchange_info(file=args.exchange_info, refresh=args.refresh)
        f = symbol_filters(info, args.symbol)
        check = f.check_order(res.size, args.price, side="BUY", order_type=args.order_type.upper())
        stop = f.round_price(res.stop, direction="up") if res.stop is not None else None
        take = f.round_price(res.take_profit, direction="down") if res.take_profit is not None else None
        out["filters"] = {"symbol": f.symbol, "ok": check.ok, "reason": check.reason, "filter": check.filter,
                          "qty": plain(check.qty), "price": plain(check.price), "notional": plain(check.notional),
                          "stop": plain(stop), "take_profit": plain(take), "adjustments": list(check.adjustments),
                          "base_asset": f.base_asset, "quote_asset": f.quote_asset}
    if args.json:
        print(json.dumps(out, default=str, indent=2))
    else:
        _print_size(out, cfg)
    if check is not None and not check.ok:
        return EXIT_REFUSED
    return 0


def _print_size(o: dict, cfg) -> None:
    f = o["filters"]
    base = f["base_asset"] if f else "units"
    quote = f["quote_asset"] if f else ""
    if o["method"] == "atr":
        dist = o["price"] - o["stop"]
        why = (f"risk {cfg.sizing.risk_per_trade:.2%} of equity = {o['risk_amount']:,.2f} {quote} with the stop "
               f"{dist:,.8g} below the entry")
    elif o["method"] == "kelly":
        why = f"Kelly fraction {o['kelly_fraction']:.2%} of equity (x{cfg.sizing.kelly_fraction:g}, cap {cfg.sizing.kelly_cap:.0%})"
    else:
        why = f"fixed {cfg.sizing.fixed_fraction:.2%} of equity"
    print(f"method     {o['method']}: {why}")
    print(f"size       {o['size']:.8f} {base}   notional {o['notional']:,.2f} {quote} "
          f"({o['fraction_of_equity']:.1%} of equity){'  [capped at max_position_fraction]' if o['capped'] else ''}")
    if o["stop"] is not None:
        tp = f"   take-profit {o['take_profit']:,.8g}" if o["take_profit"] is not None else ""
        print(f"stop       {o['stop']:,.8g}{tp}")
    if o.get("note"):
        print(f"note       {o['note']}")
    elif f is None:
        print("filters    not checked (pass --symbol to round to the exchange's filters)")
    elif f["ok"]:
        print(f"filters    {f['symbol']} OK: order {f['qty']} {base} @ {f['price']} = {f['notional']} {quote}; "
              f"stop {f['stop']}, take-profit {f['take_profit']}")
        for a in f["adjustments"]:
            print(f"           adjusted: {a}")
    else:
        print(f"filters    {f['symbol']} REFUSED ({f['filter']}): {f['reason']}")


def _state(args):
    """The state file reset/trip/status act on: --state, else the file of --mode (default live)."""
    from S1.datasets import kill_switch_path

    return args.state if args.state is not None else kill_switch_path(args.mode or "live")


def cmd_status(args, cfg) -> int:
    from S6.killswitch import KillSwitch, StateFile, state_files

    if args.state is not None or args.mode is not None:
        files = [StateFile(_state(args), args.mode or "file", args.mode or str(args.state))]
    else:
        files = state_files(include_missing_live=True)
        if len(files) > 1 and not files[0].path.exists():
            files = files[1:]  # S7 wrote others; an untouched live state says nothing
    states = []
    for f in files:
        st = KillSwitch(cfg, path=f.path).status()
        st.update(mode=f.mode, label=f.label)
        states.append(st)
    if args.json:
        print(json.dumps(states[0] if args.state is not None or args.mode is not None else states,
                         default=str, indent=2))
        return 0
    for i, st in enumerate(states):
        if i:
            print()
        _print_status(st, cfg, header=len(states) > 1 or st["mode"] != "live")
    return 0


def _print_status(st: dict, cfg, *, header: bool) -> None:
    head = f"[{st['label']}] " if header else ""
    if st["tripped"]:
        until = f", resumes at {st['until']}" if st["until"] else ", until `python S6/risk.py reset`"
        print(f"{head}kill-switch TRIPPED ({st['reason']}) at {st['tripped_at']}{until}")
        print(f"  {st['detail']}")
    else:
        print(f"{head}kill-switch armed: entries allowed")
    if st["last_equity"] is not None:
        pct = lambda x: "-" if x is None else f"{x:.2%}"  # noqa: E731
        money = lambda x: "-" if x is None else f"{x:,.2f}"  # noqa: E731
        print(f"  equity {money(st['last_equity'])} at {st['last_time']}; peak {money(st['peak'])} "
              f"(drawdown {pct(st['drawdown'])}); day start {money(st['day_start_equity'])} "
              f"(day loss {pct(st['daily_loss'])}); losing streak {st['loss_streak']}")
    else:
        print("  no equity recorded yet")
    k = cfg.kill_switch
    print(f"  limits: max drawdown {k.max_drawdown}, daily loss {k.daily_loss_limit} ({k.daily_loss_resume}), "
          f"losing streak {k.max_consecutive_losses} (pause {k.loss_streak_pause_hours or 'manual'})")
    for e in st["events"][-5:]:
        print(f"  {e.get('at')}: {e.get('event')} {e.get('reason') or ''} {('by ' + e['by']) if e.get('by') else ''}"
              f" {e.get('note') or e.get('detail') or ''}".rstrip())
    print(f"  state file: {st['path']}")
    if st["mode"] in ("testnet", "dry-run") and st["tripped"]:
        print(f"  reset it with: python S6/risk.py reset --mode {st['mode']}")
    elif st["mode"] not in ("live", "file") and st["tripped"]:
        print(f"  reset it with: python S6/risk.py reset --state {st['path']}")


def cmd_reset(args, cfg) -> int:
    from S6.killswitch import KillSwitch

    ks = KillSwitch(cfg, path=_state(args))
    before = ks.reset(by=args.by, note=args.note)
    what = f"was tripped ({before.reason}: {before.detail})" if before.tripped else "was not tripped"
    print(f"kill-switch reset ({what}); entries allowed. Logged in {ks.path}")
    return 0


def cmd_trip(args, cfg) -> int:
    from S6.alerts import trip_alert_hook
    from S6.killswitch import KillSwitch

    ks = KillSwitch(cfg, path=_state(args), on_trip=trip_alert_hook(_alerter(cfg)))
    trip = ks.trip(args.reason, by=args.by)
    print(f"kill-switch TRIPPED ({trip.reason}): {trip.detail}. Clear it with: python S6/risk.py reset")
    return 0


def cmd_alert_test(args, cfg) -> int:
    from S6.alerts import AlertEvent, NullAlerter

    alerter = _alerter(cfg)
    if isinstance(alerter, NullAlerter):
        raise UserError("ALERT_WEBHOOK_URL is not set", "put it in .env (and ALERT_WEBHOOK_KIND=generic|discord|slack)")
    d = alerter.send(AlertEvent("test", "test alert", args.message, "info"))
    if d.status != "sent":
        from S1.errors import NetworkError

        raise NetworkError(f"the test alert was not delivered ({d.error})", "check ALERT_WEBHOOK_URL and the network")
    print(f"test alert delivered ({alerter.kind}, HTTP {d.http_status}, {d.attempts} attempt(s))")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = _config(args)
    if args.command == "config":
        sys.stdout.write(cfg.to_yaml())
        return 0
    return {"size": cmd_size, "status": cmd_status, "reset": cmd_reset, "trip": cmd_trip,
            "alert-test": cmd_alert_test}[args.command](args, cfg)


if __name__ == "__main__":
    main_entry(main)
