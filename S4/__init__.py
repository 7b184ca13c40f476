"""Sprint 4: fuse TA rules, sentiment and an ML score into buy/sell signals.

The public API (imported lazily, so ``import S4.rules`` does not load numba)::

    from S4.rules import load_rules          # also: from S4 import load_rules
    from S4.evaluate import evaluate         # (S4.evaluate is also the module's name)
    rules = load_rules("S4/rules_ta_only.yaml")
    signals = evaluate(frame_with_indicators, rules)

See S4/README.md for the rule language and the API that S5 and S7 use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_rules": "S4.rules", "parse_rules": "S4.rules", "save_rules": "S4.rules", "RuleSet": "S4.rules",
    "evaluate_arrays": "S4.evaluate", "prepare_arrays": "S4.evaluate",
    "decide": "S4.evaluate", "Decision": "S4.evaluate", "Signals": "S4.evaluate",
    "build_signals": "S4.signals", "signals_frame": "S4.signals", "join_sentiment": "S4.signals",
    "join_ml": "S4.signals",
    "WalkForward": "S4.ml_score", "train_ml": "S4.ml_score", "ml_scores": "S4.ml_score",
}

__all__ = [
    "Decision", "RuleSet", "Signals", "WalkForward", "build_signals", "decide", "evaluate_arrays",
    "join_ml", "join_sentiment", "load_rules", "ml_scores", "parse_rules", "prepare_arrays", "save_rules",
    "signals_frame", "train_ml",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'S4' has no attribute {name!r}")
