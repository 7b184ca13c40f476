"""The service: workers for every market under one :class:`S8.supervisor.Supervisor`, the state the
control API shows, the metrics, and what its buttons do.

- one **streamer** process per candle interval (``python S1/streamer.py --symbols A,B,...``: one
  connection, one SQLite file; its backfill recovers the candles missed while it was down);
- one **executor** process per market (``python S7/executor.py ... --control DIR``), on the validated
  snapshot of its rule/risk files, with its own kill-switch file; its heartbeat and status come through
  :mod:`S7.control`;
- optional periodic **jobs** (any project script, e.g. ``S1/batch.py``);
- a 1 s **poll** that turns the streamer databases, the executors' status files and stores into
  ``/status`` and the Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from S1.datasets import orders_log_path, realtime_db_path
from S1.errors import UserError
from S1.settings import Settings
from S6.alerts import AlertEvent, WebhookAlerter
from S7.control import ControlFile
from S8.actions import flatten_market, market_paths, service_dir, snapshot, trip_kill_switch, validate_market
from S8.config import Market, ServiceConfig
from S8.metrics import ServiceMetrics
from S8.supervisor import Supervisor, Worker, WorkerSpec

log = logging.getLogger("S8.service")
_RECONNECT = re.compile(r"reconnected \(#\d+\)")
#: the S9 bus bridge, run as a worker process (S8 starts it; it does not import S9)
BUS_SCRIPT = "S9/bus_bridge.py"


@dataclass
class MarketState:
    market: Market
    paths: dict[str, Path]
    control: ControlFile
    last_open_ms: int | None = None           # newest closed candle counted
    last_close_ms: int | None = None
    latency_seen: int = -1                    # newest decision (candle open ms) observed
    orders_seen: set = field(default_factory=set)
    orders_baselined: bool = False
    status: dict | None = None
    fingerprint: str = ""


class Service:
    """Build with a validated config; ``await run()`` until :meth:`request_stop`."""

    def __init__(self, cfg: ServiceConfig, settings: Settings, *, offline_env: dict[str, str] | None = None,
                 market_env: dict[str, dict[str, str]] | None = None, poll_every: float = 1.0):
        self.cfg, self.settings = cfg, settings
        self.offline_env = dict(offline_env or {})
        self.offline = bool(offline_env)
        self.market_env = dict(market_env or {})     # offline: each market's own test exchange
        self.poll_every = poll_every
        self.metrics = ServiceMetrics()
        self.alerter = WebhookAlerter.from_settings(settings)
        self.dir = service_dir(data_dir=settings.data_dir)
        self.stop_event = asyncio.Event()
        self.stopped_by = ""
        self.started = time.time()
        self._lock = asyncio.Lock()          # one button at a time
        self.panics = 0
        s = cfg.supervision
        self.sup = Supervisor(heartbeat_timeout=s.heartbeat_timeout, startup_grace=s.startup_grace,
                              backoff_initial=s.backoff_initial, backoff_max=s.backoff_max,
                              backoff_jitter=s.backoff_jitter, stable_after=s.stable_after,
                              stop_timeout=s.stop_timeout, on_restart=self._on_restart)
        by_interval: dict[str, list[Market]] = {}
        for m in cfg.markets:
            by_interval.setdefault(m.interval, []).append(m)
        self.dbs = {iv: realtime_db_path([m.symbol for m in ms], iv, data_dir=settings.data_dir)
                    for iv, ms in by_interval.items()}
        self.markets: dict[str, MarketState] = {}
        for m in cfg.markets:
            paths = market_paths(m.model_copy(update={"mode": self._executor_mode(m)}),
                                 interval_db=self.dbs[m.interval], data_dir=settings.data_dir)
            self.markets[m.key] = MarketState(m, paths, ControlFile(self.dir, m.symbol, m.interval))
        self._by_interval = by_interval
        self.executors: dict[str, Worker] = {}

    # ------------------------------------------------------------------ workers
    def _executor_mode(self, m: Market) -> str:
        return "testnet" if self.offline else m.mode

    def _build_workers(self) -> None:
        env = dict(self.offline_env)
        bus = self.cfg.bus
        for iv, ms in self._by_interval.items():
            db = self.dbs[iv]
            symbols = ",".join(dict.fromkeys(m.symbol for m in ms))
            if bus is not None:
                self._add_bus_worker(bus, iv, ms, db, env)
                if bus.role == "subscriber":
                    continue  # this host's candles come from the bus, not from a streamer of its own
            argv = ["S1/streamer.py", "--symbols", symbols, "--interval", iv, "--db", str(db),
                    "--backfill-minutes", str(self.cfg.streamer.backfill_minutes), "--status-every", "10",
                    *self.cfg.streamer.args]
            keys = [m.key for m in ms]
            name = f"streamer-{iv}"
            # its heartbeat: a database write, or its status line every 10 s (a quiet market writes little)
            self.sup.add(WorkerSpec(name=name, kind="streamer", argv=argv, env=env,
                                    heartbeat=lambda db=db, name=name: _latest(
                                        _mtime(db, db.with_name(db.name + "-wal")), self.sup.workers[name].last_output),
                                    markets=tuple(m.symbol for m in ms),
                                    on_line=lambda line, keys=keys: self._streamer_line(keys, line)))
        for st in self.markets.values():
            m = st.market
            mode = self._executor_mode(m)
            argv = ["S7/executor.py", "--symbol", m.symbol, "--interval", m.interval, "--rules", str(st.paths["rules"]),
                    f"--{mode}", "--db", str(st.paths["db"]), "--state", str(st.paths["state"]),
                    "--kill-switch-state", str(st.paths["kill_switch"]), "--control", str(self.dir), *m.args]
            if m.risk_config is not None:
                argv += ["--risk", str(st.paths["risk"])]
            if mode == "live":
                argv.append("--i-understand-this-trades-real-money")
            status = st.control.status_path
            self.executors[m.key] = self.sup.add(WorkerSpec(
                name=f"executor-{m.key}", kind="executor", argv=argv, env={**env, **self.market_env.get(m.symbol, {})},
                markets=(m.symbol,),
                heartbeat=lambda p=status: (_read_status(p) or {}).get("time")))
        for job in self.cfg.jobs:
            w = self.sup.add(WorkerSpec(name=f"job-{job.name}", kind="job", argv=list(job.command), env=env))
            w._held = True  # released by its schedule (_job_loop)
        if bus is not None and bus.role == "publisher":
            self.sup.add(WorkerSpec(name="bus-orders", kind="bus", argv=[
                BUS_SCRIPT, "publish-orders", "--orders", str(orders_log_path(data_dir=self.settings.data_dir))],
                env=env))
        if bus is not None and bus.share_status:
            self.sup.add(WorkerSpec(name="bus-status", kind="bus", argv=[
                BUS_SCRIPT, "share-status", "--url",
                f"http://{self.settings.control_api_host}:{self.settings.control_api_port}/status"], env=env))

    def _add_bus_worker(self, bus, iv: str, ms: list[Market], db: Path, env: dict[str, str]) -> None:
        """The S9 bus bridge for one interval's database: publish its closed candles, or (subscriber)
        fill it from the bus. Its heartbeat is the database's writes or its own output, like the streamer's."""
        markets = ",".join(dict.fromkeys(f"{m.symbol}:{m.interval}" for m in ms))
        if bus.role == "publisher":
            name, argv = f"bus-publish-{iv}", [BUS_SCRIPT, "publish", "--db", str(db), "--markets", markets]
            beat = None  # it only reads the database: supervised for crashes (restart), not for silence
        else:
            name = f"bus-subscribe-{iv}"
            argv = [BUS_SCRIPT, "subscribe", "--db", str(db), "--group", bus.group, "--markets", markets]
            beat = None
        self.sup.add(WorkerSpec(name=name, kind="bus", argv=argv, env=env, heartbeat=beat,
                                markets=tuple(m.symbol for m in ms)))

    def _streamer_line(self, keys: list[str], line: str) -> None:
        if _RECONNECT.search(line):
            for k in keys:
                self.metrics.reconnects.labels(market=self.markets[k].market.symbol).inc()

    async def _on_restart(self, w: Worker, why: str) -> None:
        self.metrics.restarts.labels(worker=w.name).inc()
        self.metrics.worker_up.labels(worker=w.name).set(0)
        await self.alert("error", f"worker {w.name} restarted", f"{w.name} stopped ({why}); restart #{w.restarts}",
                         worker=w.name, restarts=w.restarts)

    async def alert(self, kind: str, title: str, message: str, level: str = "warning", **fields) -> None:
        try:
            await self.alerter.asend(AlertEvent(kind=kind, title=title, message=message, level=level, fields=fields))
        except Exception as exc:  # noqa: BLE001 -- an alert never stops the service
            log.warning("alert not sent: %s", exc)

    # ------------------------------------------------------------------- checks
    def check(self) -> None:
        """Everything that must hold before anything starts (one line each, exit 2)."""
        if self.cfg.bus is not None and self.settings.bus_url is None:
            raise UserError(f"bus: role {self.cfg.bus.role} needs BUS_URL (the Redis that carries the candles)",
                            "set BUS_URL=redis://host:6379/0 in .env, or remove the bus: section (see S9/README.md)")
        live = [m for m in self.cfg.markets if m.mode == "live"]
        if live and self.offline:
            raise UserError("--offline trades on the local test exchange: a live market makes no sense there",
                            "drop --offline, or set the markets' mode to dry-run / testnet")
        if live and not self.cfg.i_understand_this_trades_real_money:
            raise UserError(f"{live[0].name} is live (real money) but the config lacks "
                            "i_understand_this_trades_real_money: true",
                            "add that line to the service config, or use mode: testnet / dry-run")
        if live and (self.settings.binance_api_key is None or self.settings.binance_api_secret is None):
            raise UserError("live markets need BINANCE_API_KEY and BINANCE_API_SECRET", "set them in .env")
        if not self.offline and any(m.mode == "testnet" for m in self.cfg.markets) and (
                self.settings.binance_testnet_api_key is None or self.settings.binance_testnet_api_secret is None):
            raise UserError("testnet markets need BINANCE_TESTNET_API_KEY and BINANCE_TESTNET_API_SECRET",
                            "get free keys at https://testnet.binance.vision, or use mode: dry-run (or --offline)")
        for st in self.markets.values():
            st.fingerprint = validate_market(st.market)
            snapshot(st.market, st.paths)

    # --------------------------------------------------------------------- run
    async def run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._baseline()
        self._build_workers()
        self.metrics.declare(markets=[m.symbol for m in self.cfg.markets], workers=list(self.sup.workers))
        self.metrics.up.set(1)
        self.sup.start()
        poll = asyncio.get_running_loop().create_task(self._poll_loop(), name="poll")
        jobs = [asyncio.get_running_loop().create_task(self.sup.schedule(
            self.sup.workers[f"job-{j.name}"], every=j.every, timeout=j.timeout, run_at_start=j.run_at_start))
            for j in self.cfg.jobs]
        try:
            await self.stop_event.wait()
        finally:
            log.info("stopping (%s): SIGTERM to every worker (executors finish the order in flight)",
                     self.stopped_by or "stop")
            for t in jobs:
                t.cancel()
            await self.sup.stop()
            poll.cancel()
            self._poll_once()
            self.metrics.up.set(0)

    def request_stop(self, why: str) -> None:
        if not self.stop_event.is_set():
            self.stopped_by = why
            self.stop_event.set()

    # -------------------------------------------------------------------- poll
    def _baseline(self) -> None:
        for st in self.markets.values():
            row = _last_closed(st.paths["db"], st.market)
            if row:
                st.last_open_ms, st.last_close_ms = row[1], row[2]

    async def _poll_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._poll_once)
            except Exception as exc:  # noqa: BLE001 -- the poll must go on
                log.warning("poll: %s", exc)
            await asyncio.sleep(self.poll_every)

    def _poll_once(self) -> None:
        mt = self.metrics
        for w in self.sup.workers.values():
            mt.worker_up.labels(worker=w.name).set(1 if w.pid is not None else 0)
        for st in self.markets.values():
            m, sym = st.market, st.market.symbol
            new = _new_closed(st.paths["db"], m, st.last_open_ms)
            if new is not None:
                n, last_open, last_close = new
                if n:
                    mt.candles.labels(market=sym).inc(n)
                    st.last_open_ms, st.last_close_ms = last_open, last_close
            if st.last_close_ms is not None:
                mt.last_close.labels(market=sym).set((st.last_close_ms + 1) / 1000.0)
            status = st.control.status()
            if status is not None:
                st.status = status
                mt.position.labels(market=sym).set(float(status.get("position", {}).get("qty") or 0.0))
                if status.get("equity") is not None:
                    mt.equity.labels(market=sym).set(float(status["equity"]))
                for t, lat in status.get("decision_latency_s") or []:
                    if t > st.latency_seen:
                        mt.latency.observe(float(lat))
                        st.latency_seen = t
            ks = _read_status(st.paths["kill_switch"])
            if ks is not None:
                mt.kill_switch.labels(market=sym).set(1 if ks.get("tripped") else 0)
            elif status is not None:
                mt.kill_switch.labels(market=sym).set(1 if (status.get("kill_switch") or {}).get("tripped") else 0)
            self._count_orders(st)

    def _count_orders(self, st: MarketState) -> None:
        path = st.paths["state"]
        if not path.exists():
            st.orders_baselined = True
            return
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
            try:
                rows = con.execute("SELECT client_order_id, side, status FROM orders WHERE symbol = ?",
                                   (st.market.symbol,)).fetchall()
            finally:
                con.close()
        except sqlite3.Error:
            return
        for cid, side, status in rows:
            key = (cid, status)
            if key in st.orders_seen:
                continue
            st.orders_seen.add(key)
            if st.orders_baselined:
                self.metrics.orders.labels(market=st.market.symbol, side=side, status=status).inc()
        st.orders_baselined = True

    # ----------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        now = time.time()
        markets = []
        for st in self.markets.values():
            s = st.status or {}
            ks = _read_status(st.paths["kill_switch"]) or {}
            ctl = st.control.read()
            markets.append({
                "market": st.market.symbol, "interval": st.market.interval, "mode": self._executor_mode(st.market),
                "last_closed_candle": None if st.last_close_ms is None else _iso(st.last_close_ms + 1),
                "lag_s": None if st.last_close_ms is None else round(now - (st.last_close_ms + 1) / 1000.0, 3),
                "position": s.get("position"), "open_orders": s.get("open_orders"), "equity": s.get("equity"),
                "last_price": s.get("last_price"), "paused": bool(ctl.get("paused")), "pause_reason": ctl.get("reason"),
                "kill_switch": {"tripped": bool(ks.get("tripped", (s.get("kill_switch") or {}).get("tripped"))),
                                "reason": ks.get("reason"), "detail": ks.get("detail")},
                "rules": st.fingerprint, "executor_heartbeat": s.get("time"),
            })
            if st.market.symbol in self.market_env:   # offline: where its local test exchange is
                markets[-1]["exchange_url"] = self.market_env[st.market.symbol]["BINANCE_TESTNET_API_URL"]
        return {"service": {"started": self.started, "uptime_s": round(now - self.started, 1), "offline": self.offline,
                            "stopping": self.stop_event.is_set(), "panics": self.panics},
                "workers": [w.info() for w in self.sup.workers.values()], "markets": markets}

    # ---------------------------------------------------------------- buttons
    def _targets(self, market: str | None) -> list[MarketState]:
        if market is None:
            return list(self.markets.values())
        found = [self.markets[m.key] for m in self.cfg.market(market)]
        if not found:
            raise KeyError(market)
        return found

    async def pause(self, market: str | None, *, paused: bool) -> dict:
        out = []
        for st in self._targets(market):
            st.control.set_paused(paused, reason="control API" if paused else None)
            out.append(st.market.symbol)
        log.warning("%s new entries: %s", "paused" if paused else "resumed", ", ".join(out))
        return {"paused" if paused else "resumed": out}

    async def panic(self) -> dict:
        async with self._lock:
            self.panics += 1
            gen = int(time.time())
            report: dict[str, Any] = {"markets": []}
            log.error("PANIC: pausing entries, stopping executors, tripping every kill-switch, cancelling orders, "
                      "closing positions")
            for st in self.markets.values():
                st.control.set_paused(True, reason="panic")
            # executors first (each finishes its order in flight), then the kill-switches: nothing trades meanwhile
            held = list(self.executors.values())
            await asyncio.gather(*(w.hold(timeout=self.cfg.supervision.stop_timeout) for w in held))
            tripped = {st.market.key: trip_kill_switch(st.market, st.paths) for st in self.markets.values()}
            try:
                for st in self.markets.values():
                    m = st.market
                    pm = m.model_copy(update={"mode": self._executor_mode(m)})
                    settings = self.settings
                    if m.symbol in self.market_env:
                        settings = settings.model_copy(update={
                            "binance_testnet_api_url": self.market_env[m.symbol]["BINANCE_TESTNET_API_URL"]})
                    try:
                        r = await flatten_market(pm, st.paths, settings, generation=gen)
                    except Exception as exc:  # noqa: BLE001 -- report, go on with the other markets
                        r = {"market": m.symbol, "errors": [str(self.settings.redact(str(exc)))]}
                    r["kill_switch"] = tripped[m.key]
                    report["markets"].append(r)
            finally:
                for w in held:
                    w.release()
            report["summary"] = (f"{sum(len(r.get('cancelled', [])) for r in report['markets'])} order(s) cancelled, "
                                 f"{sum(1 for r in report['markets'] if r.get('sold', '0') not in ('0', 0))} "
                                 "position(s) closed, kill-switch tripped (reason panic) on "
                                 f"{len(report['markets'])} market(s)")
            log.error("PANIC done: %s", report["summary"])
            await self.alert("kill_switch", "PANIC button", report["summary"], level="critical")
            return report

    async def reload(self) -> dict:
        """Validate every market's rule/risk files; all good -> snapshot and restart the executors on them."""
        async with self._lock:
            prints = {}
            for st in self.markets.values():
                prints[st.market.key] = validate_market(st.market)   # raises UserError: nothing changed
            changed = []
            for st in self.markets.values():
                snapshot(st.market, st.paths)
                if prints[st.market.key] != st.fingerprint:
                    changed.append(st.market.key)
                st.fingerprint = prints[st.market.key]
            for key in changed:
                w = self.executors[key]
                await w.hold(timeout=self.cfg.supervision.stop_timeout)
                w.release()
            log.warning("reload: rules valid; %s", f"restarted {', '.join(changed)}" if changed else "nothing changed")
            return {"reloaded": [st.market.symbol for st in self.markets.values()],
                    "restarted": [self.markets[k].market.symbol for k in changed]}


# ---------------------------------------------------------------------- helpers
def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _mtime(*paths: Path) -> float | None:
    out = None
    for p in paths:
        try:
            t = p.stat().st_mtime
        except OSError:
            continue
        out = t if out is None else max(out, t)
    return out


def _read_status(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _connect_ro(db: Path) -> sqlite3.Connection | None:
    if not db.exists():
        return None
    try:
        return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return None


def _last_closed(db: Path, m: Market) -> tuple[int, int, int] | None:
    con = _connect_ro(db)
    if con is None:
        return None
    try:
        row = con.execute("SELECT COUNT(*), MAX(open_time), MAX(close_time) FROM kline WHERE symbol = ? AND "
                          "interval = ? AND is_closed = 1", (m.symbol, m.interval)).fetchone()
        return None if not row or row[1] is None else (int(row[0]), int(row[1]), int(row[2]))
    except sqlite3.Error:
        return None
    finally:
        con.close()


def _new_closed(db: Path, m: Market, after: int | None) -> tuple[int, int, int] | None:
    con = _connect_ro(db)
    if con is None:
        return None
    try:
        row = con.execute("SELECT COUNT(*), MAX(open_time), MAX(close_time) FROM kline WHERE symbol = ? AND "
                          "interval = ? AND is_closed = 1 AND open_time > ?",
                          (m.symbol, m.interval, -1 if after is None else after)).fetchone()
        return None if not row or row[1] is None else (int(row[0]), int(row[1]), int(row[2]))
    except sqlite3.Error:
        return None
    finally:
        con.close()


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


__all__ = ["MarketState", "Service"]
