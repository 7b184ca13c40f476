"""S3/series.py: candle-aligned buckets, confidence weighting, decay, and no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.intervals import floor_ms, to_ms
from S3.series import bucket_open_times, sentiment_series

T = pd.Timestamp("2024-01-01 10:00", tz="UTC")


def items(*rows):
    return pd.DataFrame(rows, columns=["published_at", "score", "confidence", "label"])


def at(minutes):
    return T + pd.Timedelta(minutes=minutes)


def series(df, hours=4, **kw):
    kw = {"interval": "1h", "half_life": "1h", "prior_weight": 1.0, **kw}
    return sentiment_series(df, since=T, until=T + pd.Timedelta(hours=hours), **kw)


def test_item_at_10_37_informs_the_11_00_candle_not_10_00():
    s = series(items((at(37), 0.9, 1.0, "bullish")))
    assert s.loc[T, "sentiment_score"] == 0.0 and s.loc[T, "n_items"] == 0
    assert s.loc[at(60), "n_items"] == 1 and s.loc[at(60), "sentiment_score"] > 0.3


def test_item_exactly_at_an_open_time_waits_for_the_next_candle():
    s = series(items((at(60), -1.0, 1.0, "bearish")))
    assert s.loc[at(60), "sentiment_score"] == 0.0 and s.loc[at(60), "n_items"] == 0
    assert s.loc[at(120), "n_items"] == 1 and s.loc[at(120), "sentiment_score"] == pytest.approx(-0.5 / 1.5)


def test_future_items_never_change_past_values():
    rng = np.random.default_rng(7)
    n = 400
    pub = T - pd.Timedelta(hours=12) + pd.to_timedelta(rng.uniform(0, 96 * 3600, n), unit="s")
    df = pd.DataFrame({"published_at": pub, "score": rng.uniform(-1, 1, n), "confidence": rng.uniform(0, 1, n),
                       "label": "neutral"})
    full = sentiment_series(df, since=T, until=T + pd.Timedelta(hours=72), interval="1h", half_life="3h")
    for cut_h in (5, 17, 40):
        cut = T + pd.Timedelta(hours=cut_h)
        past_only = sentiment_series(df[df["published_at"] < cut], since=T, until=T + pd.Timedelta(hours=72),
                                     interval="1h", half_life="3h")
        upto = full.index <= cut  # candles opening at or before the cut use only items published before it
        pd.testing.assert_frame_equal(full[upto], past_only[upto])
        assert not full[~upto].equals(past_only[~upto])


def test_confidence_weighting_prior_and_bounds():
    # two items in the same hour: strong-confident bullish and weak-unsure bearish
    s = series(items((at(10), 1.0, 0.9, "bullish"), (at(20), -1.0, 0.1, "bearish")), half_life="1000h")
    v = s.loc[at(60), "sentiment_score"]
    assert v == pytest.approx((0.9 - 0.1) / (1.0 + 1.0), rel=1e-3)
    many = series(items(*[(at(i), 1.0, 1.0, "bullish") for i in range(50)]), half_life="1000h")
    assert 0.97 < many["sentiment_score"].max() <= 1.0
    assert many.loc[at(60), "n_items"] == 50


def test_decay_towards_zero_with_the_half_life():
    s = series(items((T - pd.Timedelta(minutes=1), 1.0, 1.0, "bullish")), hours=6, half_life="2h", prior_weight=1e-9)
    # with a negligible prior the score is the weighted mean: it stays at 1 while evidence halves every 2h
    assert np.allclose(s["sentiment_score"], 1.0)
    ev = s["evidence"].to_numpy()
    assert ev[2] / ev[0] == pytest.approx(0.5, rel=1e-6)
    s = series(items((T - pd.Timedelta(minutes=1), 1.0, 1.0, "bullish")), hours=12, half_life="2h")
    sc = s["sentiment_score"].to_numpy()
    assert (np.diff(sc) < 0).all() and sc[-1] < 0.02  # no news: the score fades to neutral


def test_unknown_and_zero_confidence_items_weigh_nothing():
    s = series(items((at(5), 1.0, 1.0, "unknown"), (at(6), 1.0, 0.0, "bullish"), (at(7), -0.5, 1.0, "bearish")))
    assert s.loc[at(60), "sentiment_score"] == pytest.approx(-0.5 * 2 ** (-53 / 60) / (2 ** (-53 / 60) + 1))
    assert s.loc[at(60), "n_items"] == 2  # the unknown item is not counted, the zero-confidence one is


def test_empty_items_give_zeros_and_warmup_items_are_not_counted_as_new():
    s = series(items())
    assert len(s) == 5 and (s["sentiment_score"] == 0).all() and (s["n_items"] == 0).all()
    old = series(items((T - pd.Timedelta(hours=30), 1.0, 1.0, "bullish"), (at(-30), 1.0, 1.0, "bullish")),
                 half_life="100h")
    assert old.loc[T, "n_items"] == 1  # only the item of the previous hour is new at 10:00
    assert old.loc[T, "evidence"] > 1.5  # but both inform the score


@pytest.mark.parametrize("interval,since,until", [
    ("1h", "2024-01-01 00:30", "2024-01-02"), ("4h", "2024-01-01", "2024-01-03"), ("1d", "2024-01-01", "2024-01-10"),
    ("1w", "2024-01-03", "2024-03-01"), ("1M", "2024-01-15", "2024-06-01"), ("15m", "2024-01-01", "2024-01-01 06:00")])
def test_buckets_are_candle_open_times(interval, since, until):
    opens = bucket_open_times(to_ms(since), to_ms(until), interval)
    assert len(opens) and all(floor_ms(int(t), interval) == t for t in opens)
    assert opens[0] >= to_ms(since) and opens[-1] <= to_ms(until)
    pub = pd.Timestamp(int(opens[1]) - 60_000, unit="ms", tz="UTC")  # one minute before the 2nd candle opens
    s = sentiment_series(items((pub, 0.5, 1.0, "bullish")), since=since, until=until, interval=interval)
    assert s.index.tz is not None and str(s.index.tz) == "UTC" and s.index.name == "open_time"
    assert (s.index.as_unit("ms").asi8 == opens).all()
    assert s["n_items"].tolist() == [0, 1] + [0] * (len(s) - 2)
    assert s["sentiment_score"].iloc[0] == 0.0 and s["sentiment_score"].iloc[1] > 0
    if interval == "1w":
        assert (s.index.day_of_week == 0).all()
    if interval == "1M":
        assert (s.index.day == 1).all()
