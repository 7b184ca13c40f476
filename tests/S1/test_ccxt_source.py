"""S1 history through CCXT: CCXT's Binance class against the local Binance server (the
same candles as the python-binance path), and the local OKX server (S1/local/okx.py) speaking OKX's real
candle API (``/api/v5/market/history-candles``: ``after``/``before``/``limit``, newest
first, the ``confirm`` flag on the candle in progress) for paging, in-progress and
unconfirmed candles, mark/index prices, faults and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from S1.datasets import read_candles, read_metadata
from S1.errors import NetworkError, UserError
from S1.history import update_dataset
from S1.intervals import to_ms
from S1.local.okx import LocalOkx
from S1.local.simulated import simulate_candles
from tests.S1.server_log import assert_retry_after_honoured

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("ccxt")


def _window(src: pd.DataFrame, start, end) -> pd.DataFrame:
    return src[(src.index >= pd.Timestamp(start, tz="UTC")) & (src["close_time"] < pd.Timestamp(end, tz="UTC"))]


# ============================================================ Binance through CCXT
def test_ccxt_binance_gives_the_same_candles_as_python_binance(exchange, btc_1h, tmp_path):
    via_ccxt = update_dataset(symbol="BTC/USDT", interval="1h", days=120, end="2023-05-20", client="ccxt",
                              progress=False)
    pages = [r for r in exchange.requests_to("/api/v3/klines") if r.status == 200]
    via_pb = update_dataset(symbol="BTCUSDT", interval="1h", days=120, end="2023-05-20", source="rest",
                            out=tmp_path / "pb.parquet", progress=False)
    got = read_candles(via_ccxt.path)
    pd.testing.assert_frame_equal(got, read_candles(via_pb.path))
    pd.testing.assert_frame_equal(got, _window(btc_1h, pd.Timestamp("2023-05-20") - pd.Timedelta(days=120),
                                               "2023-05-20"), check_freq=False)
    assert via_ccxt.path.name == "btcusdt_1h_120d.parquet", "Binance spot keeps the plain name"
    meta = read_metadata(via_ccxt.path)
    assert meta["client"] == "ccxt" and meta["exchange"] == "binance" and meta["unreported_columns"] == []
    # exact pages: adjacent, non-overlapping, at most 1,000 candles each
    spans = sorted((int(r.params["startTime"]), int(r.params["endTime"])) for r in pages)
    assert len(spans) == int(np.ceil(len(got) / 1000))
    assert all(b + 1 == c for (_, b), (c, _) in zip(spans, spans[1:]))
    assert all(int(r.params["limit"]) <= 1000 for r in pages)


def test_ccxt_binance_never_writes_the_candle_in_progress(exchange, btc_1h):
    s = update_dataset(symbol="BTC/USDT", interval="1h", days=2, client="ccxt", progress=False)
    got = read_candles(s.path)
    assert got.index[-1] == pd.Timestamp("2023-05-31 11:00", tz="UTC")
    last_page = [r for r in exchange.requests_to("/api/v3/klines") if r.status == 200][-1]
    assert int(last_page.params["endTime"]) >= to_ms("2023-05-31 12:00"), "the server did serve the 12:00 candle"
    assert read_metadata(s.path)["coverage_end_ms"] == to_ms("2023-05-31 12:30")


def test_ccxt_binance_rerun_fetches_nothing(exchange):
    s1 = update_dataset(symbol="BTC/USDT", interval="1h", days=30, end="2023-05-01", client="ccxt", progress=False)
    before = s1.path.read_bytes()
    exchange.requests.clear()
    s2 = update_dataset(symbol="BTC/USDT", interval="1h", days=30, end="2023-05-01", client="ccxt", progress=False)
    assert not exchange.requests_to("/api/v3/klines") and s2.new_rows == 0
    assert s2.path.read_bytes() == before


def test_ccxt_binance_faults_are_retried_and_retry_after_honoured(exchange, btc_1h):
    exchange.inject("status", status=503, count=2)
    exchange.inject("drop", count=1, after=1)
    exchange.inject("truncate", count=1, after=2)
    exchange.inject("429", retry_after=1, count=1, after=3)
    s = update_dataset(symbol="BTC/USDT", interval="1h", days=150, end="2023-05-30", client="ccxt", progress=False)
    pd.testing.assert_frame_equal(read_candles(s.path), _window(btc_1h, "2022-12-31", "2023-05-30")
                                  .loc["2023-01-01":], check_freq=False)
    statuses = [r.status for r in exchange.requests_to("/api/v3/klines")]
    assert statuses.count(503) == 2 and 0 in statuses and -200 in statuses and 429 in statuses
    # the server's log: nothing sent into the 1 s window but the pages in flight (CcxtSource: 4 at a time)
    assert_retry_after_honoured(exchange.requests, retry_after=1, in_flight=4, api="/api/")
    # (aiohttp itself re-sends an idempotent GET once when a reused connection drops)
    assert s.stats.rest_retries >= 4 and s.stats.rate_limit_waits >= 1


def test_ccxt_long_ban_is_reported_not_waited_out(exchange, monkeypatch):
    from S1.settings import get_settings

    monkeypatch.setenv("HTTP_MAX_RETRIES", "2")
    get_settings.cache_clear()
    exchange.inject("418", retry_after=600, count=10)
    with pytest.raises(NetworkError, match="back off for 60[0-9]s"):
        update_dataset(symbol="BTC/USDT", interval="1h", days=30, end="2023-03-01", client="ccxt", progress=False)
    # reported, not waited out: the ban was met by the requests in flight, none sent into it afterwards
    assert [r.status for r in exchange.requests_to("/api/v3/klines")] == [418], "the one page was not retried"


def test_ccxt_bad_input_is_one_clear_error(exchange):
    with pytest.raises(UserError, match="unknown symbol 'BTC/USTD' on binance.*did you mean BTC/USDT"):
        update_dataset(symbol="BTC/USTD", interval="1h", days=3, client="ccxt", progress=False)
    with pytest.raises(UserError, match="unknown exchange 'okxx'.*did you mean okx"):
        update_dataset(symbol="BTC/USDT", interval="1h", days=3, exchange="okxx", progress=False)
    with pytest.raises(UserError, match="--price mark exists only for derivatives"):
        update_dataset(symbol="BTC/USDT", interval="1h", days=3, exchange="okx", price="mark", progress=False)
    with pytest.raises(UserError, match="Binance's public spot archive"):
        update_dataset(symbol="BTC/USDT", interval="1h", days=3, exchange="okx", source="archive", progress=False)


# ===================================================================== local OKX
@pytest.fixture(scope="module")
def okx_sources() -> dict[str, pd.DataFrame]:
    return {name: simulate_candles(name, "1h", "2023-01-01", "2023-06-01")
            for name in ("BTCUSDT", "BTCUSDTPERP", "BTCMARK", "BTCINDEX")}


@pytest.fixture
def okx(settings_env, monkeypatch, okx_sources):
    """A local OKX at 2023-05-31 12:30 UTC serving BTC-USDT spot, BTC-USDT-SWAP last/mark and the
    BTC-USDT index, 1h, Jan-May 2023 (simulated), with CCXT_API_URLS pointed at it."""
    from S1.settings import get_settings

    with LocalOkx("2023-05-31 12:30") as ex:
        ex.src = okx_sources
        ex.spot = ex.src["BTCUSDT"]
        ex.add("last", "BTC-USDT", "1h", ex.spot)
        ex.add("last", "BTC-USDT-SWAP", "1h", ex.src["BTCUSDTPERP"])
        ex.add("mark", "BTC-USDT-SWAP", "1h", ex.src["BTCMARK"])
        ex.add("index", "BTC-USDT", "1h", ex.src["BTCINDEX"])
        monkeypatch.setenv("CCXT_API_URLS", f"okx={ex.server.url}")
        monkeypatch.setenv("HTTP_MAX_RETRIES", "3")
        get_settings.cache_clear()
        yield ex
    get_settings.cache_clear()


def _assert_okx_frame(got: pd.DataFrame, src: pd.DataFrame, *, prices_only: bool = False) -> None:
    cols = ["open", "high", "low", "close"] + ([] if prices_only else ["volume", "quote_volume"])
    pd.testing.assert_frame_equal(got[cols], src.loc[got.index, cols], check_freq=False)
    assert got.index.equals(src.index[(src.index >= got.index[0]) & (src.index <= got.index[-1])])
    assert (got["close_time"] == got.index + pd.Timedelta(hours=1) - pd.Timedelta(milliseconds=1)).all()
    assert (got["trades"] == 0).all() and got["taker_buy_base"].isna().all()


def test_okx_pages_exactly_with_after_before(okx):
    s = update_dataset(symbol="BTC/USDT", interval="1h", days=30, end="2023-05-20", exchange="okx", progress=False)
    got = read_candles(s.path)
    assert s.path.name == "okx_btcusdt_1h_30d.parquet" and len(got) == 720
    _assert_okx_frame(got, _window(okx.spot, "2023-04-20", "2023-05-20"))
    reqs = [r for r in okx.requests if r.status == 200]
    assert [r.path for r in reqs] == ["/api/v5/market/history-candles"] * 3, "720 candles = 300 + 300 + 120"
    spans = sorted((int(r.params["before"]), int(r.params["after"])) for r in reqs)
    assert spans[0][0] == to_ms("2023-04-20") - 1 and spans[-1][1] == to_ms("2023-05-20") - 1
    assert all(b + 1 == c + 1 for (_, b), (c, _) in zip(spans, spans[1:])), "pages adjacent, no overlap"
    assert all(r.params["bar"] == "1H" and int(r.params["limit"]) <= 300 for r in reqs)
    # CCXT's own limiter (okx: rateLimit 110 ms x cost 1 for history-candles) spaced the parallel pages
    arrivals = sorted(r.arrived for r in reqs)
    assert min(b - a for a, b in zip(arrivals, arrivals[1:])) >= 0.09
    meta = read_metadata(s.path)
    assert (meta["exchange"], meta["market"], meta["ccxt_symbol"], meta["market_id"]) == \
        ("okx", "spot", "BTC/USDT", "BTC-USDT")
    assert meta["unreported_columns"] == ["trades", "taker_buy_base", "taker_buy_quote"]


def test_okx_short_pages_are_continued_exactly(okx):
    okx.history_limit = 100  # the exchange caps lower than CCXT asks (300)
    s = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end="2023-05-20", exchange="okx", progress=False)
    _assert_okx_frame(read_candles(s.path), _window(okx.spot, "2023-04-20", "2023-05-20"))
    reqs = [r for r in okx.requests if r.status == 200]
    assert len(reqs) == 3 + 3 + 2, "each 300-candle page continued in 100-candle steps"
    by_page: dict[int, list[int]] = {}
    for r in reqs:
        by_page.setdefault(int(r.params["before"]), []).append(int(r.params["after"]))
    assert len(by_page) == 3
    for ends in by_page.values():  # OKX answers the newest 100: each continuation ends where the last began
        ends = sorted(ends, reverse=True)
        assert all(x - y == 100 * 3_600_000 for x, y in zip(ends, ends[1:])), "no candle asked twice"


def test_okx_candle_in_progress_and_unconfirmed_candles_are_not_written(okx):
    s = update_dataset(symbol="BTC/USDT", interval="1h", days=2, exchange="okx", progress=False)
    got = read_candles(s.path)
    assert got.index[-1] == pd.Timestamp("2023-05-31 11:00", tz="UTC"), "12:00 was served with confirm=0"
    # the exchange has not confirmed 11:00 and 12:00 yet (finalisation lag): neither is written ...
    okx.unconfirmed_lag_ms = 3_600_000
    okx.server.set_now(to_ms("2023-05-31 13:30"))
    s2 = update_dataset(symbol="BTC/USDT", interval="1h", days=2, exchange="okx", progress=False,
                        out=s.path.with_name("lag.parquet"))
    assert read_candles(s2.path).index[-1] == pd.Timestamp("2023-05-31 11:00", tz="UTC")
    assert read_metadata(s2.path)["coverage_end_ms"] == to_ms("2023-05-31 12:00")
    assert any("not final on okx" in n for n in s2.stats.notes)
    # ... and the next run, once it is final, fetches it
    okx.unconfirmed_lag_ms = 0
    okx.server.requests.clear()
    s3 = update_dataset(symbol="BTC/USDT", interval="1h", days=2, exchange="okx", progress=False, out=s2.path)
    assert okx.requests and read_candles(s3.path).index[-1] == pd.Timestamp("2023-05-31 12:00", tz="UTC")
    _assert_okx_frame(read_candles(s3.path), okx.spot)


def test_okx_rerun_is_idempotent_and_wider_window_fetches_the_difference(okx):
    s1 = update_dataset(symbol="BTC/USDT", interval="1h", days=10, end="2023-04-01", exchange="okx", progress=False)
    before = s1.path.read_bytes()
    okx.server.requests.clear()
    update_dataset(symbol="BTC/USDT", interval="1h", days=10, end="2023-04-01", exchange="okx", progress=False)
    assert okx.requests == [] and s1.path.read_bytes() == before
    wide = update_dataset(symbol="BTC/USDT", interval="1h", days=12, end="2023-04-02", exchange="okx",
                          out=s1.path, progress=False)
    reqs = okx.requests
    assert len(reqs) == 2
    for r in reqs:
        a, b = int(r.params["before"]) + 1, int(r.params["after"]) + 1
        assert b <= to_ms("2023-03-22") or a >= to_ms("2023-04-01"), "covered candles fetched again"
    assert wide.new_rows == 2 * 24, "one day before and one after the covered window"
    _assert_okx_frame(read_candles(s1.path), _window(okx.spot, "2023-03-21", "2023-04-02"))


def test_okx_plan_fetches_no_candles(okx):
    update_dataset(symbol="BTC/USDT", interval="1h", days=5, end="2023-04-01", exchange="okx", progress=False)
    okx.server.requests.clear()
    plan = update_dataset(symbol="BTC/USDT", interval="1h", days=5, end="2023-04-03", exchange="okx", plan=True)
    assert okx.requests == [], "--plan reads the market list only"
    text = "\n".join(plan.stats.notes)
    assert "okx_btcusdt_1h_5d.parquet: 120 candles covering 2023-03-27 00:00 .. 2023-04-01 00:00" in text
    assert "missing: 2023-04-01 00:00 .. 2023-04-03 00:00" in text


def test_okx_gaps_are_reported_not_filled(okx):
    src = okx.spot.drop(pd.DatetimeIndex(["2023-03-10 05:00", "2023-03-10 06:00", "2023-03-12 00:00"], tz="UTC"))
    okx.add("last", "BTC-USDT", "1h", src)
    s = update_dataset(symbol="BTC/USDT", interval="1h", days=10, end="2023-03-15", exchange="okx", progress=False)
    assert [str(g) for g in s.gaps] == ["2023-03-10 05:00 .. 2023-03-10 06:00 (2)", "2023-03-12 00:00"]
    assert read_metadata(s.path)["gaps"] == [str(g) for g in s.gaps]
    assert len(read_candles(s.path)) == 240 - 3


def test_okx_swap_mark_and_index_prices(okx):
    mark = update_dataset(symbol="BTC/USDT", interval="1h", days=10, end="2023-05-01", exchange="okx",
                          market="swap", price="mark", progress=False)
    assert mark.path.name == "okx-swap-mark_btcusdt_1h_10d.parquet"
    got = read_candles(mark.path)
    src = _window(okx.src["BTCMARK"], "2023-04-21", "2023-05-01")
    pd.testing.assert_frame_equal(got[["open", "high", "low", "close"]], src[["open", "high", "low", "close"]],
                                  check_freq=False)
    assert (got["volume"] == 0).all(), "a mark price has no traded volume"
    reqs = okx.requests
    assert {r.path for r in reqs} == {"/api/v5/market/history-mark-price-candles"}
    assert {r.params["instId"] for r in reqs} == {"BTC-USDT-SWAP"} and len(reqs) == 3, "240 candles, 100 per page"
    idx = update_dataset(symbol="BTC-USDT-SWAP", interval="1h", days=3, end="2023-05-01", exchange="okx",
                         market="swap", price="index", progress=False)
    assert idx.path.name == "okx-swap-index_btcusdt_1h_3d.parquet"
    assert {r.params["instId"] for r in okx.requests if "index" in r.path} == {"BTC-USDT"}, "OKX wants instFamily"
    src = _window(okx.src["BTCINDEX"], "2023-04-28", "2023-05-01")
    np.testing.assert_array_equal(read_candles(idx.path)["close"].to_numpy(), src["close"].to_numpy())
    swap = update_dataset(symbol="BTC/USDT:USDT", interval="1h", days=3, end="2023-05-01", exchange="okx",
                          market="swap", progress=False)
    perp = _window(okx.src["BTCUSDTPERP"], "2023-04-28", "2023-05-01")
    got = read_candles(swap.path)
    np.testing.assert_array_equal(got["volume"].to_numpy(), perp["volume"].to_numpy())  # base volume, not contracts
    with pytest.raises(UserError, match="holds okx/swap/index candles"):
        update_dataset(symbol="BTC/USDT", interval="1h", days=3, end="2023-05-01", exchange="okx",
                       market="swap", out=idx.path, progress=False)


def test_okx_rate_limit_and_server_errors_are_retried_then_reported(okx, monkeypatch):
    from S1.settings import get_settings

    okx.okx_faults = ["429"]
    okx.server.inject("status", status=503, path="history-candles", count=1, after=1)
    okx.server.inject("drop", path="history-candles", count=1, after=2)
    s = update_dataset(symbol="BTC/USDT", interval="1h", days=30, end="2023-05-20", exchange="okx", progress=False)
    _assert_okx_frame(read_candles(s.path), _window(okx.spot, "2023-04-20", "2023-05-20"))
    statuses = [r.status for r in okx.requests]
    # (the dropped request is re-sent by aiohttp itself on a fresh connection, not by our retry loop)
    assert 429 in statuses and 503 in statuses and 0 in statuses and s.stats.rest_retries >= 2
    monkeypatch.setenv("HTTP_MAX_RETRIES", "2")
    get_settings.cache_clear()
    okx.server.requests.clear()
    okx.server.inject("status", status=503, path="history-candles", count=100)
    before = s.path.read_bytes()
    with pytest.raises(NetworkError, match=r"cannot reach http://127\.0\.0\.1:\d+ \(candles: .*after 3 attempts"):
        update_dataset(symbol="BTC/USDT", interval="1h", days=40, end="2023-05-20", exchange="okx", progress=False,
                       out=s.path)
    assert s.path.read_bytes() == before, "a failed run leaves the file intact"


def test_okx_bad_input(okx):
    with pytest.raises(UserError, match=r"unknown symbol 'BTC/USTD' on okx \(spot\).*did you mean BTC/USDT"):
        update_dataset(symbol="BTC/USTD", interval="1h", days=3, exchange="okx", progress=False)
    with pytest.raises(UserError, match="okx has no 1s candles -- use one of 1m"):
        update_dataset(symbol="BTC/USDT", interval="1s", days=3, exchange="okx", progress=False)
    with pytest.raises(UserError, match="unsupported interval '1H'"):
        update_dataset(symbol="BTC/USDT", interval="1H", days=3, exchange="okx", progress=False)
    assert okx.requests == []


def test_okx_download_is_importable(okx):
    """The same path without a file: ``download(..., exchange="okx")`` for notebooks."""
    from S1.ccxt_source import CcxtHistory, Venue, closed_rows, rows_to_frame
    from S1.rest_client import run

    async def go():
        async with CcxtHistory(Venue("okx"), "BTC/USDT", "1h") as h:
            end = await h.server_time()
            rows = await h.fetch_range(to_ms("2023-05-30"), end)
            return rows, end
    rows, end = run(go())
    kept, covered = closed_rows(rows, to_ms("2023-05-30"), end, "1h")
    assert rows[-1, 11] == 0 and covered == to_ms("2023-05-31 12:00") and len(kept) == 36
    _assert_okx_frame(rows_to_frame(kept, "1h"), okx.spot)


def test_cli_exchange_okx_with_csv_export(okx, settings_env, tmp_path):
    env = dict(os.environ, DATA_DIR=str(settings_env.data_dir), TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"))
    args = ["--exchange", "okx", "--symbol", "BTC/USDT", "--interval", "1h", "--days", "10", "--end", "2023-05-01",
            "--format", "csv", "--gzip", "--no-progress"]
    r = subprocess.run([sys.executable, "S1/historical.py", *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    path = settings_env.data_dir / "okx_btcusdt_1h_10d.parquet"
    assert f"{path}: 240 candles" in r.stdout and "via ccxt okx" in r.stdout
    from S1.formats import read_export

    pd.testing.assert_frame_equal(read_export(path.with_name("okx_btcusdt_1h_10d.csv.gz")), read_candles(path))
    bad = subprocess.run([sys.executable, "-m", "S1.historical", "--exchange", "okkx", "--symbol", "BTC/USDT",
                          "--days", "3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "did you mean okx" in lines[0], bad.stderr
    json.dumps(read_metadata(path))  # metadata stays plain JSON
