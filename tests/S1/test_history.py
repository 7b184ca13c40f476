"""S1 history download against the local Binance server: exactness, closed candles only,
incremental and idempotent updates, atomicity, gaps, faults and rate limits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.datasets import read_candles, read_metadata
from S1.errors import NetworkError, UserError
from S1.history import download, find_gaps, missing_ranges, update_dataset
from S1.intervals import ms_to_ts, to_ms


def _window(src: pd.DataFrame, start, end) -> pd.DataFrame:
    return src[(src.index >= pd.Timestamp(start, tz="UTC")) & (src["close_time"] < pd.Timestamp(end, tz="UTC"))]


def _klines_requests(ex):
    return [r for r in ex.requests_to("/api/v3/klines") if r.status == 200]


def test_downloaded_file_equals_source_candles(exchange, btc_1h):
    s = update_dataset(symbol="BTCUSDT", interval="1h", days=120, end="2023-05-20", progress=False)
    got = read_candles(s.path)
    want = _window(btc_1h, pd.Timestamp("2023-05-20") - pd.Timedelta(days=120), "2023-05-20")
    pd.testing.assert_frame_equal(got, want, check_freq=False)
    assert s.path.name == "btcusdt_1h_120d.parquet"
    assert s.rows == len(want) > 2800


def test_candle_in_progress_is_never_written(exchange, btc_1h):
    # default end = the exchange clock (12:30): the 12:00 candle is still in progress
    s = update_dataset(symbol="BTCUSDT", interval="1h", days=2, progress=False)
    got = read_candles(s.path)
    assert got.index[-1] == pd.Timestamp("2023-05-31 11:00", tz="UTC")
    assert (got["close_time"] < pd.Timestamp("2023-05-31 12:30", tz="UTC")).all()
    # ... although the server did serve it, with partial values
    from S1.rest_client import BinanceRest, run

    async def last_rows():
        async with BinanceRest() as api:
            return await api.klines("BTCUSDT", "1h", limit=2)
    rows = run(last_rows())
    assert int(rows[-1, 0]) == to_ms("2023-05-31 12:00")
    assert rows[-1, 5] < btc_1h.loc["2023-05-31 12:00", "volume"]  # partial volume


def test_rerun_same_window_fetches_nothing_and_keeps_file(exchange):
    s1 = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end="2023-05-01", progress=False)
    before = s1.path.read_bytes()
    n = len(exchange.requests)
    s2 = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end="2023-05-01", progress=False)
    assert len(exchange.requests) == n, "a covered window must not touch the network"
    assert s2.new_rows == 0 and s2.path.read_bytes() == before


def test_wider_window_fetches_only_the_difference(exchange, btc_1h, tmp_path):
    out = tmp_path / "btc.parquet"
    first = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end="2023-04-01", out=out,
                           source="rest", progress=False)
    exchange.requests.clear()
    wide = update_dataset(symbol="BTCUSDT", interval="1h", days=45, end="2023-04-10", out=out,
                          source="rest", progress=False)
    reqs = _klines_requests(exchange)
    old_start, old_end = to_ms("2023-03-02"), to_ms("2023-04-01")
    assert len(reqs) == 2, "one page before and one after the covered window"
    for r in reqs:
        a, b = int(r.params["startTime"]), int(r.params["endTime"])
        assert b < old_start or a >= old_end, f"re-fetched covered candles {ms_to_ts(a)}..{ms_to_ts(b)}"
    got = read_candles(out)
    pd.testing.assert_frame_equal(got, _window(btc_1h, "2023-02-24", "2023-04-10"), check_freq=False)
    assert wide.new_rows == len(got) - first.rows == 15 * 24


def test_failed_run_leaves_previous_file_intact_and_rerun_is_identical(exchange, monkeypatch, tmp_path):
    from S1.settings import get_settings

    good = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end="2023-04-01", progress=False)
    before, mtime = good.path.read_bytes(), good.path.stat().st_mtime_ns
    monkeypatch.setenv("HTTP_MAX_RETRIES", "1")
    get_settings.cache_clear()
    exchange.inject("drop", count=1000)  # the server dies mid-download
    with pytest.raises(NetworkError):
        update_dataset(symbol="BTCUSDT", interval="1h", days=90, end="2023-05-01", out=good.path,
                       source="rest", progress=False)
    assert good.path.read_bytes() == before and good.path.stat().st_mtime_ns == mtime
    assert not list(good.path.parent.glob("*.tmp")), "no temp file left behind"
    exchange.faults.clear()
    resumed = update_dataset(symbol="BTCUSDT", interval="1h", days=90, end="2023-05-01", out=good.path,
                             source="rest", progress=False)
    clean = update_dataset(symbol="BTCUSDT", interval="1h", days=90, end="2023-05-01",
                           out=tmp_path / "clean.parquet", source="rest", progress=False)
    pd.testing.assert_frame_equal(read_candles(resumed.path), read_candles(clean.path))


def test_transient_faults_are_retried(exchange, btc_1h):
    exchange.inject("status", status=503, count=2)
    exchange.inject("drop", count=1, after=1)
    exchange.inject("truncate", count=1, after=2)
    exchange.inject("status", status=500, path="exchangeInfo")
    df = download("BTCUSDT", "1h", "2023-01-01", "2023-05-01", source="rest", progress=False)
    pd.testing.assert_frame_equal(df, _window(btc_1h, "2023-01-01", "2023-05-01"), check_freq=False)
    statuses = [r.status for r in exchange.requests]
    assert statuses.count(503) == 2 and 0 in statuses and -200 in statuses and 500 in statuses


def test_429_retry_after_is_honoured_by_every_request(exchange, btc_1h, monkeypatch):
    from S1.settings import get_settings

    monkeypatch.setenv("REST_MAX_IN_FLIGHT", "2")  # at most one other request in flight with the 429
    get_settings.cache_clear()
    exchange.inject("429", retry_after=1, count=1)
    df = download("BTCUSDT", "1h", "2023-01-01", "2023-05-01", source="rest", progress=False)
    assert len(df) == len(_window(btc_1h, "2023-01-01", "2023-05-01"))
    ban = next(r for r in exchange.requests if r.status == 429)
    # the server's own log: inside the 1 s window it asked for (from when it answered the 429)
    # only a request already in flight may arrive -- at most REST_MAX_IN_FLIGHT - 1 = 1 of them;
    # everything sent after the client saw the 429 arrives after the window
    api = [r for r in exchange.requests if "/api/" in r.path and r is not ban]
    inside = [r for r in api if ban.t <= r.arrived < ban.t + 0.95]
    after = [r for r in api if r.arrived >= ban.t + 0.95]
    assert len(inside) <= 1, "a request was sent into the back-off window"
    assert after, "the download went on once the window had passed"
    assert not [r for r in exchange.requests if r.status == 418], "no IP ban may follow a 429"


def test_long_ban_is_reported_not_waited_out(exchange, monkeypatch):
    from S1 import rest_client
    from S1.settings import get_settings

    monkeypatch.setenv("HTTP_MAX_RETRIES", "2")
    get_settings.cache_clear()
    exchange.inject("418", retry_after=600, count=10)
    slept, real_sleep = [], rest_client.asyncio.sleep

    async def recording_sleep(s, *a, **kw):
        slept.append(s)
        return await real_sleep(s, *a, **kw)

    monkeypatch.setattr(rest_client.asyncio, "sleep", recording_sleep)
    with pytest.raises(NetworkError, match="back off for 600s"):
        download("BTCUSDT", "1h", "2023-01-01", "2023-02-01", source="rest", progress=False)
    assert not [s for s in slept if s >= 1], f"waited {max(slept)}s of the ban"
    assert len([r for r in exchange.requests if r.status == 418]) == 1, "no request sent into the ban"


def test_weight_limit_is_read_from_exchange_info_and_headers_tracked(exchange):
    from S1.rest_client import BinanceRest, run

    exchange.weight_limit = 300

    async def go():
        async with BinanceRest() as api:
            await api.exchange_info("BTCUSDT")
            await api.klines_range("BTCUSDT", "1h", to_ms("2023-01-01"), to_ms("2023-03-01"))
            return api.budget
    budget = run(go())
    assert budget.limit == 300
    assert budget.used >= 2 + 2 * 2  # exchangeInfo?symbol (2) + two kline pages (2 each)


def test_weight_budget_waits_for_the_next_minute(monkeypatch):
    import asyncio

    from S1 import rest_client

    now = [120.0]
    slept = []

    async def fake_sleep(s):
        slept.append(s)
        now[0] += s

    monkeypatch.setattr(rest_client.asyncio, "sleep", fake_sleep)
    budget = rest_client.WeightBudget(limit=10, share=1.0, clock=lambda: now[0])

    async def go():
        for _ in range(5):
            await budget.acquire(2)
        await budget.acquire(2)  # 12 > 10: must wait for minute 3
    asyncio.run(go())
    assert len(slept) == 1 and now[0] >= 180.0
    budget.observe(200, {"X-MBX-USED-WEIGHT-1M": "9"})  # other processes on this IP used weight
    assert budget.used == 9


def test_real_gaps_are_reported_not_filled(btc_1h_real, settings_env, monkeypatch):
    from S1.local.exchange import LocalBinance
    from S1.settings import get_settings

    with LocalBinance(now_ms=to_ms("2023-06-01")) as ex:
        ex.add_candles("BTCUSDT", "1h", btc_1h_real)
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_ARCHIVE_URL", ex.url)
        get_settings.cache_clear()
        s = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end="2023-04-01", progress=False)
    assert [str(g) for g in s.gaps] == ["2023-03-24 13:00"]
    df = read_candles(s.path)
    assert pd.Timestamp("2023-03-24 13:00", tz="UTC") not in df.index
    assert read_metadata(s.path)["gaps"] == ["2023-03-24 13:00"]
    assert "1 gap(s), 1 candle(s) missing: 2023-03-24 13:00" in s.line()


def test_gap_detection_on_any_interval():
    idx = pd.date_range("2024-01-01", periods=10, freq="5min", tz="UTC").delete([3, 4, 7])
    gaps = find_gaps(idx, "5m")
    assert [(g.start.minute, g.missing) for g in gaps] == [(15, 2), (35, 1)]
    assert find_gaps(pd.date_range("2024-01-01", periods=5, freq="1D", tz="UTC"), "1d") == []


def test_missing_ranges():
    assert missing_ranges(None, (0, 10)) == [(0, 10)]
    assert missing_ranges((3, 7), (0, 10)) == [(0, 3), (7, 10)]
    assert missing_ranges((0, 10), (2, 8)) == []
    assert missing_ranges((20, 30), (0, 10)) == [(0, 10)]


def test_window_before_listing_is_noted(exchange):
    s = update_dataset(symbol="BTCUSDT", interval="1h", days=60, end="2023-01-20", source="rest", progress=False)
    assert s.listing_note and "2023-01-01 00:00" in s.listing_note
    assert s.gaps == []


def test_plan_downloads_nothing(exchange):
    s = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end="2023-03-01", progress=False)
    exchange.requests.clear()
    plan = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end="2023-04-01", plan=True, out=s.path)
    assert exchange.requests == []
    text = "\n".join(plan.stats.notes)
    assert "candles covering 2023-01-30" in text and "missing: 2023-03-02 00:00 .. 2023-04-01 00:00" in text


def test_file_for_another_market_is_refused(exchange):
    s = update_dataset(symbol="BTCUSDT", interval="1h", days=10, end="2023-03-01", progress=False)
    with pytest.raises(UserError, match="holds BTCUSDT 1h"):
        update_dataset(symbol="BTCUSDT", interval="4h", days=10, end="2023-03-01", out=s.path, progress=False)


def test_one_year_of_1m_pages_exactly(settings_env, monkeypatch):
    """528 exact pages, no overlap, every candle once (simulated market)."""
    from S1.local.exchange import LocalBinance
    from S1.local.simulated import simulate_candles
    from S1.settings import get_settings

    src = simulate_candles("ETHUSDC", "1m", "2024-03-01", "2024-03-08")
    with LocalBinance(now_ms=to_ms("2024-03-08")) as ex:
        ex.add_candles("ETHUSDC", "1m", src)
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        get_settings.cache_clear()
        df = download("ETHUSDC", "1m", "2024-03-01", "2024-03-08", source="rest", progress=False)
        pages = _klines_requests(ex)
    pd.testing.assert_frame_equal(df, src, check_freq=False)
    assert len(pages) == int(np.ceil(len(src) / 1000))
    spans = sorted((int(r.params["startTime"]), int(r.params["endTime"])) for r in pages)
    assert all(b < c for (_, b), (c, _) in zip(spans, spans[1:]))
