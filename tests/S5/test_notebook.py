"""notebooks/S4_S5_research_loop.ipynb runs top to bottom (nbclient, a real kernel) on a
tmp DATA_DIR, and what it shows equals the library called directly here: the backtest
metrics table = ``run_backtest`` (with the fee model and exchange filters passed in
the parameter cell), the chosen params and the in-/out-of-sample table = ``optimize``,
the per-fold table and the stitched equity = ``walk_forward``.

Two runs: an empty data directory (the notebook generates a SIMULATED market in
memory) and a data directory holding a ``_ta`` file (read through S4's loader,
compared with ``S4.signals.build_signals``)."""

from __future__ import annotations

import ast
import re

import nbformat
import numpy as np
import pandas as pd
import pytest

from S1.datasets import Dataset, dataset_path, write_parquet
from S1.local.simulated import simulate_candles
from S2.ta import add_indicators, load_config
from S4.rules import load_rules
from S4.signals import build_signals, signals_frame
from S5.engine import Costs, run_backtest
from S5.exchange import with_filters
from S5.optimizer import OptimizeConfig, optimize
from S5.walkforward_search import WalkForwardConfig, walk_forward
from tests.notebook_runner import NOTEBOOKS, execute, outputs, pngs, text_of

NAME = "S4_S5_research_loop.ipynb"
RULES = NOTEBOOKS.parent / "S4" / "rules_ta_only.yaml"
pytestmark = pytest.mark.slow


def table(nb, *columns: str) -> pd.DataFrame:
    """The DataFrame output with exactly these column names, parsed back from its
    text/plain form (what the notebook shows; pandas prints 6 decimals)."""
    for o in outputs(nb):
        lines = o.get("data", {}).get("text/plain", "").splitlines()
        header = re.split(r"\s{2,}", lines[0].strip()) if lines else []
        if len(lines) < 3 or header != list(columns):
            continue
        rows = {}
        for line in lines[2:]:
            parts = line.rsplit(None, len(header))
            rows[parts[0].strip()] = [float(v) for v in parts[1:]]
        return pd.DataFrame.from_dict(rows, orient="index", columns=header)
    raise AssertionError(f"no table with the columns {columns} in the outputs")


def printed(text: str, prefix: str):
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return ast.literal_eval(line[len(prefix):].strip())


def close(shown: float, value) -> bool:
    value = np.nan if value is None else float(value)
    if np.isnan(value) or np.isnan(shown):
        return bool(np.isnan(value) and np.isnan(shown))
    return abs(shown - value) <= 1e-6 * max(1.0, abs(value))  # 6 decimals shown


def assert_table_equals(shown: pd.Series, metrics: dict, what: str) -> None:
    bad = {k: (v, metrics.get(k)) for k, v in shown.items() if not close(v, metrics.get(k))}
    assert not bad, f"{what}: shown != library: {bad}"


def nothing_written(settings) -> None:
    for d in (settings.data_dir, settings.reports_dir):
        assert not d.exists() or not any(d.iterdir()), f"the notebook wrote into {d}: {list(d.iterdir())}"


def test_notebook_uses_the_library_only():
    nb = nbformat.read(NOTEBOOKS / NAME, as_version=4)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for mod in re.findall(r"^\s*(?:from|import)\s+([\w.]+)", src, flags=re.MULTILINE):
        assert mod.split(".")[0] in {"S1", "S2", "S4", "S5", "pandas", "numpy", "matplotlib", "optuna",
                                     "pathlib"}, f"{NAME} imports {mod}"
    assert not re.search(r"^\s*!|subprocess|os\.system|%run|%%bash", src, flags=re.MULTILINE)  # no shelling out
    assert "read_parquet(" not in src and "/data/" not in src  # paths come from settings / S1.datasets
    assert nb.cells[-1].cell_type == "markdown" and "What to trust" in nb.cells[-1].source
    assert "python S5/lookahead_check.py" in nb.cells[-1].source


def test_simulated_market_when_the_data_directory_is_empty(settings_env):
    params = {"SIM_END": "2024-07-01", "FEE_MODEL": "mixed", "MAKER_FEE": 0.0002, "TRIALS": 30, "WF_TRIALS": 10,
              "MIN_TRADES": 8, "FOLDS": 3, "SEED": 7, "LOOKAHEAD_CUTS": 6}
    nb = execute(NAME, **params)
    text = text_of(nb)
    assert "no dataset in" in text and "generated SIMULATED ETHUSDC 1h candles" in text
    assert text.count("SIMULATED market data, not real prices") >= 5
    assert pngs(nb) >= 3  # indicators, equity + drawdown, folds + stitched equity
    assert "look-ahead check: PASS" in text
    nothing_written(settings_env)

    # the same chain, called directly
    end = pd.Timestamp("2024-07-01", tz="UTC")
    frame = add_indicators(simulate_candles("ETHUSDC", "1h", end - pd.Timedelta(days=180), end), config=load_config())
    rules = load_rules(RULES)
    sig = signals_frame(frame, rules)
    costs = with_filters(Costs(fees=0.001, slippage=0.0005, maker_fee=0.0002, fee_model="mixed"), "ETHUSDC",
                         mode="auto", simulated=True, price=float(frame["close"].iloc[-1]))
    assert costs.lot is not None  # simulated data: S7's generic filters
    res = run_backtest(sig, interval="1h", costs=costs)

    shown = table(nb, "value")["value"]
    assert {"total_return", "sharpe", "max_drawdown", "n_trades", "fees_paid", "final_equity",
            "entries_rounded"} <= set(shown.index)
    assert_table_equals(shown, res.metrics, "key metrics")
    assert shown["n_trades"] >= 10 and shown["entries_rounded"] > 0  # trades happened, quantities were rounded
    # the parameters reached the backtest: the taker-only run charges other fees
    taker = run_backtest(sig, interval="1h", costs=with_filters(Costs(), "ETHUSDC", simulated=True,
                                                                    price=float(frame["close"].iloc[-1])))
    assert not close(shown["fees_paid"], taker.metrics["fees_paid"])

    opt = optimize(frame, rules, interval="1h", progress=False, config=OptimizeConfig(
        objective="sharpe", n_trials=30, train_frac=0.7, min_trades=8, seed=7, costs=costs))
    assert printed(text, "best params:") == opt.best_params
    split = table(nb, "best IS", "best OOS", "default IS", "default OOS")
    assert_table_equals(split["best IS"], opt.in_sample.metrics, "best IS")
    assert_table_equals(split["best OOS"], opt.out_of_sample.metrics, "best OOS")
    assert_table_equals(split["default OOS"], opt.default_out_of_sample.metrics, "default OOS")

    wf = walk_forward(frame, rules, interval="1h", progress=False,
                      config=OptimizeConfig(objective="sharpe", n_trials=10, min_trades=8, seed=7, costs=costs),
                      wf=WalkForwardConfig(n_folds=3, mode="rolling", train_frac=0.7))
    folds = table(nb, "fold 1", "fold 2", "fold 3")
    for k, fr in enumerate(wf.folds):
        col = folds[f"fold {k + 1}"]
        assert close(col["sharpe IS"], fr.best_value) and close(col["sharpe IS"], fr.in_sample.metrics["sharpe"])
        assert close(col["sharpe OOS"], fr.out_of_sample.metrics["sharpe"])
        assert close(col["sharpe OOS default"], fr.default_out_of_sample.metrics["sharpe"])
        assert close(col["return OOS"], fr.out_of_sample.metrics["total_return"])
        assert close(col["trades OOS"], fr.out_of_sample.metrics["n_trades"])
    m = re.search(r"stitched out-of-sample: final equity ([\d.]+), return ([+-][\d.]+)%", text)
    assert m and float(m[1]) == pytest.approx(wf.stitched.metrics["final_equity"], abs=0.006)
    assert float(m[2]) / 100 == pytest.approx(wf.stitched.metrics["total_return"], abs=1e-6)
    assert re.search(rf"rule defaults: final equity {wf.default_stitched.metrics['final_equity']:.2f}", text)


def test_reads_the_ta_file_through_s4s_loader(settings_env):
    candles = simulate_candles("BTCUSDT", "1h", "2024-03-01", "2024-04-30")  # 60 days
    write_parquet(candles, dataset_path(Dataset("BTCUSDT", "1h", 60)), metadata={"simulated": False})
    write_parquet(add_indicators(candles, config=load_config()), dataset_path(Dataset("BTCUSDT", "1h", 60), "ta"),
                  metadata={"simulated": False})
    before = sorted(p.name for p in settings_env.data_dir.iterdir())
    nb = execute(NAME, TRIALS=10, WF_TRIALS=5, MIN_TRADES=3, LOOKAHEAD_CUTS=4)  # SYMBOL None: the newest dataset
    text = text_of(nb)
    assert "market BTCUSDT 1h 60d" in text and "read btcusdt_1h_60d_ta.parquet (S2 indicators) with S4's loader" in text
    assert "SIMULATED" not in text
    assert "exchange filters off" in text  # real-flagged data, no exchangeInfo offline: auto -> off
    assert "look-ahead check: PASS" in text and "python S5/lookahead_check.py --symbol BTCUSDT" in text
    assert sorted(p.name for p in settings_env.data_dir.iterdir()) == before  # no _signals file, no optuna.db

    built = build_signals(Dataset("BTCUSDT", "1h", 60), RULES, write=False)
    res = run_backtest(built.frame, interval="1h", costs=Costs())
    assert_table_equals(table(nb, "value")["value"], res.metrics, "key metrics")
    assert f"{built.counts['entries']} entries, {built.counts['exits']} exits on 1,440 bars" in text
