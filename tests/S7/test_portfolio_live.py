"""A live multi-symbol S7 session (S7/portfolio_live.py ``PortfolioSession``, what
``python S7/portfolio_executor.py`` runs) on the local test exchange (S7/local/exchange.py: signed
orders, one account) with candles arriving through a streamer database, as ``python S1/streamer.py
--symbols ...`` writes them: it never holds more than --max-open positions, its cash is never
negative, and its trades are the S5 portfolio backtest's over the same closed candles -- same
symbols, same deciding candles, same quantities and prices -- with the same ranking and --max-open."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.S7.helpers import API_KEY, CANARY_SECRET

SYMBOLS = ("ETHUSDT", "BNBUSDT", "SOLUSDT")
RULES = "S4/rules_ta_only.yaml"
WINDOW = 300


@pytest.fixture(scope="module")
def frames():
    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators

    out = {s: simulate_candles(s, "1h", "2023-01-01", "2023-02-02") for s in SYMBOLS}
    c = out["SOLUSDT"]
    out["SOLUSDT"] = c.loc[(c.index < "2023-01-25") | (c.index >= "2023-01-26")]     # an outage of one day
    return {s: add_indicators(c) for s, c in out.items()}        # on the candles that exist, as S2 and S7 see them


@pytest.fixture
def exchange(settings_env, monkeypatch):
    from S1.local.exchange import LocalBinance
    from S1.settings import get_settings
    from S7.local.exchange import BinanceTestExchange

    server = LocalBinance(simulate=True, simulate_days=2)
    ex = BinanceTestExchange(server, api_key=API_KEY, api_secret=CANARY_SECRET, balances={"USDT": "10000"})
    ex.book.fee_asset = "quote"     # commission in USDT, as the S5 backtest books it (Binance: with BNB fees)
    server.start()
    monkeypatch.setenv("BINANCE_API_URL", server.api_url)
    monkeypatch.setenv("BINANCE_TESTNET_API_URL", server.api_url)
    monkeypatch.setenv("BINANCE_TESTNET_API_KEY", API_KEY)
    monkeypatch.setenv("BINANCE_TESTNET_API_SECRET", CANARY_SECRET)
    monkeypatch.setenv("HTTP_TIMEOUT", "10")
    get_settings.cache_clear()
    try:
        yield ex
    finally:
        server.stop()
        get_settings.cache_clear()


def _risk(tmp_path):
    """S6/risk.yaml without the kill-switch limits (the backtest and the session share it)."""
    doc = yaml.safe_load(Path("S6/risk.yaml").read_text())
    doc.setdefault("kill_switch", {}).update({"max_drawdown": None, "daily_loss_limit": None,
                                               "max_consecutive_losses": None})
    path = tmp_path / "risk.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _rows(sym: str, frame: pd.DataFrame, i: int) -> tuple:
    r = frame.iloc[i]
    t = int(frame.index[i].value // 1_000_000)
    return (sym, "1h", t, t + 3_599_999, float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]),
            float(r["volume"]), float(r.get("quote_volume", 0.0)), float(r.get("taker_buy_base", 0.0)),
            float(r.get("taker_buy_quote", 0.0)), int(r.get("trades", 0)), 1)


def _backtest(frames, filters, risk_path, start, max_open):
    from dataclasses import replace

    from S4.rules import load_rules
    from S5.costs import Costs
    from S5.portfolio_backtest import prepare_symbol, run_portfolio
    from S6.config import RiskConfig

    rules = load_rules(RULES)
    risk = RiskConfig.load(risk_path)
    inputs = []
    for s, f in frames.items():
        full = prepare_symbol(f, rules, symbol=s, risk=risk, filters=filters[s])
        k = int(np.searchsorted(full.times, start.value))     # the same closed candles as the session's
        inputs.append(replace(full, **{n: getattr(full, n)[k:] for n in
                                       ("times", "open", "high", "low", "close", "atr", "entry_code", "exit_code",
                                        "score")}))
    res = run_portfolio(inputs, risk=risk, interval="1h", max_open=max_open, costs=Costs(fees=0.001, slippage=0.0))
    times = {s.symbol: s.times for s in inputs}
    out = []
    for _, t in res.trades.iterrows():
        tt = times[t["symbol"]]
        out.append({"symbol": t["symbol"], "entry_signal": pd.Timestamp(tt[t["entry_bar"] - 1], tz="UTC"),
                    "exit_signal": None if t["exit_reason"] == "end" else pd.Timestamp(tt[t["exit_bar"] - 1], tz="UTC"),
                    "qty": t["size"], "entry_price": t["entry_price"], "exit_price": t["exit_price"]})
    return out, res


@pytest.mark.slow
@pytest.mark.parametrize("max_open", [1, 2])
def test_live_session_equals_the_portfolio_backtest(frames, exchange, tmp_path, max_open):
    from S1.stream_store import KlineStore
    from S7.portfolio_live import PortfolioConfig, PortfolioSession

    risk_path = _risk(tmp_path)
    union = pd.DatetimeIndex(sorted(set().union(*(f.index for f in frames.values()))))
    start = frames["ETHUSDT"].index[WINDOW + 10]                 # the first candle time the session decides
    live_times = union[(union >= start)][:-2]                    # the backtest sees 2 more bars (its last-bar rules)
    db = tmp_path / "ethusdt_1h_realtime.db"
    store = KlineStore(db, checkpoint_every_s=None)
    store.write([_rows(s, f, i) for s, f in frames.items() for i in range(len(f)) if f.index[i] <= start])
    for s, f in frames.items():
        nxt = f.index[f.index > start]
        exchange.set_price(s, float(f.loc[nxt[0], "open"]))
    cfg = PortfolioConfig(symbols=SYMBOLS, interval="1h", rules=RULES, max_open=max_open, mode="testnet",
                          db=db, poll=0.01, window=WINDOW, risk_config=risk_path, max_candle_age_s=0,
                          group_wait=0.5, state_dir=tmp_path / "state", order_log=tmp_path / "orders.jsonl",
                          name="trio")

    async def drive():
        stop = asyncio.Event()
        session = PortfolioSession(cfg, stop=stop, progress=False)
        task = asyncio.create_task(session.run())

        async def until(cond, what):
            deadline = time.monotonic() + 120
            while not cond():
                if task.done():
                    task.result()
                    raise AssertionError(f"the session ended while waiting for {what}")
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.005)

        await until(lambda: session.last_group_ms == start.value // 1_000_000, "the first candle time")
        for t in live_times[1:]:
            rows = []
            for s, f in frames.items():
                if t in f.index:
                    i = f.index.get_loc(t)
                    rows.append(_rows(s, f, i))
                    exchange.set_price(s, float(f["open"].iloc[i + 1]))     # right after the close: the next open
            store.write(rows)
            await until(lambda t=t: session.last_group_ms == t.value // 1_000_000, f"candle time {t}")
        stop.set()
        return session, await task

    try:
        session, out = asyncio.run(drive())
    finally:
        store.close()
    filters = {s: exchange.symbol_filters(s) for s in SYMBOLS}
    bt, _ = _backtest(frames, filters, risk_path, start, max_open)
    last = live_times[-1]
    want = [t for t in bt if t["entry_signal"] <= last]
    for t in want:
        if t["exit_signal"] is not None and t["exit_signal"] > last:
            t["exit_signal"] = None                    # decided after the session's last candle: still open there
    got = out["trades"]
    assert len(want) > 5 and session.groups == len(live_times)
    key = lambda t: (t["symbol"], str(pd.Timestamp(t["entry_signal"])))
    want, got = sorted(want, key=key), sorted(got, key=key)
    assert [key(t) for t in got] == [key(t) for t in want]
    for g, w in zip(got, want):
        ex_sig = g.get("exit_signal")
        assert (None if ex_sig is None else pd.Timestamp(ex_sig)) == w["exit_signal"], (g, w)
        assert g["qty"] == pytest.approx(w["qty"], rel=1e-9), (g, w)
        assert g["entry_price"] == pytest.approx(w["entry_price"], rel=1e-9)
        if ex_sig is not None:
            assert g["exit_price"] == pytest.approx(w["exit_price"], rel=1e-9)
    if max_open == 1:
        assert out["skipped"].get("max_open", 0) > 0       # the ranking decided something
    # one balance: never more than --max-open positions, never negative cash (after every candle time)
    assert max(c["open"] for c in session.checks) <= max_open and out["most_open"] <= max_open
    assert min(c["free_quote"] for c in session.checks) >= 0
    assert out["most_open"] == max_open
