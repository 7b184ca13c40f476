"""Walk-forward optimisation (S5/walkforward_search.py, S5/walkforward_files.py, ``--walk-forward``):
fold windows, no look-ahead, seeded reproducibility, stitching, stability, CLI errors and files."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, read_parquet, write_parquet
from S1.errors import UserError
from S4.rules import load_rules, parse_rules
from S5.engine import run_backtest
from S5.optimizer import OptimizeConfig
from S5.walkforward_search import WalkForwardConfig, param_stability, parse_window, stitch, walk_forward
from tests.S5.reference import reference_metrics

RULES = "S4/rules_ta_only.yaml"
CFG = OptimizeConfig(n_trials=6, min_trades=2, seed=11)


@pytest.fixture(scope="module")
def wf_ta(btc_1h):
    """BTCUSDT 1h Jan-May 2023 (real when ../shared is present) with S2 indicators, first 2,400 bars."""
    from S2.ta import add_indicators

    return add_indicators(btc_1h).iloc[:2400]


@pytest.fixture(scope="module")
def wf_run(wf_ta):
    return walk_forward(wf_ta, load_rules(RULES), interval="1h", config=CFG,
                        wf=WalkForwardConfig(n_folds=3, test="200"), progress=False)


def hours(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")


# ------------------------------------------------------------------------ windows
@pytest.mark.parametrize("mode", ["rolling", "anchored"])
@pytest.mark.parametrize("n,k,train,test,gap,frac", [
    (1000, 4, None, None, 0, 0.7), (1000, 4, None, "100", 5, 0.7), (3000, 6, "20d", "5d", 0, 0.7),
    (3000, 2, "500", None, 24, 0.7), (997, 7, None, None, 3, 0.5), (5000, 10, None, "1w", 0, 0.7),
])
def test_fold_windows_tile_the_end_and_never_touch_their_own_test_bars(mode, n, k, train, test, gap, frac):
    cfg = WalkForwardConfig(n_folds=k, mode=mode, train=train, test=test, gap=gap, train_frac=frac)
    plan = cfg.plan(hours(n), "1h")
    f = plan.folds
    assert len(f) == k and [x.k for x in f] == list(range(k))
    assert f[-1].test_end == n                                      # the most recent bars are tested
    assert all(a.test_end == b.test_start for a, b in itertools.pairwise(f))  # test windows adjacent, never overlapping
    for x in f:
        assert x.test_end - x.test_start == plan.test_bars
        assert 0 <= plan.first_bar <= x.train_start < x.train_end
        assert x.train_end + gap == x.test_start                    # train ends gap bars before its test
        assert set(range(x.train_start, x.train_end)).isdisjoint(range(x.test_start, x.test_end))
        if mode == "rolling":
            assert x.train_end - x.train_start == plan.train_bars
        else:
            assert x.train_start == f[0].train_start                # anchored: expanding from one bar
    assert f[0].train_end - f[0].train_start == plan.train_bars
    if test is not None:
        assert plan.test_bars == (parse_window(test, option="t") // pd.Timedelta("1h")
                                  if not str(test).isdigit() else int(test))
    if train is not None:
        assert plan.train_bars == (int(train) if str(train).isdigit() else pd.Timedelta(train.replace("d", "D"))
                                   // pd.Timedelta("1h"))
    if train is None and test is None:                              # derived: train / (train + test) ~ frac
        assert plan.train_bars + gap + k * plan.test_bars == n
        assert abs(plan.train_bars / (plan.train_bars + plan.test_bars) - frac) < 0.02


def test_durations_follow_the_interval():
    plan = WalkForwardConfig(n_folds=3, train="30d", test="7d").plan(
        pd.date_range("2023-01-01", periods=400, freq="4h", tz="UTC"), "4h")
    assert (plan.train_bars, plan.test_bars) == (180, 42)
    assert parse_window("90m", option="x") == pd.Timedelta(minutes=90)


@pytest.mark.parametrize("kwargs,match", [
    ({"n_folds": 1}, "--walk-forward must be a whole number of folds from 2"),
    ({"n_folds": 2.5}, "--walk-forward must be"),
    ({"mode": "sideways"}, "unknown --wf-mode 'sideways'"),
    ({"test": "10x"}, "--wf-test '10x' is not a bar count or a duration"),
    ({"train": "0"}, "--wf-train must be positive"),
    ({"gap": -1}, "--wf-gap must be a whole number of bars >= 0"),
    ({"train_frac": 0.99}, "--train-frac 0.99 is out of range"),
])
def test_bad_settings_fail_on_creation(kwargs, match):
    with pytest.raises(UserError, match=match) as exc:
        WalkForwardConfig(**kwargs)
    assert exc.value.fix


@pytest.mark.parametrize("kwargs,interval,match", [
    ({"n_folds": 30, "test": "7d"}, "1h", "leave 0 bars for the train window"),
    ({"n_folds": 3, "train": "900", "test": "100"}, "1h", r"= 1,200 bars \(needs"),
    ({"n_folds": 50}, "1h", "bars per test window"),
    ({"n_folds": 3, "test": "90m"}, "1h", "not a whole number of 1h bars"),
    ({"n_folds": 3, "test": "30d"}, "1M", "1M bars have none"),
])
def test_plans_that_do_not_fit_name_the_fix(kwargs, interval, match):
    with pytest.raises(UserError, match=match) as exc:
        WalkForwardConfig(**kwargs).plan(hours(1000), interval)
    assert "--" in exc.value.fix


# --------------------------------------------------------------------- honesty
def test_each_test_window_equals_a_backtest_of_its_params_on_data_cut_at_the_window_end(wf_ta, wf_run):
    from S4.signals import signals_frame

    rules = load_rules(RULES)
    for fr in wf_run.folds:
        f = fr.fold
        cut = signals_frame(wf_ta.iloc[:f.test_end], rules.with_params(**fr.best_params))  # no later bar exists
        alone = run_backtest(cut.iloc[f.test_start:f.test_end], interval="1h", costs=CFG.costs,
                             init_cash=CFG.init_cash)
        np.testing.assert_array_equal(fr.out_of_sample.equity.to_numpy(), alone.equity.to_numpy())
        pd.testing.assert_frame_equal(fr.out_of_sample.trades, alone.trades)
        assert fr.out_of_sample.equity.index[0] == wf_ta.index[f.test_start]
        # in-sample: the value the search maximised is the train window's backtest of the same params
        train = signals_frame(wf_ta.iloc[:f.train_end], rules.with_params(**fr.best_params))
        ins = run_backtest(train.iloc[f.train_start:f.train_end], interval="1h", costs=CFG.costs,
                           init_cash=CFG.init_cash)
        assert fr.best_value == pytest.approx(ins.metrics["sharpe"], rel=1e-12)
        assert fr.in_sample.equity.index[-1] < fr.out_of_sample.equity.index[0]


def test_later_bars_change_nothing_before_them(wf_ta, wf_run):
    """Scramble every price and indicator from fold 2's test window on: fold 1 is
    identical, fold 2 chooses the same params (its train window is untouched) but
    its test result changes."""
    f2 = wf_run.plan.folds[1]
    other = wf_ta.copy()
    num = other.select_dtypes("float").columns
    noise = np.random.default_rng(3).uniform(0.8, 1.25, (len(other) - f2.test_start, len(num)))
    other.loc[other.index[f2.test_start:], num] = other.loc[other.index[f2.test_start:], num].to_numpy() * noise
    b = walk_forward(other, load_rules(RULES), interval="1h", config=CFG,
                     wf=WalkForwardConfig(n_folds=3, test="200"), progress=False)
    a0, b0 = wf_run.folds[0], b.folds[0]
    assert a0.best_params == b0.best_params and a0.best_value == b0.best_value
    np.testing.assert_array_equal(a0.out_of_sample.equity.to_numpy(), b0.out_of_sample.equity.to_numpy())
    assert wf_run.folds[1].best_params == b.folds[1].best_params
    assert wf_run.folds[1].best_value == b.folds[1].best_value
    assert not np.array_equal(wf_run.folds[1].out_of_sample.equity.to_numpy(),
                              b.folds[1].out_of_sample.equity.to_numpy())


def test_reproducible_with_a_seed(wf_ta, wf_run):
    rules = load_rules(RULES)
    again = walk_forward(wf_ta, rules, interval="1h", config=CFG, wf=WalkForwardConfig(n_folds=3, test="200"),
                         progress=False)
    assert [f.best_params for f in again.folds] == [f.best_params for f in wf_run.folds]
    pd.testing.assert_series_equal(again.stitched.equity, wf_run.stitched.equity)
    other = walk_forward(wf_ta, rules, interval="1h", config=OptimizeConfig(n_trials=6, min_trades=2, seed=12),
                         wf=WalkForwardConfig(n_folds=3, test="200"), progress=False)
    assert [f.best_params for f in other.folds] != [f.best_params for f in wf_run.folds]


def test_folds_get_distinct_seeds_and_resume_from_storage(wf_ta, tmp_path):
    rules = load_rules(RULES)
    url = f"sqlite:///{tmp_path / 'wf.db'}"
    wf = WalkForwardConfig(n_folds=2, test="300")
    first = walk_forward(wf_ta, rules, interval="1h", config=OptimizeConfig(n_trials=3, min_trades=1, seed=5),
                         wf=wf, storage=url, study_name="w", progress=False)
    import optuna

    studies = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert studies == ["w_fold1of2", "w_fold2of2"] and first.folds[0].study_name == "w_fold1of2"
    s1, s2 = (optuna.load_study(study_name=n, storage=url) for n in studies)
    assert [t.params for t in s1.trials] != [t.params for t in s2.trials]   # seed + fold index
    before = [t.params for t in s1.trials]
    more = walk_forward(wf_ta, rules, interval="1h", config=OptimizeConfig(n_trials=5, min_trades=1, seed=5),
                        wf=wf, storage=url, study_name="w", progress=False)
    s1 = optuna.load_study(study_name="w_fold1of2", storage=url)
    assert len(s1.trials) == 5 and [t.params for t in s1.trials[:3]] == before   # resumed to the total
    assert len(more.folds) == 2
    with pytest.raises(UserError, match="other settings"):
        walk_forward(wf_ta, rules, interval="1h", config=OptimizeConfig(n_trials=5, min_trades=1, objective="calmar"),
                     wf=wf, storage=url, study_name="w", progress=False)


def test_a_fold_without_enough_trades_names_the_fold(wf_ta):
    with pytest.raises(UserError, match=r"fold 1/2 \(train .*no trial reached 100000 trades") as exc:
        walk_forward(wf_ta, load_rules(RULES), interval="1h", config=OptimizeConfig(n_trials=2, min_trades=100_000),
                     wf=WalkForwardConfig(n_folds=2), progress=False)
    assert "--min-trades" in exc.value.fix


# --------------------------------------------------------------------- stitching
def test_stitched_curve_compounds_the_test_windows(wf_run):
    st = wf_run.stitched
    parts = [fr.out_of_sample for fr in wf_run.folds]
    assert len(st.equity) == sum(len(p.equity) for p in parts) == 3 * 200
    assert st.equity.index.is_monotonic_increasing and st.equity.index.is_unique
    np.testing.assert_array_equal(st.equity.to_numpy()[:200], parts[0].equity.to_numpy())
    growth = np.prod([1 + p.metrics["total_return"] for p in parts]) - 1
    assert st.metrics["total_return"] == pytest.approx(growth, rel=1e-12)
    assert st.metrics["n_trades"] == sum(p.metrics["n_trades"] for p in parts)
    assert st.fold.tolist() == [1] * 200 + [2] * 200 + [3] * 200
    # every metric again, from the independent loop implementation
    first_open = float(parts[0].bars.open[0])
    ref = reference_metrics(st.equity, st.trades, init_cash=CFG.init_cash, bar_hours=1.0, first_open=first_open,
                            last_close=float(parts[-1].bars.close[-1]))
    for k, v in ref.items():
        if k in st.metrics and np.isfinite(v):
            assert st.metrics[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    # chained account: init + all pnl = final equity
    assert CFG.init_cash + st.trades["pnl"].sum() == pytest.approx(st.equity.iloc[-1], rel=1e-9)


def test_stitch_by_hand():
    t = hours(9)
    f = pd.DataFrame({"open": 10.0, "high": 13.0, "low": 7.0, "close": [10.0, 11, 12, 10, 10, 10, 10, 10, 8],
                      "entry": [True, False, False] * 3, "exit": False}, index=t)
    from S5.engine import Costs

    parts = [run_backtest(f.iloc[i:i + 3], interval="1h", costs=Costs(0, 0), init_cash=100.0) for i in (0, 3, 6)]
    s = stitch(parts, init_cash=100.0)
    np.testing.assert_allclose(s.equity.to_numpy(), [100, 110, 120, 120, 120, 120, 120, 120, 96])
    assert s.trades["pnl"].round(9).tolist() == [20.0, 0.0, -24.0]   # the 3rd window trades 120, not 100


def test_param_stability_numbers():
    space = load_rules(RULES).param_space()
    folds = [{"rsi_buy": 30, "rsi_sell": 60, "trend_band": 1.0, "momentum_bars": 3, "cooldown_bars": 0},
             {"rsi_buy": 30, "rsi_sell": 85, "trend_band": 1.0, "momentum_bars": 48, "cooldown_bars": 12},
             {"rsi_buy": 31, "rsi_sell": 60, "trend_band": 1.03, "momentum_bars": 3, "cooldown_bars": 24}]
    t = param_stability(folds, space)
    assert t.loc["rsi_buy", "spread"] == pytest.approx(np.std([30, 30, 31]) / 25)
    assert t.loc["rsi_buy", "verdict"] == "stable" and t.loc["momentum_bars", "verdict"] == "unstable"
    assert t.loc["rsi_sell", "edge_folds"] == 3 and t.loc["rsi_buy", "edge_folds"] == 0
    assert t.loc["trend_band", "distinct"] == 2
    choice = param_stability([{"m": "a"}, {"m": "a"}, {"m": "b"}], {"m": {"type": "str", "choices": ["a", "b"]}})
    assert choice.loc["m", "mode"] == "a" and choice.loc["m", "mode_share"] == pytest.approx(2 / 3)
    assert choice.loc["m", "verdict"] == "moderate"


# --------------------------------------------------------------------------- CLI
def _main(argv):
    from S5.optimize import main

    try:
        return run(main, argv)
    except SystemExit as exc:  # argparse's own errors (one line, see S1.cli.ArgumentParser)
        return exc.code


BASE = ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "100", "--rules", RULES]


@pytest.fixture
def market(settings_env, wf_ta):
    write_parquet(wf_ta, dataset_path(Dataset("BTCUSDT", "1h", 100), "ta"), metadata={"simulated": True})
    return settings_env


@pytest.mark.parametrize("extra,needle", [
    (["--wf-test", "30d"], "--wf-test needs --walk-forward N"),
    (["--walk-forward", "1"], "--walk-forward must be a whole number of folds from 2 to 100"),
    (["--walk-forward", "3", "--wf-mode", "sideways"], "invalid choice: 'sideways'"),
    (["--walk-forward", "3", "--wf-test", "10x"], "--wf-test '10x' is not a bar count or a duration"),
    (["--walk-forward", "3", "--wf-test", "90m"], "not a whole number of 1h bars"),
    (["--walk-forward", "3", "--wf-gap", "-2"], "--wf-gap must be a whole number of bars >= 0"),
    (["--walk-forward", "3", "--wf-train", "30d", "--train-frac", "0.8"], "--train-frac has no effect"),
    (["--walk-forward", "40", "--wf-test", "3d"], "leave 0 bars for the train window"),
    (["--walk-forward", "3", "--wf-train", "2000", "--wf-test", "300"], "= 2,900 bars"),
])
def test_bad_options_give_one_line_and_exit_2(market, capsys, extra, needle):
    assert _main([*BASE, "--trials", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert not market.reports_dir.exists() or not list(market.reports_dir.iterdir())   # nothing written


def test_missing_input_names_the_s2_command(settings_env, capsys):
    assert _main([*BASE, "--walk-forward", "3"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("create it first with: python S2/indicators.py --symbol BTCUSDT --interval 1h "
                                "--days 100") and err.count("\n") == 1


def test_cli_writes_report_json_and_parquet(market, capsys):
    argv = [*BASE, "--walk-forward", "3", "--wf-test", "200", "--wf-mode", "anchored", "--wf-gap", "2",
            "--trials", "5", "--min-trades", "2", "--seed", "3"]
    assert _main(argv) == 0
    out = capsys.readouterr().out
    assert "stitched out-of-sample" in out and "SIMULATED" in out and "3 anchored folds" in out
    from S5.walkforward_files import walkforward_paths

    paths = walkforward_paths(Dataset("BTCUSDT", "1h", 100), RULES)
    assert {k: p.name for k, p in paths.items()} == {    # <stem>__<rules>_<kind>, as every rule-derived output
        "json": "btcusdt_1h_100d__rules_ta_only_walkforward.json",
        "folds": "btcusdt_1h_100d__rules_ta_only_walkforward_folds.parquet",
        "equity": "btcusdt_1h_100d__rules_ta_only_walkforward_equity.parquet",
        "html": "btcusdt_1h_100d__rules_ta_only_walkforward.html"}
    doc = json.loads(paths["json"].read_text())
    assert doc["kind"] == "walk_forward" and doc["simulated"] is True and doc["seed"] == 3
    assert doc["plan"]["mode"] == "anchored" and doc["plan"]["gap_bars"] == 2 and doc["plan"]["test_bars"] == 200
    assert [f["fold"] for f in doc["folds"]] == [1, 2, 3]
    assert len({f["positions"][0] for f in doc["folds"]}) == 1                   # anchored
    for f in doc["folds"]:
        _, b, c, d = f["positions"]
        assert b + 2 == c and d - c == 200
    assert set(doc["parameter_stability"]) == set(load_rules(RULES).param_space())
    assert doc["latest_params"] == doc["folds"][-1]["best_params"]
    cmd = doc["latest_params_command"].split()
    assert cmd[:2] == ["python", "S4/decision.py"] and "trade the latest params" in out
    from S4.rules import parse_assignments

    assert parse_assignments([cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]) == doc["latest_params"]
    folds = read_parquet(paths["folds"])
    assert folds.index.tolist() == [1, 2, 3]
    assert folds["oos_total_return"].tolist() == pytest.approx([f["out_of_sample"]["total_return"]
                                                                for f in doc["folds"]])
    assert {f"param_{k}" for k in doc["latest_params"]} <= set(folds.columns)
    eq = read_parquet(paths["equity"])
    assert list(eq.columns) == ["equity", "fold", "defaults_equity", "buy_and_hold"] and len(eq) == 600
    assert str(eq.index.tz) == "UTC" and eq.index[0] == pd.Timestamp(doc["folds"][0]["test"][0])
    assert eq["equity"].iloc[-1] == pytest.approx(doc["stitched_out_of_sample"]["final_equity"])
    page = paths["html"].read_text()
    for part in ("SIMULATED", "Stitched out-of-sample", "Parameter stability", "In-sample vs out-of-sample"):
        assert part in page
    assert page.count("<script src='plotly.min.js'") == 1      # plotly.js once per reports folder
    # the same command resumes the stored fold studies: same result, nothing new
    assert _main([*argv, "--no-report"]) == 0
    again = json.loads(paths["json"].read_text())
    assert [f["best_params"] for f in again["folds"]] == [f["best_params"] for f in doc["folds"]]
    assert [f["trials"] for f in again["folds"]] == [f["trials"] for f in doc["folds"]]


def test_python_api_rules_from_text(wf_ta):
    rules = parse_rules("params: {lo: {value: 30, low: 20, high: 45}}\n"
                        "entry: {col: rsi14, op: crosses_above, param: lo}\nexit: {col: rsi14, op: '>', value: 65}")
    res = walk_forward(wf_ta, rules, interval="1h", config=OptimizeConfig(n_trials=4, min_trades=1),
                       wf=WalkForwardConfig(n_folds=2, mode="anchored"), progress=False)
    table = res.fold_table()
    assert list(table.index) == [1, 2] and "param_lo" in table and "oos_sharpe" in table
    assert res.summary()["aggregate"]["folds"] == 2


def test_optimiser_and_walk_forward_read_inputs_through_s4s_loader(settings_env, btc_1h, monkeypatch):
    """One loader (S4.signals.load_rule_inputs) feeds S4's build, the optimiser and the
    walk-forward: a rule file reading sentiment gets S4's as-of join and the sentiment
    file's simulated flag in both S5 jobs."""
    import S4.signals as sig
    from S1.datasets import sentiment_path
    from S5.optimizer import optimize_files
    from S5.walkforward_files import walkforward_files
    from tests.S4.helpers import make_sentiment, write_market

    write_market(settings_env.data_dir, btc_1h.iloc[:2000], days=100, simulated=False)
    write_parquet(make_sentiment(btc_1h.index[:2000]), sentiment_path("1h"), metadata={"simulated": True})
    calls = []
    real = sig.load_rule_inputs

    def spy(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(sig, "load_rule_inputs", spy)
    # a rule file that reads sentiment and trades often (the demo's S4/rules.yaml may trade too rarely on
    # 2,000 bars for three trials to reach a trade: what is tested here is the loader, not the strategy)
    rules = settings_env.data_dir.parent / "sentiment_rsi.yaml"
    rules.write_text("params:\n  lvl: {value: 50, low: 45, high: 55, step: 1}\n"
                     "entry:\n  - name: rsi_up\n    all:\n      - {col: rsi14, op: crosses_above, param: lvl}\n"
                     "      - {col: sentiment_score, op: '>', value: -2}\n"
                     "exit:\n  - {name: rsi_down, col: rsi14, op: crosses_below, param: lvl}\n")
    cfg = OptimizeConfig(n_trials=3, min_trades=1)
    opt = optimize_files(Dataset("BTCUSDT", "1h", 100), rules, config=cfg, progress=False, report=False)
    wf = walkforward_files(Dataset("BTCUSDT", "1h", 100), rules, config=cfg, wf=WalkForwardConfig(n_folds=2),
                           progress=False, report=False, memory=True)
    assert calls == [Dataset("BTCUSDT", "1h", 100)] * 2
    for run_ in (opt, wf):
        assert run_.simulated is True
    doc = json.loads(opt.paths["json"].read_text())
    assert doc["sources"]["sentiment"] == "sentiment_1h.parquet" and doc["simulated"] is True
    assert wf.summary["sources"] == doc["sources"] and wf.summary["storage"] == "memory"
