"""The Redis bus: closed candles from one streamer host to executors on other hosts.

A **publisher** follows the streamer's SQLite ``kline`` table (written by
``python S1/streamer.py``; schema in :mod:`S1.stream_store`) the way S7's
``--source db`` does -- ``PRAGMA data_version`` says another connection committed,
then the rows after the last one seen are read by primary key -- and appends each
newly closed candle to a **Redis stream** (``XADD``). A **subscriber** on another
host reads the stream with its own **consumer group** (``XREADGROUP``) and writes
the candles into a local SQLite file with the same ``kline`` schema, which an
unmodified S7 executor reads with ``--source db --db <that file>``.

Why streams and not pub/sub: a pub/sub message reaches only the subscribers
connected at that instant, so a restarted executor host would silently miss the
candles that closed while it was down. A stream keeps the entries (trimmed to
``maxlen``), and a consumer group remembers per host what was delivered and
what was acknowledged, so a restarted consumer resumes where it stopped.

Exactly-once effect (each candle lands once in each subscriber's table and log):

- the publisher appends a batch and advances its per-market cursor (a Redis hash
  beside the stream) in one ``MULTI``/``EXEC`` transaction, and reloads the cursor
  after every reconnect, so its own restarts neither skip nor repeat candles;
- the subscriber commits the candle rows, its applied log (``bus_applied``) and the
  last applied stream id (``bus_cursor``) in **one SQLite transaction**, and only
  then ``XACK``\\ s. After a crash between commit and ack the entries come back as
  pending and are skipped (their id is not above the cursor); a candle republished
  under a new id (the publisher lost its cursor with a Redis restart without
  persistence) is skipped because the table already holds it closed.
- Redis itself must persist to survive its own restarts without loss: run it with
  ``appendonly yes`` and ``appendfsync always`` (compose.yaml does). Without
  persistence, a Redis restart loses the stream and the cursors: the publisher then
  republishes its last ``backlog`` candles per market and the subscribers' groups
  are recreated -- nothing is applied twice, but candles older than the backlog that
  a subscriber had not yet read are lost.

Small shared state (the kill-switch state, the service's ``/status``) goes
through :func:`put_state` / :func:`get_state`: a Redis hash per name plus a
pub/sub notice on ``toolkit:state`` (latest value wins; nothing to replay).

>>> stream_id_key("1700000000000-3") > stream_id_key("1699999999999-12")
True
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from S1.errors import UserError
from S1.stream_store import KLINE_COLUMNS, ROW_COLUMNS, KlineStore

log = logging.getLogger(__name__)

DEFAULT_STREAM = "toolkit:klines"
STATE_CHANNEL = "toolkit:state"
_FLOATS = frozenset({"open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base", "taker_buy_quote"})
_INTS = frozenset({"open_time", "close_time", "trades", "is_closed"})


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A Redis stream id (``"<ms>-<seq>"``) as a sortable tuple."""
    ms, _, seq = str(stream_id).partition("-")
    return int(ms), int(seq or 0)


def connect(url: str | None = None):
    """A ``redis.Redis`` client for ``url`` (default: ``BUS_URL`` from the settings)."""
    import redis

    if url is None:
        from S1.settings import get_settings

        secret = get_settings().bus_url
        url = secret.get_secret_value() if secret is not None else None
    if not url:
        raise UserError("BUS_URL is not set", "set BUS_URL=redis://host:6379/0 in .env (see S9/README.md)")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise UserError(f"BUS_URL must be a redis:// URL, got {url.split('://')[0]}://…",
                        "e.g. BUS_URL=redis://127.0.0.1:6379/0")
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                                health_check_interval=10)


def _encode(row: tuple) -> dict[str, str]:
    return {c: ("" if v is None else repr(v) if isinstance(v, float) else str(v)) for c, v in zip(ROW_COLUMNS, row)}


def _decode(fields: dict[str, str]) -> tuple:
    out = []
    for c in ROW_COLUMNS:
        v = fields.get(c, "")
        if c in _FLOATS:
            out.append(float(v) if v != "" else None)
        elif c in _INTS:
            out.append(int(v))
        else:
            out.append(v)
    return tuple(out)


def _markets(spec: Iterable[str] | None) -> frozenset[tuple[str, str]] | None:
    if not spec:
        return None
    out = set()
    for item in spec:
        sym, sep, iv = item.partition(":")
        if not sep or not sym or not iv:
            raise UserError(f"market {item!r} is not SYMBOL:INTERVAL", "e.g. --markets BTCUSDT:1m,ETHUSDC:1m")
        out.add((sym.upper(), iv))
    return frozenset(out)


@dataclass(frozen=True)
class BusConfig:
    """Where the candles go: ``url`` (None: ``BUS_URL``), the stream key and its length bound."""

    url: str | None = None
    stream: str = DEFAULT_STREAM
    maxlen: int = 100_000

    def __post_init__(self):
        if not self.stream or any(ch.isspace() for ch in self.stream):
            raise UserError(f"stream name {self.stream!r} is empty or has spaces", "e.g. --stream toolkit:klines")
        if not 1_000 <= int(self.maxlen) <= 100_000_000:
            raise UserError(f"maxlen must be between 1,000 and 100,000,000 entries, got {self.maxlen}",
                            "e.g. --maxlen 100000 (about 70 days of 1m candles of one market)")


# --------------------------------------------------------------------------- publisher
_PUB_ROWS = (f"SELECT {', '.join(ROW_COLUMNS)} FROM kline WHERE symbol = ? AND interval = ? AND open_time > ? "
             "ORDER BY open_time LIMIT 5000")
_PUB_LAST = ("SELECT open_time FROM kline WHERE symbol = ? AND interval = ? AND is_closed = 1 "
             "ORDER BY open_time DESC LIMIT 1 OFFSET ?")


class KlinePublisher:
    """Follows a streamer database and appends each newly closed candle to the stream.

    ``backlog``: with no cursor in Redis yet, start this many closed candles back per
    market (0: only candles that close from now on).
    """

    def __init__(self, db_path: str | Path, *, config: BusConfig = BusConfig(), markets: Iterable[str] | None = None,
                 backlog: int = 1000, poll: float = 0.05):
        self.db = Path(db_path)
        if not self.db.is_file():
            raise UserError(f"the streamer database {self.db} does not exist",
                            "start the streamer first: python S1/streamer.py --symbol BTCUSDT --interval 1m")
        if int(backlog) < 0:
            raise UserError(f"backlog must be 0 or more candles, got {backlog}", "e.g. --backlog 1000")
        self.config, self.backlog, self.poll = config, int(backlog), float(poll)
        self.only = _markets(markets)
        self.cursor_key = f"{config.stream}:cursor"
        self.published = 0
        self._r = None
        self._cursor: dict[tuple[str, str], int] | None = None
        self._con = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True, timeout=5,
                                    isolation_level=None, check_same_thread=False)

    def _redis(self):
        if self._r is None:
            self._r = connect(self.config.url)
        return self._r

    def _load_cursor(self) -> dict[tuple[str, str], int]:
        raw = self._redis().hgetall(self.cursor_key)
        return {tuple(k.split("|", 1)): int(v) for k, v in raw.items()}  # type: ignore[misc]

    def _market_list(self) -> list[tuple[str, str]]:
        rows = self._con.execute("SELECT DISTINCT symbol, interval FROM kline").fetchall()
        return [(s, i) for s, i in rows if self.only is None or (s, i) in self.only]

    def _start_after(self, symbol: str, interval: str) -> int:
        row = self._con.execute(_PUB_LAST, (symbol, interval, self.backlog)).fetchone()
        return int(row[0]) if row is not None else -1

    def publish_new(self) -> int:
        """One pass: append every closed candle after each market's cursor. Returns how many."""
        if self._cursor is None:
            self._cursor = self._load_cursor()
        total = 0
        for market in self._market_list():
            after = self._cursor.get(market)
            if after is None:       # first sight of this market: start `backlog` candles back, then follow
                after = self._cursor[market] = self._start_after(*market)
            while True:
                rows = self._con.execute(_PUB_ROWS, (*market, after)).fetchall()
                closed = []
                for r in rows:
                    if r[13] != 1:
                        break              # the candle in progress: later ones wait for it (as S7 reads)
                    closed.append(r)
                if not closed:
                    break
                pipe = self._redis().pipeline(transaction=True)
                for r in closed:
                    pipe.xadd(self.config.stream, _encode(r), maxlen=self.config.maxlen, approximate=True)
                after = int(closed[-1][2])
                pipe.hset(self.cursor_key, f"{market[0]}|{market[1]}", after)
                pipe.execute()
                self._cursor[market] = after
                total += len(closed)
                if len(closed) < len(rows) or len(rows) < 5000:
                    break
        self.published += total
        return total

    def run(self, stop: threading.Event, *, max_backoff: float = 10.0) -> None:
        """Publish until ``stop`` is set, riding out Redis restarts (reconnect with backoff)."""
        import redis

        version, failures = None, 0
        while not stop.is_set():
            try:
                v = self._con.execute("PRAGMA data_version").fetchone()[0]
                if v != version or failures:
                    self.publish_new()
                    version = v
                failures = 0
                stop.wait(self.poll)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                failures += 1
                self._cursor = None        # reload it: the last EXEC may have landed before the error
                wait = min(max_backoff, 0.2 * 2 ** min(failures, 6))
                log.warning("bus: Redis unreachable (%s); retrying in %.1fs", type(exc).__name__, wait)
                stop.wait(wait)

    def close(self) -> None:
        self._con.close()
        if self._r is not None:
            self._r.close()


# -------------------------------------------------------------------------- subscriber
_SUB_SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_cursor (stream TEXT PRIMARY KEY, last_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_applied (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, stream_id TEXT NOT NULL, symbol TEXT NOT NULL,
    interval TEXT NOT NULL, open_time INTEGER NOT NULL, applied_at INTEGER NOT NULL);
"""
_SUB_UPSERT = (
    f"INSERT INTO kline ({', '.join(KLINE_COLUMNS)}) VALUES ({', '.join('?' * len(KLINE_COLUMNS))}) "
    "ON CONFLICT (symbol, interval, open_time) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in KLINE_COLUMNS[3:])
    + " WHERE excluded.is_closed >= kline.is_closed"
)


class KlineSubscriber:
    """Reads the stream with consumer group ``group`` into the SQLite file ``db_path``.

    One group per executor host (each group sees every candle); ``consumer`` names
    this process inside its group and must stay the same across restarts (default:
    the host name) so its pending entries come back to it.
    """

    def __init__(self, db_path: str | Path, *, group: str, consumer: str | None = None,
                 config: BusConfig = BusConfig(), markets: Iterable[str] | None = None,
                 block_ms: int = 1000, batch: int = 500):
        if not group or any(ch.isspace() for ch in group):
            raise UserError(f"group {group!r} is empty or has spaces", "one group per executor host, e.g. --group host-b")
        self.config, self.group = config, group
        self.consumer = consumer or socket.gethostname()
        self.only = _markets(markets)
        self.block_ms, self.batch = int(block_ms), int(batch)
        self.store = KlineStore(db_path)
        self.con = self.store.con
        with self.con:
            self.con.executescript(_SUB_SCHEMA)
        self.applied = 0
        self._r = None
        self._group_ok = False

    def _redis(self):
        if self._r is None:
            self._r = connect(self.config.url)
        return self._r

    def _ensure_group(self) -> None:
        import redis

        self._group_ok = True
        try:
            self._redis().xgroup_create(self.config.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def last_id(self) -> str | None:
        row = self.con.execute("SELECT last_id FROM bus_cursor WHERE stream = ?", (self.config.stream,)).fetchone()
        return None if row is None else row[0]

    def apply(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        """Apply stream entries in one SQLite transaction; return how many candles were new."""
        last = self.last_id()
        last_key = stream_id_key(last) if last else (-1, -1)
        now = int(time.time() * 1000)
        new = 0
        top = last
        with self.con:
            for sid, fields in entries:
                if stream_id_key(sid) <= last_key:
                    continue                           # applied before the crash, not yet acked
                top = sid if top is None or stream_id_key(sid) > stream_id_key(top) else top
                row = _decode(fields)
                if self.only is not None and (row[0], row[1]) not in self.only:
                    continue
                have = self.con.execute("SELECT 1 FROM kline WHERE symbol=? AND interval=? AND open_time=? "
                                        "AND is_closed=1", row[:3]).fetchone()
                if have is not None:
                    continue                           # republished under a new id
                self.con.execute(_SUB_UPSERT, (*row, now))
                self.con.execute("INSERT INTO bus_applied (stream_id, symbol, interval, open_time, applied_at) "
                                 "VALUES (?, ?, ?, ?, ?)", (sid, row[0], row[1], row[2], now))
                new += 1
            if top is not None and top != last:
                self.con.execute("INSERT INTO bus_cursor (stream, last_id) VALUES (?, ?) ON CONFLICT (stream) "
                                 "DO UPDATE SET last_id = excluded.last_id", (self.config.stream, top))
        self.applied += new
        return new

    def step(self, *, pending: bool) -> int:
        """Read one batch (``pending``: this consumer's unacknowledged entries first), apply, ack."""
        r = self._redis()
        if not self._group_ok:
            self._ensure_group()
        got = r.xreadgroup(self.group, self.consumer, {self.config.stream: "0" if pending else ">"},
                           count=self.batch, block=None if pending else self.block_ms)
        entries = [(sid, fields) for _, items in (got or []) for sid, fields in items if fields]
        if not entries:
            return 0
        n = self.apply(entries)
        r.xack(self.config.stream, self.group, *[sid for sid, _ in entries])
        log.debug("bus: %d entries, %d new candles", len(entries), n)
        return len(entries)

    def run(self, stop: threading.Event, *, max_backoff: float = 10.0) -> None:
        """Consume until ``stop`` is set, riding out Redis restarts (reconnect with backoff)."""
        import redis

        failures, pending = 0, True
        while not stop.is_set():
            try:
                if failures:
                    self._ensure_group()
                if pending:
                    pending = self.step(pending=True) > 0     # drain what was delivered before a crash
                else:
                    self.step(pending=False)
                failures = 0
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                failures += 1                                  # Redis lost the group (no persistence)
                pending = True
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                failures += 1
                pending = True
                wait = min(max_backoff, 0.2 * 2 ** min(failures, 6))
                log.warning("bus: Redis unreachable (%s); retrying in %.1fs", type(exc).__name__, wait)
                stop.wait(wait)

    def close(self) -> None:
        self.store.close()
        if self._r is not None:
            self._r.close()


# ------------------------------------------------------------------------ order log
class OrderLogPublisher:
    """Follows an S7 order log (``data/orders.jsonl``: fills, rejections, every order event) onto the
    stream ``toolkit:orders``, each line with the ``source`` that wrote it (the executor host).

    The byte offset reached is kept per source in a Redis hash beside the stream and advanced in
    the same ``MULTI``/``EXEC`` as the entries, so a restart neither skips nor repeats a line; a
    line still being appended waits for its newline.
    """

    def __init__(self, path: str | Path, *, source: str | None = None, url: str | None = None,
                 stream: str = "toolkit:orders", maxlen: int = 100_000, poll: float = 0.2):
        self.path, self.stream, self.maxlen, self.poll = Path(path), stream, int(maxlen), float(poll)
        self.source = source or socket.gethostname()
        self.url = url
        self.cursor_key = f"{stream}:cursor"
        self.published = 0
        self._r = None

    def _redis(self):
        if self._r is None:
            self._r = connect(self.url)
        return self._r

    def publish_new(self) -> int:
        """One pass: every complete line after the stored offset. Returns how many."""
        if not self.path.is_file():
            return 0
        r = self._redis()
        offset = int(r.hget(self.cursor_key, self.source) or 0)
        if self.path.stat().st_size < offset:
            log.warning("bus: %s is shorter than what was published: starting it over", self.path)
            offset = 0
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(4_000_000)
        end = data.rfind(b"\n") + 1
        lines = [ln for ln in data[:end].decode("utf-8", "replace").splitlines() if ln.strip()]
        if end == 0:
            return 0
        pipe = r.pipeline(transaction=True)
        for line in lines:
            pipe.xadd(self.stream, {"source": self.source, "json": line}, maxlen=self.maxlen, approximate=True)
        pipe.hset(self.cursor_key, self.source, offset + end)
        pipe.execute()
        self.published += len(lines)
        return len(lines)

    def run(self, stop: threading.Event, *, max_backoff: float = 10.0) -> None:
        import redis

        failures = 0
        while not stop.is_set():
            try:
                n = self.publish_new()
                failures = 0
                if not n:
                    stop.wait(self.poll)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                failures += 1
                wait = min(max_backoff, 0.2 * 2 ** min(failures, 6))
                log.warning("bus: Redis unreachable (%s); retrying in %.1fs", type(exc).__name__, wait)
                stop.wait(wait)

    def close(self) -> None:
        if self._r is not None:
            self._r.close()


# ------------------------------------------------------------------------------ state
def put_state(name: str, value: dict, *, r=None) -> None:
    """Share a small state (kill-switch, service status): hash ``toolkit:state:<name>`` + a notice."""
    r = r or connect()
    payload = json.dumps(value, default=str, sort_keys=True)
    pipe = r.pipeline(transaction=True)
    pipe.hset(f"{STATE_CHANNEL}:{name}", mapping={"json": payload, "updated_ms": int(time.time() * 1000)})
    pipe.publish(STATE_CHANNEL, json.dumps({"name": name, "value": value}, default=str))
    pipe.execute()


def get_state(name: str, *, r=None) -> dict | None:
    """The last state shared under ``name`` (None: never shared)."""
    r = r or connect()
    raw = r.hget(f"{STATE_CHANNEL}:{name}", "json")
    return None if raw is None else json.loads(raw)


def share_status(status_url: str, token: str, *, name: str, r=None, timeout: float = 10.0) -> dict:
    """One round: read the S8 service's ``GET /status`` (its public control API, with the token) and
    share it as ``status:<name>``, and each market's kill-switch as ``kill_switch:<SYMBOL>``."""
    import requests

    resp = requests.get(status_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    if resp.status_code != 200:
        raise UserError(f"{status_url} answered HTTP {resp.status_code}",
                        "check CONTROL_API_TOKEN and that the service runs (python S8/service.py)")
    status = resp.json()
    r = r or connect()
    put_state(f"status:{name}", status, r=r)
    for m in status.get("markets", []):
        if isinstance(m, dict) and m.get("market") and "kill_switch" in m:
            put_state(f"kill_switch:{m['market']}", {**m["kill_switch"], "host": name, "mode": m.get("mode")}, r=r)
    return status


__all__ = ["BusConfig", "DEFAULT_STREAM", "KlinePublisher", "KlineSubscriber", "OrderLogPublisher", "connect",
           "get_state", "put_state", "share_status", "stream_id_key"]
