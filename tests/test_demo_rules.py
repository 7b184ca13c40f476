"""The demo's default rules (S4/rules.yaml) are a strategy a newcomer can learn from (issue 21):
trades do not close on the bar after they open -- on the simulated demo market and on real Binance
BTCUSDT 1h candles (../shared, skipped when absent). Decided bar by bar with S6/risk.yaml, as S5's
backtest and S7 trade it. Neutral sentiment (0) stands in for the news: the check is about the exits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "klines" / "binance_dump"


def _trade_bars(candles: pd.DataFrame) -> pd.Series:
    from S2.ta import add_indicators
    from S4.rules import load_rules
    from S4.signals import signals_frame
    from S5.engine import Costs, run_decided
    from S6.config import RiskConfig

    ta = add_indicators(candles)
    ta["sentiment_score"] = 0.0
    rules = load_rules(REPO / "S4" / "rules.yaml")
    frame = signals_frame(ta, rules)
    res = run_decided(frame, rules=rules, interval="1h", risk=RiskConfig.load(None), costs=Costs())
    t = res.trades
    return (pd.to_datetime(t["exit_time"]) - pd.to_datetime(t["entry_time"])) / pd.Timedelta("1h")


def test_demo_rules_hold_trades_longer_than_a_bar_on_the_simulated_demo_market():
    from S1.offline import simulate_candles

    bars = _trade_bars(simulate_candles("BTCUSDT", "1h", "2025-01-01", "2026-01-01"))
    assert len(bars) >= 3
    assert bars.median() > 1


def test_demo_rules_hold_trades_longer_than_a_bar_on_real_btcusdt_1h():
    files = sorted(SHARED.glob("BTCUSDT-1h-2023-*.csv"))
    if not files:
        pytest.skip(f"no real BTCUSDT 1h candles in {SHARED}")
    from S1.kline_files import read_archive_csv

    candles = pd.concat([read_archive_csv(f.read_bytes()) for f in files]).sort_index()
    bars = _trade_bars(candles)
    assert len(bars) >= 3
    assert bars.median() > 1


def test_demo_rules_exit_is_not_the_entry_condition_negated_on_the_next_bar():
    """No entry is followed by an exit signal on the very next bar (the defect of the old default)."""
    from S1.offline import simulate_candles
    from S2.ta import add_indicators
    from S4.rules import load_rules
    from S4.signals import signals_frame

    ta = add_indicators(simulate_candles("BTCUSDT", "1h", "2025-01-01", "2026-01-01"))
    ta["sentiment_score"] = 0.0
    frame = signals_frame(ta, load_rules(REPO / "S4" / "rules.yaml"))
    entries = frame.index[frame["entry"].to_numpy()]
    assert len(entries) >= 3
    nxt = frame["exit"].shift(-1, fill_value=False)
    assert float(nxt.loc[entries].mean()) < 0.5
