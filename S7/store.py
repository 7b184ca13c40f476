"""The executor's memory: orders, fills, positions and closed round trips in SQLite.

One file per mode and market (``data/state/s7_<mode>_<symbol>_<interval>.db``),
WAL journal with ``synchronous=FULL``: an order's *intent* (its deterministic
client id, side, quantity, reason) is committed **before** the request leaves,
so a crash at any point leaves a row that the next start looks up by client id
(see :mod:`S7.reconcile`). Readers (the dashboard, notebooks) can read while the
executor writes.

Fills are keyed by ``(symbol, trade_id)`` and applied to the position in the
same transaction as their insert, so seeing a fill twice (order response, then
``myTrades`` during a reconciliation) never counts it twice.

Position accounting (exact decimals, commissions as Binance charges them):

- BUY fill ``q @ p``, commission ``c``: held += ``q - c`` when ``c`` is in the base
  asset (else ``q``); cost += ``q*p`` (+ ``c`` when in the quote asset).
- SELL fill: held -= ``q`` (+ ``c`` in base); proceeds += ``q*p - c`` (quote);
  the sold share of the cost is realised.
- When what is left is below ``min_tradable`` (LOT_SIZE minimum/step, or the
  notional minimum) the round trip is closed: the remainder is kept as ``dust``
  (valued at the exit price in the trip's pnl) and the position is flat.

>>> import tempfile, os
>>> from decimal import Decimal
>>> from S7.orders import Fill
>>> st = ExecutorStore(os.path.join(tempfile.mkdtemp(), "x.db"))
>>> buy = Fill("BTCUSDT", 1, 10, "BUY", Decimal("20000"), Decimal("0.01"), Decimal("0.00001"), "BTC", 1000)
>>> st.apply_fill(buy, base_asset="BTC", quote_asset="USDT", min_tradable=Decimal("0.00001")).new
True
>>> st.apply_fill(buy, base_asset="BTC", quote_asset="USDT", min_tradable=Decimal("0.00001")).new  # seen again
False
>>> st.position("BTCUSDT").qty, st.position("BTCUSDT").cost
(Decimal('0.00999'), Decimal('200'))
>>> sell = Fill("BTCUSDT", 2, 11, "SELL", Decimal("21000"), Decimal("0.00999"), Decimal("0.20979"), "USDT", 2000)
>>> r = st.apply_fill(sell, base_asset="BTC", quote_asset="USDT", min_tradable=Decimal("0.00001"))
>>> round(r.closed["pnl"], 5), st.position("BTCUSDT").is_open
(9.58021, False)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from S1.errors import UserError
from S7.orders import UNRESOLVED, D, Fill, plain

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_order_id   TEXT PRIMARY KEY,
    symbol            TEXT NOT NULL,
    interval          TEXT,
    candle_open_ms    INTEGER,
    side              TEXT NOT NULL,
    type              TEXT NOT NULL,
    quantity          TEXT NOT NULL,
    price             TEXT,
    status            TEXT NOT NULL,
    exchange_order_id INTEGER,
    executed_qty      TEXT NOT NULL DEFAULT '0',
    quote_qty         TEXT NOT NULL DEFAULT '0',
    reason            TEXT,
    error             TEXT,
    stop_distance     REAL,
    tp_distance       REAL,
    sends             INTEGER NOT NULL DEFAULT 0,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (symbol, status);
CREATE TABLE IF NOT EXISTS fills (
    symbol            TEXT NOT NULL,
    trade_id          INTEGER NOT NULL,
    exchange_order_id INTEGER,
    client_order_id   TEXT,
    side              TEXT NOT NULL,
    price             TEXT NOT NULL,
    qty               TEXT NOT NULL,
    commission        TEXT NOT NULL,
    commission_asset  TEXT,
    time_ms           INTEGER NOT NULL,
    PRIMARY KEY (symbol, trade_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (
    symbol        TEXT PRIMARY KEY,
    qty           TEXT NOT NULL DEFAULT '0',
    cost          TEXT NOT NULL DEFAULT '0',
    bought_qty    TEXT NOT NULL DEFAULT '0',
    bought_quote  TEXT NOT NULL DEFAULT '0',
    sold_qty      TEXT NOT NULL DEFAULT '0',
    sold_quote    TEXT NOT NULL DEFAULT '0',
    trip_pnl      TEXT NOT NULL DEFAULT '0',
    trip_fees     TEXT NOT NULL DEFAULT '0',
    entry_time_ms INTEGER,
    stop          REAL,
    take_profit   REAL,
    dust          TEXT NOT NULL DEFAULT '0',
    realized_pnl  TEXT NOT NULL DEFAULT '0',
    fees          TEXT NOT NULL DEFAULT '0',
    round_trips   INTEGER NOT NULL DEFAULT 0,
    updated_ms    INTEGER
);
CREATE TABLE IF NOT EXISTS round_trips (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    symbol        TEXT NOT NULL,
    entry_time_ms INTEGER,
    exit_time_ms  INTEGER,
    qty           TEXT,
    entry_price   REAL,
    exit_price    REAL,
    pnl           REAL,
    fees          REAL,
    reason        TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_ORDER_FIELDS = ("symbol", "interval", "candle_open_ms", "side", "type", "quantity", "price", "status",
                 "exchange_order_id", "executed_qty", "quote_qty", "reason", "error", "stop_distance",
                 "tp_distance", "sends")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Position:
    """The strategy's position in one symbol (what *our* fills add up to, not the account)."""

    symbol: str
    qty: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    entry_price: float | None = None       #: average buy price of the open trip
    entry_time_ms: int | None = None
    stop: float | None = None
    take_profit: float | None = None
    dust: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)              #: all commissions, valued in the quote asset
    round_trips: int = 0

    @property
    def is_open(self) -> bool:
        return self.qty > 0

    def unrealized(self, price: float) -> float:
        return float(self.qty) * price - float(self.cost) if self.is_open else 0.0


@dataclass(frozen=True)
class FillResult:
    new: bool                     #: False when this trade id was already applied
    position: Position
    closed: dict | None = None    #: the round trip this fill closed (pnl, fees, prices ...)


class ExecutorStore:
    """SQLite persistence of one executor (one writer; create it in the thread that uses it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.RLock()   # one transaction at a time on this connection
        fix = "pass --state a file path in a folder you can write to"
        if self.path.is_dir():
            raise UserError(f"executor state {self.path} is a folder", fix)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.con = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self.con.row_factory = sqlite3.Row
            mode = self.con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal mode {mode!r} instead of WAL")
            self.con.execute("PRAGMA synchronous=FULL")
            self.con.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"cannot use the executor state {self.path} ({exc})", fix) from None
        except OSError as exc:
            raise UserError(f"cannot create the executor state {self.path} ({exc.strerror or exc})", fix) from None

    @classmethod
    def open_readonly(cls, path: str | Path) -> "ExecutorStore":
        """The same queries on a read-only connection: safe while an executor writes (WAL),
        never creates or changes a file (for dashboards and notebooks)."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self._lock = threading.RLock()
        self.con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        self.con.row_factory = sqlite3.Row
        return self

    def close(self) -> None:
        if self.con is not None:
            try:
                self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.con.close()
            self.con = None  # type: ignore[assignment]

    def _tx(self):
        return _Tx(self.con, self._lock)

    # ------------------------------------------------------------------ orders
    def insert_order(self, client_order_id: str, **fields: Any) -> bool:
        """Persist a new order (its intent). False (nothing written) when the id exists."""
        unknown = set(fields) - set(_ORDER_FIELDS)
        if unknown:
            raise ValueError(f"unknown order fields {sorted(unknown)}")
        now = _now_ms()
        cols = ["client_order_id", *fields, "created_ms", "updated_ms"]
        vals = [client_order_id, *[_sql(v) for v in fields.values()], now, now]
        with self._tx():
            cur = self.con.execute(f"INSERT OR IGNORE INTO orders ({', '.join(cols)}) VALUES "
                                   f"({', '.join('?' * len(cols))})", vals)
        return cur.rowcount == 1

    def update_order(self, client_order_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(_ORDER_FIELDS)
        if unknown:
            raise ValueError(f"unknown order fields {sorted(unknown)}")
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx():
            self.con.execute(f"UPDATE orders SET {sets}, updated_ms = ? WHERE client_order_id = ?",
                             [*[_sql(v) for v in fields.values()], _now_ms(), client_order_id])

    def get_order(self, client_order_id: str) -> dict | None:
        row = self.con.execute("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        return dict(row) if row else None

    def order_by_exchange_id(self, symbol: str, order_id: int) -> dict | None:
        row = self.con.execute("SELECT * FROM orders WHERE symbol = ? AND exchange_order_id = ?",
                               (symbol, int(order_id))).fetchone()
        return dict(row) if row else None

    def orders(self, symbol: str | None = None, statuses: Iterable[str] | None = None) -> list[dict]:
        sql, args = "SELECT * FROM orders WHERE 1=1", []
        if symbol:
            sql += " AND symbol = ?"
            args.append(symbol)
        if statuses is not None:
            statuses = list(statuses)
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            args += statuses
        return [dict(r) for r in self.con.execute(sql + " ORDER BY created_ms, rowid", args)]

    def unresolved(self, symbol: str) -> list[dict]:
        """Orders whose outcome is not final (intent, unknown, open at the exchange)."""
        return self.orders(symbol, UNRESOLVED)

    # ------------------------------------------------------------ fills/position
    def position(self, symbol: str) -> Position:
        row = self.con.execute("SELECT * FROM positions WHERE symbol = ?", (symbol,)).fetchone()
        return _position(symbol, dict(row) if row else None)

    def last_trade_id(self, symbol: str) -> int | None:
        row = self.con.execute("SELECT MAX(trade_id) FROM fills WHERE symbol = ?", (symbol,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def has_fill(self, symbol: str, trade_id: int) -> bool:
        return self.con.execute("SELECT 1 FROM fills WHERE symbol = ? AND trade_id = ?",
                                (symbol, int(trade_id))).fetchone() is not None

    def apply_fill(self, fill: Fill, *, base_asset: str, quote_asset: str, min_tradable: Decimal,
                   client_order_id: str | None = None, reason: str | None = None) -> FillResult:
        """Record ``fill`` and update the position, atomically; idempotent per trade id."""
        cid = client_order_id or fill.client_order_id
        with self._tx():
            cur = self.con.execute(
                "INSERT OR IGNORE INTO fills (symbol, trade_id, exchange_order_id, client_order_id, side, price, qty,"
                " commission, commission_asset, time_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (fill.symbol, fill.trade_id, fill.order_id, cid, fill.side, plain(fill.price), plain(fill.qty),
                 plain(fill.commission), fill.commission_asset, fill.time_ms))
            if cur.rowcount != 1:
                return FillResult(False, self.position(fill.symbol))
            row = self.con.execute("SELECT * FROM positions WHERE symbol = ?", (fill.symbol,)).fetchone()
            p = dict(row) if row else {"symbol": fill.symbol}
            closed = _apply(p, fill, base_asset, quote_asset, min_tradable, reason)
            p["updated_ms"] = _now_ms()
            cols = [c for c in p if c != "symbol"]
            self.con.execute(
                f"INSERT INTO positions (symbol, {', '.join(cols)}) VALUES (?, {', '.join('?' * len(cols))}) "
                f"ON CONFLICT(symbol) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}",
                [fill.symbol, *[_sql(p[c]) for c in cols]])
            if closed is not None:
                self.con.execute(
                    "INSERT INTO round_trips (symbol, entry_time_ms, exit_time_ms, qty, entry_price, exit_price, pnl,"
                    " fees, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (fill.symbol, closed["entry_time_ms"], closed["exit_time_ms"], closed["qty"],
                     closed["entry_price"], closed["exit_price"], closed["pnl"], closed["fees"], closed["reason"]))
        return FillResult(True, self.position(fill.symbol), closed)

    def set_levels(self, symbol: str, *, stop: float | None, take_profit: float | None) -> None:
        """Set the open trip's stop-loss and take-profit, and remember that this trip's levels
        were decided (:meth:`levels_placed`), in one transaction."""
        with self._tx():
            self.con.execute("UPDATE positions SET stop = ?, take_profit = ? WHERE symbol = ?",
                             (stop, take_profit, symbol))
            row = self.con.execute("SELECT entry_time_ms FROM positions WHERE symbol = ?", (symbol,)).fetchone()
            self.con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value = excluded.value", (f"levels_trip:{symbol}", json.dumps(row[0] if row else None)))

    def levels_placed(self, symbol: str) -> bool:
        """True when :meth:`set_levels` ran for the open trip (even to clear them). False after a
        crash between booking the entry fill and placing its levels: reconciliation restores them
        from the entry order's stop and take-profit distances (:mod:`S7.reconcile`)."""
        pos = self.position(symbol)
        return pos.is_open and self.get_meta(f"levels_trip:{symbol}") == pos.entry_time_ms

    def clamp_position(self, symbol: str, qty: Decimal) -> Position:
        """Lower the tracked quantity to ``qty`` (the exchange holds less: testnet reset,
        a manual sale); the cost shrinks pro rata. Flat when ``qty`` is 0."""
        pos = self.position(symbol)
        if qty >= pos.qty:
            return pos
        with self._tx():
            share = (qty / pos.qty) if pos.qty > 0 else Decimal(0)
            self.con.execute("UPDATE positions SET qty = ?, cost = ?, updated_ms = ? WHERE symbol = ?",
                             (plain(qty), plain(pos.cost * share), _now_ms(), symbol))
            if qty <= 0:
                self.con.execute("UPDATE positions SET bought_qty='0', bought_quote='0', sold_qty='0', "
                                 "sold_quote='0', trip_pnl='0', trip_fees='0', entry_time_ms=NULL, stop=NULL, "
                                 "take_profit=NULL WHERE symbol = ?", (symbol,))
        return self.position(symbol)

    def round_trips(self, symbol: str | None = None) -> list[dict]:
        sql = "SELECT * FROM round_trips" + (" WHERE symbol = ?" if symbol else "") + " ORDER BY id"
        return [dict(r) for r in self.con.execute(sql, (symbol,) if symbol else ())]

    def fills(self, symbol: str | None = None) -> list[dict]:
        sql = "SELECT * FROM fills" + (" WHERE symbol = ?" if symbol else "") + " ORDER BY time_ms, trade_id"
        return [dict(r) for r in self.con.execute(sql, (symbol,) if symbol else ())]

    # -------------------------------------------------------------------- meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx():
            self.con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value = excluded.value", (key, json.dumps(value, default=str)))


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection,
    one at a time per connection (other connections wait on SQLite's busy timeout)."""

    def __init__(self, con: sqlite3.Connection, lock: threading.RLock):
        self.con, self.lock = con, lock

    def __enter__(self):
        self.lock.acquire()
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.con

    def __exit__(self, exc_type, exc, tb):
        try:
            self.con.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()
        return False


def _sql(v: Any) -> Any:
    if isinstance(v, Decimal):
        return plain(v)
    return v


def _position(symbol: str, row: dict | None) -> Position:
    if not row:
        return Position(symbol)
    bq, bquote = D(row["bought_qty"]), D(row["bought_quote"])
    return Position(symbol=symbol, qty=D(row["qty"]), cost=D(row["cost"]),
                    entry_price=float(bquote / bq) if bq > 0 and D(row["qty"]) > 0 else None,
                    entry_time_ms=row["entry_time_ms"], stop=row["stop"], take_profit=row["take_profit"],
                    dust=D(row["dust"]), realized_pnl=D(row["realized_pnl"]), fees=D(row["fees"]),
                    round_trips=int(row["round_trips"] or 0))


def _apply(p: dict, f: Fill, base: str, quote: str, min_tradable: Decimal, reason: str | None) -> dict | None:
    """Mutate the position row ``p`` with fill ``f``; return the closed round trip, if any."""
    g = lambda k: D(p.get(k) or 0)  # noqa: E731
    qty, cost = g("qty"), g("cost")
    fee_quote = f.commission * f.price if f.commission_asset == base else (
        f.commission if f.commission_asset == quote else Decimal(0))
    p["fees"] = plain(g("fees") + fee_quote)
    p["trip_fees"] = plain(g("trip_fees") + fee_quote)
    if f.side == "BUY":
        if qty <= 0:
            p["entry_time_ms"] = f.time_ms
            p["bought_qty"] = p["bought_quote"] = p["sold_qty"] = p["sold_quote"] = p["trip_pnl"] = "0"
            p["trip_fees"] = plain(fee_quote)
        got = f.qty - (f.commission if f.commission_asset == base else 0)
        p["qty"] = plain(qty + got)
        p["cost"] = plain(cost + f.qty * f.price + (f.commission if f.commission_asset == quote else 0))
        p["bought_qty"] = plain(g("bought_qty") + f.qty)
        p["bought_quote"] = plain(g("bought_quote") + f.qty * f.price)
        return None
    # SELL
    gone = f.qty + (f.commission if f.commission_asset == base else 0)
    gone = min(gone, qty) if qty > 0 else gone
    proceeds = f.qty * f.price - (f.commission if f.commission_asset == quote else 0)
    share = (gone / qty) if qty > 0 else Decimal(1)
    realised = proceeds - cost * share
    left = qty - gone
    p["qty"], p["cost"] = plain(left), plain(cost * (1 - share))
    p["sold_qty"] = plain(g("sold_qty") + f.qty)
    p["sold_quote"] = plain(g("sold_quote") + f.qty * f.price)
    p["trip_pnl"] = plain(g("trip_pnl") + realised)
    p["realized_pnl"] = plain(g("realized_pnl") + realised)
    if left > 0 and left >= min_tradable:
        return None
    # round trip over: what is left is dust, marked at the exit price
    dust_value = left * f.price - D(p["cost"])
    p["trip_pnl"] = plain(D(p["trip_pnl"]) + dust_value)
    p["realized_pnl"] = plain(D(p["realized_pnl"]) + dust_value)
    p["dust"] = plain(g("dust") + max(left, Decimal(0)))
    bq, sq = g("bought_qty"), g("sold_qty")
    closed = {"entry_time_ms": p.get("entry_time_ms"), "exit_time_ms": f.time_ms, "qty": plain(bq),
              "entry_price": float(g("bought_quote") / bq) if bq > 0 else None,
              "exit_price": float(g("sold_quote") / sq) if sq > 0 else None,
              "pnl": float(D(p["trip_pnl"])), "fees": float(g("trip_fees")), "reason": reason}
    p["qty"], p["cost"] = "0", "0"
    p["round_trips"] = int(p.get("round_trips") or 0) + 1
    p["stop"] = p["take_profit"] = None
    return closed


__all__ = ["ExecutorStore", "FillResult", "Position"]
