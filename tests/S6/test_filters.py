"""Exchange filters on the real exchangeInfo capture, exact Decimal rounding, and the
exchangeInfo load path (cache / fetch from a local Binance server / stale fallback)."""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal

import numpy as np
import pytest

from S1.errors import NetworkError, UserError
from S6.filters import (
    D,
    SymbolFilters,
    floor_to_step,
    load_exchange_info,
    plain,
    read_exchange_info_file,
    symbol_filters,
)


# ------------------------------------------------------------ pure rounding
def test_decimal_rounding_is_exact_where_floats_fail():
    # float: 0.3 / 0.1 = 2.9999999999999996 -> floor 2 -> 0.2 (a wrong, smaller order)
    assert np.floor(0.3 / 0.1) * 0.1 != 0.3
    assert floor_to_step(D(0.3), Decimal("0.1")) == Decimal("0.3")
    assert floor_to_step(D("0.123456789"), Decimal("0.00001")) == Decimal("0.12345")
    assert plain(Decimal("1E+1")) == "10" and plain(Decimal("0.14285000")) == "0.14285"
    # numpy scalars (what a vectorised sizing hands over) convert exactly too
    assert D(np.float64(0.1)) == D(np.float32(0.1)) == D(0.1) == Decimal("0.1")
    assert D(np.int64(7)) == 7
    with pytest.raises(UserError, match="not a finite number"):
        D(float("nan"))


def test_new_style_notional_filter_and_market_orders():
    entry = {"symbol": "ETHUSDC", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "USDC", "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
        {"filterType": "LOT_SIZE", "minQty": "0.0001", "maxQty": "9000", "stepSize": "0.0001"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0", "maxQty": "100", "stepSize": "0"},
        {"filterType": "NOTIONAL", "minNotional": "5", "applyMinToMarket": False, "maxNotional": "9000000",
         "applyMaxToMarket": False}]}
    f = SymbolFilters.from_symbol_info(entry)
    assert f.notional_filter == "NOTIONAL" and f.min_notional == 5 and not f.min_notional_market
    limit = f.check_order("0.001", "2000", order_type="LIMIT")
    assert not limit.ok and limit.filter == "NOTIONAL"                   # 2 USDC < 5
    market = f.check_order("0.001", "2000", order_type="MARKET")
    assert market.ok                                                      # applyMinToMarket false
    big = f.check_order("150", "2000", order_type="MARKET")              # MARKET_LOT_SIZE maxQty 100
    assert big.ok and big.qty == 100 and any("maxQty" in a for a in big.adjustments)


# ----------------------------------------------------- real exchangeInfo
def test_btcusdt_rounding(exchange_info_real):
    f = symbol_filters(exchange_info_real, "btcusdt")
    assert (f.step_size, f.min_qty, f.tick_size, f.min_notional) == (
        Decimal("0.00001"), Decimal("0.00001"), Decimal("0.01"), Decimal("10"))
    c = f.check_order(0.142857142857, 43000.004)          # ATR-sized order, price off the tick
    assert c.ok and c.qty == Decimal("0.14285") and c.price == Decimal("43000.00")
    assert c.params() == {"quantity": "0.14285", "price": "43000"}
    assert c.notional == Decimal("0.14285") * Decimal("43000")
    assert f.check_order(0.1, 43000.009, side="SELL").price == Decimal("43000.01")   # a sell rounds up
    # a long's stop rounds towards the entry (risk stays within R), its take-profit down
    assert f.round_price(42300.005, direction="up") == Decimal("42300.01")
    assert f.round_price(44400.009, direction="down") == Decimal("44400.00")


def test_btcusdt_quantity_limits(exchange_info_real):
    f = symbol_filters(exchange_info_real, "BTCUSDT")
    small = f.check_order(0.000005, 43000)
    assert not small.ok and small.filter == "LOT_SIZE" and "minQty 0.00001" in small.reason
    huge = f.check_order(12_345.678, 43000)               # above maxQty 9000: lowered, not refused
    assert huge.ok and huge.qty == Decimal("9000") and any("maxQty" in a for a in huge.adjustments)
    # just below / at the 10 USDT minimum notional
    assert not f.check_order(0.00023, 43000).ok          # 9.89
    assert f.check_order(0.00024, 43000).ok              # 10.32


def test_tiny_price_symbols(exchange_info_real):
    shib = symbol_filters(exchange_info_real, "SHIBUSDT")
    c = shib.check_order(1_234_567.8, 0.0000251234)
    assert c.ok and c.qty == Decimal("1234567") and c.price == Decimal("0.00002512")
    ada = symbol_filters(exchange_info_real, "ADABTC")   # the ADABTC of the 1m capture (0.000028 BTC)
    c = ada.check_order(3.33, 0.00003456789)
    assert c.ok and c.qty == Decimal("3.3") and c.price == Decimal("0.00003456")
    assert ada.check_order(100, 2000).filter == "PRICE_FILTER"          # maxPrice 1000


def test_min_notional_refusal_names_the_fix(exchange_info_real):
    btt = symbol_filters(exchange_info_real, "BTTUSDT")  # price ~0.0035, step 1, min notional 10
    c = btt.check_order(1000, 0.0035)
    assert not c.ok and c.filter == "MIN_NOTIONAL"
    assert "notional 3.5 is below the minimum notional 10" in c.reason
    need = Decimal(c.reason.rsplit(" ", 1)[1])
    assert need == Decimal("2858")                      # ceil(10 / 0.0035) on the step of 1
    assert btt.check_order(need, 0.0035).ok and not btt.check_order(need - 1, 0.0035).ok
    ada = symbol_filters(exchange_info_real, "ADABTC")   # min notional 0.0001 BTC
    c = ada.check_order(2, 0.00003456)
    need = Decimal(c.reason.rsplit(" ", 1)[1])
    assert not c.ok and need == Decimal("2.9") and ada.check_order(need, 0.00003456).ok


def test_symbol_not_trading_and_unknown(exchange_info_real):
    brk = next(s["symbol"] for s in exchange_info_real["symbols"] if s["status"] != "TRADING")
    c = symbol_filters(exchange_info_real, brk).check_order(1, 1)
    assert not c.ok and c.filter == "STATUS"
    with pytest.raises(UserError, match="did you mean.*BTCUSDT"):
        symbol_filters(exchange_info_real, "BTCUSDX")


def test_every_real_symbol_rounds_onto_its_grid(exchange_info_real):
    rng = np.random.default_rng(3)
    symbols = [s for s in exchange_info_real["symbols"] if s["status"] == "TRADING"]
    checked = 0
    for entry in rng.choice(symbols, size=300, replace=False):
        f = SymbolFilters.from_symbol_info(entry)
        price = f.min_price * Decimal(int(rng.integers(1, 10**6))) + f.tick_size * Decimal("0.37")
        if f.max_price is not None and price > f.max_price:
            continue
        qty = f.min_qty * Decimal(float(rng.uniform(1, 5000))).quantize(Decimal("0.000001"))
        c = f.check_order(qty, price)
        assert c.qty <= qty and c.price <= price
        assert (c.qty - f.min_qty) % f.step_size == 0, entry["symbol"]
        assert (c.price - f.min_price) % f.tick_size == 0, entry["symbol"]
        if c.ok:
            assert c.notional >= f.min_notional and c.qty >= f.min_qty
        else:
            assert c.reason and c.filter in ("LOT_SIZE", "MIN_NOTIONAL")
        checked += 1
    assert checked > 200


# ------------------------------------------------------ exchangeInfo loading
def test_exchange_info_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_exchange_info_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):
        read_exchange_info_file(bad)
    bad.write_text(json.dumps({"serverTime": 1}))
    with pytest.raises(UserError, match="no 'symbols' list"):
        read_exchange_info_file(bad)


@pytest.fixture
def local_api(settings_env, monkeypatch, request):
    """A LocalBinance serving a simulated BTCUSDT, with the settings pointed at it."""
    from S1.local.exchange import LocalBinance
    from S1.local.simulated import simulate_candles
    from S1.settings import get_settings

    info = getattr(request, "param", None)
    server = LocalBinance(exchange_info=info).start()
    server.add_candles("BTCUSDT", "1h", simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-02"))
    monkeypatch.setenv("BINANCE_API_URL", server.api_url)
    monkeypatch.setenv("HTTP_MAX_RETRIES", "0")
    get_settings.cache_clear()
    yield server
    server.stop()


def test_fetch_cache_refresh_and_stale_fallback(local_api, caplog):
    from S1.datasets import exchange_info_path
    from S1.settings import get_settings

    cache = exchange_info_path()
    assert not cache.exists()
    body = load_exchange_info()
    assert cache.exists() and json.loads(cache.read_text()) == body
    f = symbol_filters(body, "BTCUSDT")                  # the simulated market's (new-style) filters
    assert f.notional_filter == "NOTIONAL" and f.check_order(0.01, 40_000).ok
    assert len(local_api.requests_to("exchangeInfo")) == 1
    assert load_exchange_info() == body                  # fresh cache: no request
    assert len(local_api.requests_to("exchangeInfo")) == 1
    old = time.time() - 48 * 3600
    os.utime(cache, (old, old))                          # stale -> re-fetched
    load_exchange_info()
    assert len(local_api.requests_to("exchangeInfo")) == 2
    latest = load_exchange_info(refresh=True)
    assert len(local_api.requests_to("exchangeInfo")) == 3
    assert latest["serverTime"] >= body["serverTime"] and json.loads(cache.read_text()) == latest
    # exchange down: a stale cache is still used, with a warning
    local_api.stop()
    os.utime(cache, (old, old))
    get_settings.cache_clear()
    with caplog.at_level("WARNING", logger="S6.filters"):
        assert load_exchange_info() == latest
    assert "using the cache" in caplog.text
    # exchange down and no cache: a NetworkError that names the --exchange-info escape hatch
    cache.unlink()
    with pytest.raises(NetworkError, match="--exchange-info"):
        load_exchange_info()
    assert not cache.exists()


def test_fetched_real_exchange_info_matches_the_capture(shared_dir, settings_env, monkeypatch):
    from S1.local.exchange import LocalBinance, load_real_exchange_info
    from S1.settings import get_settings

    real = load_real_exchange_info(shared_dir)
    with LocalBinance(exchange_info=real) as server:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        get_settings.cache_clear()
        body = load_exchange_info()
    assert len(body["symbols"]) == len(real["symbols"])
    assert symbol_filters(body, "BTCUSDT") == symbol_filters(real, "BTCUSDT")
    assert body["rateLimits"]                            # the server's limits came along


def test_broken_cache_is_refetched(local_api):
    from S1.datasets import exchange_info_path

    cache = exchange_info_path()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{truncated")
    body = load_exchange_info()
    assert json.loads(cache.read_text()) == body and len(local_api.requests_to("exchangeInfo")) == 1
