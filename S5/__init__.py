"""Sprint 5: vectorbt backtest, HTML report, look-ahead check, Optuna optimisation (see S5/README.md).

Modules: engine (run_backtest, simulate), hooks (S6 risk -> engine), metrics, kernels, report,
backtest_lib, lookahead, optimize_lib, grid; scripts: backtest.py, lookahead_check.py, optimize.py.
Nothing is imported here so ``import S5`` stays cheap (vectorbt loads on first use).
"""
