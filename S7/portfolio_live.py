"""A live portfolio session: several symbols' S7 engines on live candles against ONE account, with the
ranking and ``--max-open`` of the S5 portfolio backtest -- what ``python S7/portfolio_executor.py`` runs
(the accounts, the coordinator and the engines are :mod:`S7.portfolio_session`'s).

- candles: the streamer's database of every symbol (:class:`S7.sources.MultiDbSource`: one query per
  commit) or REST polls (:class:`S7.sources.MergedSource`); each symbol's newest closed candle at the
  start is acted on when it is fresh;
- the account: the testnet / live exchange (:class:`~S7.portfolio_session.LiveAccount`, one signed
  client for every engine, its quote balance read once per candle time) or a simulated one
  (:class:`~S7.portfolio_session.SharedAccount`, persisted in ``data/state/``);
- a candle time is decided once every symbol's candle of it is in, or once each missing symbol has
  already sent a later one, or ``group_wait`` seconds after the first one arrived (an outage of one
  symbol does not hold the others up): the account is read, every close marked, every symbol's
  candle decided, then the coordinator sends the exits and the ranked entries; one heartbeat line per
  symbol;
- state: ``data/state/s7_<mode>_portfolio_<name>_<interval>.db`` (orders, fills, positions, round
  trips of every symbol), its kill-switch ``kill_switch_<mode>_portfolio_<name>.json``, and the
  shared order log ``data/orders.jsonl``; client order ids carry the portfolio's name, so a
  single-symbol executor on the same account never collides with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from S1.errors import UserError
from S1.options import DEFAULT_SLIPPAGE_BPS
from S7.portfolio_session import Coordinator, LiveAccount, PortfolioEngine, SharedAccount

log = logging.getLogger("S7.portfolio")


@dataclass(frozen=True)
class PortfolioConfig:
    """A live portfolio session (frozen; checked by :meth:`PortfolioSession.check`)."""

    symbols: tuple[str, ...]
    interval: str = "1h"
    rules: str | Path = "S4/rules.yaml"        #: one rule file, or a YAML map as S5/portfolio.py takes
    max_open: int = 1
    mode: str = "testnet"
    i_understand_real_money: bool = False
    rank_lookback: int = 24
    source: str = "db"
    db: Path | None = None
    poll: float = 0.02
    duration: float | None = None
    window: int | None = None
    risk_config: Path | None = None
    balance: float = 10_000.0                  #: dry-run: the simulated account's quote cash
    fee_rate: float = 0.001                    #: dry-run
    slippage_bps: float = DEFAULT_SLIPPAGE_BPS  #: dry-run: the backtest's default
    exchange_info: Path | None = None          #: dry-run: the filters
    use_stops: bool = True
    flatten_on_trip: bool | None = None
    max_candle_age_s: float | None = None
    recv_window_ms: int = 5000
    group_wait: float = 5.0                    #: seconds a candle time waits for the other symbols' candles
    name: str | None = None
    state_dir: Path | None = None              #: default data/state
    order_log: Path | None = None              #: default data/orders.jsonl

    @property
    def label(self) -> str:
        syms = [str(x).lower() for x in self.symbols]
        return self.name or "_".join(syms[:4]) + (f"_{len(syms)}" if len(syms) > 4 else "")


def session_trades(store, symbols) -> list[dict[str, Any]]:
    """The round trips of a session from its orders and fills: per symbol, a filled BUY and the
    SELL after it; ``entry_signal`` / ``exit_signal`` are the open times (ISO) of the candles that
    decided them (what the backtest's ``entry_bar - 1`` / ``exit_bar - 1`` are), prices the average
    fills, ``qty`` what the BUY bought. An open position is a trade without ``exit_*``."""
    out = []
    for s in symbols:
        fills: dict[str, list[dict]] = {}
        for f in store.fills(s):
            fills.setdefault(f["client_order_id"], []).append(f)
        cur = None
        for o in sorted(store.orders(s), key=lambda o: (o["created_ms"], o["client_order_id"])):
            fs = fills.get(o["client_order_id"])
            if not fs:
                continue
            q = sum(Decimal(f["qty"]) for f in fs)
            px = float(sum(Decimal(f["qty"]) * Decimal(f["price"]) for f in fs) / q)
            sig = None if o.get("candle_open_ms") is None else pd.Timestamp(int(o["candle_open_ms"]), unit="ms",
                                                                           tz="UTC").isoformat()
            if o["side"] == "BUY":
                cur = {"symbol": s, "entry_signal": sig, "entry_price": px, "qty": float(q),
                       "entry_reason": o.get("reason")}
            elif cur is not None:
                out.append({**cur, "exit_signal": sig, "exit_price": px, "exit_reason": o.get("reason")})
                cur = None
        if cur is not None:
            out.append(cur)
    return out


class PortfolioSession:
    """Several symbols' engines on live candles against one account (see the module docstring).
    :meth:`run` until ``stop`` is set, ``duration`` passes or the source ends; ``groups`` counts the
    candle times decided, ``last_group_ms`` is the latest one (tests wait on them)."""

    def __init__(self, cfg: PortfolioConfig, *, settings=None, stop: asyncio.Event | None = None,
                 progress: bool = True):
        from S1.settings import get_settings

        self.cfg = cfg
        self.settings = settings or get_settings()
        self.stop = stop or asyncio.Event()
        self.progress = progress
        self.groups = 0
        self.last_group_ms: int | None = None
        self.engines: dict[str, PortfolioEngine] = {}
        self.coordinator: Coordinator | None = None
        self.store = None
        self.lines: deque[str] = deque(maxlen=1000)       #: the latest heartbeat lines
        #: after every candle time (the latest 100,000): positions open, free quote -- the invariants
        self.checks: deque[dict] = deque(maxlen=100_000)

    def check(self):
        """Every per-symbol setting checked as the single-symbol executor checks it (one line each)."""
        from S1.intervals import check_interval
        from S5.portfolio_files import parse_symbols, rules_map
        from S7.config import SessionConfig, check_config

        cfg = self.cfg
        syms = parse_symbols(list(cfg.symbols))
        check_interval(cfg.interval)
        if cfg.source not in ("db", "rest"):
            raise UserError(f"unknown --source {cfg.source!r}", "use db or rest")
        if not 0 <= cfg.group_wait <= 600:
            raise UserError(f"--group-wait must be in [0, 600] seconds, got {cfg.group_wait:g}", "e.g. --group-wait 5")
        if cfg.rank_lookback < 1:
            raise UserError(f"--rank-lookback must be >= 1, got {cfg.rank_lookback}", "e.g. --rank-lookback 24")
        Coordinator(None, max_open=cfg.max_open)      # --max-open checked in one line
        table = rules_map(cfg.rules, syms)
        return syms, {s: check_config(SessionConfig(
            symbol=s, interval=cfg.interval, rules=Path(table[s]), mode=cfg.mode,
            i_understand_real_money=cfg.i_understand_real_money, source=cfg.source, db=cfg.db, duration=cfg.duration,
            poll=cfg.poll, window=cfg.window, risk_config=cfg.risk_config, balance=cfg.balance, fee_rate=cfg.fee_rate,
            slippage_bps=cfg.slippage_bps, recv_window_ms=cfg.recv_window_ms, max_candle_age_s=cfg.max_candle_age_s,
            exchange_info=cfg.exchange_info, use_stops=cfg.use_stops, flatten_on_trip=cfg.flatten_on_trip),
            self.settings) for s in syms}

    async def run(self) -> dict[str, Any]:
        from S1.datasets import orders_log_path, realtime_db_path, state_path
        from S1.errors import NetworkError
        from S6.alerts import WebhookAlerter
        from S6.killswitch import KillSwitch
        from S7.exchange_client import AuthFailed, BinanceTradingClient, ExchangeError
        from S7.ledger import Ledger
        from S7.order_log import OrderLog
        from S7.session import (
            _auth_error,
            _min_tradable,
            default_window,
            dry_run_filters,
            exchange_filters,
            load_strategy,
            risk_difference,
        )
        from S7.sources import MergedSource, MultiDbSource, RestPollSource
        from S7.store import ExecutorStore

        cfg, settings = self.cfg, self.settings
        syms, scfgs = self.check()
        strat = {s: load_strategy(c) for s, c in scfgs.items()}
        risk = strat[syms[0]][2]
        warning = risk_difference(scfgs[syms[0]])
        if warning:
            log.warning(warning)
        window = cfg.window or max(default_window(st[1], st[0], cfg.interval) for st in strat.values())
        window = max(window, cfg.rank_lookback + 2)
        tag = {"dry-run": "dryrun"}.get(cfg.mode, cfg.mode)
        sdir = Path(cfg.state_dir) if cfg.state_dir else state_path("")
        sdir.mkdir(parents=True, exist_ok=True)
        base = f"s7_{tag}_portfolio_{cfg.label}_{cfg.interval}"
        # -- candles
        if cfg.source == "rest":
            source: Any = MergedSource({s: RestPollSource(s, cfg.interval, settings=settings, poll=max(cfg.poll, 1.0))
                                        for s in syms})
        else:
            source = MultiDbSource(cfg.db or realtime_db_path(syms, cfg.interval), syms, cfg.interval, poll=cfg.poll)
        history = await source.history(window)
        log.info("candles: %s (%s closed candles of warm-up)", source.description,
                 ", ".join(f"{s} {len(h)}" for s, h in history.items()))
        # -- the account
        secrets: tuple[str, ...] = ()
        client = None
        if cfg.mode == "dry-run":
            filters = {}
            for s in syms:
                h = history[s]
                filters[s], _ = await dry_run_filters(s, settings, file=cfg.exchange_info,
                                                           price=float(h["close"].iloc[-1]) if len(h) else None)
            account: Any = SharedAccount(filters, balance=cfg.balance, fee_rate=cfg.fee_rate,
                                         slippage_bps=cfg.slippage_bps, fee_asset="quote",
                                         state_file=sdir / f"{base}.sim.json")
            venues = {s: account.venue(s) for s in syms}
            for s in syms:
                if len(history[s]) and venues[s].last_price is None:
                    venues[s].on_price(float(history[s]["close"].iloc[-1]),
                                       int(history[s].index[-1].value // 1_000_000))
        else:
            testnet = cfg.mode == "testnet"
            key = settings.binance_testnet_api_key if testnet else settings.binance_api_key
            secret = settings.binance_testnet_api_secret if testnet else settings.binance_api_secret
            url = settings.binance_testnet_api_url if testnet else settings.binance_api_url
            secrets = (key.get_secret_value(), secret.get_secret_value())
            client = BinanceTradingClient(base_url=url, api_key=secrets[0], api_secret=secrets[1],
                                          timeout=settings.http_timeout, recv_window_ms=cfg.recv_window_ms,
                                          name=f"{cfg.mode} {url}")
        self.store = store = ExecutorStore(sdir / f"{base}.db")
        simulated = bool(settings.simulated_market or (cfg.mode == "dry-run" and settings.is_local))
        order_log = OrderLog(Path(cfg.order_log) if cfg.order_log else orders_log_path(),
                             mode=f"{cfg.mode} portfolio", extra_secrets=secrets, simulated=simulated)
        try:
            if client is not None:
                try:
                    await client.sync_time()
                    filters = {s: await exchange_filters(client, s) for s in syms}
                except ExchangeError as exc:
                    if isinstance(exc, AuthFailed):
                        raise _auth_error(exc, cfg.mode) from None
                    raise NetworkError(f"cannot reach {client.name} ({exc.message})",
                                       "check the connection and the URL in .env") from None
                account = LiveAccount(client, filters)
                venues = {s: client for s in syms}
            alerter = WebhookAlerter.from_settings(settings, config=risk.alerts)
            ks = KillSwitch(risk, path=sdir / f"kill_switch_{tag}_portfolio_{cfg.label}.json")
            self.coordinator = coord = Coordinator(account, max_open=cfg.max_open, rank_lookback=cfg.rank_lookback)
            clock = (lambda: account.now_ms) if cfg.mode == "dry-run" else None
            for s in syms:
                rules, indicators, _, sentiment, rtag = strat[s]
                # its own client ids: a single-symbol executor of the same rules on the account never collides
                stag = f"portfolio:{cfg.label}:{rtag}"
                ledger = Ledger(store, order_log, symbol=s, interval=cfg.interval, base_asset=filters[s].base_asset,
                                quote_asset=filters[s].quote_asset, min_tradable=_min_tradable(filters[s]),
                                clock_ms=clock)
                self.engines[s] = PortfolioEngine(
                    engine_config_for(s, cfg, stag, window), rules=rules, venue=venues[s], ledger=ledger,
                    filters=filters[s], kill_switch=ks, risk=risk, indicators=indicators, alerter=alerter,
                    sentiment=sentiment, coordinator=coord)
            for s, e in self.engines.items():
                try:
                    rep = await e.start()
                except AuthFailed as exc:
                    raise _auth_error(exc, cfg.mode) from None
                except ExchangeError as exc:
                    raise NetworkError(f"reconciliation of {s} with {e.venue.name} failed ({exc.message})",
                                       "check the connection; nothing was sent") from None
                for line in rep.lines(filters[s].base_asset, filters[s].quote_asset):
                    log.info("%s %s", s, line)
            pending: dict[int, dict[str, Any]] = {}
            for s in syms:                          # the newest closed candle of each: acted on when fresh
                h = history[s]
                self.engines[s].seed(h.iloc[:-1])
                if len(h):
                    from S7.sources import CandleEvent

                    pending.setdefault(int(h.index[-1].value // 1_000_000), {})[s] = CandleEvent(h.iloc[-1:])
            stopped_by = await self._loop(source, pending)
            return self._summary(stopped_by, source.description, simulated, warning)
        finally:
            store.close()
            await source.close()
            if client is not None:
                await client.close_connection()

    async def _loop(self, source, pending: dict[int, dict[str, Any]]) -> str:
        from S7.sources import CandleEvent, PriceEvent, SessionEnd

        cfg = self.cfg
        first_seen = {t: time.monotonic() for t in pending}
        with SessionEnd(self.stop, cfg.duration) as end:
            await self._ready(pending, first_seen, force=True)
            async for sym, ev in source.events(self.stop):
                if isinstance(ev, PriceEvent):
                    await self.engines[sym].on_price(ev.price, ev.t_ms)
                elif isinstance(ev, CandleEvent):
                    pending.setdefault(ev.open_ms, {})[sym] = ev
                    first_seen.setdefault(ev.open_ms, time.monotonic())
                await self._ready(pending, first_seen)
                if self.stop.is_set():
                    break
        return end.reason

    async def _ready(self, pending: dict, first_seen: dict, *, force: bool = False) -> None:
        """Decide the candle times whose candles are all in (oldest first), or whose wait is over."""
        n = len(self.engines)
        while pending:
            t = min(pending)
            grp = pending[t]
            missing = [s for s in self.engines if s not in grp]
            later = all(any(s in g for tt, g in pending.items() if tt > t) for s in missing)
            if not (force or not missing or later or time.monotonic() - first_seen[t] >= self.cfg.group_wait):
                return
            del pending[t]
            first_seen.pop(t, None)
            await self.decide(t, grp)
            if len(grp) < n:
                log.info("candle %s: no candle of %s (decided without it)", _iso(t), ", ".join(missing))

    async def decide(self, t: int, grp: dict[str, Any]) -> None:
        """One candle time: the account read, every close marked, every symbol's candle decided,
        then the coordinator's exits and ranked entries; one heartbeat line per symbol."""
        from S7.heartbeat import heartbeat_line

        coord = self.coordinator
        present = [s for s in self.engines if s in grp]
        await coord.account.refresh()
        for s in present:
            coord.mark(s, float(grp[s].candle["close"].iloc[-1]))
        decided = []
        for s in present:
            ev = grp[s]
            decided.append((s, await self.engines[s].on_candle(ev.candle, ev.now_ms), ev.candle))
        await coord.flush()
        for s, d, candle in decided:
            if d is not None and d.action != "seen":
                line = heartbeat_line(self.engines[s], d, candle)
                self.lines.append(line)
                if self.progress:
                    print(line, flush=True)
        self.groups += 1
        self.last_group_ms = t
        self.checks.append({"t": t, "open": coord.busy(), "free_quote": coord.account.free_quote()})

    def _summary(self, stopped_by: str, source: str, simulated: bool, warning: str | None) -> dict[str, Any]:
        coord = self.coordinator
        return {"symbols": list(self.engines), "interval": self.cfg.interval, "mode": self.cfg.mode,
                "max_open": self.cfg.max_open, "simulated": simulated, "source": source, "stopped_by": stopped_by,
                "candle_times": self.groups, "trades": session_trades(self.store, list(self.engines)),
                "skipped": dict(coord.skips), "most_open": coord.most_open, "equity": coord.equity(),
                "orders": dict(Counter(r["status"] for s in self.engines for r in self.store.orders(s))),
                "risk_warning": warning}


def engine_config_for(symbol: str, cfg: PortfolioConfig, strategy: str, window: int):
    """The per-symbol :class:`S7.engine.EngineConfig` of a portfolio session."""
    from S7.engine import EngineConfig

    return EngineConfig(symbol=symbol, interval=cfg.interval, mode=cfg.mode, strategy=strategy, window=window,
                        max_candle_age_s=cfg.max_candle_age_s, flatten_on_trip=cfg.flatten_on_trip,
                        use_stops=cfg.use_stops)


def _iso(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")


__all__ = ["PortfolioConfig", "PortfolioSession", "engine_config_for", "session_trades"]
