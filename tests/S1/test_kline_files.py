"""Parsing real kline files and payloads: archive CSVs, CryptoDataDownload, REST bodies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from S1.kline_files import ImportReport, read_archive_csv, sniff_and_read, to_ms_array
from S1.rest_client import BinanceRequestException, parse_klines_body


def test_archive_csv_with_header(shared_dir):
    r = ImportReport()
    df = sniff_and_read(shared_dir / "data/klines/binance_dump/BTCUSDT-1h-2023-03.csv", "1h", report=r)
    assert len(df) == 743  # 744 hours in March minus the real gap at 2023-03-24 13:00
    assert pd.Timestamp("2023-03-24 13:00", tz="UTC") not in df.index
    assert df.index.tz is not None and df.index.is_monotonic_increasing
    assert df["trades"].dtype == np.int64 and r.lines() == []


def test_archive_csv_without_header_keeps_tiny_prices_exact(shared_dir):
    df = sniff_and_read(shared_dir / "data/klines/binance_dump/ADABTC-1m-2021-11-27.csv", "1m")
    assert len(df) == 10
    first = df.iloc[0]
    assert first["open"] == 0.00002853 and first["high"] == 0.00002854
    assert first["close_time"] == pd.Timestamp("2021-11-27 00:00:59.999", tz="UTC")


def test_microseconds_and_seconds_are_normalised():
    ms, fixes = to_ms_array(np.array([1735689600000000, 1735689600000, 1735689600]))
    assert ms.tolist() == [1735689600000] * 3 and fixes == {"µs": 1, "seconds": 1}
    body = b"1735689600000000,1,2,0.5,1.5,10,1735693199999999,15,3,4,5,0\n"
    df = read_archive_csv(body)
    assert df.index[0] == pd.Timestamp("2025-01-01", tz="UTC")
    assert df["close_time"].iloc[0] == pd.Timestamp("2025-01-01 00:59:59.999", tz="UTC")


def test_messy_cryptodatadownload_file(shared_dir):
    r = ImportReport()
    df = sniff_and_read(shared_dir / "data/klines/cryptodatadownload/Binance_BTCUSDT_1h.csv", "1h", report=r)
    assert df.index.is_unique and df.index.is_monotonic_increasing
    assert df.index[0] == pd.Timestamp("2017-08-17 04:00", tz="UTC")
    assert df.index[-1] == pd.Timestamp("2021-06-10 00:00", tz="UTC")
    text = " ".join(r.lines())
    assert "duplicate rows dropped" in text and "seconds normalised" in text
    # the bad first-row high is reported, never altered
    assert "price jump" in text and df.iloc[0]["high"] == 16199.91
    assert (df["trades"] >= 0).all() and df["taker_buy_base"].isna().all()


def test_real_rest_body_parses_like_json(shared_dir):
    body = (shared_dir / "data/api/rest_klines_BTCUSDT_1m_2021-10-22.json").read_bytes()
    fast = parse_klines_body(body)
    slow = np.array([r[:11] for r in json.loads(body)], dtype=np.float64)
    assert fast.shape == (10, 11) and np.array_equal(fast, slow)


@pytest.mark.parametrize("body", [b'{"code":-1121,"msg":"Invalid symbol."}', b'[[1,"2","3"', b'[[1,"2"],[3,"4"]]'])
def test_malformed_rest_bodies_are_rejected(body):
    with pytest.raises(BinanceRequestException):
        parse_klines_body(body)


def test_empty_rest_body():
    assert parse_klines_body(b"[]").shape == (0, 11)
