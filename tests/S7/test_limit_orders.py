"""LIMIT orders (``--order-type limit``, S7/limit_orders.py) against the local test exchange
(real sockets, signed requests) and the dry-run simulator: full fill, partial fill +
cancel, partial + MARKET fallback, post-only refusal (-2010), restart while an order
rests, a timeout after the order was accepted, and dry-run == test exchange on one
price path; bad option combinations are one line + exit 2."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from S7.limit_orders import FALLBACK_SUFFIX, LimitPolicy
from tests.S7.helpers import REPO, D, build_rig, candles, run, trading_client, warm_closes

SYM = "TESTUSDT"
WARM = warm_closes(80, 90.0)
QTY = D("8.333")          # 10 % of 10,000 USDT at the signal close 120, on the 0.001 step
LIMIT_BUY = D("119.88")   # 120 * (1 - 10 bps), tick 0.01


def now_ms() -> int:
    import time

    return int(time.time() * 1000)


def seq(t0: int, *extra: float, entry: float = 120.0):
    """80 closes below 100, an entry close (above 100) in the minute after ``t0``, then ``extra``."""
    return candles(np.r_[WARM, entry, extra], end_ms=t0 + 60_000 * (1 + len(extra)))


def policy(**kw) -> LimitPolicy:
    kw.setdefault("offset_bps", 10)
    kw.setdefault("poll_s", 0)
    return LimitPolicy(**kw)


async def _place(env, tmp, lim, *, market="120.5", extra=(121.0,), venue=None):
    """Rig with ``lim``; the entry candle is acted on (a LIMIT BUY at 119.88 rests, market ``market``)."""
    t0 = now_ms()
    df = seq(t0, *extra)
    env.exchange.set_price(SYM, market)
    c = venue or trading_client(env)
    rig = await build_rig(tmp, venue=c, symbol=SYM, limit=lim)
    n = len(df) - len(extra)
    rig.engine.seed(df.iloc[:n - 1])
    d = await rig.engine.on_candle(df.iloc[n - 1:n])
    rig.history = df.iloc[:n]
    return rig, c, d, df.iloc[n:]


def _posted(env):
    return [r.params for r in env.exchange.posted() if r.status == 200]


def test_limit_buy_rests_then_fills_at_its_limit_after_a_timeout_on_accept(texchange, tmp_path):
    """The POST is accepted but its answer times out: found by client id, not re-sent;
    it rests, the market crosses it, it fills at its limit as maker, booked once."""
    async def go():
        texchange.exchange.inject("timeout_after_accept", delay=600)  # held: the answer never comes
        rig, c, d, _ = await _place(texchange, tmp_path, policy(timeout_candles=2))
        try:
            eng = rig.engine
            assert d.action == "buy" and d.result.found_by_lookup and d.result.sends == 1
            sent = texchange.exchange.posted()
            assert len(sent) == 1 and sent[0].params["type"] == "LIMIT" and sent[0].params["timeInForce"] == "GTC"
            assert D(sent[0].params["price"]) == LIMIT_BUY and D(sent[0].params["quantity"]) == QTY
            assert rig.store.get_order(d.client_order_id)["status"] == "NEW"
            assert texchange.exchange.book.balance("USDT") == (D("10000") - QTY * LIMIT_BUY, QTY * LIMIT_BUY)
            await eng.on_price(119.95, now_ms())            # not crossed: still resting
            assert rig.store.get_order(d.client_order_id)["status"] == "NEW" and not rig.store.fills(SYM)
            texchange.exchange.set_price(SYM, "119.5")       # crossed: fills at the limit
            await eng.on_price(119.5, now_ms())
            row = rig.store.get_order(d.client_order_id)
            assert row["status"] == "FILLED" and D(row["executed_qty"]) == QTY
            fills = rig.store.fills(SYM)
            assert len(fills) == 1 and D(fills[0]["price"]) == LIMIT_BUY
            pos = rig.store.position(SYM)
            assert pos.qty == QTY * D("0.999") and pos.entry_price == pytest.approx(119.88)
            assert pos.stop == pytest.approx(119.88 - row["stop_distance"], abs=0.01)
            assert eng.limits.record() is None
            assert texchange.exchange.book.trades[-1]["isMaker"] is True
            ev = [(e["event"], e["status"]) for e in rig.events()]
            assert ev[0] == ("intent", "INTENT") and ("fill", "FILL") in ev and ev.count(("fill", "FILL")) == 1
            assert len(texchange.exchange.orders_with_client_id(d.client_order_id)) == 1
        finally:
            await c.close_connection()
    run(go())


def test_partial_fill_then_cancel_at_the_deadline(texchange, tmp_path):
    async def go():
        rig, c, d, rest = await _place(texchange, tmp_path, policy(timeout_candles=1))
        try:
            eng, cid = rig.engine, d.client_order_id
            texchange.exchange.set_price(SYM, "119.8", qty="3")        # only 3 trade at the limit
            await eng.on_price(119.8, now_ms())
            row = rig.store.get_order(cid)
            assert row["status"] == "PARTIALLY_FILLED" and D(row["executed_qty"]) == 3
            assert rig.store.position(SYM).qty == D("3") * D("0.999")
            texchange.exchange.set_price(SYM, "121")
            d2 = await eng.on_candle(rest.iloc[:1])                      # the deadline candle
            assert d2.action != "waiting"
            ex = texchange.exchange.orders_with_client_id(cid)
            assert len(ex) == 1 and ex[0]["status"] == "CANCELED" and D(ex[0]["executedQty"]) == 3
            row = rig.store.get_order(cid)
            assert row["status"] == "CANCELED" and D(row["executed_qty"]) == 3 and D(row["quote_qty"]) == 3 * LIMIT_BUY
            assert len(rig.store.fills(SYM)) == 1
            assert rig.store.position(SYM).qty == D("3") * D("0.999")    # the partial position stays
            assert texchange.exchange.book.balance("USDT") == (D("10000") - 3 * LIMIT_BUY, D(0))
            assert eng.balances["USDT"] == (D("10000") - 3 * LIMIT_BUY, D(0))  # the freed reserve is seen
            assert len(_posted(texchange)) == 1                          # no fallback by default
            assert ("cancel", "CANCELED") in [(e["event"], e["status"]) for e in rig.events()]
            assert eng.limits.record() is None
        finally:
            await c.close_connection()
    run(go())


def test_partial_fill_then_market_fallback_for_the_remainder(texchange, tmp_path):
    async def go():
        rig, c, d, rest = await _place(texchange, tmp_path, policy(timeout_candles=1, fallback="market"))
        try:
            eng, cid = rig.engine, d.client_order_id
            texchange.exchange.set_price(SYM, "119.8", qty="3")
            await eng.on_price(119.8, now_ms())
            texchange.exchange.set_price(SYM, "121")
            await eng.on_candle(rest.iloc[:1])
            fb = texchange.exchange.orders_with_client_id(cid + FALLBACK_SUFFIX)
            assert len(fb) == 1 and fb[0]["type"] == "MARKET" and fb[0]["status"] == "FILLED"
            assert D(fb[0]["executedQty"]) == QTY - 3                    # exactly the unfilled remainder
            assert [p["type"] for p in _posted(texchange)] == ["LIMIT", "MARKET"]
            assert rig.store.get_order(cid)["status"] == "CANCELED"
            assert rig.store.get_order(cid + FALLBACK_SUFFIX)["status"] == "FILLED"
            assert [(D(f["price"]), D(f["qty"])) for f in rig.store.fills(SYM)] == [(LIMIT_BUY, D(3)),
                                                                                  (D(121), QTY - 3)]
            pos = rig.store.position(SYM)
            assert pos.qty == QTY * D("0.999")
            assert float(pos.cost) == pytest.approx(float(3 * LIMIT_BUY + (QTY - 3) * 121))
            # the next candle acts normally (no order left unresolved)
            assert not rig.store.unresolved(SYM)
        finally:
            await c.close_connection()
    run(go())


def test_a_failed_lookup_after_a_refused_cancel_is_retried_later(texchange, tmp_path, caplog):
    """The order fills at the exchange just before the deadline's cancel (-2011), and the lookup
    that follows fails: the engine flags a reconcile and keeps the order; the next lookup books it."""
    async def go():
        rig, c, d, rest = await _place(texchange, tmp_path, policy(timeout_candles=1))
        real_cancel = c.cancel_order

        async def cancel_after_the_fill(**kw):
            texchange.exchange.set_price(SYM, "119.8")                   # the whole order fills first
            texchange.exchange.inject("error", method="GET", path="/api/v3/order", count=8, status=503)
            return await real_cancel(**kw)

        try:
            eng, cid = rig.engine, d.client_order_id
            c.cancel_order = cancel_after_the_fill
            texchange.exchange.set_price(SYM, "121")
            with caplog.at_level(logging.WARNING, logger="S7"):
                await eng.on_candle(rest.iloc[:1])                       # the deadline candle
            assert f"order {cid}: lookup after a refused cancel failed" in caplog.text
            assert eng.needs_reconcile and eng.limits.record() is not None
            assert rig.store.get_order(cid)["status"] == "NEW"           # not booked from a failed lookup
            texchange.exchange.faults.clear()
            c.cancel_order = real_cancel
            assert await eng.sync_orders()                               # the lookup works again: booked
            row = rig.store.get_order(cid)
            assert row["status"] == "FILLED" and D(row["executed_qty"]) == QTY
            assert rig.store.position(SYM).qty == QTY * D("0.999")
            await eng.limits.step(now_ms=now_ms())
            assert eng.limits.record() is None
        finally:
            await c.close_connection()
    run(go())


@pytest.mark.parametrize("fallback", ["none", "market"])
def test_post_only_that_would_cross_is_refused_with_2010(texchange, tmp_path, caplog, fallback):
    async def go():
        lim = policy(post_only=True, offset_bps=0, fallback=fallback)
        with caplog.at_level(logging.WARNING):
            rig, c, d, _ = await _place(texchange, tmp_path, lim, market="119.9")   # BUY @ 120.00 would take
        try:
            cid = d.client_order_id
            ex = texchange.exchange.requests
            first = next(r for r in ex if r.method == "POST" and r.path == "/api/v3/order")
            assert first.params["type"] == "LIMIT_MAKER" and "timeInForce" not in first.params
            assert first.code == -2010
            row = rig.store.get_order(cid)
            assert row["status"] == "REJECTED" and "immediately match" in row["error"]
            lines = [r.getMessage() for r in caplog.records if "would cross" in r.getMessage()]
            assert len(lines) == 1 and "-2010" in lines[0]
            assert not rig.engine.needs_reconcile and rig.engine.limits.record() is None
            fb = texchange.exchange.orders_with_client_id(cid + FALLBACK_SUFFIX)
            if fallback == "market":
                assert len(fb) == 1 and fb[0]["status"] == "FILLED" and D(fb[0]["executedQty"]) == QTY
                assert rig.store.position(SYM).qty == QTY * D("0.999")
            else:
                assert fb == [] and not rig.store.position(SYM).is_open
                assert len(texchange.exchange.posted()) == 1
        finally:
            await c.close_connection()
    run(go())


def test_restart_while_resting_keeps_the_order_and_applies_its_fills(texchange, tmp_path):
    async def go():
        rig, c, d, rest = await _place(texchange, tmp_path, policy(timeout_candles=2, fallback="market"))
        cid = d.client_order_id
        rig.store.close()
        await c.close_connection()                           # the executor stops here
        texchange.exchange.set_price(SYM, "119.8", qty="2")  # ... and the order fills partly meanwhile
        c2 = trading_client(texchange)
        try:
            rig2 = await build_rig(tmp_path, venue=c2, symbol=SYM, limit=policy(timeout_candles=2,
                                                                                fallback="market"))
            rep = rig2.engine.reports[-1]
            assert rep.resting == [cid] and rep.cancelled == [] and rep.ok
            assert rig2.store.get_order(cid)["status"] == "PARTIALLY_FILLED"
            assert rig2.store.position(SYM).qty == D(2) * D("0.999")
            ex = texchange.exchange.orders_with_client_id(cid)
            assert len(ex) == 1 and ex[0]["status"] == "PARTIALLY_FILLED"       # still working, not cancelled
            # the same signal candle again makes no second order; the first candle after it waits (deadline 2)
            rig2.engine.seed(rig.history)
            texchange.exchange.set_price(SYM, "121")
            d1 = await rig2.engine.on_candle(rest.iloc[:1])
            assert d1.action == "waiting" and rig2.store.get_order(cid)["status"] == "PARTIALLY_FILLED"
            texchange.exchange.set_price(SYM, "119", qty="100")                 # the rest fills
            await rig2.engine.on_price(119.0, now_ms())
            assert rig2.store.get_order(cid)["status"] == "FILLED"
            assert rig2.store.position(SYM).qty == QTY * D("0.999")
            assert len(texchange.exchange.posted()) == 1                        # no duplicate, no fallback
            assert rig2.engine.limits.record() is None
            rig2.store.close()
        finally:
            await c2.close_connection()
    run(go())


def test_restart_after_the_deadline_cancels_then_falls_back_once(texchange, tmp_path):
    async def go():
        lim = policy(timeout_candles=1, fallback="market")
        rig, c, d, rest = await _place(texchange, tmp_path, lim)
        cid = d.client_order_id
        rig.store.close()
        await c.close_connection()
        c2 = trading_client(texchange)
        try:
            rig2 = await build_rig(tmp_path, venue=c2, symbol=SYM, limit=lim)
            assert rig2.engine.reports[-1].resting == [cid]
            rig2.engine.seed(rig.history)
            texchange.exchange.set_price(SYM, "121")
            await rig2.engine.on_candle(rest.iloc[:1])
            assert texchange.exchange.orders_with_client_id(cid)[0]["status"] == "CANCELED"
            assert len(texchange.exchange.orders_with_client_id(cid + FALLBACK_SUFFIX)) == 1
            rig2.store.close()
            await c2.close_connection()
            c3 = trading_client(texchange)                   # one more restart: nothing is sent again
            rig3 = await build_rig(tmp_path, venue=c3, symbol=SYM, limit=lim)
            rig3.engine.seed(rig.history)
            await rig3.engine.on_candle(rest.iloc[:1])
            assert len(texchange.exchange.posted()) == 2
            rig3.store.close()
            await c3.close_connection()
        finally:
            await c2.close_connection()
    run(go())


def test_dry_run_and_test_exchange_give_the_same_fills_on_the_same_path(texchange, tmp_path):
    """One path of prices (with traded quantities: partial fills) and candles, fed to an
    engine on the dry-run simulator and to one on the test exchange: the same orders,
    the same fills (price, qty, commission, maker) and the same position and pnl."""
    from S6.config import RiskConfig
    from S6.filters import SymbolFilters
    from S7.simulator import SimulatedExchange

    lim = policy(timeout_candles=1)
    # a wide stop, no take-profit: the exit comes from the rule, as a LIMIT order too
    risk = RiskConfig().replace(sizing={"method": "fixed", "fixed_fraction": 0.1},
                                kill_switch={"max_consecutive_losses": None},
                                stops={"stop_loss_pct": 0.5, "take_profit_rr": None})

    async def drive(venue, tmp, push):
        df = seq(now_ms(), 121.0, 95.0, 96.0)
        push("120.5", None)
        rig = await build_rig(tmp, venue=venue, symbol=SYM, limit=lim, risk=risk)

        async def price(p, q=None):
            push(p, q)
            await rig.engine.on_price(float(p), now_ms(), q)

        await price("120.5")
        rig.engine.seed(df.iloc[:-4])
        await rig.engine.on_candle(df.iloc[-4:-3])                      # entry: BUY LIMIT 119.88 rests
        for p, q in (("119.95", None), ("119.8", "3"), ("119.85", "2"), ("121", None)):
            await price(p, q)                                           # 3 + 2 fill at 119.88
        await rig.engine.on_candle(df.iloc[-3:-2])                      # deadline: the rest is cancelled
        await price("94.5")
        await rig.engine.on_candle(df.iloc[-2:-1])                      # close 95: exit, SELL LIMIT 95.095
        for p, q in (("94.9", None), ("118", "1.5"), ("95.1", "1"), ("94", None), ("96", None)):
            await price(p, q)                                           # 1.5 + 1 + the rest
        await rig.engine.on_candle(df.iloc[-1:])
        out = {"orders": [(o["side"], o["type"], o["price"], o["quantity"], o["status"], o["executed_qty"])
                          for o in rig.store.orders(SYM)],
               "fills": [(f["side"], f["price"], f["qty"], f["commission"], f["commission_asset"])
                         for f in rig.store.fills(SYM)],
               "position": rig.store.position(SYM), "trips": [(t["pnl"], t["fees"]) for t in rig.store.round_trips()],
               "loss_streak": rig.engine.kill_switch.state.loss_streak}
        rig.store.close()
        return out

    async def go():
        c = trading_client(texchange)
        try:
            ex = texchange.exchange
            real = await drive(c, tmp_path / "tx", lambda p, q: ex.set_price(SYM, p, q))
            filters = SymbolFilters.from_symbol_info(await c.symbol_info(SYM))
        finally:
            await c.close_connection()
        sim = SimulatedExchange(filters, balance=10_000, fee_rate=0.001)
        dry = await drive(sim, tmp_path / "dry", lambda p, q: None)    # the engine feeds the simulator
        return real, dry

    real, dry = run(go())
    assert real["fills"] == dry["fills"]
    assert real["orders"] == dry["orders"]
    assert real["trips"] == dry["trips"] and real["position"].realized_pnl == dry["position"].realized_pnl
    # what the path was meant to produce (hand-computed): BUY 3 + 2 at 119.88, the rest cancelled at the
    # deadline; SELL of the 4.995 held at 95 * 1.001 (tick 0.001): 1.5 + 1, then the rest
    assert [f[:3] for f in real["fills"]] == [("BUY", "119.88", "3"), ("BUY", "119.88", "2"),
                                              ("SELL", "95.095", "1.5"), ("SELL", "95.095", "1"),
                                              ("SELL", "95.095", "2.495")]
    assert [o[4] for o in real["orders"]] == ["CANCELED", "FILLED"]
    assert not real["position"].is_open and len(real["trips"]) == 1
    assert real["trips"][0][0] == pytest.approx(4.995 * 95.095 * 0.999 - 5 * 119.88, abs=1e-6)
    # the kill-switch saw the losing round trip once (not once per partial fill)
    assert real["loss_streak"] == dry["loss_streak"] == 1


@pytest.mark.parametrize("args, needle", [
    (["--post-only"], "--post-only only applies to LIMIT orders -- add --order-type limit, or drop it"),
    (["--limit-fallback", "market"], "--limit-fallback only applies to LIMIT orders"),
    (["--limit-timeout", "30"], "--limit-timeout only applies to LIMIT orders"),
    (["--order-type", "limit", "--post-only", "--limit-offset-bps", "-5"], "prices the order through the market"),
    (["--order-type", "limit", "--limit-timeout", "5", "--limit-timeout-candles", "2"], "not allowed with argument"),
    (["--order-type", "limit", "--limit-timeout", "0"], "--limit-timeout must be more than 0"),
    (["--order-type", "limit", "--limit-timeout-candles", "0"], "--limit-timeout-candles must be in 1..1000"),
    (["--order-type", "limit", "--limit-offset-bps", "5000"], "--limit-offset-bps must be in [-500, 1000]"),
    (["--order-type", "stop"], "invalid order type 'stop' (choose from market, limit)"),
    (["--order-type", "limit", "--limit-fallback", "twap"], "invalid choice: 'twap'"),
])
def test_bad_limit_options_are_one_line_exit_2(tmp_path, settings_env, capsys, args, needle):
    from S1.cli import run as cli_run
    from S7.executor import main

    base = ["--symbol", "BTCUSDT", "--interval", "1m", "--rules", "S4/rules_ta_only.yaml", "--dry-run"]
    old = os.getcwd()
    os.chdir(REPO)
    try:
        try:
            code = cli_run(main, base + args)
        except SystemExit as exc:
            code = exc.code
    finally:
        os.chdir(old)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines


def test_limit_dry_run_replay_end_to_end(tmp_path):
    """The real command line: a dry-run replay with post-only LIMIT orders and the MARKET
    fallback runs, and every limit fill is at its order's limit price."""
    from S1.local.exchange import LocalBinance
    from S7.order_log import read_order_log

    rules = tmp_path / "active.yaml"
    rules.write_text("entry: {col: rsi14, op: crosses_above, value: 50}\n"
                     "exit: {col: rsi14, op: crosses_below, value: 50}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "OPENAI_", "ALERT_WEBHOOK"))}
    (tmp_path / "empty.env").write_text("")
    with LocalBinance(simulate=True, simulate_days=30) as server:
        env.update(DATA_DIR=str(tmp_path / "data"), REPORTS_DIR=str(tmp_path / "reports"),
                   TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"), HTTP_MAX_RETRIES="1", HTTP_TIMEOUT="2",
                   BINANCE_API_URL=server.api_url)
        r = subprocess.run([sys.executable, "S7/executor.py", "--symbol", "BTCUSDT", "--interval", "1h", "--rules",
                            str(rules), "--dry-run", "--replay-days", "7", "--order-type", "limit", "--post-only",
                            "--limit-offset-bps", "5", "--limit-timeout-candles", "2", "--limit-fallback", "market"],
                           check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    events = read_order_log(tmp_path / "data" / "orders.jsonl")
    limits = {e["client_id"]: e for e in events if e["event"] == "intent" and e["type"] == "LIMIT_MAKER"}
    assert limits, r.stdout
    fills = [e for e in events if e["event"] == "fill" and e["client_id"] in limits]
    assert fills, "no LIMIT_MAKER order filled in a week of hourly candles"
    for f in fills:
        assert D(f["price"]) == D(limits[f["client_id"]]["price"])
