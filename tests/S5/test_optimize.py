"""The optimiser: honest split, min trades, seeded, persisted and resumable, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from S1.cli import run
from S1.datasets import dataset_path, write_parquet
from S1.errors import UserError
from S4.rules import load_rules
from S5.optimize_lib import OptimizeConfig, Split, optimize, redact_url

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
    write_parquet(sim_ta, dataset_path("ETHUSDC", "1h", 90, "ta"), metadata={"simulated": True})
    code = _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--rules", RULES, "--trials", "8",
                  "--min-trades", "5", "--objective", "sortino"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "out-of-sample" in out and "SIMULATED" in out
    best = settings_env.data_dir / "ethusdc_1h_90d_best_rules_ta_only.yaml"
    html = settings_env.reports_dir / "ethusdc_1h_90d_optimize_rules_ta_only.html"
    js = settings_env.reports_dir / "ethusdc_1h_90d_optimize_rules_ta_only.json"
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

    res = build_signals("ETHUSDC", "1h", 90, best, write=False)
    assert res.rules.params == reloaded.params
    # resuming the same command adds nothing; a bad storage URL is one line
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--rules", RULES, "--trials", "8",
                  "--min-trades", "5", "--objective", "sortino", "--no-report"]) == 0
    assert "'complete'" in capsys.readouterr().out
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--rules", RULES, "--trials", "8",
                  "--storage", "postgresql+psycopg2://bob:s3cret@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and err.count("\n") == 1
