"""S7 test helpers: hand-made candle frames whose closes decide the rules, small rule
files, an engine factory, a trading client for the local test exchange and a local
webhook receiver. Fixtures using them are in conftest.py."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TOOLKIT_SHARED_DIR", REPO.parent / "shared"))

#: A canary: it must never appear in logs, the order log, the state files, alerts or exceptions.
CANARY_SECRET = "canary-SECRET-9f3b2a7c1d"
API_KEY = "s7-test-api-key-0001"

ALWAYS_ENTER = "entry: {col: close, op: '>', value: 0}\n"
#: Enter when the close is above 100, exit when it is below 100 (tests steer the closes).
ABOVE_100 = "entry: {col: close, op: '>', value: 100}\nexit: {col: close, op: '<', value: 100}\n"


def run(coro):
    return asyncio.run(coro)


def candles(closes, *, interval: str = "1m", end_ms: int | None = None, spread: float = 0.002) -> pd.DataFrame:
    """A candle frame with these closes, the last one closing just before ``end_ms`` floored
    to the interval (default: one interval from now, so the last candle is always fresh),
    opens = previous close, a small high/low spread."""
    from S1.datasets import candles_from_arrays
    from S1.intervals import floor_ms, interval_ms

    step = interval_ms(interval)
    end = floor_ms(int(time.time() * 1000) + step if end_ms is None else end_ms, interval)
    closes = np.asarray(closes, dtype=float)
    n = len(closes)
    opens_t = end - step * np.arange(n, 0, -1)
    o = np.r_[closes[0], closes[:-1]]
    hi = np.maximum(o, closes) * (1 + spread)
    lo = np.minimum(o, closes) * (1 - spread)
    vol = np.full(n, 10.0)
    rows = np.column_stack([opens_t, o, hi, lo, closes, vol, opens_t + step - 1, vol * closes, np.full(n, 100),
                            vol / 2, vol * closes / 2])
    return candles_from_arrays(rows)


def warm_closes(n: int = 80, level: float = 120.0, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level * np.exp(np.cumsum(rng.normal(0, 0.002, n)))


@dataclass
class TestEnv:
    __test__ = False
    server: object
    exchange: object
    settings: object
    tmp: Path
    key: str = API_KEY
    secret: str = CANARY_SECRET


def make_filters(symbol="TESTUSDT", *, tick="0.01", step="0.001", min_qty="0.001", min_notional="5"):
    from S6.filters import SymbolFilters

    base = symbol[:-4]
    entry = {"symbol": symbol, "status": "TRADING", "baseAsset": base, "quoteAsset": "USDT",
             "filters": [{"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000", "tickSize": tick},
                         {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": "100000", "stepSize": step},
                         {"filterType": "NOTIONAL", "minNotional": min_notional, "applyMinToMarket": True,
                          "maxNotional": "9000000", "applyMaxToMarket": False, "avgPriceMins": 5}]}
    return SymbolFilters.from_symbol_info(entry)


@dataclass
class Rig:
    """An engine and everything around it (one store, one order log, one kill-switch)."""

    engine: object
    venue: object
    store: object
    log_path: Path
    ks_path: Path
    state_path: Path

    def events(self):
        from S7.order_log import read_order_log

        return read_order_log(self.log_path)


async def build_rig(tmp: Path, *, venue, symbol: str, interval: str = "1m", rules_text: str = ABOVE_100,
                    risk=None, flatten=None, filters=None, alerter=None, tag: str = "t1", window: int = 300,
                    max_candle_age_s=None, start: bool = True, limit=None) -> Rig:
    """An Engine on ``venue`` with its state under ``tmp`` (re-use ``tmp`` to 'restart')."""
    from S4.rules import parse_rules
    from S6.config import RiskConfig
    from S6.filters import SymbolFilters
    from S6.killswitch import KillSwitch
    from S7.engine import Engine, EngineConfig
    from S7.ledger import Ledger
    from S7.order_log import OrderLog
    from S7.session import _min_tradable
    from S7.store import ExecutorStore

    risk = risk or RiskConfig().replace(sizing={"method": "fixed", "fixed_fraction": 0.1},
                                        kill_switch={"max_consecutive_losses": None})
    if filters is None:
        filters = SymbolFilters.from_symbol_info(await venue.symbol_info(symbol))
    store = ExecutorStore(tmp / "state.db")
    log_path, ks_path = tmp / "orders.jsonl", tmp / "ks.json"
    olog = OrderLog(log_path, mode="test")
    ledger = Ledger(store, olog, symbol=symbol, interval=interval, base_asset=filters.base_asset,
                    quote_asset=filters.quote_asset, min_tradable=_min_tradable(filters))
    ks = KillSwitch(risk, path=ks_path)
    eng = Engine(EngineConfig(symbol=symbol, interval=interval, mode="testnet", strategy=tag, window=window,
                              flatten_on_trip=flatten, max_candle_age_s=max_candle_age_s, limit=limit),
                 rules=parse_rules(rules_text), venue=venue, ledger=ledger, filters=filters, kill_switch=ks,
                 risk=risk, alerter=alerter)
    if start:
        await eng.start()
    return Rig(eng, venue, store, log_path, ks_path, tmp / "state.db")


def trading_client(env: TestEnv, **kw):
    from S7.exchange_client import BinanceTradingClient

    kw.setdefault("timeout", 1.0)
    kw.setdefault("recv_window_ms", 1000)
    return BinanceTradingClient(base_url=env.server.api_url, api_key=env.key, api_secret=env.secret, **kw)


# ------------------------------------------------------------------ webhook receiver
@dataclass
class Receiver:
    bodies: list = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self):
        ready = threading.Event()

        async def handle(request):
            self.bodies.append(await request.text())
            return web.Response(text="ok")

        def serve():
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/hook", handle)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    def stop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def events(self):
        return [json.loads(b) for b in self.bodies]


def D(x) -> Decimal:
    return Decimal(str(x))


# ------------------------------------------------------------------ user-data stream
async def attach_stream(env: TestEnv, engine, venue, **kw):
    """Attach the user-data stream of the local test exchange to ``engine`` (as a session
    does) with a fast backoff; returns the started :class:`S7.user_stream.UserDataStream`."""
    from S7.session import start_user_stream

    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.2)
    kw.setdefault("wait", 5.0)
    return await start_user_stream(engine, venue, env.settings, "testnet", key=env.key, secret=env.secret,
                                   recv_window_ms=5000, **kw)


async def wait_until(cond, timeout: float = 30.0, step: float = 0.005) -> float:
    """Await ``cond()`` true (polling the local state, never the exchange); returns the seconds
    it took, raises AssertionError after ``timeout``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout:g}s")
        await asyncio.sleep(step)
    return time.monotonic() - t0
