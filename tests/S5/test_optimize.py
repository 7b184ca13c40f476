"""The optimiser: honest split, min trades, seeded, persisted and resumable, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, write_parquet
from S1.errors import UserError
from S4.rules import load_rules
from S5.optimizer import OptimizeConfig, Split, optimize, redact_url

RULES = "S4/rules_ta_only.yaml"


def _trials(res):
    return [(t.params, t.state.name, t.value) for t in res.study.trials]


def test_the_objective_never_sees_the_test_bars(sim_ta):
    rules = load_rules(RULES)
    cfg = OptimizeConfig(n_trials=12, min_trades=5, seed=7)
    a = optimize(sim_ta, rules, interval="1h", config=cfg, progress=False)
    te = a.split.train_end
    # scramble everything after the split: prices and indicators
    other = sim_ta.copy()
    rng = np.random.default_rng(0)
    num = other.select_dtypes("float").columns
    noise = rng.uniform(0.8, 1.25, (len(other) - te, len(num)))
    other.loc[other.index[te:], num] = other.loc[other.index[te:], num].to_numpy() * noise
    b = optimize(other, rules, interval="1h", config=cfg, progress=False)
    assert _trials(a) == _trials(b)                      # same draws, same training values
    assert a.best_params == b.best_params
    assert a.in_sample.metrics["sharpe"] == b.in_sample.metrics["sharpe"]
    assert a.out_of_sample.metrics["total_return"] != b.out_of_sample.metrics["total_return"]
    # in-sample metrics of the best params are the ones the search saw
    assert a.best_value == pytest.approx(a.in_sample.metrics["sharpe"])
    assert a.in_sample.bars.index[-1] < a.out_of_sample.bars.index[0] == sim_ta.index[te]


def test_min_trades_prunes(sim_ta):
    rules = load_rules(RULES)
    res = optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=10, min_trades=14, seed=1),
                   progress=False)
    for t in res.study.trials:
        n = t.user_attrs["train"]["n_trades"]
        assert (t.state.name == "PRUNED") == (n < 14)
    assert res.in_sample.metrics["n_trades"] >= 14
    with pytest.raises(UserError, match="no trial reached"):
        optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=3, min_trades=100_000), progress=False)


def test_persisted_resumable_and_guarded(sim_ta, tmp_path):
    rules = load_rules(RULES)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    cfg = OptimizeConfig(n_trials=4, min_trades=5)
    first = optimize(sim_ta, rules, interval="1h", config=cfg, storage=url, study_name="s", progress=False)
    assert len(first.study.trials) == 4
    first_params = [t.params for t in first.study.trials]
    more = optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=7, min_trades=5), storage=url,
                    study_name="s", progress=False)
    assert len(more.study.trials) == 7                   # 3 more: the total is what --trials asks for
    assert [t.params for t in more.study.trials[:4]] == first_params
    again = optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=7, min_trades=5), storage=url,
                     study_name="s", progress=False)
    assert len(again.study.trials) == 7                  # nothing left to do
    with pytest.raises(UserError, match="other settings"):
        optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=8, objective="calmar", min_trades=5),
                 storage=url, study_name="s", progress=False)
    with pytest.raises(UserError, match="cannot open the Optuna storage"):
        optimize(sim_ta, rules, interval="1h", config=cfg, storage="nosuchdb://x", study_name="s", progress=False)


def test_config_and_split_checks(sim_ta):
    with pytest.raises(UserError, match="objective"):
        OptimizeConfig(objective="profit")
    with pytest.raises(UserError, match="train-frac"):
        OptimizeConfig(train_frac=0.99)
    with pytest.raises(UserError, match="train / "):
        Split.of(sim_ta.index[:80], 0.7)
    s = Split.of(sim_ta.index, 0.7)
    assert s.train_end == round(len(sim_ta) * 0.7)
    assert redact_url("postgresql+psycopg2://u:pw@h/db") == "postgresql+psycopg2://u:***@h/db"


def _main(argv):
    from S5.optimize import main

    return run(main, argv)


def test_cli_writes_rules_report_and_json(settings_env, sim_ta, capsys):
    write_parquet(sim_ta, dataset_path(Dataset("ETHUSDC", "1h", 90), "ta"), metadata={"simulated": True})
    code = _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--rules", RULES, "--trials", "8",
                  "--min-trades", "5", "--objective", "sortino"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "out-of-sample" in out and "SIMULATED" in out
    best = settings_env.data_dir / "ethusdc_1h_90d__rules_ta_only_best.yaml"
    html = settings_env.reports_dir / "ethusdc_1h_90d__rules_ta_only_optimize.html"
    js = settings_env.reports_dir / "ethusdc_1h_90d__rules_ta_only_optimize.json"
    assert (settings_env.data_dir / "optuna.db").exists()
    doc = json.loads(js.read_text())
    assert doc["objective"] == "sortino" and doc["simulated"] is True
    assert set(doc["in_sample"]) == set(doc["out_of_sample"])
    reloaded = load_rules(best)                          # a ready-to-use rule file
    assert {k: reloaded.params[k] for k in doc["best_params"]} == doc["best_params"]
    assert reloaded.param_space() == load_rules(RULES).param_space()
    page = html.read_text()
    assert "Optimisation history" in page and "Parameter importances" in page and "out-of-sample" in page
    # S4 uses the file as is
    from S4.signals import build_signals

    res = build_signals(Dataset("ETHUSDC", "1h", 90), best, write=False)
    assert res.rules.params == reloaded.params
    # resuming the same command adds nothing; a bad storage URL is one line
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--rules", RULES, "--trials", "8",
                  "--min-trades", "5", "--objective", "sortino", "--no-report"]) == 0
    assert "'complete'" in capsys.readouterr().out
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--rules", RULES, "--trials", "8",
                  "--storage", "postgresql+psycopg2://bob:s3cret@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- a kinder optimiser (issue 21)
def test_a_changed_setting_is_named_and_fresh_starts_again(sim_ta, tmp_path):
    rules = load_rules(RULES)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=3, min_trades=3), storage=url,
             study_name="s", progress=False)
    with pytest.raises(UserError) as exc:
        optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=3, min_trades=4), storage=url,
                 study_name="s", progress=False)
    assert "--min-trades" in exc.value.problem and "--objective" not in exc.value.problem
    assert "--fresh" in exc.value.fix
    with pytest.raises(UserError) as exc:
        optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=3, min_trades=3, objective="calmar"),
                 storage=url, study_name="s", progress=False)
    assert "--objective" in exc.value.problem and "--min-trades" not in exc.value.problem
    res = optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=2, min_trades=4), storage=url,
                   study_name="s", progress=False, fresh=True)
    assert len(res.study.trials) == 2 and res.study.user_attrs["fingerprint_parts"]["min_trades"]


def test_add_trials_runs_on_top_of_the_stored_ones(sim_ta, tmp_path):
    rules = load_rules(RULES)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    cfg = OptimizeConfig(n_trials=4, min_trades=3)
    optimize(sim_ta, rules, interval="1h", config=cfg, storage=url, study_name="s", progress=False)
    res = optimize(sim_ta, rules, interval="1h", config=cfg, storage=url, study_name="s", progress=False,
                   add_trials=3)
    assert len(res.study.trials) == 7
    with pytest.raises(UserError, match="--add-trials"):
        optimize(sim_ta, rules, interval="1h", config=cfg, storage=url, study_name="s", progress=False, add_trials=0)


def test_all_pruned_names_the_best_trade_count_seen(sim_ta):
    rules = load_rules(RULES)
    with pytest.raises(UserError) as exc:
        optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=4, min_trades=100_000), progress=False)
    res = optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=4, min_trades=1), progress=False)
    most = max(t.user_attrs["train"]["n_trades"] for t in res.study.trials)
    assert f"the most any trial made was {most}" in exc.value.problem
    assert f"--min-trades {most}" in exc.value.fix


def test_verdicts_edges_and_defaults_winning(sim_ta):
    from S5.optimizer import params_on_edges

    rules = load_rules(RULES)
    res = optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=10, min_trades=3, seed=3),
                   progress=False)
    space = rules.param_space()
    # independent check of the edge flags from the raw ranges
    for k, v in res.best_params.items():
        lo, hi = space[k].get("low"), space[k].get("high")
        if lo is None:
            assert k not in res.edges
        elif v == lo:
            assert res.edges[k] == "low"
        elif v == hi:
            assert res.edges[k] == "high"
    assert params_on_edges({"x": 0.5}, {"x": {"low": 0.0, "high": 1.0, "step": None}}) == {}
    b = res.out_of_sample.metrics["sharpe"]
    d = res.default_out_of_sample.metrics["sharpe"]
    assert res.defaults_win_out_of_sample == (d > b)
    said = " ".join(res.verdicts())
    assert ("DEFAULT params beat" in said) == (d > b)
    assert res.summary()["defaults_win_out_of_sample"] == (d > b)


def test_report_shows_the_split_equity_and_one_slice_per_param(sim_ta):
    from S5.optimizer import optimization_html

    rules = load_rules(RULES)
    res = optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=6, min_trades=3), progress=False)
    page = optimization_html(res, title="t", simulated=True)
    assert "Best vs default parameters: equity, train then test" in page and "train | test" in page
    for p in res.best_params:
        assert f"Slice: {p}" in page
    assert page.count("<script src='plotly.min.js'") == 1 and "<script type='text/javascript'>" not in page


def test_default_params_trade_count_is_said_before_the_search(sim_ta, caplog):
    import logging

    rules = load_rules(RULES)
    with caplog.at_level(logging.INFO, logger="S5.optimizer"):
        with pytest.raises(UserError):
            optimize(sim_ta, rules, interval="1h", config=OptimizeConfig(n_trials=2, min_trades=10_000),
                     progress=False)
    from S4.evaluate import prepare_arrays
    from S5.optimizer import Split, _Data, _segment_backtest

    split = Split.of(sim_ta.index, 0.7)
    n_def = int(_segment_backtest(_Data(sim_ta, prepare_arrays(sim_ta, rules), split, "1h"), rules,
                                  OptimizeConfig(), 0, split.train_end).metrics["n_trades"])
    msgs = [r.getMessage() for r in caplog.records if "default params make" in r.getMessage()]
    assert msgs and f"make {n_def} trades" in msgs[0] and "will be pruned" in msgs[0]
    assert caplog.records[[r.getMessage() for r in caplog.records].index(msgs[0])].levelname == "WARNING"
