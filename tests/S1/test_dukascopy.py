"""Dukascopy FX source (issue 19): S1.dukascopy through real HTTP against S1.local.dukascopy,
which serves real-format ``.bi5`` files built here (LZMA "alone" of 20-byte big-endian records,
month 0-based paths). Parsing, point scaling (1e5 / 1e3 for JPY), aggregation against
hand-computed candles and an independent struct + pandas implementation, weekends as gaps,
corrupt files, retries, incremental re-runs and the CLI wiring (S1/historical.py --source dukascopy)."""

from __future__ import annotations

import lzma
import struct

import numpy as np
import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, read_candles, read_metadata
from S1.dukascopy import download_fx, hour_path, parse_bi5, update_fx_dataset
from S1.errors import NetworkError
from S1.intervals import to_ms
from S1.local.dukascopy import LocalDukascopy, encode_bi5

NOW = "2024-01-10 00:00"


def ticks_frame(rows) -> pd.DataFrame:
    """rows: (time, bid, ask, bid_volume, ask_volume)."""
    idx = pd.DatetimeIndex([pd.Timestamp(r[0], tz="UTC") for r in rows])
    return pd.DataFrame({"bid": [r[1] for r in rows], "ask": [r[2] for r in rows],
                         "bid_volume": [r[3] for r in rows], "ask_volume": [r[4] for r in rows]}, index=idx)


def random_ticks(start="2024-01-04", end="2024-01-09 12:00", seed=1, base=1.09) -> pd.DataFrame:
    """Weekday ticks (none on Saturday and Sunday), 5-decimal prices, float32-exact volumes."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range(start, end, freq="1h", tz="UTC", inclusive="left")
    hours = hours[hours.day_of_week < 5]
    times = []
    for h in hours:
        n = rng.integers(0, 40)
        times += list(h + pd.to_timedelta(np.sort(rng.choice(3_600_000, n, replace=False)), unit="ms"))
    idx = pd.DatetimeIndex(times)
    bid = np.round(base + np.cumsum(rng.normal(0, 0.0002, len(idx))), 5)
    spread = rng.integers(1, 20, len(idx)) / 1e5
    return pd.DataFrame({"bid": bid, "ask": np.round(bid + spread, 5),
                         "bid_volume": np.round(rng.uniform(0.1, 5, len(idx)), 2).astype(np.float32).astype(float),
                         "ask_volume": np.round(rng.uniform(0.1, 5, len(idx)), 2).astype(np.float32).astype(float)},
                        index=idx)


@pytest.fixture
def duka(settings_env, monkeypatch):
    from S1.settings import get_settings

    srv = LocalDukascopy(now_ms=to_ms(NOW)).start()
    monkeypatch.setenv("DUKASCOPY_URL", srv.datafeed_url)
    monkeypatch.setenv("HTTP_MAX_RETRIES", "2")
    get_settings.cache_clear()
    yield srv
    srv.stop()
    get_settings.cache_clear()


# ------------------------------------------------------------------ format
def test_bi5_paths_use_a_zero_based_month():
    assert hour_path("eurusd", to_ms("2024-12-31 23:00")) == "EURUSD/2024/11/31/23h_ticks.bi5"
    assert hour_path("USDJPY", to_ms("2023-01-01 00:00")) == "USDJPY/2023/00/01/00h_ticks.bi5"


def test_parse_against_struct_and_scaling():
    recs = [(500, 109512, 109501, 1.5, 2.25), (3_599_999, 109520, 109511, 0.75, 1.0)]
    body = lzma.compress(b"".join(struct.pack(">IIIff", *r) for r in recs), format=lzma.FORMAT_ALONE)
    h = to_ms("2024-01-04 10:00")
    got = parse_bi5(body, h, 5)
    assert got["t"].tolist() == [h + 500, h + 3_599_999]
    assert got["ask"].tolist() == [1.09512, 1.0952] and got["bid"].tolist() == [1.09501, 1.09511]
    assert got["ask_volume"].tolist() == [1.5, 0.75] and got["bid_volume"].tolist() == [2.25, 1.0]
    jpy = parse_bi5(lzma.compress(struct.pack(">IIIff", 0, 144130, 144123, 1, 1), format=lzma.FORMAT_ALONE), h, 3)
    assert jpy["bid"].tolist() == [144.123] and jpy["ask"].tolist() == [144.13]
    assert encode_bi5(*[np.array(c) for c in zip(*recs)]) == body, "the server's encoder writes the same bytes"


# ------------------------------------------------------------ hand-computed
def test_hand_computed_candles_weekend_gap_and_scaling(duka):
    duka.add_ticks("EURUSD", ticks_frame([
        ("2024-01-05 21:00:00.500", 1.09501, 1.09512, 1.5, 2.0),
        ("2024-01-05 21:15:00", 1.09600, 1.09610, 0.5, 1.0),
        ("2024-01-05 21:59:59.999", 1.09450, 1.09460, 2.0, 0.5),
        ("2024-01-05 22:30:00", 1.09300, 1.09320, 1.0, 1.0),
        ("2024-01-08 00:00:01", 1.09700, 1.09705, 3.0, 3.0),  # Monday: Saturday and Sunday had no ticks
    ]), decimals=5)
    df = download_fx("EURUSD", "1h", "2024-01-05 21:00", "2024-01-08 01:00")
    assert df.index.strftime("%m-%d %H:%M").tolist() == ["01-05 21:00", "01-05 22:00", "01-08 00:00"]
    r = df.iloc[0]
    assert [r.open, r.high, r.low, r.close, r.volume, r.trades] == [1.09501, 1.096, 1.0945, 1.0945, 4.0, 3]
    assert r.quote_volume == pytest.approx(1.09501 * 1.5 + 1.096 * 0.5 + 1.0945 * 2.0, rel=1e-12)
    assert r.close_time == pd.Timestamp("2024-01-05 21:59:59.999", tz="UTC")
    assert df.iloc[2][["open", "close", "trades"]].tolist() == [1.097, 1.097, 1]
    mid = download_fx("EURUSD", "1h", "2024-01-05 21:00", "2024-01-05 22:00", side="mid").iloc[0]
    assert [mid.open, mid.high, mid.close, mid.volume] == pytest.approx([1.095065, 1.09605, 1.09455, 7.5], rel=1e-12)
    ask = download_fx("EURUSD", "1h", "2024-01-05 21:00", "2024-01-05 22:00", side="ask").iloc[0]
    assert [ask.open, ask.low, ask.volume] == pytest.approx([1.09512, 1.0946, 3.5], rel=1e-12)
    served = [r.path for r in duka.requests if r.status == 200]
    assert "/datafeed/EURUSD/2024/00/06/12h_ticks.bi5" in served, "the weekend hours were asked (empty bodies)"


def test_jpy_points_are_thousandths(duka):
    duka.add_ticks("USDJPY", ticks_frame([("2024-01-04 10:05", 144.123, 144.131, 1.0, 1.0),
                                          ("2024-01-04 10:45", 144.201, 144.209, 1.0, 1.0)]), decimals=3)
    c = download_fx("usdjpy", "1h", "2024-01-04 10:00", "2024-01-04 11:00").iloc[0]
    assert [c.open, c.high, c.close] == [144.123, 144.201, 144.201]


# ------------------------------------------------------- independent implementation
def reference_candles(base_url_hours: dict, decimals: int, rule: str, side: str = "bid") -> pd.DataFrame:
    """struct.unpack of every served body, then pandas resample (empty buckets dropped)."""
    rows = []
    for (sym, h), body in sorted(base_url_hours.items()):
        raw = lzma.decompress(body, format=lzma.FORMAT_ALONE) if body else b""
        for off in range(0, len(raw), 20):
            ms, ask, bid, av, bv = struct.unpack(">IIIff", raw[off:off + 20])
            rows.append((h + ms, (bid if side == "bid" else ask) / 10 ** decimals, bv if side == "bid" else av))
    t = pd.DataFrame(rows, columns=["t", "p", "v"])
    t.index = pd.to_datetime(t["t"], unit="ms", utc=True)
    g = t.resample(rule, label="left", closed="left")
    out = pd.DataFrame({"open": g["p"].first(), "high": g["p"].max(), "low": g["p"].min(), "close": g["p"].last(),
                        "volume": g["v"].sum(), "trades": g["p"].count()})
    return out[out["trades"] > 0]


@pytest.mark.parametrize("interval,rule", [("15m", "15min"), ("1h", "1h"), ("4h", "4h"), ("1d", "1D")])
def test_candles_equal_an_independent_implementation(duka, interval, rule):
    ticks = random_ticks()
    duka.add_ticks("EURUSD", ticks, decimals=5)
    got = download_fx("EURUSD", interval, "2024-01-04", "2024-01-09")
    ref = reference_candles(duka.files, 5, rule)
    ref = ref[(ref.index >= pd.Timestamp("2024-01-04", tz="UTC")) & (ref.index < pd.Timestamp("2024-01-09", tz="UTC"))]
    assert got.index.equals(ref.index.rename("open_time").as_unit("ns"))
    for c in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(got[c].to_numpy(), ref[c].to_numpy(), rtol=1e-12, err_msg=c)
    assert got["trades"].tolist() == ref["trades"].tolist()
    weekend = got[(got.index.day_of_week >= 5)]
    assert weekend.empty, "no ticks on the weekend: no candles (gaps, not zeros)"
    assert (got["volume"] > 0).all()


# ------------------------------------------------------------------ file, faults
def test_file_is_incremental_and_labelled(duka):
    duka.add_ticks("EURUSD", random_ticks(), decimals=5)
    s = update_fx_dataset(Dataset("EURUSD", "1h", 3), end="2024-01-08 12:00")
    assert s.path == dataset_path(Dataset("EURUSD", "1h", 3))
    meta = read_metadata(s.path)
    assert meta["exchange"] == "dukascopy" and meta["price"] == "bid" and meta["point_decimals"] == 5
    assert meta["source_url"] == duka.datafeed_url and meta["gaps"] == s.gaps >= 1
    n = len(duka.requests)
    assert n == 72
    again = update_fx_dataset(Dataset("EURUSD", "1h", 3), end="2024-01-09 12:00")
    assert len(duka.requests) - n == 24, "only the new day's hours are fetched"
    full = download_fx("EURUSD", "1h", "2024-01-06 12:00", "2024-01-09 12:00")
    pd.testing.assert_frame_equal(read_candles(again.path), full, check_freq=False)
    assert again.new_rows == len(full.loc["2024-01-08 12:00":]) and s.rows > 0


def test_a_corrupt_file_fails_cleanly_and_a_transient_one_is_retried(duka):
    duka.add_ticks("EURUSD", random_ticks(), decimals=5)
    update_fx_dataset(Dataset("EURUSD", "1h", 1), end="2024-01-05")
    duka.inject("corrupt", path="2024/00/05/03h", count=1)
    duka.inject("status", status=503, path="2024/00/05/04h", count=2)
    ok = update_fx_dataset(Dataset("EURUSD", "1h", 1), end="2024-01-06")
    assert ok.new_rows > 0
    assert [r.status for r in duka.requests if "00/05/04h" in r.path] == [503, 503, 200]
    duka.put_file("EURUSD", to_ms("2024-01-06 03:00"), b"\x5d\x00\x00\x80\x00 definitely not lzma")
    before = ok.path.read_bytes()
    with pytest.raises(NetworkError, match="corrupt file"):
        update_fx_dataset(Dataset("EURUSD", "1h", 1), end="2024-01-07")
    assert ok.path.read_bytes() == before, "nothing written on failure"
    assert len([r for r in duka.requests if "00/06/03h" in r.path]) == 3  # 1 + HTTP_MAX_RETRIES


def test_bad_input_is_one_line(duka, capsys):
    from S1.historical import main

    for argv, msg in ((["--symbol", "BTCUSD"], "unknown Dukascopy instrument"),
                      (["--symbol", "EURUSD", "--interval", "1w"], "not built from Dukascopy ticks"),
                      (["--symbol", "EURUSD", "--plan"], "--source dukascopy takes"),
                      (["--symbol", "GBPCHF", "--end", "2024-01-09"], "does not exist (HTTP 404)")):
        assert run(main, ["--source", "dukascopy", "--days", "2", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err


def test_cli_writes_the_file(duka, capsys):
    from S1.historical import main

    duka.add_ticks("EURUSD", random_ticks(), decimals=5)
    assert run(main, ["--source", "dukascopy", "--symbol", "EURUSD", "--interval", "1h", "--days", "4",
                      "--end", "2024-01-09", "--side", "mid", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mid prices" in out and "gaps" in out
    df = read_candles(dataset_path(Dataset("EURUSD", "1h", 4)))
    assert read_metadata(dataset_path(Dataset("EURUSD", "1h", 4)))["price"] == "mid" and len(df) > 40
