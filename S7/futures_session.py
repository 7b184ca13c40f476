"""USD-M perpetuals paper trading: one executor session on the Binance **futures testnet**
(``BINANCE_FUTURES_TESTNET_*``) or in ``--dry-run`` -- what ``python S7/executor.py --market usdm
--leverage N`` runs.

The decision path is the backtest's: :class:`S7.futures_engine.FuturesEngine` (S4's
:func:`~S4.decide.decide`, :func:`~S4.decide.size_entry` capped at ``equity x leverage``, stops,
take-profits, trailing stops, the S6 kill-switch and its flattening). Only the venue differs:

- ``dry-run``: :class:`S7.futures_engine.FuturesAccount` -- MARKET orders filled at the next price,
  funding from ``data/<symbol>_funding.parquet`` when there is one, liquidation at the first
  leverage bracket's maintenance margin (the accounting of :mod:`S5.futures`);
- ``testnet``: :class:`S7.futures_exchange.ExchangeAccount` -- at start the margin type (``ISOLATED``) and the leverage
  are set with the signed endpoints and the first leverage bracket is read
  (:func:`S7.futures_exchange.first_bracket`); the orders decided on a closed candle go out at once as MARKET orders
  with deterministic client ids (``reduceOnly`` on every exit), their fills (price, commission) are
  read back and booked through :meth:`~S7.futures_engine.FuturesAccount.book`; before each decision
  the funding payments (``GET /fapi/v1/income`` ``FUNDING_FEE``) are added to the open trade, the
  exchange's position is checked (gone: the exchange liquidated or closed it -- booked from its
  fills) and the wallet balance is re-read.

Per closed candle one heartbeat line (:mod:`S7.heartbeat`) and the state (position, levels,
trades, cursors) is written atomically to ``data/state/s7_usdm_<mode>_<symbol>_<interval>.json``;
a restart picks it up and checks it against the exchange's position.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import NetworkError, UserError
from S4.decide import ENTER, EXIT, SKIP, Position
from S5.futures import FuturesSpec
from S7.futures_client import FuturesAuthError, FuturesError, UsdmClient, futures_filters
from S7.futures_engine import FuturesAccount, FuturesEngine
from S7.futures_exchange import ExchangeAccount, _adopt, first_bracket
from S7.sources import SessionEnd

log = logging.getLogger(__name__)

FUTURES_TESTNET_KEYS_URL = "https://testnet.binancefuture.com"


# ---------------------------------------------------------------- features
class WindowFeatures:
    """The indicators (S2's array kernels) and sentiment on the last ``window`` closed candles,
    as the :class:`~S7.futures_engine.FuturesEngine` reads them (``arrays(open_ms)``)."""

    def __init__(self, indicators, *, window: int, atr_period: int, sentiment=None):
        self.indicators, self.window, self.atr_period, self.sentiment = indicators, window, atr_period, sentiment
        self._t = np.empty(0, dtype=np.int64)
        self._w = {c: np.empty(0) for c in ("high", "low", "close")}

    def push(self, open_ms: int, row: dict[str, float]) -> None:
        keep = self.window - 1
        self._t = np.append(self._t[-keep:], np.int64(open_ms))
        for c in self._w:
            self._w[c] = np.append(self._w[c][-keep:], row[c])

    def arrays(self, open_ms: np.ndarray) -> dict[str, np.ndarray]:
        from S2.ta import atr as atr_kernel
        from S2.ta import compute_indicators

        n = len(open_ms)
        if n == 0 or len(self._t) < n or not np.array_equal(self._t[-n:], np.asarray(open_ms, dtype=np.int64)):
            raise RuntimeError("the feature window is out of step with the engine's candles")
        w = self._w
        ind = compute_indicators(w["high"], w["low"], w["close"], self.indicators) if len(self._t) > 1 else {}
        col = f"atr{self.atr_period}"
        if col not in ind and len(self._t) > self.atr_period:
            ind[col] = atr_kernel(w["high"], w["low"], w["close"], self.atr_period)
        out = {k: np.asarray(v, dtype=np.float64)[-n:] for k, v in ind.items()}
        if self.sentiment is not None:
            out.update(self.sentiment.arrays(np.asarray(open_ms, dtype=np.int64)))
        return out


class PushFeatures:
    """Wraps precomputed features (e.g. :class:`S7.feeds.FrameFeed`) with a no-op ``push``."""

    def __init__(self, feed):
        self.feed = feed
        self.columns = getattr(feed, "columns", [])

    def push(self, open_ms: int, row: dict[str, float]) -> None:
        pass

    def arrays(self, open_ms):
        return self.feed.arrays(open_ms)


# ----------------------------------------------------------------- state
def _state(acc: FuturesAccount, eng: FuturesEngine, last_candle: int | None) -> dict[str, Any]:
    p = acc.position
    return {"position": None if p is None else {"side": p.side, "qty": p.qty, "entry_price": p.entry_price,
                                                  "stop": p.stop, "take_profit": p.take_profit,
                                                  "trail": list(p.trail) if p.trail else None,
                                                  "trailing": bool(getattr(p, "trailing", False))},
            "balance": acc.balance, "margin": acc.margin, "funding": acc.funding, "entry_fee": acc.entry_fee,
            "entry_ms": acc.entry_ms, "entry_reason": acc.entry_reason, "trades": acc.trades,
            "fills": acc.fills[-50:], "last_candle": last_candle, "last_exit_ms": eng.last_exit_ms,
            "income_cursor_ms": getattr(acc, "income_cursor_ms", None),
            "seen_income": getattr(acc, "seen_income", []), "funding_total": getattr(acc, "funding_total", 0.0),
            "booked_trades": getattr(acc, "booked_trades", [])}


def _restore(acc: FuturesAccount, eng: FuturesEngine, st: dict[str, Any]) -> int | None:
    p = st.get("position")
    if p is not None:
        acc.position = Position(qty=float(p["qty"]), entry_price=float(p["entry_price"]), stop=p["stop"],
                                take_profit=p["take_profit"], side=p["side"],
                                trail=tuple(p["trail"]) if p.get("trail") else None,
                                trailing=bool(p.get("trailing")))
    acc.balance = float(st.get("balance", acc.balance))
    acc.margin, acc.funding = float(st.get("margin", 0.0)), float(st.get("funding", 0.0))
    acc.entry_fee, acc.entry_ms, acc.entry_reason = float(st.get("entry_fee", 0.0)), st.get("entry_ms"), \
        st.get("entry_reason")
    acc.trades, acc.fills = list(st.get("trades", [])), list(st.get("fills", []))
    eng.last_exit_ms = st.get("last_exit_ms")
    if isinstance(acc, ExchangeAccount):
        acc.income_cursor_ms = st.get("income_cursor_ms")
        acc.seen_income = list(st.get("seen_income", []))
        acc.funding_total = float(st.get("funding_total", 0.0))
        acc.booked_trades = list(st.get("booked_trades", []))
    return st.get("last_candle")


# ----------------------------------------------------------------- session
@dataclass
class UsdmResult:
    summary: dict[str, Any]
    state: Path
    kill_switch: Path
    order_log: Path
    trades: list[dict[str, Any]]
    stopped_by: str
    candles: int
    notes: list[str] = field(default_factory=list)


def heartbeat_signal(act) -> str:
    if act is None:
        return "hold"
    if act.kind == ENTER:
        return f"enter {act.side} (rule {act.rule})"
    if act.kind == EXIT:
        text = f"exit ({act.reason})"
        if act.reverses:
            text += f", then enter {act.reverse.side} (rule {act.reverse.rule})"
        return text
    if act.kind == SKIP:
        return f"skipped ({act.reason}: {act.detail})" if act.detail else f"skipped ({act.reason})"
    return "hold"


def check_usdm(cfg, settings, leverage: float) -> None:
    """The USD-M checks on top of :func:`S7.config.check_config` (one line each)."""
    if cfg.mode == "live":
        raise UserError("--market usdm trades the futures testnet or a dry-run, not live",
                        "use --testnet (default) or --dry-run with --market usdm")
    if not (math.isfinite(leverage) and 1 <= leverage <= 125 and float(leverage).is_integer()):
        raise UserError(f"--leverage must be a whole number from 1 to 125, got {leverage:g}", "e.g. --leverage 3")
    if cfg.order_type != "market":
        raise UserError("--market usdm sends MARKET orders only", "drop --order-type limit")
    if cfg.mode == "testnet" and (settings.binance_futures_testnet_api_key is None
                                  or settings.binance_futures_testnet_api_secret is None):
        raise UserError("--market usdm --testnet needs BINANCE_FUTURES_TESTNET_API_KEY and "
                        "BINANCE_FUTURES_TESTNET_API_SECRET",
                        f"create futures testnet keys at {FUTURES_TESTNET_KEYS_URL} and put them in .env, or run "
                        "with --dry-run (no keys needed)")


def _auth_line(exc: FuturesError) -> UserError:
    return UserError(f"the futures testnet refused our credentials ({exc.code}: {exc.msg})",
                     "check BINANCE_FUTURES_TESTNET_API_KEY / BINANCE_FUTURES_TESTNET_API_SECRET in .env (futures "
                     f"testnet keys come from {FUTURES_TESTNET_KEYS_URL}, not from the spot testnet)")


def _row_columns(frame: pd.DataFrame) -> list[str]:
    """The candle columns the engine's rows carry (what rules may read besides indicators)."""
    from S7.engine import WINDOW_COLUMNS

    return [c for c in WINDOW_COLUMNS if c in frame.columns]


def _dry_run_funding(symbol: str):
    from S1.datasets import funding_path, read_parquet

    path = funding_path(symbol)
    if path.exists():
        return read_parquet(path), f"funding from {path}"
    return None, f"no funding history ({path}; python S1/funding.py --symbol {symbol} --days N): no funding booked"


async def run_usdm_session(cfg, *, leverage: float = 1.0, settings=None, stop: asyncio.Event | None = None,
                           source=None, features=None, client: UsdmClient | None = None,
                           heartbeat=print) -> UsdmResult:
    """One USD-M session (module docstring). ``cfg``: an :class:`S7.config.SessionConfig`
    (``mode`` ``dry-run`` or ``testnet``). Tests may pass their own ``source`` (candle events),
    ``features`` (e.g. a :class:`S7.feeds.FrameFeed`) and ``client``."""
    from dataclasses import replace

    from S1.datasets import (
        atomic_write_text,
        executor_state_path,
        orders_log_path,
        realtime_db_path,
        state_path,
    )
    from S1.intervals import interval_ms
    from S1.settings import get_settings
    from S5.hooks import check_market
    from S6.killswitch import KillSwitch
    from S7.config import check_config
    from S7.heartbeat import heartbeat_text
    from S7.order_log import OrderLog
    from S7.session import default_window, dry_run_filters, load_strategy, risk_difference
    from S7.sources import CandleEvent, DbSource, PriceEvent, ReplaySource, RestPollSource

    settings = settings or get_settings()
    check_usdm(cfg, settings, leverage)
    mode = cfg.mode
    cfg = replace(check_config(replace(cfg, mode="dry-run"), settings), mode=mode)
    stop = stop or asyncio.Event()
    rules, indicators, risk, sentiment, tag = load_strategy(cfg)
    check_market(rules, "usdm")
    risk_warning = risk_difference(cfg)
    if risk_warning:
        log.warning(risk_warning)
    window = cfg.window or default_window(indicators, rules)
    symbol, interval = cfg.symbol, cfg.interval
    step = interval_ms(interval)
    tagname = "usdm_" + cfg.state_tag
    if cfg.replay:
        shutil.rmtree(state_path("replay") / "usdm", ignore_errors=True)
    state_file = Path(cfg.state) if cfg.state else executor_state_path(tagname, symbol, interval,
                                                                        replay=cfg.replay).with_suffix(".json")
    ks_path = Path(cfg.kill_switch_state) if cfg.kill_switch_state else (
        state_path("replay") / "usdm" / f"kill_switch_{symbol.lower()}_{interval}.json" if cfg.replay
        else state_path(f"kill_switch_usdm_{cfg.state_tag}.json"))
    log_path = Path(cfg.order_log) if cfg.order_log else orders_log_path()

    own_source = source is None
    if source is None:
        if cfg.replay:
            source = ReplaySource(symbol, interval, cfg.replay_days, warmup=window, settings=settings)
        elif cfg.source == "rest":
            source = RestPollSource(symbol, interval, settings=settings, poll=max(cfg.poll, 1.0))
        else:
            source = DbSource(cfg.db or realtime_db_path(symbol, interval), symbol, interval, poll=cfg.poll)
    notes: list[str] = []
    own_client = False
    secrets: tuple[str, ...] = ()
    try:
        if mode == "testnet":       # the exchange first: a bad key is one line before any candle is read
            if client is None:
                client = UsdmClient.from_settings(settings, recv_window=cfg.recv_window_ms)
                own_client = True
            secrets = client.secrets
            try:
                await client.sync_time()
                info = await client.symbol_info(symbol)
                if info is None:
                    raise UserError(f"{symbol} is not a USD-M contract on {client.base_url}",
                                    "check the symbol (e.g. BTCUSDT)")
                filters = futures_filters(info)
                if await client.set_margin_type(symbol, "ISOLATED"):
                    notes.append(f"margin type of {symbol} set to ISOLATED")
                lev = await client.set_leverage(symbol, int(leverage))
                notes.append(f"leverage of {symbol} set to {lev.get('leverage')}x "
                             f"(max notional {lev.get('maxNotionalValue')})")
                bracket = await first_bracket(client, symbol)
                balance = await client.usdt_balance()
            except FuturesAuthError as exc:
                raise _auth_line(exc) from None
            except FuturesError as exc:
                if exc.code == -4048:
                    raise UserError(f"{symbol} holds a position in cross margin: the session trades isolated "
                                    "margin", "close it on the futures testnet first") from None
                if exc.code == -4028:
                    raise UserError(f"the exchange refused leverage {leverage:g} for {symbol} ({exc.msg})",
                                    "use a lower --leverage") from None
                raise NetworkError(f"cannot set up {symbol} on {client.name} ({exc.msg or exc})",
                                   "check the connection and BINANCE_FUTURES_TESTNET_API_URL in .env") from None
            origin = f"USD-M exchangeInfo at {client.base_url}"
        history = await source.history(window)
        if mode != "testnet":
            price = float(history["close"].iloc[-1]) if len(history) else None
            filters, origin = await dry_run_filters(symbol, settings, file=cfg.exchange_info, price=price)
            bracket = await first_bracket(None, symbol)
            balance = cfg.balance
        if bracket.max_leverage is not None and leverage > bracket.max_leverage:
            raise UserError(f"--leverage {leverage:g} is above {symbol}'s first bracket ({bracket.max_leverage}x)",
                            f"use --leverage {bracket.max_leverage} or less")
        notes.append(f"maintenance margin {bracket.mmr:g} (cum {bracket.cum:g}) from {bracket.origin}")
        fr = None
        if mode == "dry-run":
            fr, text = _dry_run_funding(symbol)
            notes.append(text)
        spec = FuturesSpec.for_symbol(symbol, leverage=leverage, funding=fr, brackets=bracket)
        simulated = bool(settings.simulated_market or (mode == "dry-run" and settings.is_local))
        order_log = OrderLog(log_path, mode=f"usdm {mode}" + (" replay" if cfg.replay else ""), extra_secrets=secrets,
                             simulated=simulated)
        lines_before = order_log.lines
        if mode == "testnet":
            acc: FuturesAccount = ExchangeAccount(balance=balance, fee_rate=cfg.fee_rate, spec=spec, filters=filters,
                                                  client=client, symbol=symbol, interval=interval, strategy=tag,
                                                  order_log=order_log)
            # funding paid before this session is not ours (a saved state brings its own cursor back)
            acc.income_cursor_ms = int(time.time() * 1000) + client.time_offset_ms
        else:
            acc = FuturesAccount(balance=balance, fee_rate=cfg.fee_rate, spec=spec, filters=filters,
                                 slippage=cfg.slippage_bps / 1e4)
        ks = KillSwitch(risk, path=ks_path)
        newest = None
        if len(history) and not cfg.replay:
            history, newest = history.iloc[:-1], history.iloc[-1:]
        if features is None:
            features = WindowFeatures(indicators, window=window, atr_period=risk.stops.atr_period,
                                      sentiment=sentiment)
            for t, r in zip(history.index.as_unit("ms").asi8, history[["high", "low", "close"]].to_numpy()):
                features.push(int(t), {"high": r[0], "low": r[1], "close": r[2]})
        elif not hasattr(features, "push"):
            features = PushFeatures(features)
        eng = FuturesEngine(rules=rules, risk=risk, account=acc, interval=interval, features=features,
                            kill_switch=ks, use_stops=cfg.use_stops, flatten_on_trip=cfg.flatten_on_trip,
                            filters=filters)
        seed_rows = history.iloc[-eng._keep:]
        eng._t = [int(t) for t in seed_rows.index.as_unit("ms").asi8]
        eng._rows = [{c: float(v) for c, v in r.items()} for r in seed_rows[_row_columns(seed_rows)]
                     .to_dict("records")]
        last_candle = None
        if state_file.exists() and not cfg.replay:
            last_candle = _restore(acc, eng, json.loads(state_file.read_text(encoding="utf-8")))
            notes.append(f"state restored from {state_file}")
        if isinstance(acc, ExchangeAccount):
            try:
                notes += await _adopt(acc, client, symbol)
            except FuturesAuthError as exc:
                raise _auth_line(exc) from None
        start_equity = acc.equity(float((history if newest is None else newest)["close"].iloc[-1])) \
            if len(history) or newest is not None else acc.balance
        for n in notes:
            log.info("usdm: %s", n)
        log.info("usdm %s %s %s: leverage %gx isolated, filters from %s, candles: %s", mode, symbol, interval,
                 leverage, origin, source.description)

        max_age = None if cfg.replay or cfg.max_candle_age_s == 0 else \
            int((cfg.max_candle_age_s or step / 1000) * 1000)
        state = {"candles": 0, "last_candle": last_candle,
                 "last_price": float(history["close"].iloc[-1]) if len(history) else None}

        def window_only(ot: int, row: dict[str, float]) -> None:
            if eng._t and ot <= eng._t[-1]:
                return
            features.push(ot, row)
            eng._t = (eng._t + [ot])[-eng._keep:]
            eng._rows = (eng._rows + [row])[-eng._keep:]

        async def handle(c: pd.DataFrame, now_ms: int | None) -> None:
            """One closed candle: window, staleness, sync, the decision, the orders, state, heartbeat."""
            ot = int(c.index[-1].value // 1_000_000)
            row = {k: float(c[k].iloc[-1]) for k in _row_columns(c)}
            done = state["last_candle"]
            if done is not None and ot <= done:           # acted on before this (re)start: window only
                window_only(ot, row)
                return
            close_ms = ot + step
            now = int(time.time() * 1000) if now_ms is None else int(now_ms)
            state["candles"] += 1
            state["last_candle"] = ot
            if max_age is not None and now - close_ms > max_age:
                window_only(ot, row)
                heartbeat(f"{pd.Timestamp(ot, unit='ms', tz='UTC'):%Y-%m-%d %H:%M} {symbol} {interval} "
                          f"close {row['close']:,.2f} | signal: stale (closed {(now - close_ms) / 1000:.0f}s "
                          "ago: window only)")
                return
            features.push(ot, row)
            try:
                if isinstance(acc, ExchangeAccount):
                    gone = await acc.sync(ot)
                    if gone:
                        eng.closed(gone, exit_open_ms=ot)
                act = eng.on_candle(ot, row)
                if isinstance(acc, ExchangeAccount):
                    eng.closed(await acc.flush(ot, ot + step))
            except FuturesAuthError as exc:
                raise _auth_line(exc) from None
            except FuturesError as exc:
                log.warning("candle %s: the futures testnet did not answer (%s): nothing decided",
                            pd.Timestamp(ot, unit="ms", tz="UTC"), exc)
                act = None
            state["last_price"] = row["close"]
            atomic_write_text(state_file, json.dumps(_state(acc, eng, ot), default=float))
            p = acc.position
            signed = 0.0 if p is None else (p.qty if p.side == "long" else -p.qty)
            heartbeat(heartbeat_text(ot, symbol, interval, row["close"], heartbeat_signal(act), signed,
                                     acc.equity(row["close"]), "USDT"))

        with SessionEnd(stop, cfg.duration) as end:
            if newest is not None:        # the newest closed candle at start: acted on when fresh (as on spot)
                await handle(newest, None)
            async for ev in source.events(stop):
                if isinstance(ev, PriceEvent):
                    state["last_price"] = ev.price
                    if mode == "dry-run":
                        n_fills = len(acc.fills)
                        eng.on_price(ev.price, ev.t_ms)
                        for f in acc.fills[n_fills:]:        # the simulated fills, in the order log too
                            order_log.append(symbol=symbol, side=f["side"], type="MARKET", quantity=f["qty"],
                                             price=f["price"], client_id=None, exchange_id=None, status="FILLED",
                                             reason=f["reason"], event="fill", commission=f["fee"],
                                             commission_asset="USDT", time=pd.Timestamp(f["time_ms"], unit="ms",
                                                                                        tz="UTC"))
                elif isinstance(ev, CandleEvent):
                    await handle(ev.candle, ev.now_ms)
                if stop.is_set():
                    break
        p = acc.position
        summary = {"mode": mode, "market": "usdm", "symbol": symbol, "interval": interval, "leverage": leverage,
                   "maint_margin_rate": spec.maint_margin_rate, "bracket_origin": bracket.origin,
                   "trades": len(acc.trades), "fills": len(acc.fills),
                   "fees": sum(f["fee"] for f in acc.fills),
                   "funding": sum(t["funding"] for t in acc.trades) + (acc.funding if p is not None else 0.0),
                   "realized": sum(t["pnl"] for t in acc.trades),
                   "position": None if p is None else {"side": p.side, "qty": p.qty, "entry_price": p.entry_price,
                                                       "stop": p.stop, "take_profit": p.take_profit},
                   "start_equity": start_equity,
                   "equity": acc.equity(state["last_price"]) if state["last_price"] is not None else acc.balance,
                   "kill_switch": {"tripped": not ks.allows_entries(), "reason": ks.state.reason,
                                   "detail": ks.state.detail},
                   "rejected": getattr(acc, "rejected", 0), "risk_warning": risk_warning,
                   "order_log_lines": order_log.lines - lines_before, "simulated": simulated}
        notes += getattr(acc, "notes", [])
        return UsdmResult(summary, state_file, ks_path, log_path, list(acc.trades), end.reason, state["candles"], notes)
    finally:
        if own_source:
            await source.close()
        if own_client and client is not None:
            await client.close()


def usdm_summary_lines(res: UsdmResult) -> list[str]:
    s = res.summary
    label = " (simulated market)" if s["simulated"] else ""
    lines = []
    if s["risk_warning"]:
        lines.append(f"WARNING: {s['risk_warning']}")
    lines.append(f"S7 USD-M {s['mode']} {s['symbol']} {s['interval']} {s['leverage']:g}x isolated{label}: "
                 f"{res.candles} closed candle(s) ({res.stopped_by})")
    longs = sum(t["side"] == "long" for t in res.trades)
    lines.append(f"  trades      {len(res.trades)} closed ({longs} long, {len(res.trades) - longs} short), "
                 f"{s['fills']} fills, fees {s['fees']:,.4f} USDT, {s['rejected']} refused")
    lines.append(f"  funding     {s['funding']:+,.4f} USDT paid (negative: received)")
    p = s["position"]
    lines.append("  position    flat" if p is None else
                 f"  position    {p['side']} {p['qty']:g} @ {p['entry_price']:,.2f} (stop {p['stop']}, "
                 f"take-profit {p['take_profit']})")
    lines.append(f"  pnl         realised {s['realized']:+,.2f}; equity {s['start_equity']:,.2f} -> {s['equity']:,.2f}")
    lines.append(f"  liquidation maintenance margin {s['maint_margin_rate']:g} from {s['bracket_origin']}")
    ks = s["kill_switch"]
    lines.append("  kill-switch " + (f"TRIPPED ({ks['reason']}: {ks['detail']})" if ks["tripped"] else "ok")
                 + f" ({res.kill_switch})")
    lines.append(f"  order log   {res.order_log} (+{s['order_log_lines']} events)")
    lines.append(f"  state       {res.state}")
    return lines


__all__ = ["PushFeatures", "UsdmResult", "WindowFeatures", "check_usdm", "heartbeat_signal", "run_usdm_session",
           "usdm_summary_lines"]
