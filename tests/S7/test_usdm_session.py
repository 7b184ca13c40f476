"""S7's USD-M testnet session (``python S7/executor.py --market usdm``) against the local USD-M
test exchange (S7/local/usdm.py, real sockets and signatures): margin type and leverage set,
a long and a short opened and closed with ``reduceOnly`` exactly on the exits, funding read
from ``/fapi/v1/income`` into the trade records (hand-computed), an order whose answer is lost
sent once, a position closed outside the strategy, the first leverage bracket read and cached,
a bad key in one line -- and the session trading the S5 USD-M backtest's trades one for one."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from S7.local.usdm import LocalUSDM, _Position, futures_listing

REPO = Path(__file__).resolve().parents[2]
KEY, SECRET = "usdm-key", "usdm-canary-secret-7f3a"
HOUR = 3_600_000


class DrivenSource:
    """Candles of ``frame`` for the session, driving the local exchange as the market would:
    before candle i is handed over, the funding times inside it are settled (mark: the file's,
    else candle i's open), the exchange's liquidation engine runs over it and the exchange's price is set to the next candle's open -- where the
    orders sent on candle i's close fill, as in the backtest. The last candle only feeds the
    next open: ``len(frame) - 1`` candles are decided."""

    description = "driven test candles"

    def __init__(self, frame: pd.DataFrame, ex: LocalUSDM, funding: pd.DataFrame | None = None,
                 on_candle=None):
        self.frame, self.ex, self.funding, self.on_candle = frame, ex, funding, on_candle

    async def history(self, n: int) -> pd.DataFrame:
        from S1.datasets import empty_candles

        return empty_candles()

    async def events(self, stop):
        from S7.paper_replay import candle_frame
        from S7.sources import CandleEvent

        f = candle_frame(self.frame[["open", "high", "low", "close"]], "1h")
        opens = f.index.as_unit("ms").asi8
        for i in range(len(f) - 1):
            if self.funding is not None:
                ft = self.funding.index.as_unit("ms").asi8
                for k in np.nonzero((ft >= opens[i]) & (ft < opens[i] + HOUR))[0]:
                    mark = self.funding["mark_price"].iloc[k]
                    self.ex.settle_funding(float(self.funding["funding_rate"].iloc[k]),   # stamped now, as live
                                           mark=float(f["open"].iloc[i]) if not np.isfinite(mark) else float(mark))
            self.ex.liquidate("BTCUSDT", open_=float(f["open"].iloc[i]), high=float(f["high"].iloc[i]),
                              low=float(f["low"].iloc[i]))
            self.ex.set_price(float(f["open"].iloc[i + 1]))
            if self.on_candle is not None:
                self.on_candle(i, self.ex)
            yield CandleEvent(f.iloc[i:i + 1], now_ms=int(opens[i]) + HOUR)
            if stop.is_set():
                return

    async def close(self) -> None:
        pass


def _cfg(tmp_path, rules: Path, *, use_stops=True, risk: Path | None = None, fee=0.0004):
    from S7.config import SessionConfig

    return SessionConfig(symbol="BTCUSDT", interval="1h", rules=rules, mode="testnet", state=tmp_path / "st.json",
                         kill_switch_state=tmp_path / "ks.json", order_log=tmp_path / "orders.jsonl", fee_rate=fee,
                         max_candle_age_s=0, use_stops=use_stops, risk_config=risk)


@pytest.fixture
def usdm_env(settings_env, monkeypatch):
    """A local USD-M exchange in its own thread, the settings pointed at it with futures keys."""
    from S1.settings import get_settings

    ex = LocalUSDM(api_key=KEY, api_secret=SECRET, fee_rate=0.0004, balance=10_000.0)
    url = ex.start_in_thread()
    monkeypatch.setenv("BINANCE_FUTURES_TESTNET_API_URL", url)
    monkeypatch.setenv("BINANCE_FUTURES_TESTNET_API_KEY", KEY)
    monkeypatch.setenv("BINANCE_FUTURES_TESTNET_API_SECRET", SECRET)
    monkeypatch.setenv("HTTP_TIMEOUT", "10")
    get_settings.cache_clear()
    try:
        yield ex
    finally:
        ex.stop_thread()
        get_settings.cache_clear()


def _frame(closes: list[float], start="2024-01-01") -> pd.DataFrame:
    """Candles whose next open is the previous close (the scripted path), atr14 = 2."""
    t = pd.date_range(start, periods=len(closes), freq="h", tz="UTC", name="open_time")
    c = np.array(closes, dtype=float)
    o = np.r_[c[0], c[:-1]]
    return pd.DataFrame({"open": o, "high": np.maximum(o, c) + 0.5, "low": np.minimum(o, c) - 0.5, "close": c,
                         "volume": 1.0, "atr14": 2.0}, index=t)


RULES = ("entry: {name: up, col: close, op: '>', value: 110}\n"
         "exit: {name: down, col: close, op: '<', value: 105}\n"
         "short_entry: {name: dump, col: close, op: '<', value: 90}\n"
         "short_exit: {name: back, col: close, op: '>', value: 95}\n")
RISK = ("sizing: {method: fixed, fixed_fraction: 0.5, max_position_fraction: 1.0}\n"
        "stops: {atr_period: 14, atr_k: 2.0, stop_loss_pct: 0.2, take_profit_rr: null}\n"
        "kill_switch: {max_drawdown: 0.9, daily_loss_limit: 0.9, max_consecutive_losses: 50}\n")


def _run(cfg, source, features, **kw):
    from S7.futures_session import run_usdm_session

    lines: list[str] = []
    res = asyncio.run(run_usdm_session(cfg, source=source, features=features, heartbeat=lines.append, **kw))
    return res, lines


def test_long_and_short_with_reduce_only_leverage_and_funding(usdm_env, tmp_path, capsys):
    from S1.datasets import leverage_brackets_path
    from S7.feeds import FrameFeed
    ex = usdm_env
    ex.mmr = 0.006                                   # the exchange's first bracket, not the built-in 0.004
    closes = [100, 100, 100, 112, 113, 111, 104, 100, 88, 87, 89, 96, 100, 100]
    frame = _frame(closes)
    t = frame.index
    funding = pd.DataFrame({"funding_rate": [0.001, 0.001], "mark_price": [np.nan, 100.5]},
                           index=pd.DatetimeIndex([t[5], t[10]], name="funding_time"))
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "risk.yaml").write_text(RISK)
    ex.inject("error_after_accept", count=1)          # the first order is carried out, its answer lost
    ex.positions["BTCUSDT"] = _Position(amt=1.0, entry=100.0, margin=50.0)
    ex.settle_funding(0.01, at_ms=int(time.time() * 1000) - 60_000)   # an old payment on an old position: not ours
    ex.force_close("BTCUSDT")
    ex.balance = 10_000.0
    res, lines = _run(_cfg(tmp_path, tmp_path / "rules.yaml", use_stops=False, risk=tmp_path / "risk.yaml"),
                      DrivenSource(frame, ex, funding), FrameFeed(frame, ["atr14"]), leverage=3)

    posts = [(m, p, q) for m, p, q in ex.requests if m == "POST"]
    assert ("POST", "/fapi/v1/marginType") == posts[0][:2] and posts[0][2]["marginType"] == "ISOLATED"
    assert ("POST", "/fapi/v1/leverage") == posts[1][:2] and posts[1][2]["leverage"] == "3"
    orders = [q for m, p, q in posts if p == "/fapi/v1/order"]
    assert [(q["side"], q.get("reduceOnly")) for q in orders] == [("BUY", None), ("SELL", "true"),
                                                                   ("SELL", None), ("BUY", "true")]
    assert len({q["newClientOrderId"] for q in orders}) == 4               # the lost answer: looked up, not resent
    assert all(q["newClientOrderId"].startswith("u7-") and len(q["newClientOrderId"]) == 31 for q in orders)
    lookups = [q for m, p, q in ex.requests if m == "GET" and p == "/fapi/v1/order"]
    assert [q["origClientOrderId"] for q in lookups] == [orders[0]["newClientOrderId"]]

    long_, short = res.trades
    q_long, q_short = long_["qty"], short["qty"]
    assert q_long == pytest.approx(round(0.5 * 10_000 / 112, 3) , abs=0.0015)
    assert (long_["side"], long_["entry_ms"], long_["exit_ms"], long_["entry_price"], long_["exit_price"],
            long_["exit_reason"]) == ("long", t[4].value // 10**6, t[7].value // 10**6, 112.0, 104.0, "signal:down")
    assert long_["funding"] == pytest.approx(q_long * 113.0 * 0.001)      # paid at t5, mark = candle 5's open
    assert (short["side"], short["entry_price"], short["exit_price"], short["exit_reason"]) == \
        ("short", 88.0, 96.0, "signal:back")
    assert short["funding"] == pytest.approx(-q_short * 100.5 * 0.001)     # received, at the file's mark
    fees = 0.0004 * (q_long * (112 + 104) + q_short * (88 + 96))
    assert long_["pnl"] + short["pnl"] == pytest.approx(q_long * -8 + q_short * -8 - fees - long_["funding"]
                                                        - short["funding"])
    assert ex.balance == pytest.approx(10_000 + long_["pnl"] + short["pnl"])    # the exchange agrees
    assert res.summary["equity"] == pytest.approx(ex.balance) and res.summary["position"] is None
    # the bracket came from the exchange and is cached under data/ (no built-in note)
    assert res.summary["maint_margin_rate"] == 0.006
    cache = json.loads(leverage_brackets_path("BTCUSDT").read_text())
    assert cache["brackets"][0]["maintMarginRatio"] == 0.006 and cache["brackets"][0]["initialLeverage"] == 125
    assert "note:" not in capsys.readouterr().out
    # one heartbeat line per closed candle; the secret nowhere in the order log or the state
    assert len(lines) == len(frame) - 1 and "signal: enter long (rule up)" in lines[3]
    assert "signal: exit (signal:down)" in lines[6] and "signal: enter short (rule dump)" in lines[8]
    log_text = (tmp_path / "orders.jsonl").read_text()
    assert SECRET not in log_text and SECRET not in (tmp_path / "st.json").read_text()
    events = [json.loads(x) for x in log_text.splitlines()]
    assert sum(e["status"] == "FILLED" for e in events) == 4 and sum(e["status"] == "FUNDING" for e in events) == 2


def test_an_exit_whose_answer_and_lookup_are_lost_is_resolved_not_resent(usdm_env, tmp_path):
    """The exit is carried out but its answer is lost and so is the lookup: the candle ends with
    the order UNKNOWN; the next candle looks it up by client id first and books it as answered
    (same trade, same times) -- one POST per order, nothing re-sent."""
    from S7.feeds import FrameFeed

    ex = usdm_env
    frame = _frame([100, 100, 100, 112, 113, 111, 104, 100, 100, 100])
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "risk.yaml").write_text(RISK)
    ex.inject("error_after_accept", after=1)                                  # the 2nd order: the exit
    ex.inject("error", path="/fapi/v1/order", method="GET", count=1)          # ... and its lookup
    res, _ = _run(_cfg(tmp_path, tmp_path / "rules.yaml", use_stops=False, risk=tmp_path / "risk.yaml"),
                      DrivenSource(frame, ex), FrameFeed(frame, ["atr14"]), leverage=3)
    orders = [q for m, p, q in ex.requests if m == "POST" and p == "/fapi/v1/order"]
    assert [(q["side"], q.get("reduceOnly")) for q in orders] == [("BUY", None), ("SELL", "true")]
    (tr,) = res.trades
    t = frame.index
    assert (tr["entry_ms"], tr["exit_ms"], tr["exit_price"], tr["exit_reason"]) == \
        (t[4].value // 10**6, t[7].value // 10**6, 104.0, "signal:down")
    events = [json.loads(x) for x in (tmp_path / "orders.jsonl").read_text().splitlines()]
    assert [e["status"] for e in events if e["client_id"] == orders[1]["newClientOrderId"]] == \
        ["INTENT", "UNKNOWN", "FILLED"]
    assert res.summary["position"] is None and ex.balance == pytest.approx(10_000 + tr["pnl"])


def test_a_refused_order_is_logged_not_retried_and_the_next_signal_trades(usdm_env, tmp_path):
    """A 429 on the entry: REJECTED with its code, nothing re-sent for that candle, the position
    stays flat; the rule still firing on the next candle enters then."""
    from S7.feeds import FrameFeed

    ex = usdm_env
    frame = _frame([100, 100, 100, 112, 113, 111, 111])
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "risk.yaml").write_text(RISK)
    ex.inject("429", retry_after=30)
    res, _ = _run(_cfg(tmp_path, tmp_path / "rules.yaml", use_stops=False, risk=tmp_path / "risk.yaml"),
                      DrivenSource(frame, ex), FrameFeed(frame, ["atr14"]), leverage=3)
    orders = [q for m, p, q in ex.requests if m == "POST" and p == "/fapi/v1/order"]
    assert [q["side"] for q in orders] == ["BUY", "BUY"] and orders[0]["newClientOrderId"] != \
        orders[1]["newClientOrderId"]
    assert res.summary["position"]["entry_price"] == 113.0 and res.summary["rejected"] == 1
    events = [json.loads(x) for x in (tmp_path / "orders.jsonl").read_text().splitlines()]
    (rej,) = [e for e in events if e["status"] == "REJECTED"]
    assert rej["code"] == -1003 and rej["client_id"] == orders[0]["newClientOrderId"]


def test_the_kill_switch_flattens_with_reduce_only_and_blocks_entries(usdm_env, tmp_path):
    """A drawdown trip while long: the position is closed (``kill_switch``, reduceOnly), later
    entry signals are skipped and nothing more reaches the exchange -- as on spot."""
    from S7.feeds import FrameFeed

    ex = usdm_env
    frame = _frame([100, 100, 100, 112, 113, 108, 109, 112, 113, 113])
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "risk.yaml").write_text(RISK.replace("max_drawdown: 0.9", "max_drawdown: 0.01").replace(
        "max_consecutive_losses: 50}", "max_consecutive_losses: 50, flatten_on_trip: true}"))
    res, lines = _run(_cfg(tmp_path, tmp_path / "rules.yaml", use_stops=False, risk=tmp_path / "risk.yaml"),
                      DrivenSource(frame, ex), FrameFeed(frame, ["atr14"]), leverage=3)
    orders = [q for m, p, q in ex.requests if m == "POST" and p == "/fapi/v1/order"]
    assert [(q["side"], q.get("reduceOnly")) for q in orders] == [("BUY", None), ("SELL", "true")]
    (tr,) = res.trades
    assert (tr["exit_reason"], tr["exit_price"]) == ("kill_switch", 108.0)      # decided on candle 5, next open
    assert "signal: exit (kill_switch" in lines[5] and "skipped (kill_switch" in lines[7]
    assert res.summary["kill_switch"]["tripped"] and res.summary["position"] is None


def test_restart_keeps_the_position_and_an_outside_close_is_booked(usdm_env, tmp_path):
    from S7.feeds import FrameFeed

    ex = usdm_env
    closes = [100, 100, 112, 113, 114, 115, 116, 117]
    frame = _frame(closes)
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "risk.yaml").write_text(RISK)
    cfg = _cfg(tmp_path, tmp_path / "rules.yaml", use_stops=False, risk=tmp_path / "risk.yaml")
    res, _ = _run(cfg, DrivenSource(frame.iloc[:5], ex), FrameFeed(frame, ["atr14"]), leverage=2)
    assert res.summary["position"]["side"] == "long" and res.trades == []
    qty = res.summary["position"]["qty"]
    n_posts = sum(p == "/fapi/v1/order" for m, p, q in ex.requests if m == "POST")
    # a second session on the same state: the position is kept, not re-entered; then closed outside
    closed_at = {}

    def outside(i, ex):
        if i == 5 and not closed_at:
            ex.set_price(116.0)
            ex.force_close("BTCUSDT")
            closed_at["i"] = i
            ex.set_price(float(frame["open"].iloc[i + 1]))
    res2, lines = _run(cfg, DrivenSource(frame, ex, on_candle=outside), FrameFeed(frame, ["atr14"]), leverage=2)
    # no re-entry on the restored position (candle 4); the outside close starts the cooldown like any exit
    # (candle 5: skipped), then the rule enters again (candle 6)
    new = [q for m, p, q in ex.requests if m == "POST" and p == "/fapi/v1/order"][n_posts:]
    assert [(q["side"], q.get("reduceOnly")) for q in new] == [("BUY", None)]
    assert "signal: hold" in lines[0] and "skipped (cooldown" in lines[1] and "enter long" in lines[2]
    assert res2.summary["position"]["side"] == "long"
    assert len(lines) == len(frame) - 1 - 4                     # the candles already acted on are skipped
    (tr,) = res2.trades
    assert (tr["side"], tr["qty"], tr["exit_price"], tr["exit_reason"]) == ("long", qty, 116.0, "external")
    assert any("the exchange closed the long position" in n for n in res2.notes)


def test_bad_key_is_one_line_and_no_keys_say_which(usdm_env, tmp_path, monkeypatch, capsys):
    from S1.cli import run
    from S1.settings import get_settings
    from S7.executor import main

    (tmp_path / "rules.yaml").write_text(RULES)
    argv = ["--symbol", "BTCUSDT", "--interval", "1h", "--rules", str(tmp_path / "rules.yaml"), "--market", "usdm",
            "--leverage", "3", "--source", "rest"]
    monkeypatch.setenv("BINANCE_FUTURES_TESTNET_API_SECRET", "wrong-" + SECRET)
    get_settings.cache_clear()
    assert run(main, argv) == 2
    err = capsys.readouterr().err
    assert "refused our credentials" in err and "-1022" in err and "BINANCE_FUTURES_TESTNET_API_SECRET" in err
    assert err.count("\n") == 1 and SECRET not in err
    assert not any(p == "/fapi/v1/order" for m, p, q in usdm_env.requests)
    monkeypatch.delenv("BINANCE_FUTURES_TESTNET_API_KEY")
    get_settings.cache_clear()
    assert run(main, argv) == 2
    err = capsys.readouterr().err
    assert "BINANCE_FUTURES_TESTNET_API_KEY" in err and "--dry-run" in err and err.count("\n") == 1
    assert run(main, argv[:-2] + ["--leverage", "2.5", "--dry-run"]) == 2
    assert "whole number" in capsys.readouterr().err


def _sim_frame():
    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators

    return add_indicators(simulate_candles("BTCUSDT", "1h", "2023-01-01", "2023-02-10"))


@pytest.mark.slow
@pytest.mark.parametrize("rules_name,leverage", [("busy", 3), ("rules_long_short.yaml", 3), ("busy", 60)],
                         ids=["busy", "long_short", "liquidations"])
def test_testnet_session_trades_the_backtest(usdm_env, tmp_path, rules_name, leverage):
    """The S5 USD-M backtest and the testnet session on the local exchange over the same candles
    and funding: the same trades (side, times, prices, quantities, exit reasons, funding) -- at 60x
    without stops, positions liquidated by the exchange are booked as the backtest books them."""
    from S4.rules import load_rules
    from S5.costs import Costs
    from S5.engine import run_decided
    from S5.futures import FuturesSpec
    from S5.parity_check import backtest_trades, compare_trades
    from S6.config import RiskConfig
    from S7.feeds import FrameFeed
    from S7.futures_client import futures_filters

    ex = usdm_env
    frame = _sim_frame()
    if rules_name == "busy":
        path = tmp_path / "busy.yaml"
        path.write_text("entry: {name: up, col: rsi14, op: crosses_above, value: 55}\n"
                        "short_entry: {name: down, col: rsi14, op: crosses_below, value: 45}\n"
                        "trailing_stop: {pct: 0.01}\n")
    else:
        path = REPO / "S4" / rules_name
    rules = load_rules(path)
    risk = RiskConfig.load(REPO / "S6" / "risk.yaml")
    hot = leverage > 10
    if hot:
        risk = risk.replace(stops={"stop_loss_pct": 0.5})
    risk_file = tmp_path / "risk.yaml"
    from S5.parity_check import _risk_yaml

    risk_file.write_text(_risk_yaml(risk))
    filters = futures_filters(futures_listing("BTCUSDT"))
    ft = pd.date_range(frame.index[0].ceil("8h"), frame.index[-1], freq="8h", tz="UTC", name="funding_time")
    rng = np.random.default_rng(5)
    funding = pd.DataFrame({"funding_rate": rng.normal(0.0001, 0.0003, len(ft)), "mark_price": np.nan}, index=ft)
    spec = FuturesSpec.for_symbol("BTCUSDT", leverage=leverage, funding=funding, maint_margin_rate=0.004)
    bt = run_decided(frame, rules=rules, interval="1h", risk=risk, costs=Costs(fees=0.0004, slippage=0.0),
                     init_cash=10_000.0, filters=filters, use_stops=not hot, market="usdm", futures=spec)
    backtest = backtest_trades(bt)
    last_open = frame.index[-1].isoformat()
    closed = [t for t in backtest if t["exit_reason"] != "end"]
    assert len(closed) >= 4 and {t["side"] for t in closed} == {"long", "short"}

    ex.mmr = 0.004
    feats = [c for c in rules.required_columns() if c in frame.columns] + ["atr14"]
    res, lines = _run(_cfg(tmp_path, path, use_stops=not hot, risk=risk_file), DrivenSource(frame, ex, funding),
                      FrameFeed(frame, feats), leverage=leverage)
    iso = lambda ms: pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat()
    paper = [{"side": t["side"], "entry_time": iso(t["entry_ms"]), "exit_time": iso(t["exit_ms"]),
              "entry_price": t["entry_price"], "exit_price": t["exit_price"], "qty": t["qty"],
              "exit_reason": t["exit_reason"], "funding": t["funding"]} for t in res.trades]
    assert all(t["exit_time"] <= last_open for t in paper)
    strip = lambda ts: [{k: v for k, v in t.items() if k != "funding"} for t in ts]
    diff = compare_trades(strip(closed), strip(paper), rtol=1e-9)
    assert diff == [], diff[:6]
    # funding: the exchange books each payment rounded to 8 decimals (as Binance's income history shows it)
    assert [t["funding"] for t in paper] == pytest.approx([t["funding"] for t in closed], abs=1e-7)
    assert any(t["funding"] != 0 for t in paper)
    assert ("liquidation" in {t["exit_reason"] for t in paper}) is hot
    orders = [q for m, p, q in ex.requests if m == "POST" and p == "/fapi/v1/order"]
    exits = [q for q in orders if q.get("reduceOnly") == "true"]
    liquidated = sum(t["exit_reason"] == "liquidation" for t in paper)
    assert len(exits) == len(paper) - liquidated and len(orders) - len(exits) in (len(paper), len(paper) + 1)
    if backtest[-1]["exit_reason"] == "end" and backtest[-1]["entry_time"] < last_open:
        end = backtest[-1]
        assert res.summary["position"]["side"] == end["side"]
        assert res.summary["position"]["qty"] == pytest.approx(end["qty"], rel=1e-9)
    assert len(lines) == len(frame) - 1


@pytest.mark.slow
def test_dry_run_replay_through_the_command_line(settings_env, tmp_path, capsys):
    """``--market usdm --dry-run`` (here offline, a replay of the simulated market): one heartbeat
    per closed candle, the summary, the built-in bracket with one note -- the cached one when a
    testnet session has stored it."""
    from S1.cli import run
    from S1.datasets import atomic_write_text, leverage_brackets_path, orders_log_path
    from S7.executor import main

    rules = tmp_path / "busy.yaml"
    rules.write_text("entry: {name: up, col: rsi14, op: crosses_above, value: 55}\n"
                     "short_entry: {name: down, col: rsi14, op: crosses_below, value: 45}\n")
    argv = ["--symbol", "BTCUSDT", "--interval", "1h", "--rules", str(rules), "--market", "usdm", "--leverage", "3",
            "--offline", "--replay-days", "2"]
    assert run(main, argv) == 0
    out = capsys.readouterr().out
    beats = [x for x in out.splitlines() if " BTCUSDT 1h close " in x]
    assert len(beats) == 48 and any("signal: enter" in x for x in beats)
    assert "S7 USD-M dry-run BTCUSDT 1h 3x isolated (simulated market): 48 closed candle(s)" in out
    assert out.count("note:") == 1 and "built-in table" in out
    atomic_write_text(leverage_brackets_path("BTCUSDT"), json.dumps({"symbol": "BTCUSDT", "fetched_at": "then",
                      "brackets": [{"bracket": 1, "initialLeverage": 50, "notionalCap": 5000, "notionalFloor": 0,
                                    "maintMarginRatio": 0.0123, "cum": 0}]}))
    assert run(main, argv) == 0
    out = capsys.readouterr().out
    assert "note:" not in out and "maintenance margin 0.0123 from cached leverageBracket of then" in out
    fills = [json.loads(x) for x in orders_log_path().read_text().splitlines() if "usdm dry-run" in x]
    assert fills and all(f["status"] == "FILLED" and f["simulated"] for f in fills)
    assert run(main, argv[:-5] + ["--leverage", "60", "--offline", "--replay-days", "2"]) == 2   # above its bracket
    assert "above BTCUSDT's first bracket (50x)" in capsys.readouterr().err


def test_testnet_command_line_from_a_streamer_database(usdm_env, tmp_path, capsys):
    """The real command line on the streamer's table: indicators from the window (S2), the newest
    closed candle acted on when fresh -- one entry at the exchange; a second start acts on nothing
    it acted on before and keeps the position."""
    from S1.cli import run
    from S1.datasets import candles_to_rows
    from S1.intervals import floor_ms
    from S1.stream_store import KlineStore, rows_from_klines
    from S7.executor import main
    from tests.S7.helpers import candles, warm_closes

    df = candles(warm_closes(80, level=120.0), end_ms=floor_ms(int(time.time() * 1000), "1m"))
    db = tmp_path / "btcusdt_1m.db"
    st = KlineStore(db)
    st.write(rows_from_klines("BTCUSDT", "1m", candles_to_rows(df)))
    st.close()
    usdm_env.set_price(float(df["close"].iloc[-1]))
    (tmp_path / "rules.yaml").write_text(RULES)
    argv = ["--symbol", "BTCUSDT", "--interval", "1m", "--rules", str(tmp_path / "rules.yaml"), "--market", "usdm",
            "--leverage", "2", "--db", str(db), "--duration", "0.5", "--max-candle-age", "3600"]
    assert run(main, argv) == 0
    out = capsys.readouterr().out
    beats = [x for x in out.splitlines() if " BTCUSDT 1m close " in x]
    assert len(beats) == 1 and "signal: enter long (rule up)" in beats[0]
    assert "S7 USD-M testnet BTCUSDT 1m 2x isolated" in out
    orders = [q for m, p, q in usdm_env.requests if m == "POST" and p == "/fapi/v1/order"]
    assert [(q["side"], q.get("reduceOnly")) for q in orders] == [("BUY", None)]
    amt = usdm_env.positions["BTCUSDT"].amt
    assert amt > 0 and f"position    long {amt:g}" in out
    assert run(main, argv) == 0                                     # a restart: nothing new to act on
    out = capsys.readouterr().out
    assert [q for m, p, q in usdm_env.requests if m == "POST" and p == "/fapi/v1/order"] == orders
    assert f"position    long {amt:g}" in out and " BTCUSDT 1m close " not in out
