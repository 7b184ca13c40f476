"""Leverage brackets: THE one maintenance-margin lookup of the S5 backtest, the parity check and
S7 (:func:`S5.futures.lookup_brackets`: the cached ``GET /fapi/v1/leverageBracket`` answer, else
the built-in table with one note; ``--maint-margin-rate`` overrides) and Binance's isolated
liquidation rule with the bracket's ``maintMarginRatio`` and ``cum`` -- hand-computed cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from S1.datasets import Dataset, atomic_write_text, dataset_path, leverage_brackets_path, write_parquet
from S1.errors import UserError
from S5.futures import (
    BUILTIN_ORIGIN,
    FuturesSpec,
    brackets_from_rows,
    builtin_brackets,
    liquidation_price,
    lookup_brackets,
    override_brackets,
    read_brackets_file,
    save_brackets,
)

REPO = Path(__file__).resolve().parents[2]
#: Binance's BTCUSDT brackets 1 and 2 in leverageBracket's shape (cum 50 = 50000 x (0.005 - 0.004))
BTC_ROWS = [
    {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004,
     "cum": 0.0},
    {"bracket": 2, "initialLeverage": 100, "notionalCap": 600000, "notionalFloor": 50000, "maintMarginRatio": 0.005,
     "cum": 50.0},
]
#: a small first bracket, so that a 10 000 USDT x 10 position sits in the second (cum 25 = 5000 x 0.005)
SMALL_ROWS = [
    {"bracket": 1, "initialLeverage": 50, "notionalCap": 5000, "notionalFloor": 0, "maintMarginRatio": 0.005,
     "cum": 0},
    {"bracket": 2, "initialLeverage": 20, "notionalCap": 1000000, "notionalFloor": 5000, "maintMarginRatio": 0.01,
     "cum": 25},
]


def _margin_balance(side: str, *, qty: float, entry: float, margin: float, price: float) -> float:
    return margin + (1 if side == "long" else -1) * qty * (price - entry)


def test_binance_rule_hand_computed_in_each_bracket():
    t = brackets_from_rows("BTCUSDT", list(reversed(BTC_ROWS)), origin="test")     # any order in, ascending kept
    assert [b.number for b in t.brackets] == [1, 2] and (t.mmr, t.cum, t.max_leverage) == (0.004, 0.0, 125)
    assert t.maintenance(10_000) == (0.004, 0.0) and t.maintenance(50_000) == (0.004, 0.0)
    assert t.maintenance(50_001) == (0.005, 50.0) and t.maintenance(10**9) == (0.005, 50.0)   # beyond: the last
    # 1 BTC long at 100 000, 10x (margin 10 000): bracket 1 would put the level at 90 361.45 -- a
    # notional of 90 361 is bracket 2's, so (100000 - 10000 - 50) / (1 - 0.005) = 89950 / 0.995
    long_ = t.liquidation_price("long", qty=1.0, entry=100_000.0, margin=10_000.0)
    assert long_ == pytest.approx(90_402.010050251256, rel=1e-12)
    # the short: (100000 + 10000 + 50) / (1 + 0.005)
    short = t.liquidation_price("short", qty=1.0, entry=100_000.0, margin=10_000.0)
    assert short == pytest.approx(109_502.48756218906, rel=1e-12)
    # at those prices the margin balance equals notional x 0.005 - 50 (Binance's maintenance margin)
    for side, p in (("long", long_), ("short", short)):
        assert _margin_balance(side, qty=1.0, entry=100_000.0, margin=10_000.0, price=p) == pytest.approx(
            p * 0.005 - 50.0, rel=1e-12)
    # 0.1 BTC (10 000 notional) stays in bracket 1: (10000 - 1000) / (0.1 x 0.996)
    small = t.liquidation_price("long", qty=0.1, entry=100_000.0, margin=1_000.0)
    assert small == pytest.approx(90_361.44578313253, rel=1e-12)
    assert small == liquidation_price("long", qty=0.1, entry=100_000.0, margin=1_000.0, mmr=0.004)
    # leverage 1 never liquidates a long (the level is at or below zero)
    assert t.liquidation_price("long", qty=1.0, entry=100_000.0, margin=100_000.0) <= 0


def test_leverage_above_the_first_bracket_is_one_line():
    t = brackets_from_rows("BTCUSDT", SMALL_ROWS, origin="test")
    t.check_leverage(50)
    with pytest.raises(UserError) as exc:
        t.check_leverage(51)
    assert "above BTCUSDT's first bracket (50x)" in exc.value.problem and "--leverage 50" in exc.value.fix
    builtin_brackets("BTCUSDT").check_leverage(125)           # the table knows no limit


def test_lookup_cache_else_builtin_with_one_note(settings_env, capsys):
    t = lookup_brackets("ETHUSDT")
    out = capsys.readouterr().out
    assert (t.mmr, t.cum, t.origin) == (0.005, 0.0, BUILTIN_ORIGIN)
    assert out.count("note:") == 1 and "0.005 for ETHUSDT" in out and "ethusdt_leverage_brackets.json" in out
    assert lookup_brackets("XRPUSDT").origin == "built-in table (S5.futures.FIRST_BRACKET_MMR default)"
    assert lookup_brackets("XRPUSDT").mmr == 0.01
    capsys.readouterr()
    path = save_brackets("ETHUSDT", BTC_ROWS, source="http://127.0.0.1:1")
    assert path == leverage_brackets_path("ETHUSDT")
    fetched = json.loads(path.read_text())["fetched_at"]
    t = lookup_brackets("ETHUSDT")
    assert "note:" not in capsys.readouterr().out
    assert t.origin == f"cached leverageBracket of {fetched} ({path})" and len(t.brackets) == 2
    assert t.maintenance(60_000) == (0.005, 50.0)
    # a broken cache is not used: the table, with the note
    path.write_text("{not json")
    assert lookup_brackets("ETHUSDT").origin == BUILTIN_ORIGIN
    assert capsys.readouterr().out.count("note:") == 1
    # another symbol's answer under this name is refused
    atomic_write_text(path, json.dumps({"symbol": "BTCUSDT", "brackets": BTC_ROWS}))
    with pytest.raises(ValueError, match="BTCUSDT"):
        read_brackets_file(path, "ETHUSDT")


def test_spec_carries_the_table_and_its_origin(tmp_path):
    t = brackets_from_rows("BTCUSDT", BTC_ROWS, origin="the exchange")
    spec = FuturesSpec.for_symbol("BTCUSDT", leverage=3, brackets=t)
    assert (spec.maint_margin_rate, spec.maint_amount, spec.maint_origin) == (0.004, 0.0, "the exchange")
    assert spec.liquidation_price("long", qty=1.0, entry=100_000.0, margin=10_000.0) == pytest.approx(
        89_950 / 0.995, rel=1e-12)
    over = FuturesSpec.for_symbol("BTCUSDT", brackets=t, maint_margin_rate=0.02)     # the override wins
    assert over.maint_margin_rate == 0.02 and over.maint_origin == "--maint-margin-rate 0.02 (explicit)"
    assert FuturesSpec.for_symbol("BTCUSDT").maint_origin == BUILTIN_ORIGIN           # pure: no file read
    # the old positional form still makes one bracket of its rate and amount
    old = FuturesSpec(2.0, 0.01, 5.0)
    assert (old.brackets.mmr, old.brackets.cum) == (0.01, 5.0)
    # a table written for the paper side reads back the same, origin included
    p = save_brackets("BTCUSDT", t.rows(), source="parity", path=tmp_path / "b.json", origin=t.origin)
    back = read_brackets_file(p, "BTCUSDT")
    assert back == t
    assert override_brackets("BTCUSDT", 0.02).brackets == over.brackets.brackets


# ------------------------------------------------------------------ the S5 backtest end to end
RULES_YAML = "entry: {name: up, col: volume, op: '==', value: 1}\n"
DS = Dataset("BTCUSDT", "1h", 1)


@pytest.fixture
def long_file(settings_env, tmp_path):
    """A signals file: a long entered at bar 1's open (100), bar 3 dips to 90.5, bar 4 to 80."""
    rules = tmp_path / "up.yaml"
    rules.write_text(RULES_YAML)
    t = pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC", name="open_time")
    o = np.array([100, 100, 95, 92, 91, 80], float)
    c = np.array([100, 96, 92, 91, 80, 80], float)
    lo = np.array([100, 95, 91, 90.5, 80, 79], float)
    f = pd.DataFrame({"open": o, "high": np.maximum(o, c), "low": lo, "close": c, "volume": [1, 0, 0, 0, 0, 0.0],
                      "atr14": 1.0, "entry": [True] + [False] * 5, "exit": False}, index=t)
    write_parquet(f, dataset_path(DS, "signals", rules=rules), metadata={
        "simulated": True, "signals": {"rules_file": str(rules), "rules_yaml": RULES_YAML}})
    return rules, f


def _backtest(rules, capsys, *extra):
    from S1.cli import run
    from S5.backtest import main

    argv = ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "1", "--rules", str(rules), "--risk", "none",
            "--market", "usdm", "--leverage", "10", "--no-funding", "--no-html", "--fee", "0.001",
            "--slippage-bps", "0", *extra]
    assert run(main, argv) == 0
    out = capsys.readouterr().out
    doc = json.loads(dataset_path(DS, "backtest", rules=rules).read_text())
    trades = pd.read_parquet(dataset_path(DS, "trades", rules=rules))
    assert len(trades) == 1 and trades["side"].iloc[0] == "long" and trades["entry_price"].iloc[0] == 100.0
    return out, doc, trades.iloc[0]


def test_backtest_liquidates_at_the_cached_bracket_else_the_builtin_table(long_file, capsys):
    rules, f = long_file
    # no cache: the built-in 0.4 % (cum 0), one note; the level (Q x 100 - Q x 10) / (Q x 0.996) = 90.3614...
    out, doc, tr = _backtest(rules, capsys)
    assert out.count("note:") == 1 and "built-in table" in out and "0.004 for BTCUSDT" in out
    assert doc["params"]["maint_margin_origin"] == BUILTIN_ORIGIN and doc["params"]["maint_margin_rate"] == 0.004
    q = tr["size"]
    assert q * 100 > 5000                                   # the small cache's bracket 2 below
    builtin_level = 90.0 / 0.996
    assert tr["exit_price"] == pytest.approx(builtin_level, rel=1e-12) and tr["exit_time"] == f.index[4]
    assert doc["metrics"]["liquidations"] == 1
    # the exchange's brackets cached by an S7 testnet session: bracket 2 (1 %, cum 25) holds the
    # position, so the level is (Q x 100 - Q x 10 - 25) / (Q x 0.99) -- above bar 3's low of 90.5
    path = save_brackets("BTCUSDT", SMALL_ROWS, source="https://testnet.binancefuture.com")
    fetched = json.loads(path.read_text())["fetched_at"]
    out, doc, tr2 = _backtest(rules, capsys)
    assert "note:" not in out
    assert doc["params"]["maint_margin_origin"] == f"cached leverageBracket of {fetched} ({path})"
    assert (doc["params"]["maint_margin_rate"], doc["params"]["leverage_brackets"]) == (0.005, 2)
    q2 = tr2["size"]
    level = (q2 * 100 - q2 * 10 - 25) / (q2 * (1 - 0.01))
    assert 90.5 < level < 91 and tr2["exit_time"] == f.index[3]
    assert tr2["exit_price"] == pytest.approx(level, rel=1e-12)
    # --maint-margin-rate stays an explicit override (one bracket, cum 0): (Q x 100 - Q x 10) / (Q x 0.98)
    # = 91.84, reached by bar 2's low of 91
    out, doc, tr3 = _backtest(rules, capsys, "--maint-margin-rate", "0.02")
    assert doc["params"]["maint_margin_origin"] == "--maint-margin-rate 0.02 (explicit)" and "note:" not in out
    assert tr3["exit_price"] == pytest.approx(90.0 / 0.98, rel=1e-12) and tr3["exit_time"] == f.index[2]
    # the cache's first bracket allows 50x: more is refused in one line
    from S1.cli import run
    from S5.backtest import main

    assert run(main, ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "1", "--rules", str(rules), "--risk",
                      "none", "--market", "usdm", "--leverage", "60", "--no-funding", "--no-html"]) == 2
    assert "above BTCUSDT's first bracket (50x)" in capsys.readouterr().err


# ------------------------------------------------------------------ S5 and S7 agree on the brackets
#: three brackets scaled to the S6-sized positions of the simulated market (~200 USDT notional: the
#: second bracket), the maintenance continuous through cum (0.2 = 100 x 0.002, 4.2 = 0.2 + 1000 x 0.004)
THREE_ROWS = [
    {"bracket": 1, "initialLeverage": 125, "notionalCap": 100, "notionalFloor": 0, "maintMarginRatio": 0.004,
     "cum": 0},
    {"bracket": 2, "initialLeverage": 100, "notionalCap": 1000, "notionalFloor": 100, "maintMarginRatio": 0.006,
     "cum": 0.2},
    {"bracket": 3, "initialLeverage": 75, "notionalCap": None, "notionalFloor": 1000, "maintMarginRatio": 0.01,
     "cum": 4.2},
]


def test_s7_dry_run_reads_the_same_lookup(settings_env, capsys):
    """S7's USD-M session without keys (dry run) and the S5 backtest's command-line path get the
    same table from the same cache; without a cache both fall back to the built-in table."""
    import asyncio

    from S5.futures import decided_kwargs
    from S7.futures_exchange import first_bracket

    f = pd.DataFrame({"open": 1.0, "close": 1.0}, index=pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC"))
    s7 = asyncio.run(first_bracket(None, "BTCUSDT"))
    s5 = decided_kwargs(DS, f, market="usdm", leverage=3, funding=False)["futures"].brackets
    assert s7 == s5 == builtin_brackets("BTCUSDT")
    assert capsys.readouterr().out.count("note:") == 2            # one each: no futures keys / no cache
    save_brackets("BTCUSDT", THREE_ROWS, source="https://testnet.binancefuture.com")
    s7 = asyncio.run(first_bracket(None, "BTCUSDT"))
    s5 = decided_kwargs(DS, f, market="usdm", leverage=3, funding=False)["futures"].brackets
    assert s7 == s5 and len(s5.brackets) == 3 and s5.origin.startswith("cached leverageBracket of ")
    assert "note:" not in capsys.readouterr().out


@pytest.mark.slow
def test_parity_with_cached_brackets_liquidates_alike(settings_env):
    """The parity check hands the backtest's brackets to the S7 replay: with three brackets (cum
    > 0) and 60x, both sides liquidate at the same prices, trade for trade."""
    from S1.local.simulated import simulate_candles
    from S1.offline import simulated_symbol_info
    from S2.ta import add_indicators
    from S4.rules import parse_rules
    from S5.futures import cached_brackets
    from S5.parity_check import run_parity
    from S6.config import RiskConfig
    from S6.filters import SymbolFilters

    save_brackets("BTCUSDT", THREE_ROWS, source="https://testnet.binancefuture.com")
    table = cached_brackets("BTCUSDT")
    frame = add_indicators(simulate_candles("BTCUSDT", "1h", "2023-01-01", "2023-02-15"))
    filters = SymbolFilters.from_symbol_info(simulated_symbol_info("BTCUSDT", float(frame["close"].iloc[-1])))
    rules = parse_rules("entry: {name: up, col: rsi14, op: crosses_above, value: 55}\n"
                        "short_entry: {name: down, col: rsi14, op: crosses_below, value: 45}\n")
    spec = FuturesSpec.for_symbol("BTCUSDT", leverage=60, brackets=table)
    risk = RiskConfig.load(REPO / "S6" / "risk.yaml").replace(stops={"stop_loss_pct": 0.5})
    res = run_parity(frame, rules, symbol="BTCUSDT", interval="1h", risk=risk, filters=filters, market="usdm",
                     futures=spec, use_stops=False, slippage=0.0)
    assert res.mismatches == [], res.mismatches[:5]
    assert res.settings["maint_margin_origin"] == table.origin
    liq = [t for t in res.backtest if t["exit_reason"] == "liquidation"]
    assert liq and len(res.backtest) == len(res.paper)
    # each liquidation at Binance's level for its bracket (or the gapped open): the margin balance
    # there is the maintenance margin of the notional's bracket
    def margin(t):
        return t["qty"] * t["entry_price"] / 60

    def level(t):
        return spec.liquidation_price(t["side"], qty=t["qty"], entry=t["entry_price"], margin=margin(t))

    at_level = [t for t in liq if t["exit_price"] == pytest.approx(level(t), rel=1e-12)]
    assert at_level
    for t in at_level:
        rate, cum = table.maintenance(t["qty"] * t["exit_price"])
        assert _margin_balance(t["side"], qty=t["qty"], entry=t["entry_price"], margin=margin(t),
                               price=t["exit_price"]) == pytest.approx(t["qty"] * t["exit_price"] * rate - cum,
                                                                       rel=1e-9)
    assert any(table.maintenance(t["qty"] * t["exit_price"])[1] > 0 for t in at_level)     # a bracket with cum
