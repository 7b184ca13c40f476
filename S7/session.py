"""One executor session: checks, the venue, the engine, the candle loop, the summary.

:func:`run_session` is what ``python S7/executor.py`` runs (and what notebooks and
tests call). Modes:

- ``dry-run``: :class:`S7.simulator.SimulatedExchange` -- no keys, no network for
  trading (the symbol's filters come from ``--exchange-info FILE``, else
  ``exchangeInfo`` at ``BINANCE_API_URL``, else its cache ``data/exchange_info.json``,
  else generic filters with a warning);
- ``testnet`` (the default): the spot testnet at ``BINANCE_TESTNET_API_URL`` with
  ``BINANCE_TESTNET_API_KEY`` / ``_SECRET``, plus the user-data stream on the
  WebSocket API (:mod:`S7.user_stream`; off with ``user_stream=False``);
- ``live``: ``BINANCE_API_URL`` with ``BINANCE_API_KEY`` / ``_SECRET``, only with
  ``i_understand_real_money``.

State files (all under ``data/state/``, one set per mode and market):
``s7_<mode>_<symbol>_<interval>.db`` (orders, fills, positions), the dry-run
account ``s7_dryrun_<symbol>_<interval>.sim.json``, and the kill-switch
(``kill_switch.json`` for live -- the file ``python S6/risk.py reset`` resets by
default -- ``kill_switch_testnet.json``, ``kill_switch_dryrun.json``). A replay
(``--replay-days``) is a what-if on past candles: it starts from a fresh
simulated account and kill-switch under ``data/state/replay/`` every time.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from S1.datasets import (
    exchange_info_path,
    executor_state_path,
    kill_switch_path,
    orders_log_path,
    realtime_db_path,
    state_path,
)
from S1.errors import NetworkError, UserError
from S1.settings import Settings, get_settings
from S6.config import RiskConfig
from S6.filters import SymbolFilters, read_exchange_info_file, symbol_filters
from S6.killswitch import KillSwitch
from S7.config import TESTNET_KEYS_URL, SessionConfig, check_config
from S7.engine import Engine, EngineConfig
from S7.exchange_client import AuthFailed, BinanceTradingClient, ExchangeError, OrderRejected
from S7.ledger import Ledger
from S7.order_log import OrderLog
from S7.orders import D
from S7.simulator import SimulatedExchange
from S7.sources import CandleEvent, DbSource, PriceEvent, ReplaySource, RestPollSource, SessionEnd
from S7.store import ExecutorStore

log = logging.getLogger(__name__)

@dataclass
class SessionResult:
    summary: dict[str, Any]
    state: Path
    kill_switch: Path
    order_log: Path
    order_log_lines: int
    source: str
    simulated: bool
    replayed: int = 0
    stopped_by: str = "end of data"
    reconcile_lines: list[str] = field(default_factory=list)
    risk_warning: str | None = None   #: the loud line when the risk settings differ from the backtest's default


#: The risk settings S5/backtest.py uses by default (and S7 without --risk-config).
REPO_RISK_FILE = Path(__file__).resolve().parents[1] / "S6" / "risk.yaml"


def risk_difference(cfg: SessionConfig) -> str | None:
    """One loud line when this session trades with other risk settings than a default
    backtest (``S6/risk.yaml``, stops on, its ``flatten_on_trip``), else None."""
    parts = []
    if cfg.risk_config is not None and Path(cfg.risk_config).resolve() != REPO_RISK_FILE:
        parts.append(f"--risk-config {cfg.risk_config}")
    if not cfg.use_stops:
        parts.append("--no-stops")
    if cfg.flatten_on_trip is not None:
        parts.append("--flatten-on-trip" if cfg.flatten_on_trip else "--no-flatten-on-trip")
    if not parts:
        return None
    return ("RISK SETTINGS DIFFER FROM THE BACKTEST: " + ", ".join(parts) + " -- S5/backtest.py trades with "
            "S6/risk.yaml (stops on) unless given the same settings")


def load_strategy(cfg: SessionConfig):
    """``(rules, indicator config, risk config, sentiment feed or None, strategy tag)``."""
    from S2.ta import DEFAULT_CONFIG_PATH, IndicatorConfig, load_config
    from S4.rules import CANDLE_COLUMNS, SENTIMENT_COLUMNS, load_rules

    if cfg.indicators_config is not None:
        indicators = load_config(cfg.indicators_config)
    else:
        indicators = load_config() if DEFAULT_CONFIG_PATH.exists() else IndicatorConfig()
    from S7.feeds import informative_columns_of

    columns = [*CANDLE_COLUMNS, *indicators.columns(), *SENTIMENT_COLUMNS, "ml_proba",
               *informative_columns_of(cfg.rules)]     # rsi14_4h ...: computed live (S7.feeds.InformativeFeed)
    rules = load_rules(cfg.rules, columns=columns)
    if rules.uses_ml:
        raise UserError(f"{cfg.rules} reads ml_proba, which the executor cannot score live yet",
                        "trade a rule file without ml_proba (e.g. S4/rules.yaml or S4/rules_ta_only.yaml)")
    sentiment = None
    if rules.uses_sentiment:
        from S4.signals import find_sentiment_file
        from S7.engine import SentimentFeed

        path = find_sentiment_file(cfg.interval, None, symbol=cfg.symbol)
        sentiment = SentimentFeed(path, [c for c in rules.required_columns() if c in SENTIMENT_COLUMNS])
        sentiment.frame()
    risk = RiskConfig.load(cfg.risk_config)
    tag = hashlib.sha256(rules.to_yaml().encode()).hexdigest()[:8]
    return rules, indicators, risk, sentiment, tag


def default_window(indicators, rules, interval: str | None = None) -> int:
    from S2.ta import warmup_rows
    from S7.feeds import informative_window

    longest = max(warmup_rows(indicators).values())
    htf = informative_window(rules.required_columns(), interval) if interval else 0
    return max(300, 3 * longest + rules.lookback() + 10, htf + rules.lookback())


# ------------------------------------------------------------------ filters/venue
async def dry_run_filters(symbol: str, settings: Settings, *, file: Path | None, price: float | None
                          ) -> tuple[SymbolFilters, str]:
    """The symbol's filters for the simulator, and where they came from."""
    if file is not None:
        return symbol_filters(read_exchange_info_file(file), symbol), f"exchangeInfo file {file}"
    from S1.rest_client import BinanceRest

    try:
        async with BinanceRest(settings, max_retries=1) as api:
            entry = await api.check_symbol(symbol)
        if entry:
            return SymbolFilters.from_symbol_info(entry), f"exchangeInfo from {settings.binance_api_url}"
    except NetworkError as exc:
        log.warning("exchangeInfo unreachable (%s)", exc.problem)
    cache = exchange_info_path(data_dir=settings.data_dir)
    if cache.exists():
        try:
            return symbol_filters(read_exchange_info_file(cache), symbol), f"cached exchangeInfo {cache}"
        except UserError as exc:
            log.warning("cached exchangeInfo not usable: %s", exc.problem)
    from S1.offline import simulated_symbol_info

    log.warning("no exchangeInfo for %s: the dry-run uses generic filters (tick and step from the price, "
                "minimum notional 5) -- pass --exchange-info FILE for the real ones", symbol)
    return SymbolFilters.from_symbol_info(simulated_symbol_info(symbol, price or 100.0)), "generic filters (no exchangeInfo)"


async def exchange_filters(client: BinanceTradingClient, symbol: str) -> SymbolFilters:
    try:
        return SymbolFilters.from_symbol_info(await client.symbol_info(symbol))
    except OrderRejected as exc:
        if exc.code != -1121:
            raise
        names: list[str] = []
        try:
            info = await client._read(client._get, "exchangeInfo")
            names = [s["symbol"] for s in info.get("symbols", [])]
        except ExchangeError:
            pass
        near = difflib.get_close_matches(symbol, names, n=4, cutoff=0.6)
        raise UserError(f"{symbol} is not traded on {client.name}",
                        f"did you mean {', '.join(near)}?" if near else "check the symbol (e.g. BTCUSDT)") from None


def _auth_error(exc: AuthFailed, mode: str) -> UserError:
    keys = "BINANCE_TESTNET_API_KEY / BINANCE_TESTNET_API_SECRET" if mode == "testnet" else \
        "BINANCE_API_KEY / BINANCE_API_SECRET"
    extra = (f" (testnet keys are not live keys, and the testnet is reset from time to time: create new ones at "
             f"{TESTNET_KEYS_URL})" if mode == "testnet" else "")
    return UserError(f"the exchange refused our credentials ({exc.message})", f"check {keys} in .env{extra}")


# --------------------------------------------------------------------- the session
async def run_session(cfg: SessionConfig, *, settings: Settings | None = None, stop: asyncio.Event | None = None,
                      progress: bool | None = None, control: Path | None = None) -> SessionResult:
    """Run one session until ``stop`` is set, ``duration`` passes or the replay ends
    (``control``: the folder of the S8 service's control channel, :mod:`S7.control`)."""
    settings = settings or get_settings()
    cfg = check_config(cfg, settings)
    stop = stop or asyncio.Event()
    rules, indicators, risk, sentiment, tag = load_strategy(cfg)
    risk_warning = risk_difference(cfg)
    if risk_warning:
        log.warning(risk_warning)
    window = cfg.window or default_window(indicators, rules, cfg.interval)
    symbol, interval = cfg.symbol, cfg.interval
    tagname = cfg.state_tag
    sdir = state_path("replay") if cfg.replay else state_path("")
    if cfg.replay:
        shutil.rmtree(sdir, ignore_errors=True)
    db_path = Path(cfg.state) if cfg.state else executor_state_path(tagname, symbol, interval, replay=cfg.replay)
    ks_path = Path(cfg.kill_switch_state) if cfg.kill_switch_state else kill_switch_path(
        cfg.mode, symbol=symbol, interval=interval, replay=cfg.replay)
    log_path = Path(cfg.order_log) if cfg.order_log else orders_log_path()

    # -- candles
    if cfg.replay:
        source: Any = ReplaySource(symbol, interval, cfg.replay_days, warmup=window, settings=settings,
                                   intrabar=cfg.order_type == "limit")
    elif cfg.source == "rest":
        source = RestPollSource(symbol, interval, settings=settings, poll=max(cfg.poll, 1.0))
    else:
        source = DbSource(cfg.db or realtime_db_path(symbol, interval), symbol, interval, poll=cfg.poll)
    history = await source.history(window)
    log.info("candles: %s (%d closed candles of warm-up)", source.description, len(history))

    # -- venue
    secrets: tuple[str, ...] = ()
    if cfg.mode == "dry-run":
        price = float(history["close"].iloc[-1]) if len(history) else None
        filters, origin = await dry_run_filters(symbol, settings, file=cfg.exchange_info, price=price)
        sim_file = None if cfg.replay else db_path.with_suffix(".sim.json")
        venue: Any = SimulatedExchange(filters, balance=cfg.balance, fee_rate=cfg.fee_rate,
                                       slippage_bps=cfg.slippage_bps, state_file=sim_file,
                                       fee_asset=cfg.fee_asset)
        if price is not None and venue.last_price is None:
            venue.on_price(price, int(history.index[-1].value // 1_000_000))
        log.info("venue: %s, filters from %s%s", venue.name, origin,
                 f", account restored from {sim_file}" if venue.restored else "")
    else:
        key = settings.binance_testnet_api_key if cfg.mode == "testnet" else settings.binance_api_key
        secret = settings.binance_testnet_api_secret if cfg.mode == "testnet" else settings.binance_api_secret
        url = settings.binance_testnet_api_url if cfg.mode == "testnet" else settings.binance_api_url
        secrets = (key.get_secret_value(), secret.get_secret_value())
        venue = BinanceTradingClient(base_url=url, api_key=secrets[0], api_secret=secrets[1],
                                     timeout=settings.http_timeout, recv_window_ms=cfg.recv_window_ms,
                                     name=f"{cfg.mode} {url}")
    store = ExecutorStore(db_path)
    stream = heartbeat = None
    simulated = bool(settings.simulated_market or (cfg.mode == "dry-run" and settings.is_local))
    order_log = OrderLog(log_path, mode=cfg.mode + (" replay" if cfg.replay else ""), extra_secrets=secrets,
                         simulated=simulated)
    lines_before = order_log.lines
    try:
        if cfg.mode != "dry-run":
            try:
                await venue.sync_time()
                filters = await exchange_filters(venue, symbol)
            except ExchangeError as exc:
                if isinstance(exc, AuthFailed):
                    raise _auth_error(exc, cfg.mode) from None
                raise NetworkError(f"cannot reach {venue.name} ({exc.message})",
                                   "check the connection and the URL in .env") from None
            log.info("venue: %s", venue.name)
        from S6.alerts import WebhookAlerter

        alerter = WebhookAlerter.from_settings(settings, config=risk.alerts)
        ks = KillSwitch(risk, path=ks_path)
        min_tradable = _min_tradable(filters)
        clock = (lambda: venue.now_ms) if cfg.mode == "dry-run" and cfg.replay else None
        ledger = Ledger(store, order_log, symbol=symbol, interval=interval, base_asset=filters.base_asset,
                        quote_asset=filters.quote_asset, min_tradable=min_tradable, clock_ms=clock)
        engine = Engine(EngineConfig(symbol=symbol, interval=interval, mode=cfg.mode, strategy=tag, window=window,
                                     max_candle_age_s=0 if cfg.replay else cfg.max_candle_age_s,
                                     flatten_on_trip=cfg.flatten_on_trip, use_stops=cfg.use_stops,
                                     limit=cfg.limit_policy()),
                        rules=rules, venue=venue, ledger=ledger, filters=filters, kill_switch=ks, risk=risk,
                        indicators=indicators, alerter=alerter, sentiment=sentiment)
        if control is not None:
            from S7.control import attach

            heartbeat = attach(engine, control)
        try:
            rep = await engine.start()
        except AuthFailed as exc:
            raise _auth_error(exc, cfg.mode) from None
        except ExchangeError as exc:
            raise NetworkError(f"reconciliation with {venue.name} failed ({exc.message})",
                               "check the connection; nothing was sent") from None
        if cfg.mode != "dry-run" and cfg.user_stream:
            stream = await start_user_stream(engine, venue, settings, cfg.mode, key=secrets[0], secret=secrets[1],
                                             recv_window_ms=cfg.recv_window_ms)
        if cfg.replay or not len(history):
            engine.seed(history)
            _warm_up(engine)
        else:
            # the newest closed candle is acted on when it is fresh and not yet acted on (a restart
            # right after a close, or a crash while deciding: the client id makes that idempotent)
            engine.seed(history.iloc[:-1])
            _warm_up(engine)
            await engine.on_candle(history.iloc[-1:])
        if engine.cfg.limit is not None:
            log.info("orders: %s", engine.cfg.limit.describe())
        if not ks.allows_entries():
            st = ks.state
            log.warning("kill-switch is TRIPPED (%s: %s): no new entries until `python S6/risk.py reset --state %s`",
                        st.reason, st.detail, ks_path)
        stopped_by = await _loop(engine, source, cfg, stop, progress)
        summary = engine.summary()
        if stream is not None:
            summary["user_stream"] = {"url": stream.url, "healthy": stream.healthy, **dict(stream.stats)}
        summary["risk_warning"] = risk_warning
        await engine.drain_alerts()
        return SessionResult(summary, db_path, ks_path, log_path, order_log.lines - lines_before, source.description,
                             simulated=simulated,
                             replayed=len(engine.decisions), stopped_by=stopped_by,
                             reconcile_lines=rep.lines(filters.base_asset, filters.quote_asset),
                             risk_warning=risk_warning)
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
        if stream is not None:
            await stream.close()
        store.close()
        await source.close()
        if isinstance(venue, BinanceTradingClient):
            await venue.close_connection()
        else:
            await venue.close()


async def start_user_stream(engine: Engine, venue: BinanceTradingClient, settings: Settings, mode: str, *, key: str,
                            secret: str, recv_window_ms: int, wait: float = 5.0, **kw):
    """Attach a :class:`S7.user_stream.UserDataStream` to ``engine`` and wait (bounded) for
    its first subscription; without it the executor keeps polling, as before."""
    from S7.user_stream import UserDataStream, user_stream_url

    url = user_stream_url(settings, mode)
    stream = UserDataStream(url=url, api_key=key, api_secret=secret, on_event=engine.on_user_event,
                            on_subscribed=engine.on_stream_subscribed,
                            time_offset_ms=lambda: getattr(venue, "timestamp_offset", 0) or 0,
                            recv_window_ms=recv_window_ms, timeout=settings.http_timeout, **kw)
    engine.user_stream = stream
    if not await stream.start(wait=wait):
        log.warning("user-data stream at %s not up after %gs (%s): order states come from REST answers and lookups "
                    "(a resting LIMIT order every 2 s) until it is", url, wait,
                    stream.stopped_reason or "still trying")
    return stream


def _min_tradable(f: SymbolFilters):
    def fn(price):
        m = max(f.min_qty or D(0), f.step_size or D(0))
        if f.min_notional is not None and price and D(price) > 0:
            m = max(m, f.min_notional / D(price))
        return m
    return fn


def _warm_up(engine: Engine) -> None:
    """Compile the numba kernels and load TA-Lib before the first live candle."""
    if len(engine._t) < engine._min_rows:
        return
    try:
        engine._signals()
    except UserError as exc:
        log.warning("warm-up: %s", exc.problem)


async def _loop(engine: Engine, source, cfg: SessionConfig, stop: asyncio.Event, progress) -> str:
    """Feed the source's events to the engine until the end, ``stop`` or the duration;
    returns why it stopped."""
    from S7.heartbeat import heartbeat_line
    bar = None
    if cfg.replay:
        from tqdm import tqdm

        bar = tqdm(total=source.replay_count, desc=f"replay {cfg.symbol} {cfg.interval}", unit="candle",
                   disable=None if progress is None else not progress, leave=False)
    try:
        with SessionEnd(stop, cfg.duration) as end:
            async for ev in source.events(stop):
                if isinstance(ev, PriceEvent):
                    await engine.on_price(ev.price, ev.t_ms)
                elif isinstance(ev, CandleEvent):
                    decision = await engine.on_candle(ev.candle, ev.now_ms)
                    if decision is not None:       # the one-line heartbeat per closed candle (S7.heartbeat)
                        line = heartbeat_line(engine, decision, ev.candle)
                        bar.write(line) if bar is not None else print(line, flush=True)
                    if bar is not None:
                        bar.update(1)
                if stop.is_set():
                    break
    finally:
        if bar is not None:
            bar.close()
    return end.reason


# ---------------------------------------------------------------------- summary
def summary_lines(res: SessionResult) -> list[str]:
    """The short text summary printed at the end of a session."""
    s = res.summary
    pos = s["position"]
    by = s["orders_by_status"]
    quote_fmt = lambda x: "n/a" if x is None else f"{x:,.2f}"  # noqa: E731
    label = " (simulated market)" if res.simulated else ""
    head = f"S7 {s['mode']} {s['symbol']} {s['interval']}{label}: "
    n = f"{res.replayed} closed candle{'' if res.replayed == 1 else 's'}"
    head += (f"replayed {n}" if "replay" in res.source else n) + f" ({res.stopped_by})"
    if res.risk_warning:
        head = f"WARNING: {res.risk_warning}\n{head}"
    lines = [head,
             f"  orders      {s['sent']} sent ({s['buys']} BUY, {s['sells']} SELL): "
             + ", ".join(f"{v} {k}" for k, v in sorted(by.items())) if by else "  orders      none"]
    lines.append(f"  fills       {s['fills']}, fees {s['fees']:,.4f} (quote)")
    if pos.is_open:
        lines.append(f"  position    {pos.qty.normalize():f} @ {pos.entry_price:,.2f} (stop {pos.stop}, take-profit "
                     f"{pos.take_profit}), unrealised {s['unrealized']:+,.2f} at {s['last_price']:,.2f}")
    else:
        lines.append("  position    flat")
    lines.append(f"  pnl         realised {s['realized']:+,.2f} over {s['round_trips']} round trip(s); equity "
                 f"{quote_fmt(s['start_equity'])} -> {quote_fmt(s['equity'])}")
    ks = s["kill_switch"]
    lines.append("  kill-switch " + (f"TRIPPED ({ks['reason']}: {ks['detail']})" if ks["tripped"] else "ok")
                 + f" ({res.kill_switch})")
    lat = sorted(s.get("decision_ms") or [])
    if lat:
        lines.append(f"  latency     closed candle -> order sent: median {lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms "
                     f"({len(lat)} orders)")
    us = s.get("user_stream")
    if us:
        lines.append(f"  user stream {us.get('events', 0)} events, {us.get('subscribed', 0)} subscription(s), "
                     f"{us.get('drops', 0)} drop(s), {us.get('terminated', 0)} terminated ({us['url']})")
    lines.append(f"  order log   {res.order_log} (+{res.order_log_lines} events)")
    lines.append(f"  state       {res.state}")
    return lines


__all__ = ["SessionConfig", "SessionResult", "check_config", "default_window", "dry_run_filters", "load_strategy",
           "run_session", "summary_lines"]
