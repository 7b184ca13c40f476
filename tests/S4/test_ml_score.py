"""S4/ml_score.py: features and labels without look-ahead, the walk-forward plan
(gap of `horizon` bars, anchored at the first row), training rows never reaching
past a fold's test start, per-fold scores against the baseline, the _ml file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.datasets import Dataset, dataset_path, read_metadata, read_parquet
from S1.errors import UserError
from S2.ta import add_indicators
from S4.ml_score import WalkForward, make_features, make_labels, ml_scores, train_ml, walk_forward
from tests.S4.helpers import write_market

PLAN = WalkForward(horizon=4, train_bars=600, test_bars=400)
FAST = {"max_iter": 30}


# ---------------------------------------------------------------------------- labels
def test_labels_are_the_sign_of_the_next_n_bar_return():
    close = np.array([10, 11, 9, 12, 12, 13.0])
    assert make_labels(close, 1).tolist()[:5] == [1, 0, 1, 0, 1]
    y2 = make_labels(close, 2)
    assert y2[:4].tolist() == [0, 1, 1, 1] and np.isnan(y2[4:]).all()
    with pytest.raises(UserError, match="horizon must be a whole number >= 1"):
        make_labels(close, 0)


def test_label_at_t_reads_only_close_t_and_close_t_plus_n():
    rng = np.random.default_rng(2)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    n, t = 6, 150
    y = make_labels(close, n)
    for j in range(300):
        if j in (t, t + n):
            continue
        moved = close.copy()
        moved[j] *= 1.5 if moved[j] < moved[t] else 0.5
        assert make_labels(moved, n)[t] == y[t], j
    flipped = close.copy()
    flipped[t + n] = close[t] * (0.9 if y[t] == 1 else 1.1)
    assert make_labels(flipped, n)[t] == 1 - y[t]


# -------------------------------------------------------------------------- features
def test_features_at_t_do_not_depend_on_later_bars(btc_1h):
    full = make_features(add_indicators(btc_1h))
    assert full.shape[1] >= 20
    # after the warm-up every feature is known, except the taker share of a zero-volume bar
    # (the real halted candle 2023-03-24 12:00 in ../shared)
    assert (~np.isfinite(full.iloc[100:].to_numpy())).sum() <= 1
    for cut in (200, 1777, 3000):
        part = make_features(add_indicators(btc_1h.iloc[:cut]))
        pd.testing.assert_frame_equal(part, full.iloc[:cut])


def test_features_are_scale_free(btc_1h):
    """No raw price level: multiplying every price by 10 leaves the features unchanged."""
    scaled = btc_1h.copy()
    for c in ("open", "high", "low", "close"):
        scaled[c] = scaled[c] * 10
    a, b = make_features(add_indicators(btc_1h)), make_features(add_indicators(scaled))
    pd.testing.assert_frame_equal(a, b, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------- walk-forward
def test_plan_gap_and_anchoring():
    plan = WalkForward(horizon=5, train_bars=100, test_bars=30)
    folds = plan.folds(1000)
    assert folds[0].test_start == 105 and folds[0].train_end == 100
    for f in folds:
        assert f.test_start - f.train_end == 5              # the gap
        assert f.train_end - 1 + 5 < f.test_start           # last training label's close is before the test
    assert all(b.test_start == a.test_end for a, b in zip(folds, folds[1:]))
    assert folds[-1].test_end == 1000
    # boundaries do not depend on how many rows follow
    for n in (200, 531, 999):
        short = plan.folds(n)
        assert [(f.train_end, f.test_start) for f in short] == [(f.train_end, f.test_start) for f in folds[:len(short)]]
    rolling = WalkForward(horizon=5, train_bars=100, test_bars=30, max_train_bars=150).folds(1000)
    assert all(f.train_end - f.train_start <= 150 for f in rolling) and rolling[-1].train_start > 0
    assert WalkForward(horizon=5, train_bars=100, test_bars=30).folds(105) == []
    with pytest.raises(UserError, match="train_bars must be a whole number >= 50"):
        WalkForward(train_bars=10)


def test_training_rows_never_reach_into_a_folds_test_period(monkeypatch):
    """Spy on every fit: the rows given to the model (identified by a row-number
    feature) all have labels whose outcome bar lies before the fold's test start."""
    import sklearn.ensemble

    fits = []
    real = sklearn.ensemble.HistGradientBoostingClassifier

    class Spy(real):
        def fit(self, X, y):
            fits.append(X[:, 0].astype(int))
            return super().fit(X, y)

    monkeypatch.setattr(sklearn.ensemble, "HistGradientBoostingClassifier", Spy)
    rng = np.random.default_rng(0)
    n = 1500
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    idx = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    feats = pd.DataFrame({"row": np.arange(n, dtype=float), "x": rng.normal(size=n)}, index=idx)
    plan = WalkForward(horizon=7, train_bars=300, test_bars=250)
    res = walk_forward(feats, make_labels(close, 7), plan, model_params=FAST)
    folds = plan.folds(n)
    assert len(fits) == len(folds) == 5
    for rows, f in zip(fits, folds):
        assert rows.max() + plan.horizon < f.test_start  # label of the last row is known before the test
        assert rows.max() == f.train_end - 1 and rows.min() == 0
    assert np.isnan(res.proba[:folds[0].test_start]).all()
    assert np.isfinite(res.proba[folds[0].test_start:]).all()
    assert (res.fold[folds[1].test_start:folds[1].test_end] == 1).all()


def test_ml_proba_at_t_does_not_change_when_the_future_changes(btc_1h):
    ta = add_indicators(btc_1h)
    full = ml_scores(ta, PLAN, model_params=FAST)
    cut = 1500
    other = btc_1h.copy()
    rng = np.random.default_rng(9)
    f = np.exp(np.cumsum(rng.normal(0, 0.02, len(other) - cut)))
    for c in ("open", "high", "low", "close"):
        other.iloc[cut:, other.columns.get_loc(c)] *= f
    alt = ml_scores(add_indicators(other), PLAN, model_params=FAST)
    np.testing.assert_array_equal(full.proba[:cut], alt.proba[:cut])
    assert not np.allclose(full.proba[cut + 100:], alt.proba[cut + 100:], equal_nan=True)
    short = ml_scores(add_indicators(btc_1h.iloc[:cut]), PLAN, model_params=FAST)
    np.testing.assert_array_equal(full.proba[:cut], short.proba)


def test_the_model_learns_a_real_pattern_and_scores_it_out_of_sample():
    """A market whose next return follows a known feature: the AUC must be high (the
    pipeline can learn), while the baseline stays near 50 %."""
    rng = np.random.default_rng(4)
    n = 2400
    signal = rng.normal(size=n)
    ret = np.r_[0.0, 0.004 * signal[:-1] + rng.normal(0, 0.002, n - 1)]
    close = 100 * np.exp(np.cumsum(ret))
    idx = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    feats = pd.DataFrame({"signal": signal, "noise": rng.normal(size=n)}, index=idx)
    res = walk_forward(feats, make_labels(close, 1), WalkForward(horizon=1, train_bars=600, test_bars=600),
                       model_params={"max_iter": 50})
    t = res.folds
    assert len(t) == 3 and (t["auc"] > 0.85).all() and (t["accuracy"] > 0.75).all()
    assert (t["baseline_accuracy"].between(0.4, 0.6)).all()
    assert res.overall["auc"] > 0.85 and res.overall["n_scored"] == n - 601 - 1


def test_fold_table_baseline_is_the_training_majority_class(btc_1h):
    ta = add_indicators(btc_1h)
    res = ml_scores(ta, PLAN, model_params=FAST)
    y = make_labels(ta["close"].to_numpy(), PLAN.horizon)
    feats_ok = np.isfinite(make_features(ta).to_numpy()).all(axis=1)
    for row, f in zip(res.folds.itertuples(), PLAN.folds(len(ta))):
        tr = np.arange(f.train_start, f.train_end)
        tr = tr[np.isfinite(y[tr]) & feats_ok[tr]]
        majority = int(y[tr].mean() >= 0.5)
        te = y[f.test_start:f.test_end]
        te = te[np.isfinite(te)]
        assert row.baseline_class == majority and row.n_train == len(tr) and row.n_test == len(te)
        assert row.baseline_accuracy == pytest.approx(np.mean(te == majority))
        p = res.proba[f.test_start:f.test_end][np.isfinite(y[f.test_start:f.test_end])]
        assert row.accuracy == pytest.approx(np.mean((p >= 0.5) == (te == 1)))
        assert 0.3 < row.auc < 0.7  # real hourly BTC: no miracle
    assert list(res.folds["test_from"]) == [ta.index[f.test_start] for f in PLAN.folds(len(ta))]


def test_train_ml_writes_the_ml_file_with_metadata(settings_env, btc_1h):
    write_market(settings_env.data_dir, btc_1h, simulated=True)
    run = train_ml(Dataset("BTCUSDT", "1h", 150), plan=PLAN, model_params=FAST, progress=False)
    path = dataset_path(Dataset("BTCUSDT", "1h", 150), "ml")
    assert run.path == path
    df = read_parquet(path)
    ta = read_parquet(dataset_path(Dataset("BTCUSDT", "1h", 150), "ta"))
    assert df.index.equals(ta.index) and df.index.name == "open_time"
    assert list(df.columns) == ["ml_proba", "ml_fold"]
    first = PLAN.train_bars + PLAN.horizon
    assert df["ml_proba"].iloc[:first].isna().all() and df["ml_proba"].iloc[first:].between(0, 1).all()
    meta = read_metadata(path)
    assert meta["simulated"] is True and meta["plan"]["horizon"] == 4 and len(meta["folds"]) == len(run.result.folds)
    assert run.plot is not None and run.plot.exists() and run.plot.suffix == ".png"
    too_few = rf"{len(btc_1h):,} rows, too few for the walk-forward plan .* -- load more --days or lower --train-bars"
    with pytest.raises(UserError, match=too_few):
        train_ml(Dataset("BTCUSDT", "1h", 150), plan=WalkForward(train_bars=5000), progress=False)
