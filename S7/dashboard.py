"""The toolkit dashboard (Streamlit): data coverage, indicators, sentiment, the latest
backtest and the paper-trading state, all read from the data directory.

    streamlit run S7/dashboard.py
    streamlit run S7/dashboard.py -- --symbol ETHUSDC --interval 1h --days 365 --candles 1000
    python S2/screenshot.py S7/dashboard.py --full-page -- --symbol ETHUSDC    # -> reports/dashboard.png

The loaders live in :mod:`S7.dashboard_data` (also for notebooks); this script only
lays them out. Outputs made from the simulated market are labelled SIMULATED.
Reload the page (or press "Reload data") to see files that changed.
"""

from __future__ import annotations

import argparse

import pandas as pd
import streamlit as st

from S1.cli import streamlit_entry
from S1.datasets import data_dir, orders_log_path, reports_dir
from S1.errors import UserError
from S7 import dashboard_data as D
from S7.dashboard_compare import compare_section

RUN_HINT = "streamlit run S7/dashboard.py [-- --symbol BTCUSDT --interval 1h --days 365]"
SECTIONS = {"coverage": "Data coverage", "indicators": "Indicators", "sentiment": "Sentiment",
            "backtest": "Backtest", "paper": "Paper trading", "compare": "Runs side by side"}
TIME = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")
#: Display order of the wide tables: what explains a row (a file's note, an order's error) before the details.
COVERAGE_ORDER = ("file", "kind", "market", "interval", "rows", "first", "last", "gaps", "missing", "gap_ranges",
                  "simulated", "note", "size_mb", "modified")
ORDER_ORDER = ("time", "mode", "fills_by", "symbol", "side", "quantity", "status", "error", "executed_qty",
               "avg_price", "fills", "reason", "client_id", "updated", "events")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="S7/dashboard.py", add_help=False, exit_on_error=False,
                                description=f"The toolkit dashboard. Run it with: {RUN_HINT}")
    p.add_argument("--symbol", help="market shown first in the indicator and backtest panels")
    p.add_argument("--interval")
    p.add_argument("--days", type=int)
    p.add_argument("--candles", type=int, default=500, help="candles drawn in the indicator chart (500)")
    p.add_argument("--orders", type=int, default=200, help="latest order-log events listed (200)")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    try:
        args, ignored = build_parser().parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise UserError(f"bad dashboard argument: {exc}", f"e.g. {RUN_HINT}") from None
    for name in ("candles", "orders"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be a positive number, got {getattr(args, name)}", f"e.g. --{name} 500")
    return args, ignored


def _wanted(args, key: tuple) -> bool:
    """Does ``key`` = (symbol, interval, days) match the market asked on the command line?"""
    return ((not args.symbol or key[0] == args.symbol.upper()) and (not args.interval or key[1] == args.interval)
            and (not args.days or key[2] == args.days))


def _cmd(*lines: str) -> str:
    return "\n".join(f"- `{line}`" for line in lines)


def _pct(v) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{v:.2%}"


def _num(v) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{v:,.2f}"


# ----------------------------------------------------------------------- cached reads
@st.cache_resource(show_spinner="reading indicators ...", max_entries=4)
def _indicators(source: D.IndicatorSource, mtime_ns: int) -> pd.DataFrame:
    return D.load_indicators(source)


@st.cache_resource(show_spinner="reading the backtest ...", max_entries=4)
def _backtest(ref: D.BacktestRef, mtime_ns: int) -> D.Backtest:
    return D.load_backtest(ref)


# --------------------------------------------------------------------------- sections
def coverage_section(cov: pd.DataFrame, cmds: dict[str, str]) -> None:
    st.header(SECTIONS["coverage"], anchor="coverage")
    if cov.empty:
        st.info("No dataset files yet. Download candles with:\n" + _cmd(cmds["history"]))
        return
    sim = cov["simulated"].eq(True)
    shown = cov.assign(simulated=cov["simulated"].map(D.simulated_text))
    order = [c for c in COVERAGE_ORDER if c != "note" or cov["note"].fillna("").ne("").any()]
    st.dataframe(shown, hide_index=True, width="stretch", key="coverage-table", column_order=order,
                 column_config={"first": TIME, "last": TIME, "modified": TIME,
                                "size_mb": st.column_config.NumberColumn("size MB", format="%.3f"),
                                "gap_ranges": "first gaps", "simulated": "market data"})
    gaps = cov[cov["missing"].fillna(0) > 0]
    st.caption(f"{len(cov)} dataset(s) in {data_dir()} · "
               + (f"{int(sim.sum())} {D.SIMULATED_LABEL} · " if sim.any() else "")
               + (f"{len(gaps)} with missing candles (kept as gaps, never filled)" if len(gaps)
                  else "no missing candles"))


def indicators_section(args, cmds: dict[str, str]) -> None:
    st.header(SECTIONS["indicators"], anchor="indicators")
    sources = D.indicator_sources()
    if not sources:
        st.info("No candle or indicator file yet. Create them with:\n"
                + _cmd(cmds["history"], cmds["indicators"]))
        return
    keys = [(s.symbol, s.interval, s.days, s.exchange) for s in sources]
    default = next((i for i, k in enumerate(keys) if args.symbol and _wanted(args, k)), 0)
    col1, col2 = st.columns([3, 1])
    i = col1.selectbox("Dataset", range(len(sources)), index=default, format_func=lambda j: sources[j].label,
                       key="ind-dataset")
    n = col2.number_input("Candles shown", min_value=50, max_value=20_000, value=int(args.candles), step=100,
                          key="ind-candles")
    src = sources[i]
    frame = _indicators(src, src.path.stat().st_mtime_ns)
    window = frame.iloc[-int(n):]
    if src.simulated:
        st.markdown(f"**{D.SIMULATED_LABEL}** market data (offline mode): not real prices.")
    from S2.charts import indicator_chart
    from S2.ta import find_columns

    found = find_columns(window.columns)
    c = st.columns(4)
    close = window["close"]
    c[0].metric("Last close", f"{close.iloc[-1]:,.6g}", f"{(close.iloc[-1] / close.iloc[0] - 1) * 100:+.2f} % shown")
    if found.rsi:
        c[1].metric(f"RSI {found.rsi[0][3:]}", f"{window[found.rsi[0]].iloc[-1]:.1f}")
    if found.macd:
        c[2].metric("MACD histogram", f"{window[found.macd[1]].iloc[-1]:,.4g}")
    if found.natr:
        c[3].metric(f"NATR {found.natr[0][4:]} %", f"{window[found.natr[0]].iloc[-1]:.3f}")
    name = src.symbol + (" (simulated)" if src.simulated else "")
    fig = indicator_chart(window, panels=("volume", "rsi", "macd"), name=name, height=760)
    st.plotly_chart(fig, config={"displaylogo": False}, key="ind-chart")
    st.caption(f"{src.path.name} · last {len(window):,} of {len(frame):,} candles · "
               f"{window.index[0]:%Y-%m-%d %H:%M} .. {window.index[-1]:%Y-%m-%d %H:%M} UTC"
               + ("" if src.kind == "ta" else " · indicators computed here (no _ta file)")
               + f" · explore: `streamlit run S2/preview_streamlit.py -- --symbol {src.symbol} "
                 f"--interval {src.interval} --days {src.days}`")


def sentiment_section(cmds: dict[str, str]) -> None:
    st.header(SECTIONS["sentiment"], anchor="sentiment")
    files = D.sentiment_files()
    if not files:
        st.info("No sentiment file yet. Score the news with:\n" + _cmd(cmds["sentiment"]))
        return
    i = 0
    if len(files) > 1:
        i = st.selectbox("Sentiment file", range(len(files)), format_func=lambda j: files[j][1].name,
                         key="sent-file")
    interval, path = files[i]
    frame, meta = D.read_sentiment(path)
    s = D.sentiment_summary(frame, meta)
    if s["simulated"]:
        st.markdown(f"**{D.SIMULATED_LABEL}** news and market (offline mode).")
    c = st.columns(5)
    fmt = lambda v: "n/a" if v is None else f"{v:+.3f}"
    c[0].metric("Latest score", fmt(s["latest"]))
    c[1].metric("Mean, last 24 h", fmt(s["mean_24h"]))
    c[2].metric("Mean, last 7 days", fmt(s["mean_7d"]))
    c[3].metric("Items, last 24 h", "n/a" if s["items_24h"] is None else f"{s['items_24h']:,}")
    c[4].metric("Items, last 7 days", "n/a" if s["items_7d"] is None else f"{s['items_7d']:,}")
    if len(frame):
        recent = frame[frame.index > frame.index[-1] - pd.Timedelta(days=30)]
        st.plotly_chart(D.sentiment_figure(recent, simulated=s["simulated"]), config={"displaylogo": False},
                        key="sent-chart")
        st.caption(f"{path.name} · {len(frame):,} {interval} rows · {s['first']:%Y-%m-%d %H:%M} .. "
                   f"{s['last']:%Y-%m-%d %H:%M} UTC (last 30 days drawn) · classifier "
                   f"{s['classifier'] or 'not recorded'} · half-life {s['half_life'] or 'not recorded'} · "
                   "a score at open time t only uses items published before t")


def backtest_section(args, cmds: dict[str, str]) -> D.Backtest | None:
    st.header(SECTIONS["backtest"], anchor="backtest")
    refs = D.backtest_runs()
    if not refs:
        st.info("No backtest yet. Run the rules and the backtest with:\n" + _cmd(cmds["signals"], cmds["backtest"]))
        return None
    default = next((i for i, r in enumerate(refs) if args.symbol and _wanted(args, (r.symbol, r.interval, r.days))), 0)
    i = 0
    if len(refs) > 1:
        i = st.selectbox("Backtest run (newest first)", range(len(refs)), index=default,
                         format_func=lambda j: refs[j].label, key="bt-run")
    ref = refs[i]
    bt = _backtest(ref, ref.json_path.stat().st_mtime_ns)
    st.subheader(f"{ref.symbol} {ref.interval} {ref.days}d" + (f" · {D.SIMULATED_LABEL}" if ref.simulated else ""))
    m = bt.metrics
    from S5.metrics import format_metric

    first = [("total_return", "Total return"), ("cagr", "CAGR"), ("sharpe", "Sharpe"), ("sortino", "Sortino"),
             ("max_drawdown", "Max drawdown")]
    second = [("win_rate", "Win rate"), ("profit_factor", "Profit factor"), ("n_trades", "Trades"),
              ("exposure", "Exposure"), ("final_equity", "Final equity")]
    for row in (first, second):
        cols = st.columns(len(row))
        for col, (k, label) in zip(cols, row):
            delta = None
            if k == "total_return" and m.get("buy_and_hold_return") is not None:
                delta = f"buy & hold {format_metric('buy_and_hold_return', m['buy_and_hold_return'])}"
            col.metric(label, format_metric(k, m.get(k)), delta, delta_color="off", delta_arrow="off")
    if bt.equity is not None:
        st.plotly_chart(D.equity_figure(bt), config={"displaylogo": False}, key="bt-chart")
    if bt.missing:
        st.warning(f"missing beside {ref.json_path.name}: {', '.join(bt.missing)} -- re-run `{cmds['backtest']}`")
    params = bt.summary.get("params") or {}
    costs = ", ".join(f"{k} {params[k]}" for k in ("fees", "slippage", "init_cash") if k in params)
    trips = bt.summary.get("kill_switch") or []
    report = (f"full report: `{bt.html}` (open it in a browser)" if bt.html is not None
              else f"no HTML report (run `{cmds['backtest']}` without --no-report)")
    st.caption(f"{ref.json_path.name} · run {ref.created_at:%Y-%m-%d %H:%M} UTC · {costs} · "
               f"kill-switch trips: {len(trips)} · {report}")
    with st.expander("All metrics, parameters and trades"):
        c1, c2 = st.columns([1, 2])
        c1.dataframe(D.metric_rows(m), hide_index=True, width="stretch", key="bt-metrics")
        c2.json(params, expanded=False)
        if bt.trades is not None:
            c2.dataframe(bt.trades.iloc[::-1], hide_index=True, width="stretch", key="bt-trades",
                         column_config={"entry_time": TIME, "exit_time": TIME})
    return bt


def paper_section(args, cmds: dict[str, str]) -> None:
    st.header(SECTIONS["paper"], anchor="paper")
    switches = D.kill_switch_states()
    if not switches:
        st.info("No kill-switch state yet: the first executor session creates it, e.g.\n" + _cmd(cmds["paper"]))
    for ks in switches:
        cfg = ks["config"]
        # the state file does not record the limits it was run with: S6/risk.yaml's are shown, as such
        limits = (f"now: drawdown {_pct(ks['drawdown'])} · day loss {_pct(ks['daily_loss'])} · losing streak "
                  f"{ks['loss_streak']} · last equity {_num(ks['last_equity'])} (peak {_num(ks['peak'])}) · "
                  f"limits in S6/risk.yaml: drawdown {_pct(cfg.get('max_drawdown'))}, day loss "
                  f"{_pct(cfg.get('daily_loss_limit'))}, losing streak {cfg.get('max_consecutive_losses') or 'off'}")
        if ks["tripped"] and not ks["entries_allowed"]:
            until = f"until {ks['until']}" if ks["until"] else f"until `{ks['reset_command']}`"
            st.warning(f"**Kill-switch {ks['label']}: TRIPPED** ({ks['reason']}) at {ks['tripped_at']}: "
                       f"{ks['detail']} -- new entries refused {until}.  \n{limits}")
        else:
            note = " (timed pause over: resumes at the next candle)" if ks["tripped"] else ""
            st.success(f"**Kill-switch {ks['label']}: OK**, entries allowed{note}.  \n{limits}")
    if switches:
        with st.expander("Kill-switch events"):
            ev = [dict(e, kill_switch=k["label"]) for k in switches for e in k["events"]]
            st.dataframe(pd.DataFrame(ev), hide_index=True, width="stretch", key="ks-events")

    st.subheader("Positions")
    states = D.executor_states()
    pos = D.positions_table(states)
    if not states:
        st.info("No executor state yet (`data/state/s7_*.db`). A dry run creates one:\n" + _cmd(cmds["paper"]))
    elif pos.empty:
        readable = [s for s in states if not s.error]
        if readable:
            st.info(f"No position yet: {len(readable)} executor session(s) found, none has a fill "
                    "(a session that never traded has no position).")
    else:
        open_ = pos[pos["state"] == "OPEN"]
        c = st.columns(4)
        c[0].metric("Open", f"{len(open_)}")
        c[1].metric("Realised pnl (quote)", f"{pos['realized_pnl'].sum():,.2f}")
        c[2].metric("Fees (quote)", f"{pos['fees'].sum():,.2f}")
        c[3].metric("Round trips", f"{int(pos['round_trips'].sum()):,}")
        st.dataframe(pos, hide_index=True, width="stretch", key="positions",
                     column_config={"entry_time": TIME, "fills_by": "filled by",
                                    "qty": st.column_config.NumberColumn(format="%.8f"),
                                    "dust": st.column_config.NumberColumn(format="%.8f")})
        trips = [s.round_trips.assign(state=s.label) for s in states if len(s.round_trips)]
        if trips:
            with st.expander("Closed round trips"):
                st.dataframe(pd.concat(trips).sort_values("exit_time", ascending=False), hide_index=True,
                             width="stretch", key="round-trips", column_config={"entry_time": TIME, "exit_time": TIME})
    if states:
        st.caption("executor state: " + " · ".join(f"{s.label} (`{s.file}`)" for s in states))
    for s in states:
        if s.error:
            st.warning(f"{s.file}: {s.error}")

    st.subheader("Orders")
    events = D.order_events()
    if events.empty:
        st.info("The order log `data/orders.jsonl` is empty or absent. A dry run writes it:\n" + _cmd(cmds["paper"]))
        return
    orders = D.orders_table(events)
    counts = orders["status"].value_counts()
    c = st.columns(4)
    c[0].metric("Orders", f"{len(orders):,}")
    c[1].metric("Filled", f"{int(counts.get('FILLED', 0)):,}")
    c[2].metric("Blocked / refused", f"{int(counts.get('BLOCKED', 0) + counts.get('REFUSED', 0)):,}")
    c[3].metric("Rejected / unknown", f"{int(counts.get('REJECTED', 0) + counts.get('UNKNOWN', 0)):,}")
    st.caption(f"{len(events):,} events in `{orders_log_path()}` · last "
               f"{events['time'].max():%Y-%m-%d %H:%M:%S} UTC")
    modes = sorted(orders["mode"].dropna().unique())
    picked = st.multiselect("Modes", modes, default=modes, key="order-modes")
    shown = orders[orders["mode"].isin(picked)]
    st.dataframe(shown, hide_index=True, width="stretch", key="orders", column_order=ORDER_ORDER,
                 column_config={"time": TIME, "updated": TIME, "fills_by": "filled by"})
    with st.expander(f"Last {min(args.orders, len(events))} order-log events (newest first)"):
        st.dataframe(events.iloc[::-1].head(args.orders), hide_index=True, width="stretch", key="order-events",
                     column_config={"time": TIME})
    if any(str(m).startswith("dry-run") for m in modes):
        st.caption("dry-run orders are filled by the local simulator (S7/simulator.py): their fills are simulated")


# ------------------------------------------------------------------------------ app
def main(argv: list[str]) -> None:
    st.set_page_config(page_title="Toolkit dashboard", layout="wide")
    args, ignored = parse_args(argv)
    base = data_dir()
    st.sidebar.title("Dashboard")
    toc = st.sidebar.container()  # the section links, once there is something to link to
    if st.sidebar.button("Reload data", key="reload"):
        st.cache_resource.clear()
    st.sidebar.caption(f"data: `{base}`  \nreports: `{reports_dir()}`")
    if ignored:
        st.sidebar.caption(f"ignored arguments: {' '.join(ignored)}")

    st.title("Trading research dashboard")
    from S7.dashboard_service import service_section

    service_section()  # a running S8 service (its control API), when CONTROL_API_TOKEN is set
    if not D.has_any_data():
        cmds = D.commands()
        st.info(f"**No data yet in `{base}`.** Create everything with one command:\n"
                f"{_cmd(cmds['all'])}\n\n(the whole chain for BTCUSDT 1h over one year; "
                f"`{cmds['offline']}` forces the simulated market) -- or step by step:\n"
                + _cmd(cmds["history"], cmds["indicators"], cmds["sentiment"], cmds["signals"], cmds["backtest"],
                       cmds["paper"])
                + "\n\nThen reload this page. `DATA_DIR` in `.env` sets the folder.")
        st.stop()

    toc.markdown("\n".join(f"- [{title}](#{key})" for key, title in SECTIONS.items()))
    cov = D.coverage_table()
    market = (args.symbol.upper(), args.interval, args.days) if args.symbol and args.interval and args.days \
        else D.first_market(cov)
    cmds = D.commands(*market)
    sim = cov[cov["simulated"].eq(True)] if len(cov) else cov
    if len(sim):
        st.warning(f"**{D.SIMULATED_LABEL} market data:** {len(sim)} of {len(cov)} dataset file(s) were made from "
                   "the offline simulated market, not real prices; every output made from them is marked "
                   f"{D.SIMULATED_LABEL} below.")
    top = D.overview(coverage=cov)
    c = st.columns([1, 1.5, 1, 1, 1.3])
    c[0].metric("Datasets", f"{top['datasets']}", f"{top['simulated']} {D.SIMULATED_LABEL}" if top["simulated"]
                else None, delta_color="off", delta_arrow="off")
    if top["backtest"]:
        from S5.metrics import format_metric

        c[1].metric("Latest backtest return", format_metric("total_return", top["total_return"]),
                    top["backtest"] + (f" · {D.SIMULATED_LABEL}" if top["backtest_simulated"] else ""),
                    delta_color="off", delta_arrow="off")
    c[2].metric("Latest sentiment", "n/a" if top["sentiment"] is None else f"{top['sentiment']:+.3f}",
                None if top["sentiment_at"] is None else f"{top['sentiment_at']:%Y-%m-%d %H:%M} UTC",
                delta_color="off", delta_arrow="off")
    c[3].metric("Open positions", f"{top['open_positions']}")
    if top["kill_switches"]:
        tripped = top["tripped"]
        c[4].metric("Kill-switch", "TRIPPED" if tripped else "OK",
                    f"{', '.join(tripped)} · {len(tripped)} of {top['kill_switches']}" if tripped
                    else f"{top['kill_switches']} state file(s)", delta_color="inverse" if tripped else "off",
                    delta_arrow="off")
    st.caption(f"data directory `{base}` · {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC")
    for section, call in (("coverage", lambda: coverage_section(cov, cmds)),
                          ("indicators", lambda: indicators_section(args, cmds)),
                          ("sentiment", lambda: sentiment_section(cmds)),
                          ("backtest", lambda: backtest_section(args, cmds)),
                          ("paper", lambda: paper_section(args, cmds)),
                          ("compare", compare_section)):
        try:
            call()
        except UserError as exc:  # a file this section cannot use: say which, show the other sections
            st.warning(f"{SECTIONS[section]}: {exc}")
        except Exception as exc:  # a bug: shown with its traceback, the other sections still render
            st.exception(exc)


if __name__ == "__main__":
    streamlit_entry(main, hint=RUN_HINT, build_parser=build_parser)
