"""Risk settings: one frozen, validated :class:`RiskConfig`, loadable from YAML.

The YAML file (default ``S6/risk.yaml``) is *data*: it is read with
``yaml.safe_load`` and validated field by field; unknown keys are refused so a
typo never silently disables a protection.

>>> cfg = RiskConfig()
>>> cfg.sizing.method, cfg.kill_switch.max_drawdown
('atr', 0.2)
>>> cfg.replace(sizing={"risk_per_trade": 0.005}).sizing.risk_per_trade
0.005
>>> RiskConfig.from_dict({"sizing": {"risk_per_trade": 2}})
Traceback (most recent call last):
...
S1.errors.UserError: risk config: sizing.risk_per_trade: Input should be less than or equal to 0.2 -- fix the value (see S6/README.md for every setting)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from S1.errors import UserError
from S1.yaml_load import safe_load

#: The default settings file, next to this module.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().with_name("risk.yaml")

SizingMethod = Literal["fixed", "atr", "kelly"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SizingConfig(_Frozen):
    """How big a position is."""

    method: SizingMethod = "atr"
    #: ``fixed``: notional = fixed_fraction x equity.
    fixed_fraction: float = Field(0.10, gt=0, le=1)
    #: ``atr``: R, the share of equity lost when the stop is hit (size = R.equity / (k.ATR)).
    risk_per_trade: float = Field(0.01, gt=0, le=0.2)
    #: ``kelly``: multiplier on the full Kelly fraction (0.5 = half-Kelly) ...
    kelly_fraction: float = Field(0.5, gt=0, le=1)
    #: ... and the largest share of equity Kelly may put in one position.
    kelly_cap: float = Field(0.25, gt=0, le=1)
    #: Kelly refuses to size from fewer closed trades than this.
    kelly_min_trades: int = Field(30, ge=5)
    #: Any method: never more notional than this share of equity (1.0 = spot, no leverage).
    max_position_fraction: float = Field(1.0, gt=0, le=1)


class StopConfig(_Frozen):
    """Where the stop-loss and take-profit sit (long: below / above the entry)."""

    atr_period: int = Field(14, ge=2, le=500)
    #: Stop distance in ATRs (also the ``k`` of ATR sizing).
    atr_k: float = Field(2.0, gt=0, le=50)
    #: Fixed stop distance as a fraction of the entry; used instead of ATR when set.
    stop_loss_pct: float | None = Field(None, gt=0, lt=1)
    #: Take-profit at ``rr`` x the stop distance (reward:risk); None = no take-profit ...
    take_profit_rr: float | None = Field(2.0, gt=0, le=100)
    #: ... or at a fixed fraction above the entry (exclusive with take_profit_rr).
    take_profit_pct: float | None = Field(None, gt=0, le=10)

    @model_validator(mode="after")
    def _one_take_profit(self) -> "StopConfig":
        if self.take_profit_rr is not None and self.take_profit_pct is not None:
            raise ValueError("set take_profit_rr or take_profit_pct, not both (null disables one)")
        return self


class KillSwitchConfig(_Frozen):
    """Protections. A value of ``null`` disables that protection.

    ``*_resume`` / ``*_pause_hours`` say how trading comes back after a trip:
    ``manual`` (the default: stays tripped until ``python S6/risk.py reset``),
    ``next_day`` (daily loss: the next UTC day) or a pause in hours (loss streak).
    """

    #: Trip when equity <= peak x (1 - max_drawdown) (inclusive).
    max_drawdown: float | None = Field(0.20, gt=0, lt=1)
    #: Trip when equity <= equity at the start of the UTC day x (1 - daily_loss_limit).
    daily_loss_limit: float | None = Field(0.05, gt=0, lt=1)
    daily_loss_resume: Literal["manual", "next_day"] = "manual"
    #: Trip after this many losing trades (pnl < 0) in a row; pnl >= 0 ends a streak.
    max_consecutive_losses: int | None = Field(5, ge=1, le=1000)
    #: None = manual reset; else trading resumes this many hours after the trip.
    loss_streak_pause_hours: float | None = Field(None, gt=0, le=24 * 365)
    #: What S5/S7 do with an open position on a trip: close it (True) or only stop entries.
    flatten_on_trip: bool = True

    @property
    def latched(self) -> bool:
        """True when every enabled protection needs a manual reset (no automatic resume)."""
        return self.daily_loss_resume == "manual" and self.loss_streak_pause_hours is None


class AlertConfig(_Frozen):
    """Webhook delivery (the URL and kind come from ALERT_WEBHOOK_URL / ALERT_WEBHOOK_KIND)."""

    timeout_s: float = Field(5.0, gt=0, le=60)
    max_retries: int = Field(3, ge=0, le=10)
    max_per_minute: int = Field(10, ge=1, le=600)
    backoff_initial_s: float = Field(0.5, ge=0, le=30)
    backoff_max_s: float = Field(5.0, ge=0, le=120)


class StressConfig(_Frozen):
    """Defaults of ``S6/stress.py`` (each has a command-line option)."""

    paths: int = Field(5000, ge=100, le=200_000)
    seed: int = 42
    #: Ruin = equity at or below ruin_level x the initial equity at any point of a path.
    ruin_level: float = Field(0.5, gt=0, lt=1)
    top_moves: int = Field(5, ge=1, le=50)
    #: Fee rate per side used in the gapped-stop replay (Binance spot taker: 0.1 %).
    fee_rate: float = Field(0.001, ge=0, le=0.05)


class RiskConfig(_Frozen):
    """Every risk setting of the toolkit (frozen; build variants with :meth:`replace`)."""

    sizing: SizingConfig = SizingConfig()
    stops: StopConfig = StopConfig()
    kill_switch: KillSwitchConfig = KillSwitchConfig()
    alerts: AlertConfig = AlertConfig()
    stress: StressConfig = StressConfig()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, source: str = "risk config") -> "RiskConfig":
        """Validate a plain dict (as read from YAML); errors become one :class:`UserError` line."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a mapping of sections, got {type(data).__name__}",
                            "see S6/risk.yaml for the layout")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
            raise UserError(f"{source}: {where}: {msg}{more}",
                            "fix the value (see S6/README.md for every setting)") from None

    @classmethod
    def load(cls, path: str | Path | None = None) -> "RiskConfig":
        """Read ``path`` (default ``S6/risk.yaml``; built-in defaults when that file is absent)."""
        explicit = path is not None
        p = Path(path) if explicit else DEFAULT_CONFIG_PATH
        if not p.exists():
            if explicit:
                raise UserError(f"risk config {p} does not exist", "pass an existing YAML file or omit --config")
            return cls()
        try:
            data = safe_load(p.read_text(encoding="utf-8"), source=str(p))
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" line {line + 1}" if line is not None else ""
            raise UserError(f"risk config {p}{where} is not valid YAML", "fix the syntax") from None
        return cls.from_dict(data, source=str(p))

    def replace(self, **sections: dict[str, Any]) -> "RiskConfig":
        """A validated copy with some fields changed: ``cfg.replace(sizing={"method": "kelly"})``."""
        data = self.model_dump()
        for name, changes in sections.items():
            if name not in data:
                raise UserError(f"unknown risk config section {name!r}", f"use one of {sorted(data)}")
            data[name] = {**data[name], **{k: v for k, v in changes.items()}}
        return type(self).from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)
