"""Fixtures of the S4 tests: indicator frames of real BTCUSDT 1h (simulated when
../shared is absent), a deterministic sentiment series, every example rule file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.S4.helpers import RULE_FILES, causal_proba, make_sentiment

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def btc_ta(btc_1h) -> pd.DataFrame:
    from S2.ta import add_indicators

    return add_indicators(btc_1h)


@pytest.fixture(scope="session")
def btc_sentiment(btc_1h) -> pd.DataFrame:
    return make_sentiment(btc_1h.index)


@pytest.fixture(scope="session")
def btc_full(btc_ta, btc_sentiment) -> pd.DataFrame:
    """Indicators (+ 4h/1d informative) + as-of sentiment + a causal ml_proba: every column the example rules read."""
    from S2.informative import add_informative
    from S4.signals import join_sentiment

    out = add_informative(join_sentiment(btc_ta, btc_sentiment), ["4h", "1d"])  # rules_mtf.yaml reads *_4h
    return out.assign(ml_proba=causal_proba(out["close"]))


@pytest.fixture(params=[p.name for p in RULE_FILES])
def rule_file(request) -> Path:
    return REPO / "S4" / request.param
