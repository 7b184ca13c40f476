"""The control channel between a supervising service (``python S8/service.py``) and one S7 executor.

Two small JSON files per market in one folder (``--control DIR`` of ``python S7/executor.py``):

- ``<symbol>_<interval>.control.json`` -- written by the service, read by the executor before each
  entry: ``{"paused": true, "reason": "...", "updated_at": ...}``. A paused market takes **no new
  entries**; exits, stops and take-profits still work. A missing or unreadable file means "not paused".
- ``<symbol>_<interval>.status.json`` -- written by the executor every ``every`` seconds (its
  **heartbeat**) and after each closed candle: pid, last candle, price, position, equity, open orders,
  kill-switch, decision latencies (closed candle -> order sent). Never a secret.

Both are replaced atomically, so a reader never sees half a file. Nothing here imports a later sprint:
the service imports this module, not the reverse.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> ControlFile(d, "BTCUSDT", "1m").set_paused(True, reason="maintenance")["paused"]
True
>>> ExecutorControl(d, "BTCUSDT", "1m").entry_block()
'entries paused from the control API (maintenance)'
>>> ControlFile(d, "BTCUSDT", "1m").set_paused(False)["paused"]
False
>>> ExecutorControl(d, "BTCUSDT", "1m").entry_block() is None
True
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: How many recent decision latencies a status file carries (the service keeps the rest).
LATENCY_KEEP = 200


def market_key(symbol: str, interval: str) -> str:
    """``btcusdt_1m``: the file stem of one market's control and status files."""
    return f"{symbol.strip().upper().replace('/', '').lower()}_{interval.strip()}"


def _write_json(path: Path, obj: dict, *, durable: bool = True) -> None:
    """Atomic replace; ``durable=False`` skips the fsync (a heartbeat rewritten every second must not
    stall the executor's event loop on the disk)."""
    if durable:
        from S1.datasets import atomic_write_text

        atomic_write_text(path, json.dumps(obj, default=str, separators=(",", ":")))
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, default=str, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ControlFile:
    """The service's side of one market's channel: set the pause flag, read the executor's status."""

    def __init__(self, folder: str | Path, symbol: str, interval: str):
        self.folder = Path(folder)
        key = market_key(symbol, interval)
        self.path = self.folder / f"{key}.control.json"
        self.status_path = self.folder / f"{key}.status.json"

    def read(self) -> dict:
        return _read_json(self.path) or {"paused": False}

    def set_paused(self, paused: bool, *, reason: str | None = None) -> dict:
        body = {**self.read(), "paused": bool(paused), "reason": reason if paused else None,
                "updated_at": time.time()}
        _write_json(self.path, body)
        return body

    def status(self) -> dict | None:
        """The executor's last status (None before its first heartbeat)."""
        return _read_json(self.status_path)


class ExecutorControl:
    """The executor's side: :meth:`entry_block` before an entry, :meth:`write_status` as a heartbeat."""

    def __init__(self, folder: str | Path, symbol: str, interval: str):
        self.files = ControlFile(folder, symbol, interval)
        self.files.folder.mkdir(parents=True, exist_ok=True)
        self._mtime: float | None = None
        self._body: dict = {"paused": False}
        self._latencies: list[tuple[int, float]] = []
        self.started = time.time()

    def _control(self) -> dict:
        try:
            m = self.files.path.stat().st_mtime_ns
        except OSError:
            self._mtime, self._body = None, {"paused": False}
            return self._body
        if m != self._mtime:
            self._mtime, self._body = m, (_read_json(self.files.path) or {"paused": False})
        return self._body

    @property
    def paused(self) -> bool:
        return bool(self._control().get("paused"))

    def entry_block(self) -> str | None:
        """Why a new entry must not be taken now (None: it may)."""
        c = self._control()
        if c.get("paused"):
            why = c.get("reason")
            return "entries paused from the control API" + (f" ({why})" if why else "")
        return None

    # ---------------------------------------------------------------- status
    def status(self, engine) -> dict[str, Any]:
        """What the service shows for this market (plain JSON, no secret)."""
        from S1.intervals import interval_ms

        sym = engine.symbol
        pos = engine.store.position(sym)
        price = engine.last_price
        for d in engine.decisions[-LATENCY_KEEP:]:
            if d.sent_at is not None and (not self._latencies or d.candle_open_ms > self._latencies[-1][0]):
                self._latencies.append((d.candle_open_ms, d.sent_at - d.seen_at))
        self._latencies = self._latencies[-LATENCY_KEEP:]
        try:
            ks = engine.kill_switch.state
            kill = {"tripped": ks.tripped, "reason": ks.reason, "detail": ks.detail}
        except Exception as exc:  # noqa: BLE001 -- a status must not fail on a busy file
            kill = {"tripped": None, "reason": None, "detail": f"unreadable: {exc}"}
        last_open = engine.last_close_ms
        return {
            "time": time.time(), "pid": os.getpid(), "started": self.started,
            "symbol": sym, "interval": engine.cfg.interval, "mode": engine.cfg.mode,
            "paused": self.paused,
            "last_candle_open_ms": last_open,
            "last_candle_close_ms": None if last_open is None else last_open + interval_ms(engine.cfg.interval),
            "last_price": price,
            "position": {"qty": float(pos.qty), "entry_price": pos.entry_price, "stop": pos.stop,
                         "take_profit": pos.take_profit},
            "equity": engine.equity(price) if price else engine.last_equity,
            "open_orders": len(engine.store.unresolved(sym)),
            "kill_switch": kill,
            "candles": sum(v for k, v in engine.stats.items() if k.startswith("candles_")),
            "decision_latency_s": [[t, round(x, 6)] for t, x in self._latencies],
        }

    def write_status(self, engine) -> None:
        try:
            _write_json(self.files.status_path, self.status(engine), durable=False)
        except Exception as exc:  # noqa: BLE001 -- the heartbeat must never stop trading
            log.warning("control: status not written (%s)", exc)

    async def heartbeat(self, engine, *, every: float = 1.0) -> None:
        """Write the status every ``every`` s until cancelled (a blocked loop stops it: that is the point)."""
        while True:
            self.write_status(engine)
            await asyncio.sleep(every)


def attach(engine, folder: str | Path, *, every: float = 1.0) -> asyncio.Task:
    """Give ``engine`` its control channel and start the heartbeat task (cancel it at the end)."""
    ctl = ExecutorControl(folder, engine.symbol, engine.cfg.interval)
    engine.control = ctl
    log.info("control channel: %s (heartbeat every %gs)", ctl.files.folder, every)
    return asyncio.get_running_loop().create_task(ctl.heartbeat(engine, every=every), name="control-heartbeat")


__all__ = ["ControlFile", "ExecutorControl", "LATENCY_KEEP", "attach", "market_key"]
