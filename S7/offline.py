"""Offline mode for trading: the one door from product code to S7's local signed test exchange.

:func:`offline_venue` starts, on 127.0.0.1 and with no keys or internet:

- a simulated **market** (REST klines + kline WebSocket streams, :func:`S1.offline.fast_market`) on an
  accelerated clock: a 1m candle closes every ``candle_seconds`` wall seconds;
- per market, a Binance-compatible **test exchange** with its own account
  (:class:`S7.local.exchange.BinanceTestExchange`: the signed order, account and trade endpoints and
  the user-data stream) on the *wall* clock -- signed requests
  carry wall-clock timestamps, which an accelerated clock would refuse (``-1021``) -- whose prices
  follow the accelerated market (MARKET orders fill at the market's current price, resting LIMIT
  orders fill when it crosses them);
- plus ``GET /api/v3/allOrders`` (signed, as Binance's) so a caller can check every order the
  exchange holds, e.g. that no client order id was used twice.

The ``env`` it returns points the S1 streamer (``BINANCE_API_URL``, ``BINANCE_WS_URL``) and the S7
executor (keys) at them, ``market_env[symbol]`` adds the market's ``BINANCE_TESTNET_API_URL``. Used by ``python S8/service.py --offline``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

#: A fresh offline account: quote assets only, so every base-asset balance is a strategy's position.
OFFLINE_BALANCES = {"USDT": "1000000", "USDC": "1000000"}


@dataclass
class OfflineVenue:
    """Handles of a running :func:`offline_venue` (``stop()`` ends everything)."""

    market: Any                     #: the accelerated market server (S1.local.exchange.LocalBinance)
    servers: dict[str, Any]         #: symbol -> its test exchange's server (wall clock)
    exchanges: dict[str, Any]       #: symbol -> S7.local.exchange.BinanceTestExchange (one account each)
    candle_seconds: float
    env: dict[str, str] = field(default_factory=dict)          #: for every process
    market_env: dict[str, dict[str, str]] = field(default_factory=dict)  #: per symbol: its exchange
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.exchanges)

    def price(self, symbol: str) -> Decimal | None:
        """The accelerated market's price of ``symbol`` now (the partial close of the candle in progress)."""
        import numpy as np

        from S1.local.exchange import LocalBinance

        rows = self.market.market.get((symbol, "1m"))
        if rows is None or not len(rows):
            return None
        now = self.market.now_ms()
        i = int(np.searchsorted(rows[:, 0], now, side="right")) - 1
        if i < 0:
            return None
        row = rows[i]
        close = LocalBinance.partial_candle(row, "1m", now)[4] if row[6] >= now else row[4]
        f = self.exchanges[symbol].symbol_filters(symbol)
        p = Decimal(repr(float(close)))
        return f.round_price(p, direction="nearest") if f is not None and f.tick_size else p

    def _follow(self, every: float) -> None:
        while not self._stop.wait(every):
            for s, ex in self.exchanges.items():
                try:
                    p = self.price(s)
                    if p is not None and p > 0:
                        ex.set_price(s, p)
                except Exception:  # noqa: BLE001 -- a price tick must never kill the follower
                    continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for server in self.servers.values():
            server.stop()
        self.market.stop()


def offline_venue(symbols: list[str] | tuple[str, ...], *, candle_seconds: float, api_key: str, api_secret: str,
                  balances: dict[str, Any] | None = None, fee_rate: float = 0.001, days: int = 2,
                  price_every: float = 0.05) -> OfflineVenue:
    """Start the offline market + one test exchange (one account) per symbol (see the module
    docstring); returns it running. One account per market: markets that shared a quote balance
    would see each other's purchases as their own equity falling."""
    from S1.local.exchange import LocalBinance
    from S1.offline import fast_market, stream_url
    from S7.local.exchange import BinanceTestExchange

    symbols = tuple(dict.fromkeys(symbols))
    market = fast_market(list(symbols), candle_seconds=candle_seconds, days=days)
    servers, exchanges = {}, {}
    for sym in symbols:
        server = LocalBinance(simulate=True, simulate_days=days)
        server.market = market.market          # one market: the same filters (tick, lot) on both servers
        exchange = BinanceTestExchange(server, api_key=api_key, api_secret=api_secret,
                                       balances=dict(balances or OFFLINE_BALANCES), fee_rate=fee_rate)
        server.app.router.add_get("/api/v3/allOrders", exchange._signed(_all_orders(exchange.book)))
        servers[sym], exchanges[sym] = server, exchange
    market.start()
    for server in servers.values():
        server.start()
    venue = OfflineVenue(market=market, servers=servers, exchanges=exchanges, candle_seconds=float(candle_seconds))
    for s, ex in exchanges.items():
        p = venue.price(s)
        if p is not None:
            ex.set_price(s, p)
    venue._thread = threading.Thread(target=venue._follow, args=(price_every,), name="offline-prices", daemon=True)
    venue._thread.start()
    venue.env = {"BINANCE_API_URL": market.api_url, "BINANCE_WS_URL": stream_url(market),
                 "BINANCE_TESTNET_API_KEY": api_key, "BINANCE_TESTNET_API_SECRET": api_secret,
                 "SIMULATED_MARKET": "1"}
    venue.market_env = {s: {"BINANCE_TESTNET_API_URL": srv.api_url} for s, srv in servers.items()}
    return venue


def _all_orders(book):
    def handler(params: dict) -> list:
        sym = params.get("symbol")
        with book.lock:
            return [book.public(o) for o in book.orders.values() if sym is None or o["symbol"] == sym]
    return handler


__all__ = ["OFFLINE_BALANCES", "OfflineVenue", "offline_venue"]
