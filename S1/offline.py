"""Offline mode: the one door from product code to S1's local servers and simulators.

Everything in :mod:`S1.local` (the Binance-compatible REST/archive/stream servers, the OKX and
USD-M futures servers, the deterministic simulated market) exists for offline runs and tests.
Product modules never import :mod:`S1.local` directly; they call the functions here, so the
boundary between "the product" and "the stand-ins for the internet" is one file wide and an
architecture test (``tests/test_architecture.py``) keeps it that way.

>>> df = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-02")
>>> len(df), df.index.tz is not None
(24, True)
>>> simulated_symbol_info("BTCUSDT", 100.0)["symbol"]
'BTCUSDT'
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: The one line every command prints when it runs offline.
OFFLINE_BANNER = ("offline: running against the project's local exchange on a SIMULATED market "
                  "(not real prices; every output is labelled simulated)")


def simulate_candles(symbol: str, interval: str, start, end):
    """Deterministic *simulated* candles for ``symbol`` (see :func:`S1.local.simulated.simulate_candles`)."""
    from S1.local.simulated import simulate_candles as _simulate

    return _simulate(symbol, interval, start, end)


def simulated_symbol_info(symbol: str, price: float) -> dict:
    """The generic ``exchangeInfo`` symbol entry the simulated market trades under (lot step, tick, notional)."""
    from S1.local.exchange import simulated_symbol_info as _info

    return _info(symbol, price)


@contextmanager
def local_market(*, days: int = 395, futures: bool = False) -> Iterator[dict[str, str]]:
    """Start the local Binance-compatible server on a simulated market; yield the environment that points
    every S1/S7 client at it (``BINANCE_API_URL``, ``BINANCE_ARCHIVE_URL``, the testnet URL, and
    ``SIMULATED_MARKET=1`` so every output is labelled simulated). The server stops on exit.
    ``futures``: also serve the USD-M routes (klines, funding, premium index, open interest) of a
    simulated perpetual of every symbol (``S1/funding.py --offline``)."""
    from S1.local.exchange import LocalBinance

    server = LocalBinance(simulate=True, simulate_days=days)
    if futures:
        from S1.local.futures import LocalFutures

        LocalFutures(server)
    server.start()
    try:
        yield {"BINANCE_API_URL": server.api_url, "BINANCE_ARCHIVE_URL": server.url,
               "BINANCE_TESTNET_API_URL": server.api_url, "SIMULATED_MARKET": "1"}
    finally:
        server.stop()


def fast_market(symbols: list[str], *, candle_seconds: float, interval: str = "1m", days: int = 2,
                updates_per_candle: int = 2):
    """An *unstarted* local Binance-compatible server (REST + kline streams on one port) replaying a
    simulated market on an accelerated clock: a ``1m`` candle closes every ``candle_seconds`` wall
    seconds (the S8 service's ``--offline --offline-candle-seconds N``). The streamer's REST backfill
    and its stream see the same candles (one shared clock). Other sprints may add routes (e.g. the
    S7 signed test exchange) before ``server.start()``; ``server.stop()`` ends it. The market holds
    ``days`` of history before now and two days after (at 1 s candles: 48 minutes of replay).

    >>> server = fast_market(["BTCUSDT"], candle_seconds=1)
    >>> server.market[("BTCUSDT", "1m")].shape[1] >= 11, server.port
    (True, 0)
    """
    from S1.local.exchange import LocalBinance
    from S1.local.stream import LocalStream, ReplayClock

    if not candle_seconds or candle_seconds <= 0:
        raise ValueError("candle_seconds must be positive (e.g. 1: a 1m candle closes every second)")
    clock = ReplayClock(None, 60.0 / float(candle_seconds))
    server = LocalBinance(simulate=True, simulate_days=days, now_ms=clock.now_ms)
    LocalStream(server, clock, updates_per_candle=updates_per_candle)
    for s in symbols:
        server.rows_for(s, interval)
        if interval != "1m":
            server.rows_for(s, "1m")
    return server


def stream_url(server) -> str:
    """The ``BINANCE_WS_URL`` of a :func:`fast_market` server (once started)."""
    return f"ws://{server.host}:{server.port}"


def offline_requested(flag: bool = False) -> bool:
    """True when a command should run offline: ``--offline`` given, or ``OFFLINE=1`` in ``.env`` / the
    environment (the settings' ``offline``)."""
    if flag:
        return True
    from S1.settings import get_settings

    try:
        return bool(get_settings().offline)
    except Exception:   # broken settings are reported by the command itself
        return False


@contextmanager
def offline_mode(flag: bool = False, *, days: int = 395, stream_symbols: list[str] | None = None,
                 candle_seconds: float = 60.0, futures: bool = False,
                 quiet: bool = False) -> Iterator[dict[str, str] | None]:
    """The ``--offline`` of every network command: when :func:`offline_requested`, start the local
    Binance-compatible exchange on a simulated market for the duration of the ``with`` block, point this
    process's settings at it (``BINANCE_API_URL``, archive and testnet URLs, ``SIMULATED_MARKET=1`` so
    every output is labelled simulated) and yield that environment; otherwise yield None and change nothing.

    ``stream_symbols``: also serve kline WebSocket streams for these symbols (the streamer), on a market
    whose 1m candle closes every ``candle_seconds`` wall seconds (60: real time).
    The environment and the settings are restored on exit.
    """
    if not offline_requested(flag):
        yield None
        return

    if not quiet:
        print(OFFLINE_BANNER, file=sys.stderr, flush=True)
    if stream_symbols:
        server = fast_market([str(s).upper() for s in stream_symbols], candle_seconds=candle_seconds)
        server.start()
        env = {"BINANCE_API_URL": server.api_url, "BINANCE_ARCHIVE_URL": server.url,
               "BINANCE_TESTNET_API_URL": server.api_url, "BINANCE_WS_URL": stream_url(server),
               "SIMULATED_MARKET": "1"}
        stop = server.stop
    else:
        cm = local_market(days=days, futures=futures)
        env = cm.__enter__()
        stop = lambda: cm.__exit__(None, None, None)  # noqa: E731
    try:
        with environment(env):
            yield dict(env)
    finally:
        stop()


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` (and re-read the settings) for the block; restore both after."""

    from S1.settings import get_settings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
