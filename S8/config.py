"""The service's YAML file (``S8/service.yaml``): markets, the streamer, periodic jobs, supervision.

Validated up front (pydantic, unknown keys refused) into frozen objects; a mistake is one line that
says how to fix it.

>>> cfg = ServiceConfig.model_validate({"markets": [{"symbol": "btcusdt", "rules": "S4/rules.yaml"}]})
>>> m = cfg.markets[0]
>>> m.symbol, m.interval, m.mode, m.key
('BTCUSDT', '1m', 'dry-run', 'btcusdt_1m')
>>> cfg.supervision.heartbeat_timeout
30.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from S1.errors import UserError
from S1.settings import REPO_ROOT
from S1.yaml_load import load_file

MODES = ("dry-run", "testnet", "live")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Market(_Frozen):
    """One market: a streamed symbol and its executor."""

    symbol: str
    interval: str = "1m"
    rules: Path = Path("S4/rules.yaml")
    mode: Literal["dry-run", "testnet", "live"] = "dry-run"
    risk_config: Path | None = None
    #: extra ``python S7/executor.py`` options, e.g. ``["--order-type", "limit", "--post-only"]``
    args: tuple[str, ...] = ()

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        v = v.strip().upper().replace("/", "")
        if not v.isalnum():
            raise ValueError(f"{v!r} is not a symbol like BTCUSDT")
        return v

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: str) -> str:
        from S1.intervals import INTERVALS

        if v not in INTERVALS:
            raise ValueError(f"unknown interval {v!r}; use one of {', '.join(INTERVALS)}")
        return v

    @field_validator("args")
    @classmethod
    def _args(cls, v):
        banned = {"--live", "--testnet", "--dry-run", "--i-understand-this-trades-real-money", "--symbol",
                  "--interval", "--rules", "--control", "--state", "--kill-switch-state", "--db"}
        bad = [a for a in v if a.split("=")[0] in banned]
        if bad:
            raise ValueError(f"{bad} are set by the service (use the market's mode/symbol/interval/rules keys)")
        return tuple(v)

    @property
    def key(self) -> str:
        return f"{self.symbol.lower()}_{self.interval}"

    @property
    def name(self) -> str:
        return f"{self.symbol} {self.interval}"


class Streamer(_Frozen):
    backfill_minutes: int = Field(400, ge=0, description="history filled over REST on a new database")
    args: tuple[str, ...] = ()


class Job(_Frozen):
    """A periodic command, e.g. the S1 batch update or the S3 sentiment refresh."""

    name: str
    command: tuple[str, ...]
    every: float = Field(gt=0, description="seconds between runs")
    timeout: float = Field(3600.0, gt=0, description="killed after this long")
    run_at_start: bool = False

    @field_validator("command")
    @classmethod
    def _command(cls, v):
        if not v or not str(v[0]).endswith(".py"):
            raise ValueError("command is a project script and its options, e.g. [S1/batch.py, --config, "
                             "S1/batch.yaml]")
        return tuple(str(x) for x in v)


class Bus(_Frozen):
    """Candles (and fills, and the service's status) across hosts over Redis Streams -- S9's bus.

    Needs ``BUS_URL`` (``redis://host:6379/0``). ``publisher``: this host runs the streamer and publishes
    its closed candles and the executors' order logs; ``subscriber``: this host runs no streamer, its
    executors read the candles a publisher host put on the bus (consumer group ``group``, one per host).
    ``share_status``: this service's ``/status`` and kill-switch states go on the bus too."""

    role: Literal["publisher", "subscriber"]
    group: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    share_status: bool = False

    @model_validator(mode="after")
    def _group(self):
        if self.role == "subscriber" and not self.group:
            raise ValueError("a subscriber needs group: <name>, one per executor host (e.g. group: host-b)")
        return self


class Supervision(_Frozen):
    heartbeat_timeout: float = Field(30.0, gt=0, description="s without a heartbeat: the worker is hung")
    startup_grace: float = Field(90.0, gt=0, description="s a new worker has before its first heartbeat")
    backoff_initial: float = Field(1.0, gt=0)
    backoff_max: float = Field(60.0, gt=0)
    backoff_jitter: float = Field(1.0, ge=0)
    stable_after: float = Field(60.0, gt=0, description="s of uptime after which the backoff starts over")
    stop_timeout: float = Field(6.0, gt=0, description="s a worker has to exit on SIGTERM before SIGKILL")


class ServiceConfig(_Frozen):
    markets: tuple[Market, ...]
    streamer: Streamer = Streamer()
    jobs: tuple[Job, ...] = ()
    supervision: Supervision = Supervision()
    bus: Bus | None = None
    #: required (besides live keys) for any market with ``mode: live``
    i_understand_this_trades_real_money: bool = False

    @model_validator(mode="after")
    def _check(self):
        if not self.markets:
            raise ValueError("markets: list at least one market (symbol, interval, rules, mode)")
        keys = [m.key for m in self.markets]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"markets: {dup} listed twice")
        return self

    @property
    def symbols(self) -> list[str]:
        return list(dict.fromkeys(m.symbol for m in self.markets))

    def market(self, symbol: str) -> list[Market]:
        s = symbol.strip().upper()
        return [m for m in self.markets if m.symbol == s or m.key == symbol.strip().lower()]


def _resolve(p: Path) -> Path:
    return p if p.is_absolute() else (REPO_ROOT / p)


def load_config(path: str | Path) -> ServiceConfig:
    """Read and validate the YAML file (relative rule/risk paths are relative to the repository)."""
    path = Path(path)
    raw = load_file(path, what="service config", fix="pass --config S8/service.yaml or a copy of it") or {}
    try:
        cfg = ServiceConfig.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "(top level)"
        raise UserError(f"{path}: {where}: {e['msg']}", "fix the file (see S8/service.yaml and S8/README.md)") from None
    markets = tuple(m.model_copy(update={"rules": _resolve(m.rules),
                                          "risk_config": _resolve(m.risk_config) if m.risk_config else None})
                    for m in cfg.markets)
    return cfg.model_copy(update={"markets": markets})


__all__ = ["Bus", "Job", "MODES", "Market", "ServiceConfig", "Streamer", "Supervision", "load_config"]
