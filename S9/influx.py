"""The optional InfluxDB sink: closed candles, fills and equity as time series, so Grafana can
chart prices beside the service's metrics (S9/grafana/dashboards/toolkit_prices.json).

Written through InfluxDB's HTTP line-protocol API (``POST /write?db=…&precision=ns``), which
InfluxDB 1.x serves natively and 2.x serves as its 1.x-compatibility API (with
``INFLUX_TOKEN`` sent as ``Authorization: Token …`` and the bucket mapped to the database).

Measurements (tags first, then fields):

- ``candle,symbol=BTCUSDT,interval=1m open=…,high=…,low=…,close=…,volume=…,quote_volume=…,trades=…i``
  at the candle's open time -- from the streamer's SQLite table, closed candles only;
- ``fill,symbol=BTCUSDT,side=BUY,mode=testnet price=…,quantity=…,commission=…,client_id="…"``
  at the fill's time -- the ``event: fill`` lines of S7's order log (``data/orders.jsonl``);
- ``equity,symbol=BTCUSDT equity=…,position=…`` sampled from the S8 service's ``/metrics``
  (``toolkit_equity_quote``, ``toolkit_position_quantity``).

A point is identified by measurement, tags and time, so writing it again overwrites it with
the same values: after a restart the sink simply rewrites its last ``backlog`` candles and the
whole order log (a fill's time carries its line number in the nanoseconds, so two fills in one
millisecond stay two points) -- no cursor to keep, nothing doubled.

>>> candle_line(("BTCUSDT", "1m", 60_000, 119_999, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 5.0, 7.5, 3, 1))
'candle,symbol=BTCUSDT,interval=1m open=1.0,high=2.0,low=0.5,close=1.5,volume=10.0,quote_volume=15.0,trades=3i 60000000000'
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

import pandas as pd

from S1.errors import NetworkError, UserError
from S1.stream_store import ROW_COLUMNS

log = logging.getLogger(__name__)

_ESC_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def _tag(v) -> str:
    return str(v).translate(_ESC_TAG)


def _str_field(v) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _num(v) -> str | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else repr(f)        # NaN is not a line-protocol value


def candle_line(row: tuple) -> str:
    """One closed candle (a row in :data:`S1.stream_store.ROW_COLUMNS` order) as a line."""
    r = dict(zip(ROW_COLUMNS, row))
    fields = [f"{k}={_num(r[k])}" for k in ("open", "high", "low", "close", "volume", "quote_volume")
              if _num(r[k]) is not None]
    fields.append(f"trades={int(r['trades'])}i")
    return (f"candle,symbol={_tag(r['symbol'])},interval={_tag(r['interval'])} {','.join(fields)} "
            f"{int(r['open_time']) * 1_000_000}")


def fill_line(rec: dict, line_no: int) -> str | None:
    """A fill of S7's order log as a line (None for every other event)."""
    if rec.get("event") != "fill" or not rec.get("symbol"):
        return None
    t_ms = rec.get("t_ms")
    t_ns = int(t_ms) * 1_000_000 if isinstance(t_ms, (int, float)) else int(pd.Timestamp(rec["time"]).value)
    t_ns = t_ns - t_ns % 1_000_000 + line_no % 1_000_000
    fields = [f"{k}={_num(rec.get(k))}" for k in ("price", "quantity", "commission") if _num(rec.get(k)) is not None]
    for k in ("client_id", "trade_id", "reason"):
        if rec.get(k) is not None:
            fields.append(f"{k}={_str_field(rec[k])}")
    if not fields:
        return None
    tags = f"fill,symbol={_tag(rec['symbol'])},side={_tag(rec.get('side') or 'NA')},mode={_tag(rec.get('mode') or 'NA')}"
    return f"{tags} {','.join(fields)} {t_ns}"


def equity_lines(metrics_text: str, now_ns: int) -> list[str]:
    """``toolkit_equity_quote`` / ``toolkit_position_quantity`` samples of a ``/metrics`` page as lines."""
    from prometheus_client.parser import text_string_to_metric_families

    per: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for s in fam.samples:
            key = {"toolkit_equity_quote": "equity", "toolkit_position_quantity": "position"}.get(s.name)
            if key and "market" in s.labels and s.value == s.value:
                per.setdefault(s.labels["market"], {})[key] = float(s.value)
    return [f"equity,symbol={_tag(m)} " + ",".join(f"{k}={v!r}" for k, v in sorted(f.items())) + f" {now_ns}"
            for m, f in sorted(per.items())]


class InfluxWriter:
    """Line-protocol writes to one database (``url`` and ``database``: INFLUX_URL / INFLUX_DATABASE)."""

    def __init__(self, url: str | None = None, database: str | None = None, token: str | None = None,
                 *, timeout: float | None = None):
        from S1.settings import get_settings

        s = get_settings()
        self.url = (url or s.influx_url or "").rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise UserError("INFLUX_URL is not set to an http(s) URL",
                            "set INFLUX_URL=http://127.0.0.1:8086 in .env (see S9/README.md), or leave the sink off")
        self.database = database or s.influx_database
        tok = token if token is not None else (s.influx_token.get_secret_value() if s.influx_token else None)
        self.headers = {"Authorization": f"Token {tok}"} if tok else {}
        self.timeout = timeout or s.http_timeout
        import requests

        self._http = requests.Session()
        self.points = 0

    def _post(self, path: str, **kw):
        import requests

        try:
            resp = self._http.post(f"{self.url}{path}", headers=self.headers, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise NetworkError(f"cannot reach InfluxDB at {self.url} ({type(exc).__name__})",
                               "is influxd running? (docker compose --profile influx up)") from None
        if resp.status_code >= 300:
            raise NetworkError(f"InfluxDB {path.split('?')[0]} answered HTTP {resp.status_code}: {resp.text[:200]}",
                               "check INFLUX_DATABASE and INFLUX_TOKEN")
        return resp

    def ensure_database(self) -> None:
        """``CREATE DATABASE`` (idempotent; InfluxDB 2.x without the v1 query API ignores it)."""
        try:
            self._post("/query", data={"q": f'CREATE DATABASE "{self.database}"'})
        except NetworkError as exc:
            if "HTTP" not in exc.problem:
                raise

    def write(self, lines: list[str], *, chunk: int = 5000) -> int:
        for i in range(0, len(lines), chunk):
            body = "\n".join(lines[i:i + chunk]).encode()
            self._post("/write", params={"db": self.database, "precision": "ns"}, data=body)
        self.points += len(lines)
        return len(lines)

    def close(self) -> None:
        self._http.close()


_ROWS = (f"SELECT {', '.join(ROW_COLUMNS)} FROM kline WHERE symbol = ? AND interval = ? AND open_time > ? "
         "AND is_closed = 1 ORDER BY open_time LIMIT 5000")


class InfluxSink:
    """Follows the streamer database, the order log and the service's metrics into InfluxDB."""

    def __init__(self, writer: InfluxWriter, *, db: str | Path | None = None, orders: str | Path | None = None,
                 metrics_url: str | None = None, backlog: int = 1000):
        if db is None and orders is None and metrics_url is None:
            raise UserError("nothing to sink", "pass --db, --orders and/or --metrics-url")
        self.writer, self.backlog = writer, int(backlog)
        self.db = Path(db) if db else None
        self.orders = Path(orders) if orders else None
        self.metrics_url = metrics_url
        self._cursor: dict[tuple[str, str], int] = {}
        self._orders_pos, self._orders_line = 0, 0

    def _candles(self) -> tuple[list[str], dict]:
        """New closed candles as lines, and the cursors to keep once they are written."""
        cursor = dict(self._cursor)
        if self.db is None or not self.db.is_file():
            return [], cursor
        con = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            lines = []
            for market in con.execute("SELECT DISTINCT symbol, interval FROM kline").fetchall():
                if market not in cursor:
                    row = con.execute("SELECT open_time FROM kline WHERE symbol=? AND interval=? AND is_closed=1 "
                                      "ORDER BY open_time DESC LIMIT 1 OFFSET ?", (*market, self.backlog)).fetchone()
                    cursor[market] = int(row[0]) if row else -1
                rows = con.execute(_ROWS, (*market, cursor[market])).fetchall()
                lines += [candle_line(r) for r in rows]
                if rows:
                    cursor[market] = int(rows[-1][2])
            return lines, cursor
        finally:
            con.close()

    def _fills(self) -> tuple[list[str], tuple[int, int]]:
        """New fills of the order log as lines, and the (byte offset, line number) to keep."""
        if self.orders is None or not self.orders.is_file():
            return [], (self._orders_pos, self._orders_line)
        with open(self.orders, "rb") as fh:
            fh.seek(self._orders_pos)
            data = fh.read()
        end = data.rfind(b"\n") + 1          # a line being appended waits for the next round
        lines, line_no = [], self._orders_line
        for raw in data[:end].splitlines():
            line_no += 1
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            line = fill_line(rec, line_no) if isinstance(rec, dict) else None
            if line:
                lines.append(line)
        return lines, (self._orders_pos + end, line_no)

    def _equity(self) -> list[str]:
        if not self.metrics_url:
            return []
        import requests

        try:
            text = requests.get(self.metrics_url, timeout=self.writer.timeout).text
        except requests.RequestException:
            log.warning("sink: cannot read %s (is the service up?)", self.metrics_url)
            return []
        return equity_lines(text, time.time_ns())

    def run_once(self) -> int:
        """One round: write whatever is new; returns the points written."""
        candles, cursor = self._candles()
        fills, (pos, line_no) = self._fills()
        lines = candles + fills + self._equity()
        if lines:
            self.writer.write(lines)            # raises NetworkError: the cursors stay, the next round retries
        self._cursor, self._orders_pos, self._orders_line = cursor, pos, line_no
        return len(lines)

    def run(self, stop: threading.Event, *, every: float = 1.0) -> None:
        failures = 0
        while not stop.is_set():
            try:
                self.run_once()
                failures = 0
                stop.wait(every)
            except NetworkError as exc:          # the cursors did not move: the next round retries
                failures += 1
                wait = min(60.0, every * 2 ** min(failures, 6))
                log.warning("sink: %s (retrying in %.0fs)", exc.problem, wait)
                stop.wait(wait)


__all__ = ["InfluxSink", "InfluxWriter", "candle_line", "equity_lines", "fill_line"]
