"""RiskConfig: frozen, validated, loaded from YAML with one-line errors."""

from __future__ import annotations

import pydantic
import pytest

from S1.errors import UserError
from S6.config import DEFAULT_CONFIG_PATH, RiskConfig


def test_shipped_yaml_matches_the_defaults():
    # S6/risk.yaml documents the defaults; they must not drift apart
    assert DEFAULT_CONFIG_PATH.exists()
    assert RiskConfig.load() == RiskConfig()


def test_frozen():
    cfg = RiskConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.sizing.risk_per_trade = 0.5  # type: ignore[misc]


def test_yaml_round_trip_and_partial_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("sizing:\n  method: kelly\nkill_switch:\n  max_drawdown: 0.1\n  daily_loss_limit: null\n")
    cfg = RiskConfig.load(p)
    assert cfg.sizing.method == "kelly" and cfg.kill_switch.max_drawdown == 0.1
    assert cfg.kill_switch.daily_loss_limit is None and cfg.stops.atr_k == 2.0   # untouched defaults
    p.write_text(cfg.to_yaml())
    assert RiskConfig.load(p) == cfg


@pytest.mark.parametrize("text, match", [
    ("sizing:\n  risk_per_trad: 0.01\n", r"sizing.risk_per_trad: unknown setting"),
    ("kill_switch:\n  max_drawdown: 1.5\n", r"kill_switch.max_drawdown"),
    ("sizing:\n  method: martingale\n", r"sizing.method"),
    ("stops:\n  take_profit_rr: 2\n  take_profit_pct: 0.05\n", r"not both"),
    ("sizing: [1, 2\n", r"not valid YAML"),
    ("- just a list\n", r"expected a mapping"),
])
def test_bad_files_give_one_line(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match=match) as exc:
        RiskConfig.load(p)
    assert "\n" not in str(exc.value)


def test_missing_explicit_file_and_replace():
    with pytest.raises(UserError, match="does not exist"):
        RiskConfig.load("/nonexistent/risk.yaml")
    cfg = RiskConfig().replace(sizing={"risk_per_trade": 0.02}, stops={"atr_k": 3})
    assert cfg.sizing.risk_per_trade == 0.02 and cfg.stops.atr_k == 3
    with pytest.raises(UserError, match="risk_per_trade"):
        RiskConfig().replace(sizing={"risk_per_trade": -1})
    with pytest.raises(UserError, match="unknown risk config section"):
        RiskConfig().replace(sizingg={})


def test_latched_property():
    assert RiskConfig().kill_switch.latched
    assert not RiskConfig().replace(kill_switch={"daily_loss_resume": "next_day"}).kill_switch.latched
    assert not RiskConfig().replace(kill_switch={"loss_streak_pause_hours": 24}).kill_switch.latched
