"""USD-M funding-rate and open-interest history (issue 19): S1/funding.py and S1.funding_history
through the real client code (python-binance's futures calls in S1.rest_client.BinanceRest)
against the local futures server (S1.local.futures + S1.local.funding): paging across more than
1,000 fundings, a 4-hourly funding period kept as the history says, incremental re-runs,
429 + Retry-After, 5xx retries, atomic failures, provenance labels, the 30-day open-interest
window, and the real recorded Binance bodies from ../shared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import funding_path, open_interest_path, read_metadata, read_parquet
from S1.errors import UserError
from S1.funding_history import parse_funding, update_funding, update_open_interest
from S1.intervals import to_ms
from S1.local.exchange import LocalBinance
from S1.local.funding import sim_open_interest
from S1.local.futures import LocalFutures
from tests.S1.server_log import assert_retry_after_honoured

REPO = Path(__file__).resolve().parents[2]
SHARED_API = REPO.parent / "shared" / "data" / "api"
NOW = "2023-05-31 12:30"
FOUR_HOUR = ("2023-03-01", "2023-03-15")


@pytest.fixture
def fx(settings_env, monkeypatch):
    """A local futures server at NOW serving simulated BTCUSDT funding from 2022-01-01 (8-hourly,
    4-hourly inside FOUR_HOUR), settings pointed at it (BINANCE_API_URL only: fapi follows)."""
    from S1.settings import get_settings

    server = LocalBinance(now_ms=to_ms(NOW))
    fut = LocalFutures(server)
    fut.sim = fut.funding.simulate("BTCUSDT", "2022-01-01", "2023-07-01", four_hour=FOUR_HOUR)
    with server:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        monkeypatch.setenv("HTTP_MAX_RETRIES", "3")
        get_settings.cache_clear()
        yield fut
    get_settings.cache_clear()


def _ok(server, path):
    return [r for r in server.requests_to(path) if r.status == 200]


def _settled(fut, start, end=NOW) -> pd.DataFrame:
    s = fut.sim
    return s[(s.index >= pd.Timestamp(start, tz="UTC")) & (s.index <= pd.Timestamp(end, tz="UTC"))]


# ----------------------------------------------------------------------- funding
def test_pages_over_1000_fundings_and_keeps_the_times_of_the_history(fx):
    r = update_funding("btcusdt", 365)
    assert r.path == funding_path("BTCUSDT") and r.path.name == "btcusdt_funding.parquet"
    got = read_parquet(r.path)
    want = _settled(fx, pd.Timestamp(NOW) - pd.Timedelta(days=365))
    assert len(want) > 1000
    pd.testing.assert_frame_equal(got, want, check_freq=False)
    pages = _ok(fx.server, "/fapi/v1/fundingRate")
    assert len(pages) == 2 and all(p.params["limit"] == "1000" for p in pages)
    assert int(pages[1].params["startTime"]) == to_ms(got.index[999]) + 1, "the cursor follows the last funding"
    gaps = set(np.diff(got.index.as_unit("ms").asi8) // 3_600_000)
    assert gaps == {4, 8}, "the 4-hourly period is kept as the history says (nothing assumes 8 h)"
    assert (got.loc[FOUR_HOUR[0]:"2023-03-14"].index.hour % 4 == 0).all()
    assert len(got.loc[FOUR_HOUR[0]:"2023-03-14 23:59"]) == 14 * 6
    meta = read_metadata(r.path)
    assert meta["simulated"] is True and r.simulated
    assert meta["source_url"].endswith("/fapi/v1/fundingRate") and "127.0.0.1" in meta["source_url"]
    assert r.next_funding["nextFundingTime"] == to_ms("2023-05-31 16:00")


def test_a_rerun_fetches_only_what_is_new(fx):
    first = update_funding("BTCUSDT", 30)
    before = len(_ok(fx.server, "/fapi/v1/fundingRate"))
    fx.server.set_now(to_ms("2023-06-03 09:15"))
    again = update_funding("BTCUSDT", 30)
    new = _ok(fx.server, "/fapi/v1/fundingRate")[before:]
    assert len(new) == 1 and int(new[0].params["startTime"]) == to_ms(NOW) + 1
    assert again.new_rows == 9 == len(_settled(fx, NOW, "2023-06-03 09:15"))  # 3 days x 3 fundings
    got = read_parquet(again.path)
    pd.testing.assert_frame_equal(got, _settled(fx, pd.Timestamp(NOW) - pd.Timedelta(days=30), "2023-06-03 09:15"),
                                  check_freq=False)
    assert first.rows + 9 == again.rows
    # nothing new: nothing requested but the clock, the file is not rewritten
    mtime = again.path.stat().st_mtime_ns
    n = len(fx.server.requests_to("fundingRate"))
    same = update_funding("BTCUSDT", 30)
    assert not same.written and same.new_rows == 0 and len(fx.server.requests_to("fundingRate")) == n
    assert again.path.stat().st_mtime_ns == mtime
    # a longer window: only the earlier part is fetched
    more = update_funding("BTCUSDT", 40)
    last = _ok(fx.server, "/fapi/v1/fundingRate")[-1]
    start40 = pd.Timestamp("2023-06-03 09:15") - pd.Timedelta(days=40)
    # windows are (now - days, now]: the request covers (start40, old coverage start)
    assert int(last.params["startTime"]) == to_ms(start40) + 1
    assert int(last.params["endTime"]) == to_ms(pd.Timestamp(NOW) - pd.Timedelta(days=30)), "up to the old start"
    assert more.new_rows == len(_settled(fx, start40, pd.Timestamp(NOW) - pd.Timedelta(days=30))) == 21


def test_429_retry_after_is_honoured_and_5xx_retried(fx):
    fx.server.inject("429", path="fundingRate", retry_after=1, count=1, after=1)
    fx.server.inject("status", path="premiumIndex", status=503, count=2)
    r = update_funding("BTCUSDT", 365)
    assert_retry_after_honoured(fx.server.requests, retry_after=1, in_flight=1, api="fundingRate")
    assert [q.status for q in fx.server.requests_to("premiumIndex")] == [503, 503, 200]
    pd.testing.assert_frame_equal(read_parquet(r.path), _settled(fx, pd.Timestamp(NOW) - pd.Timedelta(days=365)),
                                  check_freq=False)


def test_a_failed_run_leaves_the_previous_file_byte_identical(fx):
    r = update_funding("BTCUSDT", 10)
    before = r.path.read_bytes()
    fx.server.set_now(to_ms("2023-06-05"))
    fx.server.inject("status", path="fundingRate", status=500, count=10)
    with pytest.raises(Exception, match="server error HTTP 500"):
        update_funding("BTCUSDT", 10)
    assert r.path.read_bytes() == before
    assert [p.name for p in r.path.parent.iterdir() if p.name.startswith(".")] == []


def test_cli_errors_are_one_line(fx, capsys):
    from S1.funding import main

    for argv, msg in ((["--symbol", "NOPEUSDT", "--days", "5"], "unknown symbol 'NOPEUSDT'"),
                      (["--symbol", "BTCUSDT", "--days", "0"], "--days must be a whole number"),
                      (["--symbol", "BTCUSDT", "--days", "5", "--open-interest", "7m"], "unsupported open-interest"),
                      (["--symbol", "BTC$USDT", "--days", "5"], "invalid symbol")):
        assert run(main, argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    assert not funding_path("NOPEUSDT").exists()


def test_cli_prints_and_labels_simulated(fx, capsys):
    from S1.funding import main

    assert run(main, ["--symbol", "BTCUSDT", "--days", "20", "--open-interest", "4h"]) == 0
    out = capsys.readouterr().out
    assert "(simulated market data)" in out and "next funding 2023-05-31 16:00 UTC" in out
    assert open_interest_path("BTCUSDT", "4h").exists()


def test_script_and_module_both_start():
    for how in (["S1/funding.py"], ["-m", "S1.funding"]):
        p = subprocess.run([sys.executable, *how, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60,
                           check=False)
        assert p.returncode == 0 and "--open-interest" in p.stdout


def test_real_rows_are_not_labelled_simulated_and_never_mixed(settings_env, monkeypatch):
    from S1.settings import get_settings

    real = parse_funding([{"symbol": "BTCUSDT", "fundingRate": "0.00010000", "fundingTime": to_ms("2023-05-30 16:00"),
                           "markPrice": "27700.1"}])
    server = LocalBinance(now_ms=to_ms(NOW))
    fut = LocalFutures(server)
    fut.funding.add_funding("BTCUSDT", real)
    with server:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        get_settings.cache_clear()
        r = update_funding("BTCUSDT", 5)
        assert not r.simulated and read_metadata(r.path)["simulated"] is False
        pd.testing.assert_frame_equal(read_parquet(r.path), real, check_freq=False)
        fut.funding.simulate("BTCUSDT", "2023-05-01", "2023-06-10")
        with pytest.raises(UserError, match="holds real data and the server serves simulated"):
            update_funding("BTCUSDT", 5)
    get_settings.cache_clear()


# ------------------------------------------------------------------ open interest
def test_open_interest_is_clamped_to_30_days_and_paged_in_exact_windows(fx):
    r = update_open_interest("BTCUSDT", 365, "5m")
    assert "last 30 days only" in r.note
    got = read_parquet(r.path)
    step = 300_000
    now = to_ms(NOW)
    t = got.index.as_unit("ms").asi8
    assert t[-1] == now // step * step and (np.diff(t) == step).all()
    assert t[0] >= now - 30 * 86_400_000
    assert len(got) > 8000
    oi, value = sim_open_interest("BTCUSDT", t)
    np.testing.assert_array_equal(got["open_interest"].to_numpy(), oi)
    np.testing.assert_array_equal(got["open_interest_value"].to_numpy(), value)
    pages = _ok(fx.server, "openInterestHist")
    assert len(pages) == -(-len(got) // 500)
    for p in pages:
        a, b = int(p.params["startTime"]), int(p.params["endTime"])
        assert p.params["limit"] == "500" and b - a < 500 * step and a >= now - 30 * 86_400_000
    # incremental: two hours later, only the new 5-minute records
    fx.server.set_now(now + 2 * 3_600_000)
    again = update_open_interest("BTCUSDT", 30, "5m")
    assert again.new_rows == 24
    assert len(_ok(fx.server, "openInterestHist")) == len(pages) + 1


def test_open_interest_keeps_rows_older_than_binance_does(fx):
    """Re-running within 30 days extends the file; rows that have left Binance's window stay."""
    update_open_interest("BTCUSDT", 30, "1d")
    fx.server.set_now(to_ms("2023-06-20 00:30"))
    r = update_open_interest("BTCUSDT", 30, "1d")
    got = read_parquet(r.path)
    assert got.index[0] < pd.Timestamp("2023-06-20", tz="UTC") - pd.Timedelta(days=30)
    assert (np.diff(got.index.as_unit("ms").asi8) == 86_400_000).all()


# -------------------------------------------------------------- real recorded bodies
@pytest.mark.skipif(not (SHARED_API / "rest_usdm_funding_rate.json").exists(), reason="../shared is absent")
def test_the_real_recorded_funding_body_parses_and_round_trips(settings_env, monkeypatch):
    from S1.settings import get_settings

    body = json.loads((SHARED_API / "rest_usdm_funding_rate.json").read_text())
    df = parse_funding(body, "BTCUSDT")
    assert df.index.tolist() == [pd.Timestamp("2019-10-09 08:00", tz="UTC"), pd.Timestamp("2019-10-09 16:00", tz="UTC")]
    assert df["funding_rate"].tolist() == [-0.0375, 0.0001] and df["mark_price"].isna().all()
    server = LocalBinance(now_ms=to_ms("2019-10-10"))
    fut = LocalFutures(server)
    fut.funding.add_funding("BTCUSDT", df)
    with server:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        get_settings.cache_clear()
        r = update_funding("BTCUSDT", 3)
        pd.testing.assert_frame_equal(read_parquet(r.path), df, check_freq=False)
        served = json.loads(__import__("urllib.request").request.urlopen(
            f"{server.url}/fapi/v1/fundingRate?symbol=BTCUSDT&startTime=0").read())
        assert served == body, "the local server speaks the recorded shape (no markPrice when it has none)"
    get_settings.cache_clear()


@pytest.mark.skipif(not (SHARED_API / "rest_usdm_premium_index.json").exists(), reason="../shared is absent")
def test_the_local_premium_index_has_the_real_fields(fx):
    import urllib.request

    real = json.loads((SHARED_API / "rest_usdm_premium_index.json").read_text())
    ours = json.loads(urllib.request.urlopen(f"{fx.server.url}/fapi/v1/premiumIndex?symbol=BTCUSDT").read())
    assert set(ours) == set(real)
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in real.items()}
