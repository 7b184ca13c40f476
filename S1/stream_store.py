"""The streamer's SQLite store: one ``kline`` table, upserts, WAL, batched commits.

Written by :mod:`S1.stream_client` (``python S1/streamer.py``) and read while it
writes by S2, S7 and the Streamlit previews through :func:`read_klines`.

Table ``kline`` (times in ms since the epoch, UTC)::

    symbol TEXT, interval TEXT, open_time INTEGER, close_time INTEGER,
    open high low close volume quote_volume taker_buy_base taker_buy_quote REAL,
    trades INTEGER, is_closed INTEGER (0/1), updated_at INTEGER (ms UTC of the write)
    PRIMARY KEY (symbol, interval, open_time)

(``quote_volume`` and the taker volumes are NULL where the exchange does not report
them -- some CCXT exchanges -- and read back as NaN, as in the Parquet files.)

- **upsert**: the candle in progress is one row (``is_closed = 0``) overwritten by
  every update until the closed candle lands (``is_closed = 1``); a late
  in-progress update never downgrades a closed row;
- **WAL** journal with ``synchronous=NORMAL``: readers never block the writer nor
  the other way round, and a killed process leaves a consistent database (the
  last transactions may be lost on power failure, never corrupted);
- **batched commits**: :meth:`KlineStore.write` applies a whole batch (rows and
  watermarks) in one transaction.

A second small table, ``kline_watermark (symbol, interval, complete_until)``,
records up to which open time the table is *known complete* (every closed
candle the exchange has before it is present). It is committed in the same
transaction as the rows that justify it, so a restart backfills exactly from
there.

A third, ``toolkit_meta (key, value)``, labels the database as the Parquet files'
toolkit metadata does: ``simulated`` is ``1`` when a run wrote rows from the
simulated market (offline mode, ``SIMULATED_MARKET=1``) -- for good: a database that
ever held simulated rows stays labelled -- and ``0`` when only real runs wrote it
(:func:`label_database`, read by :func:`database_simulated`; the order-book
databases carry the same table).

>>> import tempfile, os
>>> db = os.path.join(tempfile.mkdtemp(), "k.db")
>>> store = KlineStore(db)
>>> row = ("BTCUSDT", "1m", 0, 59_999, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 5.0, 7.5, 3, 1)
>>> store.write([row], {("BTCUSDT", "1m"): 60_000})
>>> store.close()
>>> read_klines(db, "btcusdt", "1m")[["open", "close", "trades"]].to_dict("records")
[{'open': 1.0, 'close': 1.5, 'trades': 3}]
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from S1.datasets import candles_from_arrays, empty_candles, normalize_symbol, validate_candles
from S1.errors import UserError
from S1.intervals import check_interval

#: Columns of the ``kline`` table, in table order.
KLINE_COLUMNS = ("symbol", "interval", "open_time", "close_time", "open", "high", "low", "close",
                 "volume", "quote_volume", "taker_buy_base", "taker_buy_quote", "trades",
                 "is_closed", "updated_at")
#: A row as the writer passes it: every column but ``updated_at`` (set at commit).
ROW_COLUMNS = KLINE_COLUMNS[:-1]
#: the table that labels a streamer database (``key``, ``value``): ``simulated`` 1 / 0
META_TABLE = "toolkit_meta"
META_SCHEMA = f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL);"

SCHEMA = """
CREATE TABLE IF NOT EXISTS kline (
    symbol          TEXT    NOT NULL,
    interval        TEXT    NOT NULL,
    open_time       INTEGER NOT NULL,
    close_time      INTEGER NOT NULL,
    open            REAL    NOT NULL,
    high            REAL    NOT NULL,
    low             REAL    NOT NULL,
    close           REAL    NOT NULL,
    volume          REAL    NOT NULL,
    quote_volume    REAL,
    taker_buy_base  REAL,
    taker_buy_quote REAL,
    trades          INTEGER NOT NULL,
    is_closed       INTEGER NOT NULL CHECK (is_closed IN (0, 1)),
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (symbol, interval, open_time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kline_watermark (
    symbol          TEXT    NOT NULL,
    interval        TEXT    NOT NULL,
    complete_until  INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (symbol, interval)
) WITHOUT ROWID;
"""

_UPSERT = (
    f"INSERT INTO kline ({', '.join(KLINE_COLUMNS)}) VALUES ({', '.join('?' * len(KLINE_COLUMNS))}) "
    "ON CONFLICT (symbol, interval, open_time) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in KLINE_COLUMNS[3:])
    + " WHERE excluded.is_closed >= kline.is_closed"
)
_WATERMARK = ("INSERT INTO kline_watermark (symbol, interval, complete_until, updated_at) VALUES (?, ?, ?, ?) "
              "ON CONFLICT (symbol, interval) DO UPDATE SET complete_until = excluded.complete_until, "
              "updated_at = excluded.updated_at WHERE excluded.complete_until > kline_watermark.complete_until")

#: Columns read back, in the Binance kline row layout of :func:`S1.datasets.candles_from_arrays`.
_READ_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                 "COALESCE(trades, 0)", "taker_buy_base", "taker_buy_quote", "is_closed")


def _now_ms() -> int:
    return int(time.time() * 1000)


class KlineStore:
    """A writable connection to the streamer database (one writer per file).

    Create it in the thread that will use it (the streamer uses one dedicated
    writer thread). Bad paths raise :class:`UserError` with a fix.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0, checkpoint_every_s: float | None = 1.0,
                 simulated: bool | None = None):
        self.path = Path(path)
        self.con = open_writable(self.path, busy_timeout_s, simulated=simulated)
        self.rows_written = 0
        self.commits = 0
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if checkpoint_every_s:
            # the WAL is copied into the database file (the only fsync in WAL + synchronous=NORMAL)
            # by a thread of its own, so a slow disk never stalls a commit
            self.con.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(target=self._checkpoints, args=(checkpoint_every_s,),
                                                  name="kline-checkpoint", daemon=True)
            self._checkpointer.start()

    def _checkpoints(self, every: float) -> None:
        con = sqlite3.connect(self.path, timeout=1.0)
        try:
            while not self._stop_checkpoints.wait(every):
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:  # busy: the next round catches up
                    pass
        finally:
            con.close()

    # ------------------------------------------------------------------ writes
    def write(self, rows: Sequence[tuple], watermarks: dict[tuple[str, str], int] | None = None) -> None:
        """Upsert ``rows`` (tuples in :data:`ROW_COLUMNS` order) and advance the
        watermarks, all in one transaction."""
        if not rows and not watermarks:
            return
        now = _now_ms()
        with self.con:  # BEGIN ... COMMIT (ROLLBACK on error)
            if rows:
                self.con.executemany(_UPSERT, [(*r, now) for r in rows])
            if watermarks:
                self.con.executemany(_WATERMARK, [(s, i, int(w), now) for (s, i), w in watermarks.items()])
        self.rows_written += len(rows)
        self.commits += 1

    # ------------------------------------------------------------------- reads
    def watermark(self, symbol: str, interval: str) -> int | None:
        """Open time up to which the table is known complete (None: never recorded)."""
        row = self.con.execute("SELECT complete_until FROM kline_watermark WHERE symbol=? AND interval=?",
                               (symbol, interval)).fetchone()
        return None if row is None else int(row[0])

    def last_closed_open_ms(self, symbol: str, interval: str) -> int | None:
        row = self.con.execute("SELECT MAX(open_time) FROM kline WHERE symbol=? AND interval=? AND is_closed=1",
                               (symbol, interval)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def count(self, symbol: str | None = None, *, closed: bool | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM kline WHERE 1=1", []
        if symbol is not None:
            sql += " AND symbol=?"
            args.append(symbol)
        if closed is not None:
            sql += " AND is_closed=?"
            args.append(int(closed))
        return int(self.con.execute(sql, args).fetchone()[0])

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close (idempotent)."""
        if self.con is None:
            return
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            self._checkpointer.join(10)
        try:
            self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:  # a reader holding a snapshot: the next open checkpoints
            pass
        self.con.close()
        self.con = None  # type: ignore[assignment]


def open_writable(path: Path, busy_timeout_s: float, *, schema: str = SCHEMA,
                   check_kline: bool = True, simulated: bool | None = None) -> sqlite3.Connection:
    """A WAL connection to a streamer database with ``schema`` created (also used by
    :mod:`S1.book_store`); bad paths and foreign files raise :class:`UserError`.
    ``simulated`` (not None: a run about to write) labels it (:func:`label_database`)."""
    fix = "pass --db a file path in a folder you can write to, e.g. --db data/btcusdt_1m_realtime.db"
    if path.is_dir():
        raise UserError(f"--db {path} is a folder", fix)
    if path.is_file() and path.stat().st_size > 0:
        # SQLite would silently turn a short non-database file into a database: refuse instead
        with open(path, "rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                raise UserError(f"--db {path} exists and is not a SQLite database", fix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder of --db {path} ({exc.strerror or exc})", fix) from None
    try:
        con = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level="DEFERRED", check_same_thread=False)
    except sqlite3.Error as exc:
        raise UserError(f"cannot open the database {path} ({exc})", fix) from None
    try:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal mode {mode!r} instead of WAL (network file system?)")
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(schema)
        cols = tuple(r[1] for r in con.execute("PRAGMA table_info(kline)"))
        if check_kline and cols != KLINE_COLUMNS:
            raise UserError(f"{path} has a 'kline' table with other columns ({', '.join(cols)})",
                            "pass --db a new file; this one was not written by S1/streamer.py")
        if simulated is not None:
            label_database(con, simulated=simulated)
    except sqlite3.DatabaseError as exc:
        con.close()
        raise UserError(f"cannot write the database {path} ({exc})", fix) from None
    except UserError:
        con.close()
        raise
    return con


#: tables that describe a streamer database rather than hold its data
_BOOKKEEPING_TABLES = ("kline_watermark", META_TABLE)


def remove_if_empty(path: str | Path) -> bool:
    """Delete the streamer database ``path`` with its ``-wal`` / ``-shm`` / ``-journal`` files
    when none of its data tables holds a row -- what a run that failed at its start leaves
    behind. True when it was deleted. Callers pass only a file their own run created: a
    database that was there before is never deleted, however empty.

    >>> import tempfile, os
    >>> db = os.path.join(tempfile.mkdtemp(), "k.db")
    >>> KlineStore(db).close()
    >>> remove_if_empty(db), os.path.exists(db)
    (True, False)
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            data = [n for n in names if n not in _BOOKKEEPING_TABLES and not n.startswith("sqlite_")]
            if any(con.execute(f'SELECT 1 FROM "{n}" LIMIT 1').fetchone() for n in data):
                return False
        finally:
            con.close()
    except sqlite3.Error:      # not a database we can read: leave it alone
        return False
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return True


# ------------------------------------------------------------------------- label
def label_database(con: sqlite3.Connection, *, simulated: bool) -> None:
    """Record in ``toolkit_meta`` whether this run's rows are simulated: ``1`` overrides
    anything (it never goes back), a real run writes ``0`` only where nothing is recorded."""
    with con:
        con.execute(META_SCHEMA)
        if simulated:
            con.execute(f"INSERT INTO {META_TABLE}(key, value) VALUES ('simulated', '1') "
                        "ON CONFLICT(key) DO UPDATE SET value = '1'")
        else:
            con.execute(f"INSERT OR IGNORE INTO {META_TABLE}(key, value) VALUES ('simulated', '0')")


def database_simulated(path: str | Path) -> bool | None:
    """The ``simulated`` label of a streamer database: True / False, or None when it records
    none (written before the label existed, or not a streamer database).

    >>> import tempfile, os
    >>> db = os.path.join(tempfile.mkdtemp(), "k.db")
    >>> KlineStore(db, simulated=True).close()
    >>> database_simulated(db)
    True
    """
    try:
        con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'simulated'").fetchone()
    except sqlite3.Error:      # no label table
        return None
    finally:
        con.close()
    return None if row is None else str(row[0]).strip() == "1"


# ------------------------------------------------------------------------- reader
def read_klines(db_path: str | Path, symbol: str, interval: str, *, closed_only: bool = True,
                last_n: int | None = None) -> pd.DataFrame:
    """Candles of one market from the streamer's database as a candle frame
    (index ``open_time`` UTC, the S1 candle columns), oldest first.

    Opens the file read-only, so it runs while the streamer writes. With
    ``closed_only=False`` the candle in progress is included and an ``is_closed``
    (bool) column says which rows are final. ``last_n`` keeps the newest rows.

    >>> read_klines("data/btcusdt_1m_realtime.db", "BTCUSDT", "1m", last_n=500)   # doctest: +SKIP
    """
    db = Path(db_path)
    symbol = normalize_symbol(symbol)
    check_interval(interval)
    if last_n is not None and (isinstance(last_n, bool) or not isinstance(last_n, (int, np.integer))
                               or last_n < 1):
        raise UserError(f"last_n must be a positive whole number of rows, got {last_n!r}", "e.g. last_n=500")
    if not db.is_file():
        raise UserError(f"{db} does not exist",
                        f"start the streamer first: python S1/streamer.py --symbol {symbol} --interval {interval}")
    sql = f"SELECT {', '.join(_READ_COLUMNS)} FROM kline WHERE symbol=? AND interval=?"
    if closed_only:
        sql += " AND is_closed=1"
    sql += " ORDER BY open_time DESC" + (" LIMIT ?" if last_n is not None else "")
    args: list = [symbol, interval] + ([int(last_n)] if last_n is not None else [])
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute(sql, args).fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{db}: cannot read the kline table ({exc})",
                        "point at the SQLite file written by S1/streamer.py") from None
    if not rows:
        out = empty_candles()
        if not closed_only:
            out["is_closed"] = pd.Series(dtype=bool)
        return out
    arr = np.array(rows[::-1], dtype=np.float64)
    out = candles_from_arrays(arr[:, :11])
    if not closed_only:
        out["is_closed"] = arr[:, 11] == 1
    return validate_candles(out, what=str(db))


def rows_from_klines(symbol: str, interval: str, klines: np.ndarray, *, closed: bool = True) -> list[tuple]:
    """``(n, 11)`` Binance kline rows (as :class:`S1.rest_client.BinanceRest` returns)
    -> store rows."""
    c = int(closed)
    return [(symbol, interval, int(r[0]), int(r[6]), float(r[1]), float(r[2]), float(r[3]), float(r[4]),
             float(r[5]), float(r[7]), float(r[9]), float(r[10]), int(r[8]), c) for r in klines]

