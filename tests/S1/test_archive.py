"""Public-archive path: plan, checksum-verified download, cache, µs timestamps, fallbacks."""

from __future__ import annotations

import pandas as pd
import pytest

from S1.datasets import archive_cache_dir, read_candles
from S1.errors import UserError
from S1.history import download, update_dataset
from S1.intervals import to_ms


def _utc(t):
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t


def _window(src, start, end):
    return src[(src.index >= _utc(start)) & (src["close_time"] < _utc(end))]


def test_auto_uses_archive_for_whole_periods_and_rest_for_the_rest(exchange, btc_1h):
    # 2023-01-15 12:00 .. 2023-05-31 12:30: days of Jan, months Feb-Apr, days of May, REST for the edges
    s = update_dataset(symbol="BTCUSDT", interval="1h", days=136, progress=False)
    got = read_candles(s.path)
    start = pd.Timestamp("2023-05-31 12:30", tz="UTC") - pd.Timedelta(days=136)
    pd.testing.assert_frame_equal(got, _window(btc_1h, start.ceil("1h"), "2023-05-31 12:30"), check_freq=False)
    paths = [r.path for r in exchange.requests if r.status == 200]
    assert any("/monthly/" in p and p.endswith("2023-02.zip") for p in paths)
    assert any("/daily/" in p and p.endswith("2023-05-30.zip") for p in paths)
    assert any(p.endswith(".CHECKSUM") for p in paths)
    kl = [r for r in exchange.requests_to("/api/v3/klines") if r.status == 200]
    assert 1 <= len(kl) <= 3, "REST only for the partial days at both edges"
    assert s.stats.sources == {"archive", "rest"}


def test_archive_matches_rest_and_is_cached(exchange, btc_1h):
    a = download("BTCUSDT", "1h", "2023-02-01", "2023-04-01", source="archive", progress=False)
    r = download("BTCUSDT", "1h", "2023-02-01", "2023-04-01", source="rest", progress=False)
    pd.testing.assert_frame_equal(a, r)
    cached = sorted(p.name for p in archive_cache_dir().rglob("*.zip"))
    assert cached == ["BTCUSDT-1h-2023-02.zip", "BTCUSDT-1h-2023-03.zip"]
    exchange.requests.clear()
    again = download("BTCUSDT", "1h", "2023-02-01", "2023-04-01", source="archive", progress=False)
    pd.testing.assert_frame_equal(again, a)
    assert not [r for r in exchange.requests if "/data/spot/" in r.path], "second run reads the cache"


def test_checksum_mismatch_is_retried_then_accepted(exchange, btc_1h):
    exchange.inject("bad_checksum", path=".CHECKSUM", count=1)
    df = download("BTCUSDT", "1h", "2023-03-01", "2023-04-01", source="archive", progress=False)
    assert len(df) == len(_window(btc_1h, "2023-03-01", "2023-04-01"))
    assert len([r for r in exchange.requests if r.path.endswith("2023-03.zip")]) == 2


def test_corrupt_download_is_refused_and_nothing_cached(exchange):
    exchange.inject("corrupt", path="2023-03.zip", count=100)
    with pytest.raises(UserError, match="failed its SHA-256 check"):
        download("BTCUSDT", "1h", "2023-03-01", "2023-04-01", source="archive", progress=False)
    assert not list(archive_cache_dir().rglob("*.zip"))


def test_missing_archive_month_falls_back_to_rest(exchange, btc_1h):
    # the archive has nothing for this symbol/interval: every file 404s, REST fills in
    from S1.local.simulated import simulate_candles

    src = simulate_candles("ETHUSDC", "4h", "2023-01-01", "2023-05-01")
    exchange.add_candles("ETHUSDC", "4h", src)
    real_archive = exchange.archive_bytes
    exchange.archive_bytes = lambda *a, **k: None
    try:
        df = download("ETHUSDC", "4h", "2023-01-01", "2023-05-01", source="auto", progress=False)
    finally:
        exchange.archive_bytes = real_archive
    pd.testing.assert_frame_equal(df, src, check_freq=False)


def test_microsecond_archives_and_headers(settings_env, monkeypatch):
    """From 2025-01-01 spot archives carry µs timestamps; some copies have a header row."""
    from S1.local.exchange import LocalBinance
    from S1.local.simulated import simulate_candles
    from S1.settings import get_settings

    src = simulate_candles("BTCUSDT", "1h", "2024-12-01", "2025-02-01")
    with LocalBinance(now_ms=to_ms("2025-02-02")) as ex:
        ex.add_candles("BTCUSDT", "1h", src)
        ex.archive_header = True
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_ARCHIVE_URL", ex.url)
        get_settings.cache_clear()
        df = download("BTCUSDT", "1h", "2024-12-01", "2025-02-01", source="archive", progress=False)
        raw = ex.archive_bytes("BTCUSDT", "1h", "monthly", "2025-01")
    pd.testing.assert_frame_equal(df, src, check_freq=False)
    import io
    import zipfile

    first_row = zipfile.ZipFile(io.BytesIO(raw)).read("BTCUSDT-1h-2025-01.csv").decode().splitlines()[1]
    assert first_row.startswith("1735689600000000,"), "the fixture must really be in µs"


def test_archive_dir_reads_local_files(settings_env, shared_dir, tmp_path):
    """--archive-dir: the real archive CSVs (with a header) from ../shared, no network."""
    s = update_dataset(symbol="BTCUSDT", interval="1h", days=31, end="2023-02-01",
                       archive_dir=shared_dir / "data/klines/binance_dump", progress=False)
    df = read_candles(s.path)
    assert len(df) == 744 and df.index[0] == pd.Timestamp("2023-01-01", tz="UTC")
    assert df.loc["2023-01-01 00:00", "open"] == 16541.77
    assert df.loc["2023-01-01 00:00", "trades"] == 149854


def test_archive_dir_with_corrupt_zip_fails_cleanly(settings_env, tmp_path):
    folder = tmp_path / "zips"
    folder.mkdir()
    (folder / "BTCUSDT-1h-2023-01.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(UserError, match="corrupt archive zip"):
        update_dataset(symbol="BTCUSDT", interval="1h", days=10, end="2023-02-01", archive_dir=folder,
                       progress=False)
