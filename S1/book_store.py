"""Where order books and tickers land (``python S1/streamer.py --streams depth,bookTicker,ticker``):
SQLite tables (:class:`BookStore`) or Parquet / Feather files rolled by hour (:class:`BookFiles`).

Tables (times in ms since the epoch, UTC; prices and quantities as the exchange's exact
decimal text, ``CAST(price AS REAL)`` for numbers)::

    book        (symbol, update_id, event_time, recv_time, side 'bid'|'ask', level 0=best, price, qty)
                PRIMARY KEY (symbol, update_id, side, level)   -- the top-N book at update id u
    book_ticker (symbol, update_id, recv_time, bid_price, bid_qty, ask_price, ask_qty)
    ticker      (symbol, event_time, last, open, high, low, volume, quote_volume, change_pct,
                 bid, ask, trades)                               -- REAL columns

Files: ``<dir>/<table>/<YYYY-MM-DD>/<HH>.parquet`` (or ``.feather``) with the same columns,
one per UTC hour of receipt; the hour being written is ``<HH>.parquet.partial`` until it
rolls (or the streamer stops), so a finished name is always a complete file.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as d:
...     st = BookStore(pathlib.Path(d) / "b.db")
...     st.write(book=[("BTCUSDT", 7, 1, 2, "bid", 0, "1.5", "2")])
...     read_books(st.path, "BTCUSDT")[7]
(1, [('1.5', '2')], [])
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from S1.errors import UserError
from S1.stream_store import open_writable

BOOK_COLUMNS = ("symbol", "update_id", "event_time", "recv_time", "side", "level", "price", "qty")
BBO_COLUMNS = ("symbol", "update_id", "recv_time", "bid_price", "bid_qty", "ask_price", "ask_qty")
TICKER_COLUMNS = ("symbol", "event_time", "last", "open", "high", "low", "volume", "quote_volume",
                  "change_pct", "bid", "ask", "trades")
TABLES = {"book": BOOK_COLUMNS, "book_ticker": BBO_COLUMNS, "ticker": TICKER_COLUMNS}

BOOK_SCHEMA = """
CREATE TABLE IF NOT EXISTS book (
    symbol      TEXT    NOT NULL,
    update_id   INTEGER NOT NULL,
    event_time  INTEGER,
    recv_time   INTEGER NOT NULL,
    side        TEXT    NOT NULL CHECK (side IN ('bid', 'ask')),
    level       INTEGER NOT NULL,
    price       TEXT    NOT NULL,
    qty         TEXT    NOT NULL,
    PRIMARY KEY (symbol, update_id, side, level)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS book_ticker (
    symbol      TEXT    NOT NULL,
    update_id   INTEGER NOT NULL,
    recv_time   INTEGER NOT NULL,
    bid_price   TEXT, bid_qty TEXT, ask_price TEXT, ask_qty TEXT,
    PRIMARY KEY (symbol, update_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ticker (
    symbol      TEXT    NOT NULL,
    event_time  INTEGER NOT NULL,
    last REAL, open REAL, high REAL, low REAL, volume REAL, quote_volume REAL, change_pct REAL,
    bid REAL, ask REAL, trades INTEGER,
    PRIMARY KEY (symbol, event_time)
) WITHOUT ROWID;
"""


def _insert(table: str) -> str:
    cols = TABLES[table]
    return f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


class BookStore:
    """SQLite destination (WAL; readers never block it). ``write`` commits one batch."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0, simulated: bool | None = None):
        self.path = Path(path)
        self.con = open_writable(self.path, busy_timeout_s, schema=BOOK_SCHEMA, check_kline=False,
                                 simulated=simulated)
        self.rows_written = 0

    def write(self, *, book: Sequence[tuple] = (), book_ticker: Sequence[tuple] = (),
              ticker: Sequence[tuple] = ()) -> None:
        if not (book or book_ticker or ticker):
            return
        with self.con:
            for table, rows in (("book", book), ("book_ticker", book_ticker), ("ticker", ticker)):
                if rows:
                    self.con.executemany(_insert(table), rows)
        self.rows_written += len(book) + len(book_ticker) + len(ticker)

    def close(self) -> None:
        if self.con is None:
            return
        try:
            self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:  # a reader holds a snapshot: the next open checkpoints
            pass
        self.con.close()
        self.con = None  # type: ignore[assignment]


class BookFiles:
    """Parquet or Feather files rolled by UTC hour (see the module docstring)."""

    def __init__(self, folder: str | Path, *, fmt: str = "parquet", clock=time.time):
        if fmt not in ("parquet", "feather"):
            raise UserError(f"unknown --book-format {fmt!r}", "use sqlite, parquet or feather")
        import pyarrow as pa

        self.pa = pa
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"--out {self.folder} is a file", "pass a folder for --book-format parquet/feather")
        self.fmt = fmt
        self.clock = clock
        self.path = self.folder
        self.rows_written = 0
        self.files: list[Path] = []
        self._open: dict[str, tuple[str, object, Path]] = {}  # table -> (hour, writer, partial path)
        text, i64, f64 = pa.string(), pa.int64(), pa.float64()
        types = {"symbol": text, "update_id": i64, "event_time": i64, "recv_time": i64, "side": text,
                 "level": i64, "price": text, "qty": text, "bid_price": text, "bid_qty": text,
                 "ask_price": text, "ask_qty": text, "trades": i64}
        self.schemas = {t: pa.schema([(c, types.get(c, f64)) for c in cols]) for t, cols in TABLES.items()}

    def _writer(self, table: str):
        hour = time.strftime("%Y-%m-%d/%H", time.gmtime(self.clock()))
        cur = self._open.get(table)
        if cur is not None and cur[0] == hour:
            return cur[1]
        if cur is not None:
            self._finish(table)
        final = self.folder / table / f"{hour}.{self.fmt}"
        partial = final.with_name(final.name + ".partial")
        if final.exists():  # a restart within the hour: a new part, never overwrite a finished file
            n = 1
            while (alt := final.with_name(f"{final.stem}-{n}.{self.fmt}")).exists():
                n += 1
            partial = alt.with_name(alt.name + ".partial")
        try:
            partial.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {partial.parent} ({exc.strerror or exc})",
                            "pass --out a folder you can write to") from None
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            w = pq.ParquetWriter(partial, self.schemas[table], compression="zstd")
        else:
            from pyarrow import ipc

            w = ipc.new_file(str(partial), self.schemas[table])
        self._open[table] = (hour, w, partial)
        return w

    def _finish(self, table: str) -> None:
        _, w, partial = self._open.pop(table)
        w.close()
        final = partial.with_name(partial.name.removesuffix(".partial"))
        partial.replace(final)
        self.files.append(final)

    def write(self, *, book: Sequence[tuple] = (), book_ticker: Sequence[tuple] = (),
              ticker: Sequence[tuple] = ()) -> None:
        for table, rows in (("book", book), ("book_ticker", book_ticker), ("ticker", ticker)):
            if not rows:
                continue
            cols = list(zip(*rows))
            batch = self.pa.record_batch([self.pa.array(c, type=f.type) for c, f in zip(cols, self.schemas[table])],
                                         schema=self.schemas[table])
            self._writer(table).write_batch(batch)
            self.rows_written += len(rows)

    def close(self) -> None:
        for table in list(self._open):
            self._finish(table)


# ------------------------------------------------------------------------- readers
def read_books(path: str | Path, symbol: str, *, side_depth: int | None = None
               ) -> dict[int, tuple[int, list[tuple[str, str]], list[tuple[str, str]]]]:
    """Recorded books of ``symbol`` from a SQLite file: ``{update_id: (event_time, bids, asks)}``,
    levels best first as ``(price, qty)`` text."""
    con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        sql = "SELECT update_id, event_time, side, price, qty FROM book WHERE symbol=?"
        args: list = [symbol]
        if side_depth is not None:
            sql += " AND level < ?"
            args.append(side_depth)
        out: dict[int, tuple[int, list, list]] = {}
        for uid, ev, side, p, q in con.execute(sql + " ORDER BY update_id, side, level", args):
            rec = out.setdefault(uid, (ev, [], []))
            (rec[1] if side == "bid" else rec[2]).append((p, q))
        return out
    finally:
        con.close()
