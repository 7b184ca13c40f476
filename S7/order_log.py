"""The append-only order log: ``data/orders.jsonl``, one JSON object per order event.

Every line has ``time`` (UTC ISO, when the event happened), ``mode`` (dry-run /
testnet / live, plus ``replay``), ``symbol``, ``side``, ``type``, ``quantity``,
``price``, ``client_id``, ``exchange_id``, ``status`` and ``reason``, and may add
``event`` (intent, accepted, fill, rejected ...), ``interval``, ``candle`` (open
time of the candle behind the signal), ``executed_qty``, ``quote_qty``,
``commission``, ``commission_asset``, ``code`` (Binance error) and ``error``.

Lines are written whole with ``O_APPEND`` (one ``write`` each, well below the
size at which appends could interleave), so several executors may share the
file; the file is never rewritten. Every string passes the secret redaction of
:mod:`S1.settings` before it is written.

>>> import tempfile, json, os
>>> path = os.path.join(tempfile.mkdtemp(), "orders.jsonl")
>>> log = OrderLog(path, mode="dry-run")
>>> _ = log.append(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001", price="27000",
...                client_id="s7-abc", exchange_id=None, status="INTENT", reason="entry:pullback")
>>> row = read_order_log(path)[0]
>>> row["status"], row["client_id"], row["mode"], sorted(REQUIRED_KEYS - set(row))
('INTENT', 's7-abc', 'dry-run', [])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

#: Keys every line carries (``None`` when not known, e.g. no exchange id yet).
REQUIRED_KEYS = frozenset({"time", "symbol", "side", "type", "quantity", "price", "client_id", "exchange_id",
                           "status", "reason"})
#: Largest line written (bytes); longer texts are cut (appends below PIPE_BUF stay atomic).
MAX_LINE = 4000


class OrderLog:
    """Appends order events to one JSONL file."""

    def __init__(self, path: str | Path, *, mode: str, extra_secrets: tuple[str, ...] = (),
                 fsync: bool = False, simulated: bool = False):
        self.path = Path(path)
        self.mode = mode
        self.simulated = simulated  # orders against a simulated market are labelled as such
        self.fsync = fsync
        self.extra_secrets = tuple(s for s in extra_secrets if s)
        self.lines = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _redact(self, text: str) -> str:
        from S1.settings import get_settings, redact

        return redact(text, [*get_settings().secret_values(), *self.extra_secrets])

    def append(self, *, symbol: str, side: str | None, type: str | None, quantity: Any, price: Any,
               client_id: str | None, exchange_id: Any, status: str, reason: str | None,
               time: pd.Timestamp | str | None = None, **extra: Any) -> dict:
        """Append one event; returns the record written."""
        t = pd.Timestamp.now(tz="UTC") if time is None else pd.Timestamp(time)
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        rec = {"time": t.isoformat(), "mode": self.mode, "symbol": symbol, "side": side, "type": type,
               "quantity": None if quantity is None else str(quantity),
               "price": None if price is None else str(price), "client_id": client_id,
               "exchange_id": None if exchange_id is None else int(exchange_id), "status": status,
               "reason": reason}
        if self.simulated:
            rec["simulated"] = True
        for k, v in extra.items():
            if v is None:
                continue
            rec[k] = v if isinstance(v, (bool, int, float)) else str(v)
        line = self._redact(json.dumps(rec, separators=(",", ":"), default=str))
        if len(line) > MAX_LINE:  # cut the free texts, keep the line valid JSON
            for k in ("error", "reason", "note"):
                if isinstance(rec.get(k), str):
                    rec[k] = rec[k][:300] + "..."
            line = self._redact(json.dumps(rec, separators=(",", ":"), default=str))[:MAX_LINE]
        data = (line + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self.lines += 1
        return json.loads(line)


def read_order_log(path: str | Path, *, last: int | None = None) -> list[dict]:
    """The events of an order log (oldest first; unreadable lines are skipped)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out[-last:] if last else out


def order_log_frame(path: str | Path) -> pd.DataFrame:
    """The order log as a DataFrame (``time`` as UTC timestamps), for notebooks and the dashboard."""
    rows = read_order_log(path)
    df = pd.DataFrame(rows)
    if len(df):
        df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")
    return df


__all__ = ["MAX_LINE", "OrderLog", "REQUIRED_KEYS", "order_log_frame", "read_order_log"]
