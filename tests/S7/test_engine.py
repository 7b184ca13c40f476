"""The engine against the local test exchange (real sockets, signed requests):
one order per signal, no duplicate after a timeout-then-retry, restarts that
reconcile and do not re-enter, the kill-switch, stops, cooldown, exchange errors."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from tests.S7.helpers import ABOVE_100, CANARY_SECRET, D, build_rig, candles, run, trading_client, warm_closes

SYM = "TESTUSDT"


WARM = warm_closes(80, 90.0)


def seq(t0: int, *extra: float, entry: float = 120.0):
    """80 closes below 100 (no entry), one close above 100 (entry) closing in the minute after
    ``t0`` (always fresh, wherever ``t0`` falls in its minute), then ``extra`` closes in the
    following minutes (the same open times for a given ``t0``)."""
    return candles(np.r_[WARM, entry, extra], end_ms=t0 + 60_000 * (1 + len(extra)))


def now_ms() -> int:
    import time

    return int(time.time() * 1000)


async def _enter(env, tmp, *, price="120.5", **kw):
    t0 = now_ms()
    df = seq(t0)
    df.attrs["t0"] = t0
    env.exchange.set_price(SYM, price)
    c = trading_client(env)
    rig = await build_rig(tmp, venue=c, symbol=SYM, **kw)
    rig.engine.seed(df.iloc[:-1])
    d = await rig.engine.on_candle(df.iloc[-1:])
    return rig, c, d, df


def test_entry_signal_sends_one_market_buy_and_books_the_fill(texchange, tmp_path):
    async def go():
        rig, c, d, _ = await _enter(texchange, tmp_path)
        try:
            assert d.action == "buy" and d.reason == "entry:entry" and d.result.status == "accepted"
            orders = texchange.exchange.orders_with_client_id(d.client_order_id)
            assert len(orders) == 1 and orders[0]["status"] == "FILLED" and orders[0]["type"] == "MARKET"
            qty = D(orders[0]["executedQty"])
            assert qty == D("8.333")            # 10 % of 10,000 USDT at 120, floored to the 0.001 step
            row = rig.store.get_order(d.client_order_id)
            assert row["status"] == "FILLED" and row["exchange_order_id"] == orders[0]["orderId"]
            pos = rig.store.position(SYM)
            assert pos.qty == qty - qty * D("0.001")            # the commission is paid in the base asset
            assert pos.entry_price == pytest.approx(120.5)
            # the stop keeps S6's distance from the signal price, placed at the fill
            assert pos.stop == pytest.approx(120.5 - row["stop_distance"], abs=0.01)
            assert pos.take_profit == pytest.approx(120.5 + row["tp_distance"], abs=0.01)
            statuses = [(e["event"], e["status"]) for e in rig.events()]
            assert statuses == [("intent", "INTENT"), ("accepted", "FILLED"), ("fill", "FILL")]
            assert texchange.exchange.book.balance("USDT")[0] == D("10000") - qty * D("120.5")
        finally:
            await c.close_connection()
    run(go())


def test_timeout_after_accept_is_looked_up_not_resent(texchange, tmp_path):
    """The exchange executes the order but the answer never comes back in time:
    exactly one order exists, found by its client id, booked once."""
    async def go():
        texchange.exchange.inject("timeout_after_accept", delay=600)  # held: the answer never comes
        rig, c, d, df = await _enter(texchange, tmp_path)
        try:
            assert d.result.status == "accepted" and d.result.found_by_lookup and d.result.sends == 1
            assert len(texchange.exchange.orders_with_client_id(d.client_order_id)) == 1
            assert len(texchange.exchange.posted()) == 1
            assert rig.store.get_order(d.client_order_id)["status"] == "FILLED"
            assert len(rig.store.fills(SYM)) == 1 and rig.store.position(SYM).is_open
            # the same candle delivered again (a source hiccup) makes no second order
            again = await rig.engine.on_candle(seq(df.attrs["t0"]).iloc[-1:])
            assert again.action == "seen" and len(texchange.exchange.posted()) == 1
        finally:
            await c.close_connection()
    run(go())


@pytest.mark.parametrize("fault", ["drop_after_accept", "error_after_accept"])
def test_other_unknown_outcomes_after_accept_do_not_duplicate(texchange, tmp_path, fault):
    async def go():
        texchange.exchange.inject(fault, status=503)
        rig, c, d, _ = await _enter(texchange, tmp_path)
        try:
            assert d.result.status == "accepted" and d.result.found_by_lookup
            assert len(texchange.exchange.orders_with_client_id(d.client_order_id)) == 1
            assert len(texchange.exchange.posted()) == 1
        finally:
            await c.close_connection()
    run(go())


def test_5xx_before_accept_is_resent_once_after_the_recv_window(texchange, tmp_path):
    async def go():
        texchange.server.inject("status", path="/api/v3/order", status=502)  # never reached the handler
        rig, c, d, _ = await _enter(texchange, tmp_path)
        try:
            assert d.result.status == "accepted" and d.result.sends == 2 and not d.result.found_by_lookup
            assert len(texchange.exchange.orders_with_client_id(d.client_order_id)) == 1
            gets = [r for r in texchange.exchange.requests if r.method == "GET" and r.path == "/api/v3/order"]
            post = texchange.exchange.posted()[0]
            # looked up before the re-send, and the re-send came after the lost request's recvWindow
            assert gets and gets[0].arrived < post.arrived
            assert post.arrived - gets[0].arrived >= 1.0
        finally:
            await c.close_connection()
    run(go())


def test_lookup_failing_leaves_the_order_unknown_and_blocks_new_orders(texchange, tmp_path):
    async def go():
        texchange.exchange.inject("timeout_after_accept", delay=600)  # held: the answer never comes
        texchange.exchange.inject("error", method="GET", path="/api/v3/order", count=40, status=500)
        rig, c, d, df = await _enter(texchange, tmp_path)
        t0 = df.attrs["t0"]
        try:
            assert d.result.status == "unknown" and d.result.sends == 1
            assert rig.store.get_order(d.client_order_id)["status"] == "UNKNOWN"
            assert rig.engine.needs_reconcile
            assert [e["status"] for e in rig.events()][-1] == "UNKNOWN"
            # the next candle: still unresolvable -> it waits, nothing is sent
            nxt = seq(t0, 121.0).iloc[-1:]
            d2 = await rig.engine.on_candle(nxt)
            assert d2.action == "waiting" and len(texchange.exchange.posted()) == 1
            # the exchange answers again: the reconciliation books the fill, still one order
            texchange.exchange.faults.clear()
            rep = await rig.engine.reconcile("reconnect")
            assert rep.ok and (d.client_order_id, "UNKNOWN", "FILLED") in rep.resolved
            assert rig.store.position(SYM).is_open and len(texchange.exchange.posted()) == 1
        finally:
            await c.close_connection()
    run(go())


def test_restart_mid_position_reconciles_and_does_not_reenter(texchange, tmp_path):
    async def go():
        rig, c, d, df = await _enter(texchange, tmp_path)
        qty = rig.store.position(SYM).qty
        rig.store.close()
        await c.close_connection()
        # a new process: same state files, a fresh engine; the entry rule still fires
        c2 = trading_client(texchange)
        try:
            rig2 = await build_rig(tmp_path, venue=c2, symbol=SYM)
            rep = rig2.engine.reports[-1]
            assert rep.position_after.qty == qty and rep.ok
            lines = "\n".join(rep.lines("TEST", "USDT"))
            assert "position: 8.324667 TEST" in lines and "balances: TEST 8.324667 free" in lines
            t0 = df.attrs["t0"]
            later = seq(t0, 125.0, 126.0, 95.0)
            rig2.engine.seed(later.iloc[:-3])
            # the candle already acted on before the restart is not acted on again
            d1 = await rig2.engine.on_candle(later.iloc[-4:-3])
            assert d1.action == "seen"
            d2 = await rig2.engine.on_candle(later.iloc[-3:-2])
            assert d2.action == "none" and len(texchange.exchange.posted()) == 1
            d3 = await rig2.engine.on_candle(later.iloc[-2:-1])
            assert d3.action == "none" and len(texchange.exchange.posted()) == 1
            # the exit still works from the restored position
            texchange.exchange.set_price(SYM, "95")
            d4 = await rig2.engine.on_candle(later.iloc[-1:])
            assert d4.action == "sell" and d4.reason.startswith("stop_loss:")   # the stop is checked first
            assert not rig2.store.position(SYM).is_open and len(texchange.exchange.posted()) == 2
        finally:
            await c2.close_connection()
    run(go())


def test_crash_between_intent_and_answer_is_resolved_on_restart(texchange, tmp_path):
    """The process dies after committing the intent and sending the order, before the
    answer is recorded: the next start finds the order by client id and books it."""
    async def go():
        from S7.exchange_client import submit_order
        from S7.orders import client_order_id

        c = trading_client(texchange)
        try:
            rig = await build_rig(tmp_path, venue=c, symbol=SYM)
            cid = client_order_id(symbol=SYM, interval="1m", candle_open_ms=1, side="BUY", strategy="t1")
            rig.store.insert_order(cid, symbol=SYM, interval="1m", candle_open_ms=1, side="BUY", type="MARKET",
                                   quantity="2", price="110", status="INTENT", reason="entry:entry")
            texchange.exchange.set_price(SYM, "110")
            await submit_order(c, symbol=SYM, side="BUY", order_type="MARKET", quantity="2", client_order_id=cid)
            rig.store.close()
            rig2 = await build_rig(tmp_path, venue=c, symbol=SYM)
            rep = rig2.engine.reports[-1]
            assert (cid, "INTENT", "FILLED") in rep.resolved and rep.fills_applied == 1
            assert rig2.store.position(SYM).qty == D("1.998")
            # and an intent that never reached the exchange is abandoned, never re-sent
            lost = client_order_id(symbol=SYM, interval="1m", candle_open_ms=2, side="SELL", strategy="t1")
            rig2.store.insert_order(lost, symbol=SYM, side="SELL", type="MARKET", quantity="1", status="INTENT")
            rig2.store.con.execute("UPDATE orders SET updated_ms = updated_ms - 5000 WHERE client_order_id = ?",
                                   (lost,))
            rep2 = await rig2.engine.reconcile("start")
            assert (lost, "INTENT", "ABANDONED") in rep2.resolved
            assert texchange.exchange.orders_with_client_id(lost) == []
        finally:
            await c.close_connection()
    run(go())


def test_kill_switch_trip_blocks_entries(texchange, tmp_path):
    async def go():
        from S6.killswitch import KillSwitch

        KillSwitch(path=tmp_path / "ks.json").trip("test: going on holiday", by="pytest")
        rig, c, d, _ = await _enter(texchange, tmp_path)
        try:
            assert d.action == "blocked" and "kill-switch tripped (manual" in d.reason
            assert texchange.exchange.posted() == []
            ev = rig.events()[-1]
            assert ev["status"] == "BLOCKED" and ev["side"] == "BUY" and "kill-switch" in ev["error"]
        finally:
            await c.close_connection()
    run(go())


@pytest.mark.parametrize("flatten", [True, False])
def test_drawdown_trip_stops_entries_and_flattens_when_configured(texchange, tmp_path, flatten, receiver,
                                                                 monkeypatch):
    async def go():
        from S1.settings import get_settings
        from S6.alerts import WebhookAlerter
        from S6.config import RiskConfig

        monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
        get_settings.cache_clear()

        risk = RiskConfig().replace(sizing={"method": "fixed", "fixed_fraction": 1.0},
                                    kill_switch={"max_drawdown": 0.05, "daily_loss_limit": None,
                                                 "max_consecutive_losses": None},
                                    stops={"take_profit_rr": None})
        rules = "entry: {col: close, op: '>', value: 100}\n"   # no exit rule: only the kill-switch can sell
        rig, c, d, df = await _enter(texchange, tmp_path, risk=risk, flatten=flatten, rules_text=rules,
                                     price="120", alerter=WebhookAlerter.from_settings())
        try:
            assert d.action == "buy"
            rig.store.set_levels(SYM, stop=None, take_profit=None)   # isolate the kill-switch
            crash = seq(df.attrs["t0"], 105.0)                               # ~ -12 % of equity
            texchange.exchange.set_price(SYM, "105")
            d2 = await rig.engine.on_candle(crash.iloc[-1:])
            assert d2.allowed is False and not rig.engine.kill_switch.allows_entries()
            if flatten:
                assert d2.action == "sell" and d2.reason == "kill_switch"   # S4.decide's exit reason (was kill_switch_flatten)
                assert not rig.store.position(SYM).is_open
            else:
                assert d2.action == "none" and rig.store.position(SYM).is_open
            sent = len(texchange.exchange.posted())
            # later entry signals are refused while tripped
            if flatten:
                more = seq(df.attrs["t0"], 105.0, 106.0)
                d3 = await rig.engine.on_candle(more.iloc[-1:])
                assert d3.action == "blocked" and len(texchange.exchange.posted()) == sent
            # the trip (decided in a worker thread) was alerted from the event loop
            await rig.engine.drain_alerts()
            trips = [e for e in receiver.events() if e["event"] == "kill_switch"]
            assert len(trips) == 1 and trips[0]["fields"]["reason"] == "max_drawdown"
        finally:
            await c.close_connection()
    run(go())


def test_stop_loss_exits_on_a_closed_candle_below_the_stop(texchange, tmp_path):
    async def go():
        rules = "entry: {col: close, op: '>', value: 100}\n"
        rig, c, d, df = await _enter(texchange, tmp_path, rules_text=rules)
        try:
            stop = rig.store.position(SYM).stop
            assert stop is not None and stop < 120.5
            dip = candles(np.r_[WARM, 120.0, stop * 0.98], end_ms=df.attrs["t0"] + 120_000, spread=0.0)
            texchange.exchange.set_price(SYM, f"{stop * 0.98:.2f}")
            d2 = await rig.engine.on_candle(dip.iloc[-1:])
            assert d2.action == "sell" and d2.reason.startswith("stop_loss:")
            trip = rig.store.round_trips(SYM)[-1]
            assert trip["pnl"] < 0 and trip["reason"].startswith("stop_loss")
        finally:
            await c.close_connection()
    run(go())


def test_cooldown_after_an_exit(texchange, tmp_path):
    async def go():
        text = ABOVE_100 + "cooldown: 2\n"
        rig, c, d, df = await _enter(texchange, tmp_path, rules_text=text)
        try:
            plan = [95.0, 121.0, 122.0, 123.0]   # exit, then entries at 1, 2 (cooldown) and 3 bars after
            full = seq(df.attrs["t0"], *plan)
            actions = []
            for i, px in enumerate(plan):
                texchange.exchange.set_price(SYM, str(px))
                dd = await rig.engine.on_candle(full.iloc[len(full) - len(plan) + i:][:1])
                actions.append(dd.action)
            assert actions == ["sell", "skipped", "skipped", "buy"]
        finally:
            await c.close_connection()
    run(go())


def test_stale_candles_only_update_the_window(texchange, tmp_path):
    async def go():
        df = seq(now_ms())
        c = trading_client(texchange)
        try:
            rig = await build_rig(tmp_path, venue=c, symbol=SYM)
            rig.engine.seed(df.iloc[:-1])
            now = int(df["close_time"].iloc[-1].value // 1_000_000) + 5 * 60_000   # closed 5 minutes before
            d = await rig.engine.on_candle(df.iloc[-1:], now_ms=now)
            assert d.action == "stale" and texchange.exchange.posted() == []
        finally:
            await c.close_connection()
    run(go())


def test_exchange_filter_rejection_and_balance_rejection_are_logged_and_alerted(texchange, tmp_path, receiver,
                                                                               monkeypatch):
    async def go():
        from S1.settings import get_settings
        from S6.alerts import WebhookAlerter
        from S6.config import RiskConfig
        from tests.S7.helpers import make_filters

        monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
        get_settings.cache_clear()
        alerter = WebhookAlerter.from_settings()
        # the executor believes in a finer step than the exchange enforces -> -1013 from the exchange
        loose = make_filters(SYM, step="0.0000001", min_qty="0.0000001", tick="0.0001")
        risk = RiskConfig().replace(sizing={"method": "fixed", "fixed_fraction": 0.1234567})
        rig, c, d, df = await _enter(texchange, tmp_path, filters=loose, alerter=alerter, risk=risk)
        try:
            assert d.action == "buy" and d.result.status == "rejected" and d.result.error.code == -1013
            row = rig.store.get_order(d.client_order_id)
            assert row["status"] == "REJECTED" and "LOT_SIZE" in row["error"]
            ev = rig.events()[-1]
            assert ev["status"] == "REJECTED" and ev["code"] == -1013
            # -1013 made the engine re-read exchangeInfo: its filters are the exchange's now
            assert rig.engine.filters.step_size == texchange.exchange.symbol_filters(SYM).step_size
            # -2010: the account cannot pay
            texchange.exchange.book.free["USDT"] = Decimal("1")
            rig.engine.balances["USDT"] = (Decimal("100000"), Decimal(0))   # a stale view of the balance
            nxt = seq(df.attrs["t0"], 121.0)
            d2 = await rig.engine.on_candle(nxt.iloc[-1:])
            assert d2.result.status == "rejected" and d2.result.error.code == -2010
            assert rig.engine.needs_reconcile
            await rig.engine.drain_alerts()
            kinds = [e["event"] for e in receiver.events()]
            assert kinds.count("order_rejected") == 2
            assert receiver.bodies and all(CANARY_SECRET not in b for b in receiver.bodies)
        finally:
            await c.close_connection()
            get_settings.cache_clear()
    run(go())


def test_network_failure_triggers_a_reconcile_before_the_next_action(texchange, tmp_path, caplog):
    async def go():
        rig, c, d, df = await _enter(texchange, tmp_path)
        try:
            n0 = rig.engine.stats["reconciles"]
            # lookups fail while an order of ours is open -> flagged
            rig.store.insert_order("s7-pending", symbol=SYM, side="SELL", type="MARKET", quantity="1",
                                   status="NEW", exchange_order_id=999999)
            texchange.exchange.inject("error", method="GET", path="/api/v3/order", count=8, status=503)
            assert not await rig.engine.sync_orders()
            assert rig.engine.needs_reconcile
            texchange.exchange.faults.clear()
            nxt = seq(df.attrs["t0"], 121.0)
            with caplog.at_level("INFO", logger="S7.reconcile"):
                await rig.engine.on_candle(nxt.iloc[-1:])
            assert rig.engine.stats["reconciles"] == n0 + 1
            assert "reconcile (reconnect)" in caplog.text
        finally:
            await c.close_connection()
    run(go())


def test_session_is_loud_when_its_risk_settings_differ_from_the_backtest(tmp_path):
    """S5/backtest.py trades with S6/risk.yaml and stops by default: a session that does
    otherwise says so in one loud line (log, summary dict, printed summary)."""
    import dataclasses

    from S7.config import SessionConfig
    from S7.session import REPO_RISK_FILE, SessionResult, risk_difference, summary_lines

    base = SessionConfig(symbol="BTCUSDT", interval="1h", rules=tmp_path / "r.yaml", mode="dry-run")
    assert risk_difference(base) is None
    assert risk_difference(dataclasses.replace(base, risk_config=REPO_RISK_FILE)) is None
    other = tmp_path / "risk.yaml"
    line = risk_difference(dataclasses.replace(base, risk_config=other, use_stops=False))
    assert line.startswith("RISK SETTINGS DIFFER FROM THE BACKTEST") and str(other) in line and "--no-stops" in line
    assert "--no-flatten-on-trip" in risk_difference(dataclasses.replace(base, flatten_on_trip=False))
    from S7.store import Position

    summary = {"mode": "dry-run", "symbol": "BTCUSDT", "interval": "1h", "orders_by_status": {}, "sent": 0, "buys": 0,
               "sells": 0, "fills": 0, "fees": 0.0, "position": Position("BTCUSDT"), "realized": 0.0,
               "round_trips": 0, "start_equity": 1.0, "equity": 1.0, "unrealized": 0.0, "last_price": 1.0,
               "kill_switch": {"tripped": False}}
    res = SessionResult(summary, tmp_path, tmp_path, tmp_path, 0, "replay", True, risk_warning=line)
    text = "\n".join(summary_lines(res))
    assert text.count("WARNING: RISK SETTINGS DIFFER") == 1
    assert "WARNING" not in "\n".join(summary_lines(dataclasses.replace(res, risk_warning=None)))
