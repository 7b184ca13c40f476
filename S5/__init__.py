"""Sprint 5: vectorbt backtest, HTML report, look-ahead check, Optuna optimisation (see S5/README.md).

Modules (named for what they hold): costs, bars, engine (run_backtest, run_decided, simulate), hooks
(the decided path: S4.decide + S6 risk), kernels, metrics, report, backtest_files, parity_check,
optimizer + trial_loop, walkforward_search + walkforward_files, portfolio_backtest + portfolio_files,
futures, detail, lookahead, grid, run_catalog. Scripts (the verbs you type): backtest.py, parity.py,
optimize.py, portfolio.py, lookahead_check.py, compare.py.
Nothing is imported here so ``import S5`` stays cheap (vectorbt loads on first use).
"""
