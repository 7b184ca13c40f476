"""Sizing formulas against hand-computed cases; scalar and vectorised forms agree."""

from __future__ import annotations

import math

import numpy as np
import pytest

from S6.config import RiskConfig
from S6.sizing import (
    SizingError,
    atr_stop_size,
    fixed_fraction_size,
    kelly_fraction,
    kelly_size,
    kelly_stats,
    risk_size,
    size_position,
    stop_price,
    take_profit_price,
)


def test_atr_stop_size_hand_computed():
    # R = 1 % of 10,000 = 100 quote; stop 2 x 350 = 700 away -> 100 / 700 BTC
    assert atr_stop_size(equity=10_000, atr=350, risk=0.01, k=2) == pytest.approx(100 / 700, rel=1e-15)
    # R = 2 % of 5,000 = 100; stop 1.5 x 20 = 30 -> 3.333.. units
    assert atr_stop_size(equity=5_000, atr=20, risk=0.02, k=1.5) == pytest.approx(10 / 3, rel=1e-15)
    # the loss at the stop is exactly R x equity
    size = atr_stop_size(equity=12_345, atr=17.5, risk=0.0125, k=3)
    assert size * 3 * 17.5 == pytest.approx(12_345 * 0.0125, rel=1e-12)


def test_atr_size_cap_and_risk_size():
    # stop 1 unit away risks 2 % -> 200 units, but 10,000 equity buys only 100 at price 100
    assert risk_size(equity=10_000, risk=0.02, stop_distance=1) == 200
    assert risk_size(equity=10_000, risk=0.02, stop_distance=1, price=100, max_fraction=1.0) == 100
    assert risk_size(equity=10_000, risk=0.02, stop_distance=1, price=100, max_fraction=0.5) == 50


def test_fixed_fraction_hand_computed():
    assert fixed_fraction_size(equity=10_000, price=40_000, fraction=0.1) == pytest.approx(0.025)
    assert fixed_fraction_size(equity=2_000, price=0.5, fraction=1.0) == 4_000
    with pytest.raises(SizingError, match="<= 1"):
        fixed_fraction_size(equity=2_000, price=0.5, fraction=1.5)


def test_vectorised_matches_scalar_and_propagates_nan():
    atr = np.array([350.0, np.nan, 700.0, 10.0])
    eq = np.array([10_000.0, 10_000.0, 20_000.0, 1_000.0])
    out = atr_stop_size(equity=eq, atr=atr, risk=0.01, k=2)
    assert isinstance(out, np.ndarray) and out.shape == (4,)
    assert np.isnan(out[1])
    for i in (0, 2, 3):
        assert out[i] == atr_stop_size(equity=float(eq[i]), atr=float(atr[i]), risk=0.01, k=2)
    ff = fixed_fraction_size(equity=eq, price=np.array([1.0, 2.0, 4.0, 8.0]), fraction=0.5)
    np.testing.assert_allclose(ff, [5_000, 2_500, 2_500, 62.5])


@pytest.mark.parametrize("kwargs, match", [
    (dict(equity=10_000, atr=0, risk=0.01, k=2), "atr must be > 0"),
    (dict(equity=10_000, atr=-5, risk=0.01, k=2), "atr must be > 0"),
    (dict(equity=-1, atr=5, risk=0.01, k=2), "equity must be > 0"),
    (dict(equity=10_000, atr=float("nan"), risk=0.01, k=2), "atr is nan"),
    (dict(equity=10_000, atr=5, risk=1.5, k=2), "risk must be < 1"),
    (dict(equity=10_000, atr=np.array([5.0, 0.0]), risk=0.01, k=2), "atr must be > 0"),
])
def test_bad_inputs_raise_with_a_fix(kwargs, match):
    with pytest.raises(SizingError, match=match) as exc:
        atr_stop_size(**kwargs)
    assert exc.value.fix  # every refusal says how to fix it


def test_kelly_fraction_hand_computed():
    # f* = p - (1 - p) / b
    assert kelly_fraction(win_rate=0.6, payoff=2.0) == pytest.approx(0.4)          # 0.6 - 0.4 / 2
    assert kelly_fraction(win_rate=0.6, payoff=2.0, fraction=0.5) == pytest.approx(0.2)
    assert kelly_fraction(win_rate=0.6, payoff=2.0, fraction=0.5, cap=0.1) == pytest.approx(0.1)
    assert kelly_fraction(win_rate=0.3, payoff=1.0) == 0.0                           # negative edge: no trade
    assert kelly_fraction(win_rate=0.5, payoff=1.0) == pytest.approx(0.0)            # break-even
    assert kelly_fraction(win_rate=0.7, payoff=math.inf) == pytest.approx(0.7)       # no losses seen
    assert kelly_fraction(win_rate=0.0, payoff=0.0) == 0.0
    np.testing.assert_allclose(kelly_fraction(win_rate=np.array([0.5, 0.6, 0.2]), payoff=2.0),
                               [0.25, 0.4, 0.0])


def test_kelly_stats_and_size():
    assert kelly_stats([0.02, -0.01, 0.04, -0.01]) == (0.5, 3.0, 4)                   # avg win 0.03, avg loss 0.01
    wr, pay, n = kelly_stats([0.01, 0.02, 0.0])                                        # a flat trade is not a win
    assert (wr, pay, n) == (2 / 3, math.inf, 3)
    # 40 trades, p = 0.55, b = 1.5 -> f* = 0.25; half-Kelly 0.125 x 10,000 / 100 = 12.5 units
    assert kelly_size(equity=10_000, price=100, win_rate=0.55, payoff=1.5, n_trades=40) == pytest.approx(12.5)
    assert kelly_size(equity=10_000, price=100, win_rate=0.55, payoff=1.5, n_trades=40, fraction=1.0,
                      cap=1.0) == pytest.approx(25.0)


def test_kelly_refuses_too_few_trades():
    with pytest.raises(SizingError, match="at least 30 closed trades, got 29"):
        kelly_size(equity=10_000, price=100, win_rate=0.55, payoff=1.5, n_trades=29)
    # boundary: exactly min_trades is enough
    assert kelly_size(equity=10_000, price=100, win_rate=0.55, payoff=1.5, n_trades=30) > 0
    # arrays (rolling statistics) can ask for NaN instead
    out = kelly_size(equity=10_000, price=100, win_rate=0.55, payoff=1.5, n_trades=np.array([10, 50]),
                     on_few_trades="nan")
    assert np.isnan(out[0]) and out[1] == pytest.approx(12.5)


def test_stop_and_take_profit_levels():
    assert stop_price(entry=43_000, atr=350, k=2) == 42_300
    assert stop_price(entry=100, stop_pct=0.03) == pytest.approx(97)
    assert stop_price(entry=100, atr=2, k=2, side="short") == 104
    assert take_profit_price(entry=43_000, stop=42_300, rr=2) == 44_400
    assert take_profit_price(entry=100, take_pct=0.06) == pytest.approx(106)
    assert take_profit_price(entry=100, stop=104, rr=1.5, side="short") == pytest.approx(94)
    assert take_profit_price(entry=100, stop=97) is None
    with pytest.raises(SizingError, match="at or below zero"):
        stop_price(entry=100, atr=60, k=2)
    with pytest.raises(SizingError, match="wrong side"):
        take_profit_price(entry=100, stop=101, rr=2)


def test_size_position_uses_the_config():
    cfg = RiskConfig()
    r = size_position(equity=10_000, price=43_000, atr=350, config=cfg)
    assert r.method == "atr" and r.size == pytest.approx(100 / 700)
    assert (r.stop, r.take_profit) == (42_300, 44_400)
    assert r.risk_amount == pytest.approx(100.0) and not r.capped
    assert r.notional == pytest.approx(43_000 * 100 / 700) and r.fraction == pytest.approx(r.notional / 10_000)
    # a tight ATR would need 50 BTC: capped at max_position_fraction x equity / price
    tight = size_position(equity=10_000, price=43_000, atr=1, config=cfg)
    assert tight.capped and tight.size == pytest.approx(10_000 / 43_000)
    half = size_position(equity=10_000, price=43_000, atr=1, config=cfg.replace(sizing={"max_position_fraction": 0.5}))
    assert half.size == pytest.approx(5_000 / 43_000)
    # fixed stop instead of ATR: R=1 % with a 2 % stop -> notional 50 % of equity
    pct = size_position(equity=10_000, price=100, config=cfg.replace(stops={"stop_loss_pct": 0.02}))
    assert pct.size == pytest.approx(50) and pct.stop == pytest.approx(98) and pct.take_profit == pytest.approx(104)
    fixed = size_position(equity=10_000, price=100, method="fixed", config=cfg)
    assert fixed.size == pytest.approx(10) and fixed.stop is None and fixed.risk_amount is None
    kelly = size_position(equity=10_000, price=100, method="kelly", win_rate=0.6, payoff=2, n_trades=100, config=cfg)
    assert kelly.kelly == pytest.approx(0.2) and kelly.size == pytest.approx(20)
    with pytest.raises(SizingError, match="needs an ATR"):
        size_position(equity=10_000, price=100, config=cfg)
    with pytest.raises(SizingError, match="needs win_rate"):
        size_position(equity=10_000, price=100, method="kelly", config=cfg)


def test_size_position_vectorised_equals_scalar():
    cfg = RiskConfig()
    price = np.array([100.0, 200.0, 50.0])
    atr = np.array([2.0, 1.0, np.nan])
    r = size_position(equity=1_000.0, price=price, atr=atr, config=cfg)
    assert isinstance(r.size, np.ndarray) and np.isnan(r.size[2])
    for i in range(2):
        s = size_position(equity=1_000.0, price=float(price[i]), atr=float(atr[i]), config=cfg)
        assert r.size[i] == pytest.approx(s.size) and r.stop[i] == pytest.approx(s.stop)
        assert bool(r.capped[i]) == s.capped
