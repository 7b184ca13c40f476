"""Settings, dataset names, schema and atomic I/O, intervals -- and the doctests of S1."""

from __future__ import annotations

import doctest
import importlib
import logging

import numpy as np
import pandas as pd
import pytest

from S1.datasets import (
    Dataset,
    dataset_path,
    read_candles,
    read_metadata,
    realtime_db_path,
    report_path,
    validate_candles,
    write_parquet,
)
from S1.errors import UserError
from S1.intervals import INTERVALS, ceil_ms, close_time_ms, floor_ms, open_times, pandas_freq, to_ms


@pytest.mark.parametrize("module", ["S1.settings", "S1.intervals", "S1.datasets", "S1.local.simulated",
                                    "S1.archive", "S1.rest_client", "S1.local.exchange"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module} has no examples"
    assert result.failed == 0


def test_defaults_are_the_real_endpoints(settings_env):
    assert settings_env.binance_api_url == "https://api.binance.com/api"
    assert settings_env.binance_ws_url == "wss://stream.binance.com:9443"
    assert settings_env.binance_testnet_api_url == "https://testnet.binance.vision/api"
    assert settings_env.binance_api_key is None and settings_env.data_dir.name == "data"


def test_env_file_is_read(tmp_path, monkeypatch, settings_env):
    from S1.settings import Settings

    monkeypatch.delenv("DATA_DIR")  # the environment wins over the file
    env = tmp_path / "x.env"
    env.write_text("BINANCE_API_URL=http://127.0.0.1:9/api/\nBINANCE_API_SECRET=\nDATA_DIR=rel/dir\n")
    s = Settings(_env_file=env)
    assert s.binance_api_url == "http://127.0.0.1:9/api" and s.is_local
    assert s.binance_api_secret is None  # empty means unset
    assert s.data_dir.is_absolute() and s.data_dir.parts[-2:] == ("rel", "dir")


def test_secrets_are_redacted_everywhere(settings_env, monkeypatch, caplog, capsys):
    from S1.cli import run
    from S1.settings import RedactingFilter, get_settings

    canary = "canary-SECRET-7f3a9c"
    monkeypatch.setenv("BINANCE_API_SECRET", canary)
    get_settings.cache_clear()
    s = get_settings()
    assert canary not in repr(s) and canary not in str(s.model_dump())
    assert s.redact(f"bad signature {canary}") == "bad signature ***"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key=%s", (canary,), None)
    RedactingFilter().filter(record)
    assert canary not in record.getMessage()

    def failing(argv):
        raise RuntimeError(f"server said: invalid secret {canary}")
    assert run(failing, []) == 1
    err = capsys.readouterr().err
    assert canary not in err and "***" in err and len(err.strip().splitlines()) == 1


def test_dataset_names():
    from pathlib import Path

    d = Path("/d")
    assert dataset_path(Dataset("ETHUSDC", "1h", 365), data_dir=d) == d / "ethusdc_1h_365d.parquet"
    assert dataset_path(Dataset("eth/usdc", "1h", 365), "ta", data_dir=d).name == "ethusdc_1h_365d_ta.parquet"
    assert dataset_path(Dataset("BTCUSDT", "1M", 30), data_dir=d).name == "btcusdt_1mo_30d.parquet"
    assert dataset_path(Dataset("BTCUSDT", "1h", 30, exchange="okx"), data_dir=d).name == "okx_btcusdt_1h_30d.parquet"
    assert dataset_path(Dataset("BTCUSDT", "1h", 30), "backtest", data_dir=d).suffix == ".json"
    assert report_path(Dataset("ETHUSDC", "1h", 365), "backtest", reports=d).name == "ethusdc_1h_365d__rules_backtest.html"
    assert realtime_db_path(["BTCUSDT", "ETHUSDC"], "1m", data_dir=d).name == "btcusdt_1m_realtime.db"
    with pytest.raises(UserError):
        dataset_path(Dataset("BTCUSDT", "1h", 0))
    with pytest.raises(UserError):
        dataset_path(Dataset("BTC USDT", "1h", 10))


def test_parquet_roundtrip_is_exact_and_atomic(tmp_path, btc_1h, monkeypatch):
    path = tmp_path / "x.parquet"
    write_parquet(btc_1h, path, metadata={"symbol": "BTCUSDT"})
    back = read_candles(path)
    pd.testing.assert_frame_equal(back, btc_1h, check_freq=False)
    assert read_metadata(path) == {"symbol": "BTCUSDT"}
    before = path.read_bytes()
    import pyarrow.parquet as pq

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        write_parquet(btc_1h.iloc[:5], path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_missing_candle_file_names_the_command(tmp_path):
    from S1.datasets import Dataset, history_command

    with pytest.raises(UserError, match="python S1/historical.py --symbol ETHUSDC --interval 1h --days 365"):
        read_candles(tmp_path / "nope.parquet", how_to_create=history_command(Dataset("ethusdc", "1h", 365)))


def test_validate_candles_rejects_bad_frames(btc_1h):
    with pytest.raises(UserError, match="missing columns"):
        validate_candles(btc_1h.drop(columns=["close"]))
    with pytest.raises(UserError, match="not increasing"):
        validate_candles(btc_1h.iloc[::-1])
    with pytest.raises(UserError, match="duplicate"):
        validate_candles(pd.concat([btc_1h.iloc[:3], btc_1h.iloc[2:4]]))


def test_validate_candles_never_changes_its_input(btc_1h):
    """It returns a new frame without a defensive deep copy: writes to the result (and a
    naive-UTC index, float32 volumes normalised) never reach the caller's frame."""
    src = btc_1h.iloc[:50].astype({"volume": np.float32})
    src.index = src.index.tz_localize(None)
    before = src.copy(deep=True)
    out = validate_candles(src)
    out.iloc[0, 0] = -1.0
    out["close"] = 0.0
    out.loc[out.index[1], "trades"] = 7
    pd.testing.assert_frame_equal(src, before, check_exact=True)
    assert out.index.tz is not None and out["volume"].dtype == np.float64


def test_intervals():
    assert set(INTERVALS) >= {"1s", "1m", "1h", "1d", "1w", "1M"}
    t = to_ms("2024-02-15 13:47:12")
    assert floor_ms(t, "1h") == to_ms("2024-02-15 13:00")
    assert floor_ms(t, "4h") == to_ms("2024-02-15 12:00")
    assert floor_ms(t, "1w") == to_ms("2024-02-12")  # Monday
    assert floor_ms(t, "1M") == to_ms("2024-02-01")
    assert ceil_ms(to_ms("2024-02-15 13:00"), "1h") == to_ms("2024-02-15 13:00")
    assert close_time_ms(to_ms("2024-02-01"), "1M") == to_ms("2024-03-01") - 1
    assert open_times(to_ms("2024-01-01"), to_ms("2024-01-01 03:30"), "1h").size == 3
    assert pandas_freq("1h") == "1h" and pandas_freq("1w") == "7D" and pandas_freq("15m") == "15min"
    with pytest.raises(UserError, match="did you mean '1h'"):
        floor_ms(t, "1H")


def test_simulated_market_is_deterministic_and_consistent():
    from S1.local.simulated import simulate_candles

    m = simulate_candles("SOLUSDT", "1m", "2024-05-01", "2024-05-01 06:00")
    h = simulate_candles("SOLUSDT", "1h", "2024-05-01", "2024-05-01 06:00")
    assert len(m) == 360 and len(h) == 6
    first = m.iloc[:60]
    assert h.iloc[0]["open"] == first["open"].iloc[0] and h.iloc[0]["close"] == first["close"].iloc[-1]
    assert h.iloc[0]["high"] == first["high"].max() and h.iloc[0]["low"] == first["low"].min()
    assert np.isclose(h.iloc[0]["volume"], first["volume"].sum())
    assert (m["high"] >= m[["open", "close"]].max(axis=1)).all()
