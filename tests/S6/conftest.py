"""S6 fixtures: a local webhook receiver (aiohttp.web on 127.0.0.1, in a thread),
the real exchangeInfo capture, and S5-contract backtest files built from a simple
simulated strategy."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from aiohttp import web

from S1.local.server import LocalServer


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict
    t: float                        # when the request arrived (the receiver's clock)
    answered: float | None = None   # when the answer was sent (None: never, e.g. still held)

    @property
    def json(self):
        return json.loads(self.body)


#: an answer delay that never ends while the test runs (stop() cancels the held handler)
HOLD = 3600.0


class WebhookReceiver(LocalServer):
    """Records every POST; ``script`` holds (status, delay_s, headers) answers, then 200."""

    thread_name = "webhook-receiver"

    def __init__(self):
        self.received: list[Received] = []
        self.script: list[tuple[int, float, dict]] = []
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, *answers: tuple) -> None:
        for a in answers:
            status, delay, headers = (tuple(a) + (0.0, {}))[:3] if isinstance(a, tuple) else (a, 0.0, {})
            self.script.append((status, delay, headers))

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        rec = Received(request.path, body, dict(request.headers), time.monotonic())
        self.received.append(rec)
        status, delay, headers = self.script.pop(0) if self.script else (200, 0.0, {})
        if delay:
            await asyncio.sleep(delay)  # HOLD: until the receiver stops (the task is cancelled)
        rec.answered = time.monotonic()
        return web.Response(status=status, text="ok", headers=headers)

@pytest.fixture
def receiver():
    r = WebhookReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def exchange_info_real(shared_dir) -> dict:
    """The real GET /api/v3/exchangeInfo capture of 2021-10-12 (1,695 symbols)."""
    from S1.local.exchange import load_real_exchange_info

    info = load_real_exchange_info(shared_dir)
    if info is None:
        pytest.skip("exchangeInfo capture absent from ../shared")
    return info


# ------------------------------------------------------------ backtest files
def simple_backtest(candles: pd.DataFrame, *, every: int = 24, hold: int = 12, fraction: float = 0.5,
                    fee: float = 0.001, initial: float = 10_000.0) -> tuple[pd.DataFrame, pd.Series]:
    """A deliberately simple long-only strategy in the S5 contract: buy at the open every
    ``every`` bars with ``fraction`` of equity, sell at the close ``hold`` bars later.
    Returns (trades, equity) -- the equity is marked to market at each close."""
    o, c = candles["open"].to_numpy(), candles["close"].to_numpy()
    idx = candles.index
    equity = np.empty(len(candles))
    cash, pos, entry_i, rows = initial, 0.0, None, []
    entry_fee = 0.0
    for i in range(len(candles)):
        if pos == 0 and i % every == 0 and i + hold - 1 < len(candles):
            notional = fraction * cash
            pos = notional / o[i] / (1 + fee)
            entry_fee = pos * o[i] * fee
            cash -= pos * o[i] + entry_fee
            entry_i, cost = i, pos * o[i] + entry_fee
        if pos and i == entry_i + hold - 1:
            exit_fee = pos * c[i] * fee
            proceeds = pos * c[i] - exit_fee
            cash += proceeds
            pnl = proceeds - cost
            rows.append({"entry_time": idx[entry_i], "exit_time": idx[i], "side": "long", "size": pos,
                         "entry_price": o[entry_i], "exit_price": c[i], "fees": entry_fee + exit_fee,
                         "pnl": pnl, "return": pnl / cost})
            pos = 0.0
        equity[i] = cash + pos * c[i]
    trades = pd.DataFrame(rows)
    return trades, pd.Series(equity, index=idx, name="equity")


@pytest.fixture
def sim_backtest(settings_env):
    """Candles, trades and equity files for BTCUSDT 1h 90d under the isolated DATA_DIR."""
    from S1.datasets import Dataset, dataset_path, write_parquet
    from S1.local.simulated import simulate_candles

    candles = simulate_candles("BTCUSDT", "1h", "2023-01-01", "2023-04-01")
    trades, equity = simple_backtest(candles)
    write_parquet(candles, dataset_path(Dataset("BTCUSDT", "1h", 90)))
    write_parquet(trades, dataset_path(Dataset("BTCUSDT", "1h", 90), kind="trades"))
    write_parquet(equity.to_frame(), dataset_path(Dataset("BTCUSDT", "1h", 90), kind="equity"))
    return {"candles": candles, "trades": trades, "equity": equity, "symbol": "BTCUSDT", "interval": "1h",
            "days": 90, "settings": settings_env}
