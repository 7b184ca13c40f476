"""Hardening of S1/historical.py (issue 22): simulated candles never turn real, a forming
candle is never written, an empty result never replaces a good file, ranges are validated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from S1.datasets import read_metadata, read_parquet
from S1.errors import UserError
from S1.history import update_dataset
from tests.conftest import SERVER_NOW

REPO = Path(__file__).resolve().parents[2]


def _point(monkeypatch, server) -> None:
    from S1.settings import get_settings

    monkeypatch.setenv("BINANCE_API_URL", server.api_url)
    monkeypatch.setenv("BINANCE_ARCHIVE_URL", server.url)
    monkeypatch.delenv("SIMULATED_MARKET", raising=False)
    get_settings.cache_clear()


def test_simulated_candles_are_labelled_by_the_server_and_never_relabelled(settings_env, monkeypatch, btc_1h):
    """A local simulated server labels what it serves (no SIMULATED_MARKET variable); a later
    run on the same dataset against a server of real candles refuses, the file untouched."""
    from S1.intervals import to_ms
    from S1.local.exchange import LocalBinance

    with LocalBinance(simulate=True, now_ms=to_ms(SERVER_NOW)) as sim:
        _point(monkeypatch, sim)
        s = update_dataset(symbol="BTCUSDT", interval="1h", days=3, progress=False)
    meta = read_metadata(s.path)
    assert meta["simulated"] is True and s.rows == 3 * 24 - 1      # 05-28 13:00 .. 05-31 11:00
    before = s.path.read_bytes()
    with LocalBinance(now_ms=to_ms(SERVER_NOW)) as real:        # real (recorded) candles: not labelled
        real.add_candles("BTCUSDT", "1h", btc_1h)
        _point(monkeypatch, real)
        with pytest.raises(UserError) as ei:
            update_dataset(symbol="BTCUSDT", interval="1h", days=3, progress=False)
        assert "simulated candles -> real" in ei.value.problem and "not relabelled" in ei.value.problem
        assert s.path.read_bytes() == before and read_metadata(s.path)["simulated"] is True
        # written elsewhere, the real candles are labelled real
        other = update_dataset(symbol="BTCUSDT", interval="1h", days=3, progress=False,
                               out=settings_env.data_dir / "real.parquet")
        assert read_metadata(other.path)["simulated"] is False


def test_another_source_host_is_refused_not_merged(exchange, monkeypatch):
    from S1.settings import get_settings

    s = update_dataset(symbol="BTCUSDT", interval="1h", days=10, end="2023-04-01", progress=False)
    before = s.path.read_bytes()
    # the same candles from another host (as if another exchange endpoint): a wider window must not merge
    monkeypatch.setenv("BINANCE_API_URL", exchange.api_url.replace("127.0.0.1", "localhost"))
    get_settings.cache_clear()
    with pytest.raises(UserError) as ei:
        update_dataset(symbol="BTCUSDT", interval="1h", days=10, end="2023-04-02", progress=False)
    assert "comes from another source" in ei.value.problem and "--out" in ei.value.fix
    assert s.path.read_bytes() == before


def test_an_end_past_the_exchange_clock_never_writes_the_forming_candle(exchange, btc_1h):
    """The server's clock is 12:30 (the 12:00 candle is forming, served with partial values);
    our clock is far later, so an --end of 13:00 looks closed locally -- the exchange's clock decides."""
    s = update_dataset(symbol="BTCUSDT", interval="1h", days=2, end="2023-05-31 13:00", progress=False)
    df = read_parquet(s.path)
    assert df.index[-1] == pd.Timestamp("2023-05-31 11:00", tz="UTC")
    assert pd.Timestamp("2023-05-31 12:00", tz="UTC") not in df.index
    assert df["close"].iloc[-1] == pytest.approx(btc_1h.loc["2023-05-31 11:00", "close"])
    assert read_metadata(s.path)["coverage_end_ms"] <= exchange.now_ms()


@pytest.mark.parametrize("kw, needle", [
    (dict(interval="1h", days=30, end="2015-01-01"), "no closed 1h candle between 2014-12-02"),
    (dict(interval="1h", days=30, end="2015-01-01", source="rest"), "no closed 1h candle"),
])
def test_an_empty_result_is_an_error_and_the_good_file_stays(exchange, kw, needle):
    good = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end="2023-04-01", progress=False)
    before = good.path.read_bytes()
    with pytest.raises(UserError) as ei:
        update_dataset(symbol="BTCUSDT", progress=False, **kw)
    assert needle in ei.value.problem and "left untouched" in ei.value.problem
    assert good.path.read_bytes() == before


def test_a_window_shorter_than_one_candle_is_refused(exchange):
    with pytest.raises(UserError) as ei:
        update_dataset(symbol="BTCUSDT", interval="1M", days=30, end="2023-04-01", progress=False)
    assert "shorter than one 1M candle" in ei.value.problem
    assert not list(exchange.requests_to("klines"))


@pytest.mark.parametrize("days", [100_000_000, 36_501, 0, True])
def test_days_out_of_range_is_one_line(settings_env, days):
    with pytest.raises(UserError) as ei:
        update_dataset(symbol="BTCUSDT", interval="1h", days=days, progress=False)
    assert "--days must be a positive whole number up to 36,500" in ei.value.problem


def test_cli_empty_result_and_huge_days_exit_2_with_one_line(exchange, settings_env, tmp_path):
    env = dict(os.environ, BINANCE_API_URL=exchange.api_url, BINANCE_ARCHIVE_URL=exchange.url,
               DATA_DIR=str(settings_env.data_dir), HTTP_MAX_RETRIES="1", TOOLKIT_ENV_FILE=str(tmp_path / "e.env"))
    run = lambda *a: subprocess.run([sys.executable, "S1/historical.py", "--symbol", "BTCUSDT", *a],  # noqa: E731
                                    cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run("--days", "30", "--end", "2023-04-01").returncode == 0
    path = settings_env.data_dir / "btcusdt_1h_30d.parquet"
    before = path.read_bytes()
    for args in (("--days", "30", "--end", "2015-01-01"), ("--days", "100000000"), ("--interval", "1M", "--days", "30")):
        r = run(*args)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert path.read_bytes() == before


def test_a_simulated_futures_server_labels_ccxt_datasets_too(settings_env, monkeypatch, btc_1h):
    """The CCXT path (``--market swap``) reads the label from the futures API's time endpoint;
    the same dataset later fetched from a server of real candles is refused."""
    pytest.importorskip("ccxt")
    from S1.intervals import to_ms
    from S1.local.exchange import LocalBinance
    from S1.local.futures import LocalFutures

    kw = dict(symbol="BTC/USDT", interval="1h", exchange="binance", market="swap", progress=False, days=10,
              end="2023-05-20")
    paths = []
    for simulate in (True, False):
        server = LocalBinance(now_ms=to_ms(SERVER_NOW), simulate=simulate)
        f = LocalFutures(server)
        f.add_pair("BTCUSDT", "1h", btc_1h)
        with server:
            _point(monkeypatch, server)
            if simulate:
                s = update_dataset(**kw)
                assert read_metadata(s.path)["simulated"] is True
                paths.append((s.path, s.path.read_bytes()))
            else:
                with pytest.raises(UserError, match="simulated candles -> real"):
                    update_dataset(**{**kw, "end": "2023-05-21"})
    path, before = paths[0]
    assert path.read_bytes() == before


def test_a_simulated_okx_server_labels_its_candles(settings_env, monkeypatch):
    pytest.importorskip("ccxt")
    from S1.local.okx import LocalOkx
    from S1.local.simulated import simulate_candles
    from S1.settings import get_settings

    labels = []
    for simulated in (True, False):
        with LocalOkx("2023-05-31 12:30") as ex:
            ex.simulated = simulated
            ex.add("last", "BTC-USDT", "1h", simulate_candles("BTCUSDT", "1h", "2023-05-01", "2023-06-01"))
            monkeypatch.setenv("CCXT_API_URLS", f"okx={ex.server.url}")
            get_settings.cache_clear()
            s = update_dataset(symbol="BTC/USDT", interval="1h", exchange="okx", days=3, progress=False,
                               out=settings_env.data_dir / f"okx_{simulated}.parquet")
            labels.append(read_metadata(s.path)["simulated"])
    get_settings.cache_clear()
    assert labels == [True, False]
