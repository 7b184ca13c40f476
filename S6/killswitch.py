"""Kill-switch and protections: max drawdown, daily loss limit, losing streak.

One state machine (:func:`step_equity` / :func:`step_trade` over a
:class:`ProtectionState`) drives both faces of the kill-switch, so simulation and
live trading agree by construction:

- **pure, for backtests (S5)**: :func:`kill_switch_mask` returns "entries allowed"
  per bar of an equity path; :func:`first_trip` / :func:`kill_switch_trips` say when
  and why it tripped. ``allowed[i]`` already reflects bar ``i`` (its equity and the
  trades that closed at it), so it gates entries decided at the close of bar ``i``.
- **stateful, for paper/live trading (S7)**: :class:`KillSwitch` persists its state
  in ``S1.datasets.state_path("kill_switch.json")`` (atomic writes, a file lock for
  read-modify-write). Once tripped it stays tripped across restarts until a person
  runs ``python S6/risk.py reset`` (unless the config asks for an automatic resume).

Rules (thresholds are inclusive, within a relative 1e-9):

- ``max_drawdown``: equity <= peak x (1 - max_drawdown).
- ``daily_loss_limit``: equity <= (equity at the start of the UTC day) x (1 - limit);
  the start of a day is the last equity seen before it (the first equity ever seen
  for the first day).
- ``max_consecutive_losses``: N trades in a row with pnl < 0 (pnl >= 0 ends a streak).

>>> import pandas as pd
>>> t = pd.date_range("2024-01-01", periods=5, freq="h", tz="UTC")
>>> cfg = KillSwitchConfig(max_drawdown=0.2, daily_loss_limit=None, max_consecutive_losses=None)
>>> kill_switch_mask([100, 110, 95, 88, 120], t, config=cfg).tolist()    # 88 <= 110 x 0.8
[True, True, True, False, False]
>>> first_trip([100, 110, 95, 88, 120], t, config=cfg).reason
'max_drawdown'
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from S1.errors import UserError
from S6.config import KillSwitchConfig, RiskConfig

log = logging.getLogger(__name__)

DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9
TOL = 1e-9
STATE_FILE = "kill_switch.json"
STATE_VERSION = 1
MAX_EVENTS = 200
RESET_COMMAND = "python S6/risk.py reset"
#: The trading modes that keep a persistent kill-switch (file names: :func:`S1.datasets.kill_switch_path`).
MODES = ("live", "testnet", "dry-run")


# --------------------------------------------------------------------- state
@dataclass
class ProtectionState:
    """Everything the protections remember (times in ns since the epoch, UTC)."""

    tripped: bool = False
    reason: str | None = None          #: max_drawdown | daily_loss | loss_streak | manual | state_unreadable
    detail: str | None = None
    tripped_at: int | None = None
    until: int | None = None           #: automatic resume time; None = manual reset needed
    peak: float | None = None
    last_equity: float | None = None
    last_time: int | None = None
    day: int | None = None             #: UTC day number (ns // DAY_NS) of the current day
    day_start_equity: float | None = None
    loss_streak: int = 0
    events: list[dict] = field(default_factory=list)

    @property
    def drawdown(self) -> float | None:
        if self.peak is None or self.last_equity is None or self.peak <= 0:
            return None
        return 1.0 - self.last_equity / self.peak

    @property
    def daily_loss(self) -> float | None:
        if self.day_start_equity is None or self.last_equity is None or self.day_start_equity <= 0:
            return None
        return 1.0 - self.last_equity / self.day_start_equity


@dataclass(frozen=True)
class Trip:
    """One trip of the kill-switch."""

    reason: str
    detail: str
    at: pd.Timestamp
    until: pd.Timestamp | None = None   #: None = until a manual reset
    index: int | None = None            #: bar index (pure functions only)

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "detail": self.detail, "at": _iso(self.at),
                "until": _iso(self.until), "index": self.index}


def _ts(ns: int | None) -> pd.Timestamp | None:
    return None if ns is None else pd.Timestamp(int(ns), unit="ns", tz="UTC")


def _iso(ts) -> str | None:
    return None if ts is None else pd.Timestamp(ts).isoformat()


def to_ns(at) -> int:
    """A time (Timestamp, datetime, ISO string, ns int) as int ns UTC; naive = UTC."""
    if isinstance(at, (int, np.integer)):
        return int(at)
    ts = pd.Timestamp(at)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value)


def _cfg(config: KillSwitchConfig | RiskConfig | None) -> KillSwitchConfig:
    if config is None:
        return RiskConfig.load().kill_switch
    if isinstance(config, RiskConfig):
        return config.kill_switch
    if isinstance(config, KillSwitchConfig):
        return config
    raise UserError(f"config must be a RiskConfig or KillSwitchConfig, got {type(config).__name__}",
                    "pass RiskConfig.load() or its .kill_switch")


# ----------------------------------------------------------- state machine
def _hit(value: float, threshold: float) -> bool:
    return value <= threshold + TOL * abs(threshold)


def _trip(state: ProtectionState, reason: str, detail: str, t: int, until: int | None) -> Trip:
    state.tripped, state.reason, state.detail = True, reason, detail
    state.tripped_at, state.until = t, until
    return Trip(reason, detail, _ts(t), _ts(until))


def expire(state: ProtectionState, t: int) -> bool:
    """Lift a timed pause whose time has come; True when trading resumed."""
    if state.tripped and state.until is not None and t >= state.until:
        if state.reason == "loss_streak":
            state.loss_streak = 0
        state.tripped, state.reason, state.detail, state.tripped_at, state.until = False, None, None, None, None
        return True
    return False


def step_equity(state: ProtectionState, cfg: KillSwitchConfig, equity: float, t: int) -> Trip | None:
    """Feed one equity value at time ``t`` (ns); returns the :class:`Trip` if this one trips."""
    equity = float(equity)
    if not np.isfinite(equity):
        raise UserError(f"equity {equity} is not a finite number", "pass the account equity in quote currency")
    expire(state, t)
    day = t // DAY_NS
    if state.day is None or day > state.day:
        state.day_start_equity = state.last_equity if state.last_equity is not None else equity
        state.day = day
    state.peak = equity if state.peak is None else max(state.peak, equity)
    state.last_equity, state.last_time = equity, t
    if state.tripped:
        return None
    if cfg.max_drawdown is not None and _hit(equity, state.peak * (1 - cfg.max_drawdown)):
        dd = 1 - equity / state.peak if state.peak > 0 else 1.0
        return _trip(state, "max_drawdown",
                     f"drawdown {dd:.2%} from the peak {state.peak:,.2f} reached the limit {cfg.max_drawdown:.2%}",
                     t, None)
    start = state.day_start_equity
    if cfg.daily_loss_limit is not None and start is not None and _hit(equity, start * (1 - cfg.daily_loss_limit)):
        loss = 1 - equity / start if start > 0 else 1.0
        until = (day + 1) * DAY_NS if cfg.daily_loss_resume == "next_day" else None
        return _trip(state, "daily_loss",
                     f"loss {loss:.2%} since the UTC day started at {start:,.2f} reached the daily limit "
                     f"{cfg.daily_loss_limit:.2%}", t, until)
    return None


def step_trade(state: ProtectionState, cfg: KillSwitchConfig, pnl: float, t: int) -> Trip | None:
    """Feed one closed trade's pnl at its exit time ``t`` (ns)."""
    pnl = float(pnl)
    if np.isnan(pnl):
        raise UserError("a trade pnl is NaN", "pass the realised pnl of each closed trade")
    expire(state, t)
    state.loss_streak = state.loss_streak + 1 if pnl < 0 else 0
    n = cfg.max_consecutive_losses
    if state.tripped or n is None or state.loss_streak < n:
        return None
    until = None if cfg.loss_streak_pause_hours is None else t + int(cfg.loss_streak_pause_hours * HOUR_NS)
    return _trip(state, "loss_streak", f"{state.loss_streak} losing trades in a row (limit {n})", t, until)


# ------------------------------------------------------ pure (simulation)
def _times_ns(times, n: int, *, what: str = "times", strict: bool = True) -> np.ndarray:
    if isinstance(times, pd.DatetimeIndex | pd.Series):
        idx = pd.DatetimeIndex(times)
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        t = idx.as_unit("ns").asi8
    else:
        a = np.asarray(times)
        if np.issubdtype(a.dtype, np.datetime64):
            t = a.astype("datetime64[ns]").astype(np.int64)
        elif np.issubdtype(a.dtype, np.integer):
            t = a.astype(np.int64)
        else:
            t = pd.DatetimeIndex(pd.to_datetime(a, utc=True)).as_unit("ns").asi8
    if len(t) != n:
        raise UserError(f"{what} has {len(t)} values but {n} were expected", "pass one time per value")
    if n > 1 and np.any(np.diff(t) <= 0 if strict else np.diff(t) < 0):
        raise UserError(f"{what} must be {'strictly ' if strict else ''}increasing",
                        "sort the equity path by time and the trades by exit time")
    return t


def _inputs(equity, times, trade_exit_times, trade_pnl):
    e = np.asarray(equity, dtype=np.float64)
    if e.ndim != 1:
        raise UserError("equity must be one-dimensional", "pass one equity path (a Series or 1-d array)")
    if not np.all(np.isfinite(e)):
        raise UserError("equity contains NaN or infinite values", "fill or drop them before the kill-switch")
    t = _times_ns(times, len(e))
    if (trade_exit_times is None) != (trade_pnl is None):
        raise UserError("trade_exit_times and trade_pnl go together", "pass both (or neither)")
    if trade_pnl is None:
        return e, t, np.empty(0, np.int64), np.empty(0)
    pnl = np.atleast_1d(np.asarray(trade_pnl, dtype=np.float64))
    if np.any(np.isnan(pnl)):
        raise UserError("trade_pnl contains NaN", "pass the realised pnl of each closed trade")
    tx = _times_ns(trade_exit_times, len(pnl), what="trade_exit_times", strict=False)
    return e, t, tx, pnl


def kill_switch_trips(equity, times, *, config: KillSwitchConfig | RiskConfig,
                      trade_exit_times=None, trade_pnl=None) -> tuple[np.ndarray, list[Trip]]:
    """``(allowed, trips)``: "entries allowed" per bar and every trip on the path.

    A trade is applied at the first bar whose time is >= its exit time (trades after
    the last bar are ignored), before that bar's equity; a loss-streak trip is
    stamped with the trade's exit time. ``trade_exit_times`` must
    be sorted (pass the trades in exit order).
    """
    cfg = _cfg(config)
    e, t, tx, pnl = _inputs(equity, times, trade_exit_times, trade_pnl)
    return (_latched if cfg.latched else _loop)(e, t, tx, pnl, cfg)


def _loop(e, t, tx, pnl, cfg: KillSwitchConfig) -> tuple[np.ndarray, list[Trip]]:
    """Reference path: the state machine bar by bar (any config)."""
    n = len(e)
    trade_bar = np.searchsorted(t, tx, side="left")
    allowed = np.ones(n, dtype=bool)
    trips: list[Trip] = []
    state = ProtectionState()
    k = 0
    for i in range(n):
        while k < len(trade_bar) and trade_bar[k] == i:
            trip = step_trade(state, cfg, pnl[k], int(tx[k]))
            if trip:
                trips.append(dataclasses.replace(trip, index=i))
            k += 1
        trip = step_equity(state, cfg, e[i], int(t[i]))
        if trip:
            trips.append(dataclasses.replace(trip, index=i))
        allowed[i] = not state.tripped
    return allowed, trips


def _latched(e, t, tx, pnl, cfg: KillSwitchConfig) -> tuple[np.ndarray, list[Trip]]:
    """Vectorised path when every protection latches: only the first trip matters.
    Same answers as the loop (tested), O(n) numpy instead of a Python loop."""
    n = len(e)
    trade_bar = np.searchsorted(t, tx, side="left")
    candidates: list[tuple[int, int, Trip]] = []  # (bar, order within the bar, trip)
    if cfg.max_consecutive_losses is not None and len(pnl):
        N = cfg.max_consecutive_losses
        loss = pnl < 0
        # streak length at each trade: consecutive losses ending there
        idx = np.arange(len(loss))
        last_nonloss = np.maximum.accumulate(np.where(~loss, idx, -1))
        streak = idx - last_nonloss
        hits = np.flatnonzero((streak >= N) & (trade_bar < n))
        if len(hits):
            j = hits[0]
            i = int(trade_bar[j])
            candidates.append((i, 0, Trip("loss_streak", f"{int(streak[j])} losing trades in a row (limit {N})",
                                          _ts(int(tx[j])), None, i)))
    if cfg.max_drawdown is not None and n:
        peak = np.maximum.accumulate(e)
        thr = peak * (1 - cfg.max_drawdown)
        hits = np.flatnonzero(e <= thr + TOL * np.abs(thr))
        if len(hits):
            i = int(hits[0])
            dd = 1 - e[i] / peak[i] if peak[i] > 0 else 1.0
            candidates.append((i, 1, Trip("max_drawdown", f"drawdown {dd:.2%} from the peak {peak[i]:,.2f} reached "
                                          f"the limit {cfg.max_drawdown:.2%}", _ts(int(t[i])), None, i)))
    if cfg.daily_loss_limit is not None and n:
        day = t // DAY_NS
        new_day = np.r_[True, day[1:] != day[:-1]]
        first = np.maximum.accumulate(np.where(new_day, np.arange(n), 0))
        start = np.where(first > 0, e[np.maximum(first - 1, 0)], e[0])
        thr = start * (1 - cfg.daily_loss_limit)
        hits = np.flatnonzero(e <= thr + TOL * np.abs(thr))
        if len(hits):
            i = int(hits[0])
            loss = 1 - e[i] / start[i] if start[i] > 0 else 1.0
            candidates.append((i, 2, Trip("daily_loss", f"loss {loss:.2%} since the UTC day started at "
                                          f"{start[i]:,.2f} reached the daily limit {cfg.daily_loss_limit:.2%}",
                                          _ts(int(t[i])), None, i)))
    if not candidates:
        return np.ones(n, dtype=bool), []
    i, _, trip = min(candidates, key=lambda c: (c[0], c[1]))
    return np.arange(n) < i, [trip]


def kill_switch_mask(equity, times, *, config: KillSwitchConfig | RiskConfig,
                     trade_exit_times=None, trade_pnl=None) -> np.ndarray:
    """Boolean array, True where new entries are allowed (see :func:`kill_switch_trips`).

    With latched protections (the default) a backtest can run once without the
    mask, then drop the entries after the first trip: the equity before the trip is
    unchanged, so the trip is the same. With timed resumes, iterate until the
    mask stops changing.
    """
    return kill_switch_trips(equity, times, config=config, trade_exit_times=trade_exit_times,
                             trade_pnl=trade_pnl)[0]


def first_trip(equity, times, *, config: KillSwitchConfig | RiskConfig,
               trade_exit_times=None, trade_pnl=None) -> Trip | None:
    """The first :class:`Trip` on the path (None if it never trips)."""
    trips = kill_switch_trips(equity, times, config=config, trade_exit_times=trade_exit_times,
                              trade_pnl=trade_pnl)[1]
    return trips[0] if trips else None


def kill_switch_series(equity: pd.Series, trades: pd.DataFrame | None = None, *,
                       config: KillSwitchConfig | RiskConfig) -> pd.Series:
    """pandas wrapper: ``equity`` (UTC DatetimeIndex) and an S5 trades frame
    (``exit_time``, ``pnl``) -> a bool Series "entries allowed" on the same index."""
    tx = pnl = None
    if trades is not None and len(trades):
        tr = trades.sort_values("exit_time", kind="stable")
        tx, pnl = pd.DatetimeIndex(tr["exit_time"]), tr["pnl"].to_numpy(np.float64)
    mask = kill_switch_mask(equity.to_numpy(np.float64), equity.index, config=config,
                            trade_exit_times=tx, trade_pnl=pnl)
    return pd.Series(mask, index=equity.index, name="entries_allowed")


# -------------------------------------------------- stateful (paper / live)
def _who(by: str | None) -> str:
    if by:
        return by
    try:
        user = getpass.getuser()
    except Exception:  # no user database (containers)
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"


class KillSwitch:
    """The persisted kill-switch of a trading process.

    >>> ks = KillSwitch(KillSwitchConfig(max_drawdown=0.1), path=tmp / "ks.json")     # doctest: +SKIP
    >>> ks.update_equity(10_000); ks.update_equity(8_900)                              # doctest: +SKIP
    True
    False
    >>> KillSwitch(path=tmp / "ks.json").allows_entries()     # a restart still sees the trip  # doctest: +SKIP
    False

    Every call re-reads the state file under a lock, so a ``reset`` (or a ``trip``)
    from another process takes effect at the next call. An unreadable state file
    fails closed: entries are refused until a person resets it.
    """

    def __init__(self, config: KillSwitchConfig | RiskConfig | None = None, *, path: str | Path | None = None,
                 on_trip: Callable[[Trip], Any] | None = None, clock: Callable[[], Any] | None = None):
        from S1.datasets import state_path

        self.config = _cfg(config)
        self.path = Path(path) if path is not None else state_path(STATE_FILE)
        self.on_trip = on_trip
        self.clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
        self._corrupt = False

    # ------------------------------------------------------------ storage
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+") as fh:
            try:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except ImportError:  # Windows: single-process use only
                pass
            yield

    def _load(self) -> ProtectionState:
        self._corrupt = False
        if not self.path.exists():
            return ProtectionState()
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"unknown version {raw.get('version')!r}")
            return ProtectionState(
                tripped=bool(raw["tripped"]), reason=raw.get("reason"), detail=raw.get("detail"),
                tripped_at=_opt_ns(raw.get("tripped_at")), until=_opt_ns(raw.get("until")),
                peak=raw.get("peak"), last_equity=raw.get("last_equity"), last_time=_opt_ns(raw.get("last_time")),
                day=(to_ns(raw["day"]) // DAY_NS) if raw.get("day") else None,
                day_start_equity=raw.get("day_start_equity"), loss_streak=int(raw.get("loss_streak", 0)),
                events=list(raw.get("events", [])))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._corrupt = True
            log.error("kill-switch state %s is unreadable (%s): refusing entries until `%s`",
                      self.path, exc, self.reset_command)
            return ProtectionState(tripped=True, reason="state_unreadable",
                                   detail=f"state file unreadable ({type(exc).__name__}: {exc})")

    def _save(self, state: ProtectionState) -> None:
        from S1.datasets import atomic_write_text

        state.events = state.events[-MAX_EVENTS:]
        body = {
            "version": STATE_VERSION, "tripped": state.tripped, "reason": state.reason, "detail": state.detail,
            "tripped_at": _iso(_ts(state.tripped_at)), "until": _iso(_ts(state.until)),
            "peak": state.peak, "last_equity": state.last_equity, "last_time": _iso(_ts(state.last_time)),
            "day": None if state.day is None else _ts(state.day * DAY_NS).date().isoformat(),
            "day_start_equity": state.day_start_equity, "loss_streak": state.loss_streak,
            "updated_at": pd.Timestamp.now(tz="UTC").isoformat(), "reset_command": self.reset_command,
            "events": state.events,
        }
        atomic_write_text(self.path, json.dumps(body, indent=2))

    def _now(self, at) -> int:
        return to_ns(self.clock() if at is None else at)

    def _apply(self, fn: Callable[[ProtectionState, int], Trip | None], at) -> bool:
        with self._locked():
            state = self._load()
            t = self._now(at)
            was_tripped = state.tripped
            if self._corrupt:  # never overwrite an unreadable file: a person looks at it first
                return False
            trip = fn(state, t)
            if was_tripped and not state.tripped:
                state.events.append({"event": "resume", "at": _iso(_ts(t))})
                log.warning("kill-switch: timed pause over, entries allowed again")
            if trip:
                state.events.append({"event": "trip", "at": _iso(trip.at), "reason": trip.reason,
                                     "detail": trip.detail, "until": _iso(trip.until)})
            self._save(state)
        if trip:
            self._announce(trip)
        return not state.tripped

    @property
    def reset_command(self) -> str:
        """The command that clears *this* state file (``--mode`` for S7's per-mode files, ``--state`` else).

        >>> import tempfile; from pathlib import Path
        >>> KillSwitch(path=Path(tempfile.mkdtemp()) / "x.json").reset_command.startswith(RESET_COMMAND + " --state ")
        True
        """
        from S1.datasets import kill_switch_path

        for mode in MODES:
            try:
                if self.path.resolve() == kill_switch_path(mode).resolve():
                    return RESET_COMMAND if mode == "live" else f"{RESET_COMMAND} --mode {mode}"
            except Exception:  # noqa: BLE001 - settings unreadable: fall back to the explicit file
                break
        return f"{RESET_COMMAND} --state {self.path}"

    def _announce(self, trip: Trip) -> None:
        resume = (f"resumes at {trip.until.isoformat()}" if trip.until is not None
                  else f"until `{self.reset_command}`")
        log.error("KILL-SWITCH TRIPPED (%s): %s -- entries halted %s", trip.reason, trip.detail, resume)
        if self.on_trip is not None:
            try:
                self.on_trip(trip)
            except Exception as exc:  # an alert failure must never break the kill-switch
                log.error("kill-switch: the on_trip hook failed: %s", exc)

    # --------------------------------------------------------------- API
    @property
    def state(self) -> ProtectionState:
        """A fresh copy of the persisted state."""
        with self._locked():
            return self._load()

    def allows_entries(self, *, at=None) -> bool:
        """True when new positions may be opened (a due timed pause is lifted and saved)."""
        return self._apply(lambda s, t: (expire(s, t), None)[1], at)

    def update_equity(self, equity: float, *, at=None) -> bool:
        """Feed the account equity (quote currency); returns :meth:`allows_entries`."""
        return self._apply(lambda s, t: step_equity(s, self.config, equity, t), at)

    def record_trade(self, pnl: float, *, at=None) -> bool:
        """Feed a closed trade's realised pnl (after fees)."""
        return self._apply(lambda s, t: step_trade(s, self.config, pnl, t), at)

    def trip(self, detail: str = "tripped by hand", *, reason: str = "manual", by: str | None = None,
             at=None) -> Trip:
        """Trip now (a person, or S7 on a fatal error). Stays tripped until reset."""
        holder: list[Trip] = []
        who = _who(by)

        def do(state: ProtectionState, t: int):
            if state.tripped and state.until is None:
                holder.append(Trip(state.reason or reason, state.detail or "", _ts(state.tripped_at or t)))
                return None
            trip = _trip(state, reason, f"{detail} (by {who})", t, None)
            holder.append(trip)
            return trip

        self._apply(do, at)
        return holder[0] if holder else Trip(reason, detail, _ts(self._now(at)))

    def reset(self, *, by: str | None = None, note: str | None = None) -> ProtectionState:
        """Clear a trip (the person's decision). Peak and day baseline restart from the
        last equity, the losing streak from zero. Returns the state *before* the reset."""
        who = _who(by)
        now = pd.Timestamp.now(tz="UTC")
        with self._locked():
            before = self._load()
            if self._corrupt and self.path.exists():
                aside = self.path.with_name(f"{self.path.name}.unreadable-{now.strftime('%Y%m%dT%H%M%S')}")
                os.replace(self.path, aside)
                log.warning("kill-switch: kept the unreadable state file as %s", aside)
                before_events: list[dict] = []
                last = None
            else:
                before_events, last = list(before.events), before.last_equity
            state = ProtectionState(peak=last, last_equity=last, last_time=before.last_time if not self._corrupt else None,
                                    day=before.day if not self._corrupt else None, day_start_equity=last,
                                    events=before_events)
            state.events.append({"event": "reset", "at": now.isoformat(), "by": who, "note": note,
                                 "was": {"tripped": before.tripped, "reason": before.reason, "detail": before.detail}})
            self._save(state)
        log.warning("kill-switch reset by %s at %s%s (was: %s)", who, now.isoformat(),
                    f" -- {note}" if note else "",
                    f"tripped, {before.reason}: {before.detail}" if before.tripped else "not tripped")
        return before

    def status(self) -> dict[str, Any]:
        """Plain dict for display / JSON."""
        s = self.state
        return {"path": str(self.path), "tripped": s.tripped, "reason": s.reason, "detail": s.detail,
                "tripped_at": _iso(_ts(s.tripped_at)), "until": _iso(_ts(s.until)),
                "peak": s.peak, "last_equity": s.last_equity, "last_time": _iso(_ts(s.last_time)),
                "drawdown": s.drawdown, "day_start_equity": s.day_start_equity, "daily_loss": s.daily_loss,
                "loss_streak": s.loss_streak, "events": s.events[-10:],
                "config": self.config.model_dump()}


def _opt_ns(x) -> int | None:
    return None if x in (None, "") else to_ns(x)


@dataclass(frozen=True)
class StateFile:
    """A kill-switch state file on disk and what wrote it."""

    path: Path
    mode: str     # live, testnet, dry-run, dry-run replay
    label: str    # live, testnet, dry-run, replay BTCUSDT 1h


def state_files(*, data_dir: Path | None = None, include_missing_live: bool = False) -> list[StateFile]:
    """Every kill-switch state S7 wrote: one per mode (``live``, ``testnet``,
    ``dry-run``; names from :func:`S1.datasets.kill_switch_path`, the same function S7
    uses) and the replays' throw-away ones under ``data/state/replay/``.

    >>> import tempfile; from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> state_files(data_dir=d), [f.label for f in state_files(data_dir=d, include_missing_live=True)]
    ([], ['live'])
    """
    from S1.datasets import kill_switch_path, state_path

    out = []
    for mode in MODES:
        p = kill_switch_path(mode, data_dir=data_dir)
        if p.exists() or (include_missing_live and mode == "live"):
            out.append(StateFile(p, mode, mode))
    replay_dir = state_path("replay", data_dir=data_dir)
    if replay_dir.is_dir():
        for p in sorted(replay_dir.glob("kill_switch*.json")):
            sym, _, ivl = p.stem.removeprefix("kill_switch").lstrip("_").rpartition("_")
            out.append(StateFile(p, "dry-run replay", f"replay {sym.upper()} {ivl}".strip()))
    return out
