"""Live S7 computes the higher-timeframe ("informative") columns a rule file reads (``rsi14_4h``,
``close_4h``, ``ema21_4h``) from the candles it holds, with S2's own resampling and alignment
(S7/feeds.py ``InformativeFeed``): at every closed bar they equal the columns ``python S2/indicators.py
--informative 4h`` wrote, computed on the whole history -- a truncation test: the engine only ever holds
the candles up to that bar. And the engine's decisions with S4/rules_mtf.yaml are the file's signals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

RULES = Path("S4/rules_mtf.yaml")
COLS = ("close_4h", "ema21_4h", "rsi14_4h")


@pytest.fixture(scope="module")
def s2_file(tmp_path_factory):
    """The real S2 job on a simulated BTCUSDT 1h market: data/btcusdt_1h_120d_ta.parquet with --informative 4h."""
    import os

    from S1.datasets import Dataset, dataset_path, read_parquet, write_parquet
    from S1.offline import simulate_candles
    from S1.settings import get_settings
    from S2.indicators import main

    d = tmp_path_factory.mktemp("informative")
    old = os.environ.get("DATA_DIR")
    os.environ["DATA_DIR"] = str(d / "data")
    get_settings.cache_clear()
    try:
        candles = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-04-30")
        write_parquet(candles, dataset_path(Dataset("BTCUSDT", "1h", 120)), metadata={"simulated": True})
        assert main(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "120", "--informative", "4h"]) == 0
        ta = read_parquet(dataset_path(Dataset("BTCUSDT", "1h", 120), "ta"))
    finally:
        if old is None:
            os.environ.pop("DATA_DIR", None)
        else:
            os.environ["DATA_DIR"] = old
        get_settings.cache_clear()
    return candles, ta


def _engine(tmp: Path, window: int):
    from S1.offline import simulated_symbol_info
    from S2.ta import IndicatorConfig
    from S4.rules import load_rules
    from S6.config import RiskConfig
    from S6.filters import SymbolFilters
    from S6.killswitch import KillSwitch
    from S7.engine import Engine, EngineConfig
    from S7.ledger import Ledger
    from S7.order_log import OrderLog
    from S7.session import _min_tradable
    from S7.simulator import SimulatedExchange
    from S7.store import ExecutorStore

    filters = SymbolFilters.from_symbol_info(simulated_symbol_info("BTCUSDT", 40_000.0))
    venue = SimulatedExchange(filters)
    store = ExecutorStore(tmp / "s.db")
    ledger = Ledger(store, OrderLog(tmp / "o.jsonl", mode="test"), symbol="BTCUSDT", interval="1h",
                    base_asset="BTC", quote_asset="USDT", min_tradable=_min_tradable(filters),
                    clock_ms=lambda: venue.now_ms)
    risk = RiskConfig().replace(kill_switch={"max_drawdown": None, "daily_loss_limit": None,
                                             "max_consecutive_losses": None})
    eng = Engine(EngineConfig(symbol="BTCUSDT", interval="1h", mode="dry-run", strategy="mtf", window=window,
                              max_candle_age_s=0),
                 rules=load_rules(RULES, columns=None), venue=venue, ledger=ledger, filters=filters,
                 kill_switch=KillSwitch(risk, path=tmp / "ks.json"), risk=risk, indicators=IndicatorConfig())
    return eng, store


@pytest.mark.slow
def test_live_informative_columns_equal_the_s2_file_at_every_closed_bar(s2_file, tmp_path):
    from S2.ta import IndicatorConfig
    from S4.evaluate import condition_masks
    from S4.rules import load_rules
    from S7.session import default_window

    candles, ta = s2_file
    rules = load_rules(RULES, columns=None)
    window = default_window(IndicatorConfig(), rules, "1h")
    assert window >= 1200                      # 300 closed 4h candles behind every row
    eng, store = _engine(tmp_path, window)
    assert eng.informative is not None and set(eng.informative.columns) == set(COLS)
    n_seed = window
    got = {c: [] for c in COLS}
    decisions = []

    async def run():
        await eng.start()
        eng.seed(candles.iloc[:n_seed])
        for i in range(n_seed, len(candles)):
            row = candles.iloc[i:i + 1]
            await eng.on_price(float(row["open"].iloc[0]), int(row.index[0].value // 1_000_000))
            d = await eng.on_candle(row, int(row["close_time"].iloc[0].value // 1_000_000) + 1)
            decisions.append(d)
            vals = eng.informative.arrays(eng._t, eng._w)     # what the rules read at this closed bar
            for c in COLS:
                got[c].append(vals[c][-1])

    try:
        asyncio.run(run())
    finally:
        store.close()
    want = ta.iloc[n_seed:]
    assert len(want) == len(got["close_4h"]) > 500
    np.testing.assert_array_equal(np.asarray(got["close_4h"]), want["close_4h"].to_numpy())
    for c in ("ema21_4h", "rsi14_4h"):   # recursive: what is left of the seed 300 4h candles back (~1e-9)
        np.testing.assert_allclose(np.asarray(got[c]), want[c].to_numpy(), rtol=1e-8, atol=1e-8, err_msg=c)
    # the rules fire on the same bars as on the S2 file's columns (S4's evaluator on the whole file)
    arrays = {c: ta[c].to_numpy(np.float64) for c in rules.required_columns()}
    ent, _ = condition_masks(arrays, rules, len(ta))
    file_entry = ent.any(axis=0)[n_seed:]
    live_entry = np.array([d.entry_rule is not None for d in decisions])
    assert file_entry.sum() > 0
    np.testing.assert_array_equal(live_entry, file_entry)


def test_a_live_session_loads_an_informative_rule_file():
    """The executor's loader accepts rsi14_4h ... (computed live), and sizes the window for them."""
    from S7.config import SessionConfig
    from S7.session import default_window, load_strategy

    cfg = SessionConfig(symbol="BTCUSDT", interval="1h", rules=RULES, mode="dry-run")
    rules, indicators, *_ = load_strategy(cfg)
    assert set(COLS) <= set(rules.required_columns())
    assert default_window(indicators, rules, "1h") > default_window(indicators, rules)


def test_an_informative_interval_below_the_base_is_refused_in_one_line():
    from S1.errors import UserError
    from S7.feeds import InformativeFeed

    with pytest.raises(UserError, match="cannot be built"):
        InformativeFeed(["rsi14_1h"], base_interval="4h")
