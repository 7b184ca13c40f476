"""The paper-trading panel of the S7 dashboard (no Streamlit): S7's order log, the
executor stores and S6's kill-switch states, all read-only.

- :func:`order_events` / :func:`orders_table`: ``data/orders.jsonl`` as events, then
  one row per order.
- :func:`executor_states` / :func:`positions_table`: every
  ``data/state/[replay/]s7_<mode>_<symbol>_<interval>.db`` (S7.store's own queries on
  a read-only connection).
- :func:`kill_switch_states`: :meth:`S6.killswitch.KillSwitch.status` of every state
  file, with its mode told from :func:`S1.datasets.kill_switch_path`.

>>> import tempfile
>>> empty = Path(tempfile.mkdtemp())
>>> executor_states(data_dir=empty), kill_switch_states(data_dir=empty), len(order_events(data_dir=empty))
([], [], 0)
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from S1.datasets import data_dir as _data_dir
from S1.datasets import kill_switch_path, orders_log_path, state_path

#: The executor store's name (S1.datasets.executor_state_path): mode tag, symbol, interval token.
_STATE_DB = re.compile(r"^s7_(dryrun|testnet|live|replay)_([a-z0-9]+)_([0-9]+[a-zA-Z]+)\.db$")
MODE_LABELS = {"dryrun": "dry-run", "testnet": "testnet", "live": "live", "replay": "dry-run replay"}
KILL_SWITCH_MODES = ("live", "testnet", "dry-run")


# ---------------------------------------------------------------- order log
def order_events(*, data_dir: Path | None = None) -> pd.DataFrame:
    """``data/orders.jsonl`` as a frame (S7's reader), oldest first; empty when absent."""
    from S7.order_log import order_log_frame

    return order_log_frame(orders_log_path(data_dir=_data_dir(data_dir)))


def fills_label(mode: Any, simulated: Any = None) -> str:
    """Who filled an order: ``SIMULATED market`` (flagged records), the dry-run
    simulator, the testnet, or the live exchange.

    >>> fills_label("dry-run replay"), fills_label("testnet"), fills_label("testnet", True)
    ('simulated (dry-run)', 'testnet (paper)', 'SIMULATED market')
    """
    if simulated is True:
        return "SIMULATED market"
    mode = str(mode or "")
    if mode.startswith("dry-run"):
        return "simulated (dry-run)"
    if mode.startswith("testnet"):
        return "testnet (paper)"
    if mode.startswith("live"):
        return "LIVE"
    return mode or "unknown"


ORDER_COLUMNS = ("time", "updated", "mode", "fills_by", "symbol", "side", "quantity", "status", "executed_qty",
                 "avg_price", "fills", "reason", "error", "client_id", "events")


def orders_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per order (client id) from the order events, newest first: when it was
    decided, mode, symbol, side, quantity, its latest status, executed quantity,
    average price, fills, reason and error. Orders without a client id (not sent)
    are one row per event.

    >>> ev = pd.DataFrame({"time": pd.to_datetime(["2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 02:00"],
    ...                    utc=True), "mode": "dry-run", "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.5",
    ...                    "price": ["100", "101", "101"], "client_id": "s7-a", "status": ["INTENT", "FILLED", "FILL"],
    ...                    "reason": "entry:x", "avg_price": [None, "101", None], "executed_qty": [None, "0.5", None]})
    >>> row = orders_table(ev).iloc[0]
    >>> row["status"], float(row["avg_price"]), int(row["fills"]), str(row["time"])
    ('FILLED', 101.0, 1, '2024-01-01 01:00:00+00:00')
    """
    cols = list(ORDER_COLUMNS)
    if events is None or not len(events):
        return pd.DataFrame(columns=cols)
    ev = events.copy()
    for c in ("client_id", "status", "mode", "symbol", "side", "quantity", "reason", "error", "avg_price",
              "executed_qty", "simulated"):
        if c not in ev.columns:
            ev[c] = None
    ev["_key"] = ev["client_id"].where(ev["client_id"].notna(), "row-" + ev.index.astype(str))
    rows = []
    for _, g in ev.groupby("_key", sort=False):
        fills = g[g["status"] == "FILL"]
        states = g[g["status"] != "FILL"]
        last = (states if len(states) else g).iloc[-1]
        first = g.iloc[0]
        avg = pd.to_numeric(states["avg_price"], errors="coerce").dropna()
        qty = pd.to_numeric(states["executed_qty"], errors="coerce").dropna()
        errs = g["error"].dropna()
        sim = g["simulated"].dropna()
        mode = first["mode"] if isinstance(first["mode"], str) else "unknown"
        rows.append({"time": first["time"], "updated": g["time"].iloc[-1], "mode": mode,
                     "fills_by": fills_label(mode, bool(sim.iloc[-1]) if len(sim) else None),
                     "symbol": first["symbol"], "side": first["side"],
                     "quantity": pd.to_numeric(pd.Series([first["quantity"]]), errors="coerce").iloc[0],
                     "status": last["status"], "executed_qty": float(qty.iloc[-1]) if len(qty) else None,
                     "avg_price": float(avg.iloc[-1]) if len(avg) else None, "fills": len(fills),
                     "reason": first["reason"], "error": errs.iloc[-1] if len(errs) else None,
                     "client_id": first["client_id"], "events": len(g)})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values("time", ascending=False, kind="stable", ignore_index=True)


# ---------------------------------------------------------- executor stores
@contextlib.contextmanager
def _read_only_store(path: Path) -> Iterator[Any]:
    """:class:`S7.store.ExecutorStore` on a read-only connection: safe while the
    executor writes (WAL), never creates or changes a file. Closed without the
    store's own ``close()``, whose WAL checkpoint is a write."""
    from S7.store import ExecutorStore

    store = ExecutorStore.open_readonly(path)
    try:
        yield store
    finally:
        store.con.close()


@dataclass
class ExecutorState:
    """One executor state file (``data/state/s7_<mode>_<symbol>_<interval>.db``)."""

    path: Path
    mode: str
    symbol: str
    interval: str
    positions: list = field(default_factory=list)      #: S7.store.Position per symbol
    round_trips: pd.DataFrame = field(default_factory=pd.DataFrame)
    orders: pd.DataFrame = field(default_factory=pd.DataFrame)
    error: str | None = None
    file: str = ""          #: the path relative to the data directory

    @property
    def label(self) -> str:
        return f"{MODE_LABELS.get(self.mode, self.mode)} {self.symbol} {self.interval}"


def _ms_times(df: pd.DataFrame) -> pd.DataFrame:
    """``*_ms`` columns (epoch ms) as UTC timestamps without the suffix."""
    for c in [c for c in df.columns if c.endswith("_ms")]:
        df[c[:-3]] = pd.to_datetime(df[c], unit="ms", utc=True)
        df = df.drop(columns=c)
    return df


def executor_states(*, data_dir: Path | None = None) -> list[ExecutorState]:
    """Every executor store under ``data/state/`` (and ``data/state/replay/``), read-only."""
    base = _data_dir(data_dir)
    out = []
    for folder in (state_path("", data_dir=base), state_path("replay", data_dir=base)):
        if not folder.is_dir():
            continue
        for p in sorted(folder.glob("s7_*.db")):
            m = _STATE_DB.match(p.name)
            if not m:
                continue
            st = ExecutorState(p, m.group(1), m.group(2).upper(), m.group(3), file=str(p.relative_to(base)))
            try:
                with _read_only_store(p) as store:
                    symbols = [r[0] for r in store.con.execute("SELECT symbol FROM positions ORDER BY symbol")]
                    st.positions = [store.position(s) for s in symbols]
                    st.round_trips = _ms_times(pd.DataFrame(store.round_trips()))
                    st.orders = _ms_times(pd.DataFrame(store.orders()))
            except sqlite3.DatabaseError as exc:
                st.error = f"unreadable: {exc}"
            out.append(st)
    return out


POSITION_COLUMNS = ("mode", "fills_by", "symbol", "interval", "state", "qty", "entry_price", "entry_time", "stop",
                    "take_profit", "realized_pnl", "fees", "round_trips", "dust", "file")


def positions_table(states: list[ExecutorState]) -> pd.DataFrame:
    """The strategy positions of every store, one row per (store, symbol) that has
    traded (a store without a fill has no position row)."""
    rows = []
    for st in states:
        mode = MODE_LABELS.get(st.mode, st.mode)
        for p in st.positions:
            rows.append({"mode": mode, "symbol": p.symbol, "interval": st.interval,
                         "state": "OPEN" if p.is_open else "flat", "qty": float(p.qty),
                         "entry_price": p.entry_price,
                         "entry_time": pd.Timestamp(p.entry_time_ms, unit="ms", tz="UTC") if p.is_open and
                         p.entry_time_ms else pd.NaT, "stop": p.stop, "take_profit": p.take_profit,
                         "realized_pnl": float(p.realized_pnl), "fees": float(p.fees), "round_trips": p.round_trips,
                         "dust": float(p.dust), "fills_by": fills_label(mode), "file": st.file})
    return pd.DataFrame(rows, columns=list(POSITION_COLUMNS))


# ------------------------------------------------------------ kill-switches
def _kill_switch_files(base: Path) -> list[tuple[Path, str, str]]:
    """``(path, mode, label)`` of every kill-switch state file: the per-mode ones
    (names from :func:`S1.datasets.kill_switch_path`) and the replays' throw-away ones."""
    out = []
    live = kill_switch_path("live", data_dir=base)
    modes = {kill_switch_path(m, data_dir=base).name: m for m in KILL_SWITCH_MODES}
    if live.parent.is_dir():
        for p in sorted(live.parent.glob("kill_switch*.json")):
            # a name S1 does not give a mode keeps its own tag (kill_switch_<tag>.json)
            mode = modes.get(p.name) or p.stem.removeprefix("kill_switch").lstrip("_")
            out.append((p, mode, mode))
    replay_dir = state_path("replay", data_dir=base)
    if replay_dir.is_dir():
        for p in sorted(replay_dir.glob("kill_switch*.json")):
            sym, _, ivl = p.stem.removeprefix("kill_switch_").rpartition("_")
            out.append((p, "dry-run replay", f"replay {sym.upper()} {ivl}".strip()))
    return out


def kill_switch_states(*, data_dir: Path | None = None) -> list[dict[str, Any]]:
    """:meth:`S6.killswitch.KillSwitch.status` of every kill-switch state file (live,
    testnet, dry-run, replays), with ``label``, ``mode``, ``entries_allowed`` (a timed
    pause that is due counts as allowed: the next call resumes it) and
    ``reset_command``. Unreadable files come back tripped (``state_unreadable``), as
    the executor sees them."""
    from S6.killswitch import RESET_COMMAND, KillSwitch

    base = _data_dir(data_dir)
    live = kill_switch_path("live", data_dir=base)
    order = {m: i for i, m in enumerate(KILL_SWITCH_MODES)}
    logger = logging.getLogger("S6.killswitch")
    out = []
    for p, mode, label in _kill_switch_files(base):
        old = logger.level
        logger.setLevel(logging.CRITICAL)  # an unreadable file is shown, not logged on every rerun
        try:
            status = KillSwitch(path=p).status()
        finally:
            logger.setLevel(old)
        due = status["until"] is not None and pd.Timestamp(status["until"]) <= pd.Timestamp.now(tz="UTC")
        status.update(label=label, mode=mode, entries_allowed=(not status["tripped"]) or due,
                      reset_command=RESET_COMMAND if p == live else f"{RESET_COMMAND} --state {p}")
        out.append(status)
    return sorted(out, key=lambda s: (order.get(s["mode"], len(order)), s["label"]))


__all__ = [
    "MODE_LABELS",
    "ORDER_COLUMNS",
    "POSITION_COLUMNS",
    "ExecutorState",
    "executor_states",
    "fills_label",
    "kill_switch_states",
    "order_events",
    "orders_table",
    "positions_table",
]
