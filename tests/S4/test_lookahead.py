"""No look-ahead, end to end: for every example rule file, the signals at bar t are
the same whether or not the bars after t exist (indicators, sentiment join and the
walk-forward ML score recomputed on the truncated data), at several cut points.
A deliberately leaky input shows that the check catches look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd

from S2.informative import ensure_informative
from S2.ta import add_indicators
from S4.ml_score import WalkForward, ml_frame, ml_scores
from S4.rules import load_rules
from S4.signals import signals_frame
from tests.S4.helpers import RULE_FILES

CUTS = (150, 700, 1234, 2100, 3000)
SMALL_PLAN = WalkForward(horizon=4, train_bars=600, test_bars=400)
SMALL_MODEL = {"max_iter": 30}
COMPARED = ("entry", "exit", "signal", "rule", "sentiment_score", "ml_proba", "rsi14", "sma50",
            "close_4h", "ema21_4h", "rsi14_4h")


def chain(candles: pd.DataFrame, sentiment: pd.DataFrame, rules) -> pd.DataFrame:
    """Everything S2 + S4 compute, from candles that end at ``candles.index[-1]``;
    the sentiment file is cut at the same time (it could not hold later rows)."""
    ta = ensure_informative(add_indicators(candles), rules.required_columns())  # rsi14_4h ... from these candles
    ml = None
    if rules.uses_ml:
        ml = ml_frame(ta, ml_scores(ta, SMALL_PLAN, model_params=SMALL_MODEL))
    known = sentiment[sentiment.index <= candles.index[-1]]
    return signals_frame(ta, rules, sentiment=known, ml=ml)


def changed(full: pd.DataFrame, part: pd.DataFrame) -> dict[str, int]:
    """Per column, how many of ``part``'s rows differ from the same rows of ``full``."""
    head = full.loc[part.index]
    out = {}
    for c in COMPARED:
        if c not in part.columns:
            continue
        a, b = head[c].astype(object).to_numpy(), part[c].astype(object).to_numpy()
        same = [(x == y) or (pd.isna(x) and pd.isna(y)) for x, y in zip(a, b)]
        out[c] = len(same) - int(np.sum(same))
    return out


def test_signals_at_t_do_not_change_when_later_bars_are_removed(rule_file, btc_1h, btc_sentiment):
    rules = load_rules(rule_file)
    full = chain(btc_1h, btc_sentiment, rules)
    assert full["entry"].sum() >= 3 and full["exit"].sum() >= 3, "the check must cover real trades"
    if rules.uses_ml:
        assert full["ml_proba"].notna().sum() > 2000
    for cut in CUTS:
        part = chain(btc_1h.iloc[:cut], btc_sentiment, rules)
        assert part.index.equals(full.index[:cut])
        diff = changed(full, part)
        assert not any(diff.values()), f"cut at row {cut} ({btc_1h.index[cut - 1]}): {diff}"


def test_signals_at_t_do_not_change_when_later_bars_change(rule_file, btc_1h, btc_sentiment):
    """Same length, different future: prices after the cut are replaced by another path."""
    rules = load_rules(rule_file)
    cut = 1900
    full = chain(btc_1h, btc_sentiment, rules)
    other = btc_1h.copy()
    rng = np.random.default_rng(0)
    factor = np.exp(np.cumsum(rng.normal(0, 0.01, len(other) - cut)))
    for c in ("open", "high", "low", "close"):
        other.iloc[cut:, other.columns.get_loc(c)] = other[c].to_numpy()[cut:] * factor
    sent = btc_sentiment.copy()
    sent.loc[sent.index >= btc_1h.index[cut], "sentiment_score"] *= -1
    alt = chain(other, sent, rules)
    assert not any(changed(full.iloc[:cut], alt.iloc[:cut]).values())
    assert any(changed(full.iloc[cut:], alt.iloc[cut:]).values()), "the future did change"


def test_the_check_catches_a_leaky_input(btc_ta):
    """An 'ML score' that peeks 4 bars ahead: removing the future changes past signals,
    and the comparison used above reports it."""
    rules = load_rules(next(p for p in RULE_FILES if p.name == "rules_ml.yaml"))

    def leaky(ta):
        future_up = (ta["close"].shift(-4) > ta["close"]).astype(float)
        future_up[ta["close"].shift(-4).isna()] = np.nan
        return ta.assign(ml_proba=future_up.to_numpy())

    full = signals_frame(leaky(btc_ta), rules)
    diffs = [changed(full, signals_frame(leaky(btc_ta.iloc[:cut]), rules)) for cut in range(400, 3600, 50)]
    assert all(d["ml_proba"] == 4 for d in diffs)
    assert sum(d["signal"] > 0 for d in diffs) >= 3
