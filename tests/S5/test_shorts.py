"""Shorts, reversals, trailing stops and the USD-M book (funding, liquidation) of the
bar-by-bar backtest -- hand-computed cases and a plain reference loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.datasets import Dataset
from S1.errors import UserError
from S4.rules import parse_rules
from S5.costs import Costs
from S5.engine import run_decided
from S5.futures import FuturesSpec, liquidation_price
from S5.parity_check import all_in_risk

FEE = 0.001
BUF = 1.003          # size_entry's fee buffer: all in = cash / (close x 1.003)


def frame(opens, closes, highs=None, lows=None, **cols) -> pd.DataFrame:
    t = pd.date_range("2024-01-01", periods=len(opens), freq="h", tz="UTC")
    o, c = np.asarray(opens, float), np.asarray(closes, float)
    h = np.maximum(o, c) if highs is None else np.asarray(highs, float)
    lo = np.minimum(o, c) if lows is None else np.asarray(lows, float)
    return pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "atr14": 1.0,
                         **{k: np.asarray(v, float) for k, v in cols.items()}}, index=t.rename("open_time"))


# a signal column: 1 = long entry, -1 = short entry, 2 = long exit, -2 = short exit
RULES = parse_rules("""
entry: {name: up, col: volume, op: '==', value: 1}
exit: {name: down, col: volume, op: '==', value: 2}
short_entry: {name: dump, col: volume, op: '==', value: -1}
short_exit: {name: cover, col: volume, op: '==', value: -2}
""")


def run(f, rules=RULES, *, market="usdm", futures=None, stops=False, risk=None, slippage=0.0):
    return run_decided(f, rules=rules, interval="1h", risk=risk or all_in_risk(),
                       costs=Costs(fees=FEE, slippage=slippage), init_cash=10_000.0, use_stops=stops, market=market,
                       futures=futures)


def test_spot_refuses_short_rules_with_one_line():
    f = frame([100] * 4, [100] * 4, volume=[0] * 4)
    with pytest.raises(UserError) as exc:
        run(f, market="spot")
    assert "short_entry" in exc.value.problem and "--market usdm" in exc.value.fix
    assert "\n" not in str(exc.value)


def test_short_hand_computed():
    #          0     1     2     3     4
    f = frame([100, 100, 90, 80, 80], [100, 95, 85, 80, 80], volume=[-1, 0, -2, 0, 0])
    res = run(f)
    (t,) = res.decided.trades
    qty = 10_000 / (100 * BUF)
    assert (t["side"], t["entry_time"], t["exit_time"]) == ("short", f.index[1], f.index[3])
    assert t["entry_price"] == 100.0 and t["exit_price"] == 80.0 and t["qty"] == pytest.approx(qty, rel=1e-12)
    fees = qty * 100 * FEE + qty * 80 * FEE
    assert t["pnl"] == pytest.approx(qty * (100 - 80) - fees, rel=1e-12) and t["exit_reason"] == "signal:cover"
    # equity at the closes: wallet - entry fee + qty x (entry - close)
    want = [10_000, 10_000 - qty * 100 * FEE + qty * 5, 10_000 - qty * 100 * FEE + qty * 15]
    assert res.equity.iloc[:3].tolist() == pytest.approx(want, rel=1e-12)
    assert res.equity.iloc[-1] == pytest.approx(10_000 + t["pnl"], rel=1e-12)
    assert res.trades["side"].tolist() == ["short"] and res.trade_details["exit_reason"].tolist() == ["signal:cover"]
    assert res.trades["pnl"].iloc[0] == pytest.approx(t["pnl"], rel=1e-12)


def test_reversal_at_the_same_open():
    f = frame([100, 100, 110, 120, 100, 100], [100, 105, 115, 110, 100, 100], volume=[1, 0, -1, 0, 1, 0])
    res = run(f)
    a, b = res.decided.trades       # the reversal back at bar 4 would fill on the last bar: exit only
    assert (a["side"], a["exit_reason"], b["side"], b["entry_rule"]) == ("long", "signal:dump", "short", "dump")
    assert a["exit_time"] == b["entry_time"] == f.index[3] and a["exit_price"] == b["entry_price"] == 120.0
    assert b["exit_time"] == f.index[5] and b["exit_reason"] == "signal:up"    # reversed back at bar 5's open
    # the short is sized at the reversal's decision (bar 2's close 115) on the equity then
    eq2 = res.equity.iloc[2]
    assert b["qty"] == pytest.approx(eq2 / (115 * BUF), rel=1e-12)


def reference_equity(f: pd.DataFrame, trades: list[dict], cash: float) -> np.ndarray:
    """A plain loop: the futures book from the trade list alone."""
    out = []
    for i in range(len(f)):
        eq = cash
        for t in trades:
            s = 1.0 if t["side"] == "long" else -1.0
            ei, xi = f.index.get_loc(t["entry_time"]), f.index.get_loc(t["exit_time"])
            if xi <= i and not (t["exit_reason"] == "end" and i < len(f) - 1):
                eq += t["pnl"]
            elif ei <= i:
                eq += s * t["qty"] * (f["close"].iloc[i] - t["entry_price"]) - t["entry_fee"] - t["funding"]
        out.append(eq)
    return np.array(out)


def test_random_long_short_equals_reference_loop_and_long_only_equals_vectorbt():
    rng = np.random.default_rng(7)
    n = 400
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    opens = np.r_[100, close[:-1] * (1 + rng.normal(0, 0.001, n - 1))]
    sig = rng.choice([0, 0, 0, 1, -1, 2, -2], n)
    f = frame(opens, close, volume=sig)
    res = run(f)
    trades = res.decided.trades
    assert {t["side"] for t in trades} == {"long", "short"}
    assert any(a["exit_time"] == b["entry_time"] for a, b in zip(trades, trades[1:]))    # reversals happened
    np.testing.assert_allclose(res.equity.to_numpy(), reference_equity(f, trades, 10_000.0), rtol=1e-9)
    # long-only rules: the futures book equals the vectorbt execution of the spot run
    long_only = parse_rules("entry: {name: up, col: volume, op: '==', value: 1}\n"
                            "exit: {name: down, col: volume, op: '==', value: 2}")
    spot, fut = run(f, long_only, market="spot"), run(f, long_only)
    assert len(spot.trades) == len(fut.trades) > 10
    np.testing.assert_allclose(fut.equity.to_numpy(), spot.equity.to_numpy(), rtol=1e-9)
    for col in ("entry_price", "exit_price", "size", "pnl", "fees"):
        np.testing.assert_allclose(fut.trades[col].to_numpy(), spot.trades[col].to_numpy(), rtol=1e-9)
    assert fut.metrics["total_return"] == pytest.approx(spot.metrics["total_return"], rel=1e-9)


def test_funding_sign_by_side_and_only_open_positions_pay():
    # 1h bars from 00:00; funding at 02:00 (+0.1 %), 04:00 (-0.2 %) and 06:00 (+0.1 %)
    f = frame([100] * 9, [100] * 9, volume=[-1, 0, 0, -2, 1, 0, 2, 0, 0])
    ft = pd.DatetimeIndex(["2024-01-01 02:00", "2024-01-01 04:00", "2024-01-01 06:00"], tz="UTC")
    funding = pd.DataFrame({"funding_rate": [0.001, -0.002, 0.001], "mark_price": [101.0, np.nan, 100.0]},
                           index=ft.rename("funding_time"))
    res = run(f, futures=FuturesSpec.for_symbol("BTCUSDT", funding=funding))
    short, long_ = res.decided.trades
    # short: open 01:00 .. 04:00 -> pays at 02:00 (receives: short, rate > 0); closed at 04:00: no 04:00 funding
    assert short["funding"] == pytest.approx(-short["qty"] * 101.0 * 0.001, rel=1e-12)
    # long: filled at 05:00, closed at 07:00 -> only 06:00 (mark 100): pays
    assert long_["funding"] == pytest.approx(long_["qty"] * 100.0 * 0.001, rel=1e-12)
    assert res.trade_details["funding"].tolist() == pytest.approx([short["funding"], long_["funding"]])
    assert res.metrics["funding_paid"] == pytest.approx(short["funding"] + long_["funding"])
    # entered at exactly a funding time pays it; the mark falls back to the bar's open
    f2 = frame([100, 100, 100, 100, 100, 100], [100] * 6, volume=[0, 0, 0, -1, 0, 0])
    ft2 = pd.DatetimeIndex(["2024-01-01 04:00"], tz="UTC")
    res2 = run(f2, futures=FuturesSpec.for_symbol("X", funding=pd.DataFrame({"funding_rate": [-0.001]}, index=ft2)))
    (t,) = res2.decided.trades
    assert t["entry_time"] == ft2[0] and t["funding"] == pytest.approx(t["qty"] * 100 * 0.001, rel=1e-12)  # pays
    assert t["pnl"] == pytest.approx(-t["fees"] - t["funding"], rel=1e-12)


def test_liquidation_hand_computed():
    # long, leverage 10: margin = notional / 10; BTCUSDT first bracket mmr 0.4 %
    f = frame([100, 100, 95, 91, 80], [100, 96, 92, 85, 80], lows=[100, 95, 91, 84, 79], volume=[1, 0, 0, 0, 0])
    spec = FuturesSpec.for_symbol("BTCUSDT", leverage=10)
    res = run(f, futures=spec)
    (t,) = res.decided.trades
    qty = t["qty"]
    margin = qty * 100 / 10
    liq = (qty * 100 - margin) / (qty * (1 - 0.004))        # 90.3614...
    assert liq == pytest.approx(liquidation_price("long", qty=qty, entry=100, margin=margin, mmr=0.004))
    assert t["exit_reason"] == "liquidation" and t["exit_time"] == f.index[3] and t["exit_price"] == pytest.approx(liq)
    # the whole margin is lost (plus the entry fee)
    assert t["pnl"] == pytest.approx(-margin - t["entry_fee"], rel=1e-9)
    assert res.equity.iloc[3] == pytest.approx(10_000 - margin - t["entry_fee"], rel=1e-9)
    assert res.metrics["liquidations"] == 1
    # a short gapping through the level liquidates at the open; leverage 1 never liquidates on a 50 % move
    g = frame([100, 100, 150, 90], [100, 100, 150, 90], volume=[-1, 0, 0, 0])
    (s,) = run(g, futures=FuturesSpec.for_symbol("BTCUSDT", leverage=2)).decided.trades
    assert s["exit_reason"] == "liquidation" and s["exit_price"] == 150.0
    assert s["pnl"] == pytest.approx(-s["qty"] * 100 / 2 - s["entry_fee"], rel=1e-9)
    (s1,) = run(g, futures=FuturesSpec.for_symbol("BTCUSDT", leverage=1)).decided.trades
    assert s1["exit_reason"] == "end"


def test_trailing_stop_both_sides_hand_computed():
    rules = parse_rules("entry: {name: up, col: volume, op: '==', value: 1}\n"
                        "short_entry: {name: dump, col: volume, op: '==', value: -1}\n"
                        "trailing_stop: {pct: 0.05}")
    risk = all_in_risk().replace(stops={"stop_loss_pct": 0.5})      # a far fixed stop: the trail takes over
    #              0    1    2    3    4    5    6
    f = frame([100, 100, 110, 120, 118, 112, 112], [100, 110, 120, 119, 113, 112, 112],
              highs=[100, 110, 121, 120, 118, 113, 112], lows=[100, 99, 109, 118, 113.5, 111, 111],
              volume=[1, 0, 0, 0, 0, 0, 0])
    (t,) = run(f, rules, stops=True, risk=risk).decided.trades
    # stop after bar 2 = 121 x 0.95 = 114.95; bar 3 high 120: no change; bar 4 low 113.5 <= 114.95 -> exit at 5's open
    assert (t["exit_reason"], t["exit_time"], t["exit_price"]) == ("trailing_stop", f.index[5], 112.0)
    g = frame([100, 100, 90, 80, 82, 88, 88], [100, 90, 80, 81, 87, 88, 88],
              highs=[100, 101, 91, 82, 87.5, 89, 89], lows=[100, 90, 79, 80, 82, 87, 87],
              volume=[-1, 0, 0, 0, 0, 0, 0])
    (s,) = run(g, rules, stops=True, risk=risk).decided.trades
    # short: stop after bar 2 = 79 x 1.05 = 82.95; bar 4 high 87.5 >= 82.95 -> exit at bar 5's open
    assert (s["side"], s["exit_reason"], s["exit_time"], s["exit_price"]) == ("short", "trailing_stop", g.index[5], 88.0)
    # spot runs the trailing stop too (long only), through vectorbt
    spot_rules = parse_rules("entry: {name: up, col: volume, op: '==', value: 1}\ntrailing_stop: {pct: 0.05}")
    res = run(f, spot_rules, market="spot", stops=True, risk=risk)
    assert res.trade_details["exit_reason"].tolist() == ["trailing_stop"]
    assert res.trades["exit_price"].tolist() == [112.0]


def test_detail_candles_decide_which_level_came_first():
    from S5.detail import Detail

    risk = all_in_risk().replace(stops={"stop_loss_pct": 0.05, "take_profit_pct": 0.05, "take_profit_rr": None})
    rules = parse_rules("entry: {name: up, col: volume, op: '==', value: 1}")
    # bar 2 touches both the stop (95) and the take-profit (105)
    f = frame([100, 100, 100, 100, 100], [100, 100, 100, 100, 100], highs=[100, 101, 106, 101, 101],
              lows=[100, 99, 94, 99, 99], volume=[1, 0, 0, 0, 0])
    worst = run_decided(f, rules=rules, interval="1h", risk=risk, costs=Costs(fees=FEE, slippage=0.0),
                        use_stops=True)
    assert worst.trade_details["exit_reason"].tolist() == ["stop_loss"]          # no detail: the stop first

    def minutes(first_high: bool) -> pd.DataFrame:
        t = pd.date_range(f.index[2], periods=60, freq="1min", tz="UTC")
        hi, lo = np.full(60, 100.5), np.full(60, 99.5)
        hi[10 if first_high else 40], lo[40 if first_high else 10] = 106, 94
        return pd.DataFrame({"high": hi, "low": lo}, index=t)

    for first_high, want in ((True, "take_profit"), (False, "stop_loss")):
        d = Detail(minutes(first_high), "1h")
        res = run_decided(f, rules=rules, interval="1h", risk=risk, costs=Costs(fees=FEE, slippage=0.0),
                          use_stops=True, detail=d)
        assert res.trade_details["exit_reason"].tolist() == [want] and d.resolved == 1
        # the fill is the next open either way (stops act on closed bars)
        assert res.trades["exit_price"].tolist() == worst.trades["exit_price"].tolist()
    with pytest.raises(UserError, match="not below"):
        Detail(minutes(True), "1m")


def test_command_line_choices(settings_env, tmp_path):
    from S1.datasets import funding_path, write_parquet
    from S5.backtest import _decided_options, build_parser
    from S5.futures import decided_kwargs

    args = build_parser().parse_args(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "1", "--market", "usdm",
                                      "--leverage", "3"])
    opts = _decided_options(args)
    assert opts == {"market": "usdm", "leverage": 3.0, "funding": True, "maint_margin_rate": None, "detail": None}
    assert _decided_options(build_parser().parse_args(["--symbol", "X", "--interval", "1h", "--days", "1"])) is None
    f = frame([100] * 24, [100] * 24, volume=[0] * 24)
    with pytest.raises(UserError, match="no funding history") as exc:
        decided_kwargs(Dataset("BTCUSDT", "1h", 1), f, **opts)
    assert "python S1/funding.py --symbol BTCUSDT" in exc.value.fix
    ft = pd.date_range("2023-12-31 16:00", periods=5, freq="8h", tz="UTC", name="funding_time")
    write_parquet(pd.DataFrame({"funding_rate": 0.0001, "mark_price": 100.0}, index=ft), funding_path("BTCUSDT"))
    kw = decided_kwargs(Dataset("BTCUSDT", "1h", 1), f, **opts)
    assert kw["market"] == "usdm" and kw["futures"].leverage == 3 and len(kw["futures"].funding_times) == 5
    assert kw["futures"].maint_margin_rate == 0.004                                  # BTCUSDT's first bracket
    with pytest.raises(UserError, match="needs --market usdm"):
        decided_kwargs(Dataset("BTCUSDT", "1h", 1), f, market="spot", leverage=2.0)
    with pytest.raises(UserError, match="no 1m candles"):
        decided_kwargs(Dataset("BTCUSDT", "1h", 1), f, market="spot", detail="1m")


def test_real_funding_body_paid_by_side(shared_dir):
    """Binance's real /fapi/v1/fundingRate body (2019-10-09: -3.75 %, then +0.01 %) through S1's
    parser: a short held across both pays the first (negative rate) and receives the second."""
    import json

    from S1.funding_history import parse_funding

    body = shared_dir / "data" / "api" / "rest_usdm_funding_rate.json"
    if not body.exists():
        pytest.skip(f"{body} is absent")
    funding = parse_funding(json.loads(body.read_text()), "BTCUSDT")
    t0 = funding.index[0] - pd.Timedelta(hours=2)                      # 06:00, two hours before the first
    n = 14
    t = pd.date_range(t0, periods=n, freq="h", tz="UTC")
    sig = np.zeros(n)
    sig[0], sig[n - 2] = -1, -2                                        # short from 07:00 to 19:00
    f = pd.DataFrame({"open": 100.0, "high": 100.0, "low": 100.0, "close": 100.0, "atr14": 1.0, "volume": sig},
                     index=t.rename("open_time"))
    (tr,) = run(f, futures=FuturesSpec.for_symbol("BTCUSDT", funding=funding)).decided.trades
    assert tr["side"] == "short" and tr["entry_time"] == t[1] and tr["exit_time"] == t[n - 1]
    rates = funding["funding_rate"].tolist()
    assert rates == [-0.0375, 0.0001]
    # a short pays -qty x mark x rate at each: +3.75 % of the notional (paid), then -0.01 % (received)
    assert tr["funding"] == pytest.approx(tr["qty"] * 100.0 * (0.0375 - 0.0001), rel=1e-12)
    assert tr["pnl"] == pytest.approx(-tr["fees"] - tr["funding"], rel=1e-12)
