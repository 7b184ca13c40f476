"""Binance USDⓈ-M futures history through CCXT (``--exchange binance --market swap|future
--price last|mark|index``): CCXT's real ``binance`` class against the local futures API of
:mod:`S1.local.futures` (fapi exchangeInfo/time/klines/markPriceKlines/indexPriceKlines on a
LocalBinance), fed with BTCUSDT 1h Jan-May 2023 (real when ``../shared`` is there) from which
the perpetual, quarterly, mark and index series are derived deterministically."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from S1.datasets import read_candles, read_metadata
from S1.errors import NetworkError, UserError
from S1.history import update_dataset
from S1.intervals import to_ms
from S1.local.exchange import LocalBinance
from S1.local.futures import LocalFutures, fapi_kline_weight, quarterly
from tests.S1.server_log import assert_retry_after_honoured

pytest.importorskip("ccxt")
NOW = "2023-05-31 12:30"  # mid-candle: the 12:00 candle is in progress


@pytest.fixture
def fut(btc_1h, settings_env, monkeypatch):
    """LocalBinance + the futures routes, BTCUSDT perpetual and BTCUSDT_230630 listed, settings
    pointed at it (only BINANCE_API_URL: the futures URLs must follow)."""
    from S1.settings import get_settings

    server = LocalBinance(now_ms=to_ms(NOW))
    f = LocalFutures(server)
    f.frames = f.add_pair("BTCUSDT", "1h", btc_1h, quarterlies=("2023-06-30",))
    with server:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        monkeypatch.setenv("HTTP_MAX_RETRIES", "3")
        get_settings.cache_clear()
        yield f
    get_settings.cache_clear()


def _ts(x) -> pd.Timestamp:
    t = pd.Timestamp(x)
    return t.tz_localize("UTC") if t.tzinfo is None else t


def _window(src: pd.DataFrame, start, end) -> pd.DataFrame:
    return src[(src.index >= _ts(start)) & (src["close_time"] < _ts(end))]


def _ok(server: LocalBinance, path: str):
    return [r for r in server.requests_to(path) if r.status == 200]


def _spans(reqs) -> list[tuple[int, int]]:
    return sorted((int(r.params["startTime"]), int(r.params["endTime"])) for r in reqs)


def _update(**kw):
    return update_dataset(**{"symbol": "BTC/USDT", "interval": "1h", "exchange": "binance", "market": "swap",
                             "progress": False, **kw})


# ================================================================ swap, last price
def test_swap_pages_exactly_and_writes_the_servers_candles(fut):
    s = _update(days=120, end="2023-05-20")
    assert s.path.name == "binance-swap_btcusdt_1h_120d.parquet"
    got = read_candles(s.path)
    want = _window(fut.frames[("last", "BTCUSDT")], "2023-01-20", "2023-05-20")
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_freq=False)
    pages = _ok(fut.server, "/fapi/v1/klines")
    spans = _spans(pages)
    assert len(pages) == math.ceil(120 * 24 / 499), "499-candle pages (fapi weight 2, not 5)"
    assert spans[0][0] == to_ms("2023-01-20") and spans[-1][1] == to_ms("2023-05-20") - 1
    assert all(b + 1 == c for (_, b), (c, _) in pairwise(spans)), "adjacent pages, no overlap"
    assert {r.params["symbol"] for r in pages} == {"BTCUSDT"} and all(int(r.params["limit"]) <= 499 for r in pages)
    assert not [r for r in fut.server.requests if r.path.startswith("/api/")], "nothing asked of the spot API"
    meta = read_metadata(s.path)
    assert (meta["exchange"], meta["market"], meta["price"], meta["client"]) == ("binance", "swap", "last", "ccxt")
    assert (meta["ccxt_symbol"], meta["market_id"]) == ("BTC/USDT:USDT", "BTCUSDT")
    assert meta["source_url"] == f"{fut.server.url}/fapi/v1" and meta["unreported_columns"] == []
    assert (meta["coverage_start_ms"], meta["coverage_end_ms"]) == (to_ms("2023-01-20"), to_ms("2023-05-20"))


def test_candle_in_progress_is_dropped_then_fetched_once_closed(fut):
    s = _update(days=2)
    got = read_candles(s.path)
    assert got.index[-1] == pd.Timestamp("2023-05-31 11:00", tz="UTC")
    assert fut.server.requests_to("/fapi/v1/time") and not fut.server.requests_to("/api/v3/time"), \
        "the window ends at the futures API's clock"
    last_page = _ok(fut.server, "/fapi/v1/klines")[-1]
    assert int(last_page.params["endTime"]) >= to_ms("2023-05-31 12:00"), "the server did serve the 12:00 candle"
    before = got
    # same clock: only the open candle's bucket is asked again, nothing new is written
    fut.server.requests.clear()
    s2 = _update(days=2)
    assert [int(r.params["startTime"]) for r in _ok(fut.server, "/fapi/v1/klines")] == [to_ms("2023-05-31 12:00")]
    assert s2.new_rows == 0
    pd.testing.assert_frame_equal(read_candles(s2.path), before)
    # 14:10: the 12:00 candle has closed and is fetched (no gap left behind), 14:00 is in progress
    fut.server.set_now(to_ms("2023-05-31 14:10"))
    s3 = _update(days=2)
    got = read_candles(s3.path)
    assert got.index[-1] == pd.Timestamp("2023-05-31 13:00", tz="UTC") and s3.gaps == [] and s3.new_rows == 2
    pd.testing.assert_frame_equal(got, _window(fut.frames[("last", "BTCUSDT")], got.index[0], "2023-05-31 14:00"),
                                  check_exact=True, check_freq=False)


def test_rerun_fetches_nothing_and_a_wider_window_only_the_difference(fut):
    s1 = _update(days=20, end="2023-05-01")
    before = s1.path.read_bytes()
    fut.server.requests.clear()
    s2 = _update(days=20, end="2023-05-01")
    assert not fut.server.requests_to("/fapi/v1/klines") and s2.new_rows == 0
    assert s2.path.read_bytes() == before
    wide = _update(days=22, end="2023-05-02", out=s1.path)
    for a, b in _spans(_ok(fut.server, "/fapi/v1/klines")):
        assert b < to_ms("2023-04-11") or a >= to_ms("2023-05-01"), "covered candles fetched again"
    assert wide.new_rows == 2 * 24
    pd.testing.assert_frame_equal(read_candles(s1.path), _window(fut.frames[("last", "BTCUSDT")], "2023-04-10",
                                                                 "2023-05-02"), check_exact=True, check_freq=False)


# ======================================================================= mark / index
def test_mark_and_index_prices(fut):
    mark = _update(days=30, end="2023-05-01", price="mark")
    assert mark.path.name == "binance-swap-mark_btcusdt_1h_30d.parquet"
    pd.testing.assert_frame_equal(read_candles(mark.path), _window(fut.frames[("mark", "BTCUSDT")], "2023-04-01",
                                                                   "2023-05-01"), check_exact=True, check_freq=False)
    got = read_candles(mark.path)
    zero = ["volume", "quote_volume", "taker_buy_base", "taker_buy_quote", "trades"]
    assert (got[zero] == 0).all().all(), "no traded volume; Binance's sample count is not a trade count"
    reqs = _ok(fut.server, "/fapi/v1/markPriceKlines")
    assert len(reqs) == 2 and {r.params["symbol"] for r in reqs} == {"BTCUSDT"}, "720 candles = 499 + 221"
    assert read_metadata(mark.path)["price"] == "mark"

    idx = _update(days=30, end="2023-05-01", price="index")
    assert idx.path.name == "binance-swap-index_btcusdt_1h_30d.parquet"
    pd.testing.assert_frame_equal(read_candles(idx.path), _window(fut.frames[("index", "BTCUSDT")], "2023-04-01",
                                                                  "2023-05-01"), check_exact=True, check_freq=False)
    reqs = _ok(fut.server, "/fapi/v1/indexPriceKlines")
    assert reqs and all(r.params.get("pair") == "BTCUSDT" and "symbol" not in r.params for r in reqs)
    # three different series: the file would be wrong if the price type was not routed
    last = _update(days=30, end="2023-05-01")
    closes = [read_candles(p)["close"].to_numpy() for p in (last.path, mark.path, idx.path)]
    assert not np.array_equal(closes[0], closes[1]) and not np.array_equal(closes[1], closes[2])
    with pytest.raises(UserError, match="holds binance/swap/index candles"):
        _update(days=30, end="2023-05-01", price="mark", out=idx.path)


# ============================================================================ faults
def test_429_retry_after_is_honoured_and_5xx_retried(fut):
    fut.server.inject("status", status=503, path="markPriceKlines", count=1)
    fut.server.inject("429", path="markPriceKlines", retry_after=1, count=1, after=2)
    s = _update(days=60, end="2023-05-20", price="mark")
    pd.testing.assert_frame_equal(read_candles(s.path), _window(fut.frames[("mark", "BTCUSDT")], "2023-03-21",
                                                                "2023-05-20"), check_exact=True, check_freq=False)
    statuses = [r.status for r in fut.server.requests_to("markPriceKlines")]
    assert 503 in statuses and 429 in statuses
    # the server's log: nothing sent into the 1 s window but the pages in flight (CcxtSource: 4 at a time)
    assert_retry_after_honoured(fut.server.requests, retry_after=1, in_flight=4)
    assert s.stats.rest_retries >= 2 and s.stats.rate_limit_waits >= 1


def test_persistent_failure_names_the_futures_url_and_keeps_the_file(fut, monkeypatch):
    from S1.settings import get_settings

    s = _update(days=10, end="2023-05-01")
    before = s.path.read_bytes()
    monkeypatch.setenv("HTTP_MAX_RETRIES", "1")
    get_settings.cache_clear()
    fut.server.inject("status", status=503, path="/fapi/v1/klines", count=100)
    with pytest.raises(NetworkError, match=r"cannot reach http://127\.0\.0\.1:\d+/fapi/v1 \(candles: .*after 2 attempts"):
        _update(days=12, end="2023-05-01", out=s.path)
    assert s.path.read_bytes() == before


# ================================================================= dated futures
def test_future_market_picks_the_dated_contract(fut):
    s = _update(days=30, end="2023-05-01", market="future")
    assert s.path.name == "binance-future_btcusdt230630_1h_30d.parquet", "the expiry is part of the file symbol"
    pd.testing.assert_frame_equal(read_candles(s.path), _window(fut.frames[("last", "BTCUSDT_230630")], "2023-04-01",
                                                                "2023-05-01"), check_exact=True, check_freq=False)
    assert {r.params["symbol"] for r in _ok(fut.server, "/fapi/v1/klines")} == {"BTCUSDT_230630"}
    meta = read_metadata(s.path)
    assert (meta["market"], meta["ccxt_symbol"], meta["market_id"]) == ("future", "BTC/USDT:USDT-230630",
                                                                        "BTCUSDT_230630")
    # the quarterly trades above the perpetual (basis), so a mix-up would show
    perp = _window(fut.frames[("last", "BTCUSDT")], "2023-04-01", "2023-05-01")
    assert (read_candles(s.path)["close"] > perp["close"]).all()
    # a second quarterly listed: BTC/USDT is ambiguous, the unified symbol or the id picks one
    fut.add_contract(quarterly("BTC", "USDT", "2023-09-29", contract_type="NEXT_QUARTER"))
    with pytest.raises(UserError, match=r"matches 2 future markets on binance.*BTC/USDT:USDT-230630, "
                                        r"BTC/USDT:USDT-230929"):
        _update(days=30, end="2023-05-01", market="future")
    plan = _update(days=30, end="2023-05-01", market="future", symbol="BTCUSDT_230929", plan=True)
    assert plan.path.name == "binance-future_btcusdt230929_1h_30d.parquet"


def test_unknown_contract_is_one_clear_error(fut):
    with pytest.raises(UserError, match=r"unknown symbol 'ETH/USDT' on binance \(swap\)"):
        _update(days=3, symbol="ETH/USDT")
    assert not fut.server.requests_to("Klines") and not fut.server.requests_to("/klines")


# ========================================================================= the CLI
def test_cli_binance_swap_and_future(fut, settings_env, capsys):
    from S1.historical import main

    assert main(["--exchange", "binance", "--market", "swap", "--price", "mark", "--symbol", "BTC/USDT",
                 "--interval", "1h", "--days", "30", "--end", "2023-05-01", "--no-progress"]) == 0
    path = settings_env.data_dir / "binance-swap-mark_btcusdt_1h_30d.parquet"
    out = capsys.readouterr().out
    assert f"{path}: 720 candles" in out and "via ccxt binance" in out
    pd.testing.assert_frame_equal(read_candles(path), _window(fut.frames[("mark", "BTCUSDT")], "2023-04-01",
                                                              "2023-05-01"), check_exact=True, check_freq=False)
    # the index of a dated contract: CCXT asks for the pair (BTCUSDT) of BTCUSDT_230630
    assert main(["--exchange", "binance", "--market", "future", "--price", "index", "--symbol", "BTCUSDT",
                 "--days", "10", "--end", "2023-05-01", "--no-progress", "--format", "csv"]) == 0
    path = settings_env.data_dir / "binance-future-index_btcusdt230630_1h_10d.parquet"
    assert f"{path}: 240 candles" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_candles(path), _window(fut.frames[("index", "BTCUSDT")], "2023-04-21",
                                                              "2023-05-01"), check_exact=True, check_freq=False)
    from S1.formats import read_export

    pd.testing.assert_frame_equal(read_export(path.with_suffix(".csv")), read_candles(path))


# ================================================================ the local server
def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_local_fapi_speaks_binances_protocol(fut):
    base = f"{fut.server.url}/fapi/v1"
    start = to_ms("2023-01-10")
    for _ in range(2):  # the server's weight counter restarts each minute: redo if one began meanwhile
        minute, used = int(time.time() // 60), []
        for limit in (99, 499, 500, 1500):
            status, headers, rows = _get(f"{base}/klines?symbol=BTCUSDT&interval=1h&startTime={start}&limit={limit}")
            assert status == 200 and len(rows) == limit and rows[0][0] == start
            used.append(int(headers["X-MBX-USED-WEIGHT-1M"]))
        if int(time.time() // 60) == minute:
            break
    assert np.diff(used).tolist() == [fapi_kline_weight(499), fapi_kline_weight(500), fapi_kline_weight(1500)] \
        == [2, 5, 10]
    status, _, err = _get(f"{base}/klines?symbol=BTCUSDT&interval=1h&limit=1501")
    assert (status, err["code"]) == (400, -1130)
    status, _, err = _get(f"{base}/indexPriceKlines?symbol=BTCUSDT&interval=1h")
    assert (status, err["code"]) == (400, -1102) and "'pair'" in err["msg"]
    status, _, err = _get(f"{base}/markPriceKlines?symbol=ETHUSDT&interval=1h")
    assert (status, err["code"]) == (400, -1121)
    # mark klines: "0" volumes, the number of 1-second samples at index 8; the open candle is partial
    _, _, rows = _get(f"{base}/markPriceKlines?symbol=BTCUSDT&interval=1h&limit=2")
    assert [r[0] for r in rows] == [to_ms("2023-05-31 11:00"), to_ms("2023-05-31 12:00")]
    assert rows[0][5] == rows[0][7] == "0" and rows[0][8] == 3600 and rows[1][8] == 1800
    mark = fut.frames[("mark", "BTCUSDT")]["close"]
    assert float(rows[0][4]) == mark.loc[_ts("2023-05-31 11:00")]
    assert float(rows[1][4]) != mark.loc[_ts("2023-05-31 12:00")], "the candle in progress is partial"
    # endTime alone: the newest `limit` candles before it
    end = to_ms("2023-03-01")
    _, _, rows = _get(f"{base}/klines?symbol=BTCUSDT_230630&interval=1h&endTime={end}&limit=3")
    assert [r[0] for r in rows] == [end - 3 * 3_600_000 + i * 3_600_000 for i in range(1, 4)]
    # exchangeInfo: the real shape CCXT parses
    _, _, info = _get(f"{base}/exchangeInfo")
    assert info["futuresType"] == "U_MARGINED"
    by = {s["symbol"]: s for s in info["symbols"]}
    assert by["BTCUSDT"]["contractType"] == "PERPETUAL" and by["BTCUSDT"]["deliveryDate"] == 4133404800000
    assert by["BTCUSDT_230630"]["contractType"] == "CURRENT_QUARTER"
    assert by["BTCUSDT_230630"]["deliveryDate"] == to_ms("2023-06-30 08:00") and by["BTCUSDT_230630"]["pair"] == "BTCUSDT"
    assert {f["filterType"] for f in by["BTCUSDT"]["filters"]} >= {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE",
                                                                   "MIN_NOTIONAL", "PERCENT_PRICE"}
    _, _, dinfo = _get(f"{fut.server.url}/dapi/v1/exchangeInfo")
    assert [s["symbol"] for s in dinfo["symbols"]] == ["BTCUSD_PERP"] and dinfo["symbols"][0]["contractSize"] == 100


def test_binance_futures_urls_follow_binance_api_url_only_off_binance():
    from S1.ccxt_source import Venue, make_exchange
    from S1.settings import Settings

    def urls(api_url):
        return make_exchange(Venue("binance", "swap"), Settings(_env_file=None, binance_api_url=api_url)).urls["api"]

    real = urls("https://api.binance.com/api")
    assert real["fapiPublic"] == "https://fapi.binance.com/fapi/v1" and real["public"] == "https://api.binance.com/api/v3"
    assert urls("https://api1.binance.com/api")["fapiPublic"] == "https://fapi.binance.com/fapi/v1", \
        "another Binance spot host does not move the futures API"
    local = urls("http://127.0.0.1:8765/api")
    assert local["public"] == "http://127.0.0.1:8765/api/v3"
    assert (local["fapiPublic"], local["dapiPublic"]) == ("http://127.0.0.1:8765/fapi/v1", "http://127.0.0.1:8765/dapi/v1")
    assert urls("http://proxy.lan/binance/api")["fapiPublic"] == "http://proxy.lan/binance/fapi/v1"
