"""S7 fixtures: the local test exchange (a LocalBinance with the signed order
endpoints of S7.local.exchange, real clock, real sockets) with settings pointed at
it, rule files and a local webhook receiver (helpers in tests/S7/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.S7.helpers import ABOVE_100, API_KEY, CANARY_SECRET, SHARED, Receiver, TestEnv


@pytest.fixture
def texchange(settings_env, monkeypatch, tmp_path):
    """A running local test exchange (simulated market, the real exchangeInfo when
    ``../shared`` is present), settings pointed at it with testnet keys (the secret is
    the canary), HTTP timeout 1 s."""
    from S1.local.exchange import LocalBinance, load_real_exchange_info
    from S1.settings import get_settings
    from S7.local.exchange import BinanceTestExchange

    info = load_real_exchange_info(SHARED) if (SHARED / "data").is_dir() else None
    server = LocalBinance(simulate=True, simulate_days=5, exchange_info=info)
    ex = BinanceTestExchange(server, api_key=API_KEY, api_secret=CANARY_SECRET)
    server.start()
    monkeypatch.setenv("BINANCE_API_URL", server.api_url)
    monkeypatch.setenv("BINANCE_TESTNET_API_URL", server.api_url)
    monkeypatch.setenv("BINANCE_TESTNET_API_KEY", API_KEY)
    monkeypatch.setenv("BINANCE_TESTNET_API_SECRET", CANARY_SECRET)
    monkeypatch.setenv("HTTP_TIMEOUT", "5")  # generous for a loaded machine; held answers (600 s) still time out
    get_settings.cache_clear()
    try:
        yield TestEnv(server, ex, get_settings(), tmp_path)
    finally:
        server.stop()
        get_settings.cache_clear()


@pytest.fixture
def rules_file(tmp_path):
    def make(text: str = ABOVE_100, name: str = "rules.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return make


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()
