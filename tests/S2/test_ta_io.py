"""S2/ta_io.py: the _ta file (metadata carried over, atomic, nothing written on bad
input), dataset listing and names, and the streamer's SQLite table."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from S1.datasets import Dataset, dataset_path, read_candles, read_metadata, read_parquet, write_parquet
from S1.errors import UserError
from S1.local.simulated import simulate_candles
from S2 import ta_io
from S2.ta import IndicatorConfig, add_indicators
from S2.ta_io import DatasetName, list_datasets, load_ta, make_ta_file, parse_dataset_name, read_kline_sqlite


@pytest.fixture
def eth_file(settings_env):
    df = simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-01-15")
    meta = {"symbol": "ETHUSDC", "interval": "1h", "days": 14, "simulated": True, "gaps": ["x"]}
    path = write_parquet(df, dataset_path(Dataset("ETHUSDC", "1h", 14)), metadata=meta)
    return path, df


def test_make_ta_file_writes_every_column_and_keeps_metadata(eth_file):
    src, df = eth_file
    res = make_ta_file(Dataset("ethusdc", "1h", 14), config=IndicatorConfig(sma=(20, 50)))
    assert res.path == dataset_path(Dataset("ETHUSDC", "1h", 14), "ta") and res.path.name == "ethusdc_1h_14d_ta.parquet"
    out = read_parquet(res.path)
    pd.testing.assert_frame_equal(out[df.columns.tolist()], df)
    expected = add_indicators(df, config=IndicatorConfig(sma=(20, 50)))
    pd.testing.assert_frame_equal(out, expected)
    meta = read_metadata(res.path)
    assert meta["simulated"] is True and res.simulated is True and meta["gaps"] == ["x"]
    ind = meta["indicators"]
    assert ind["config"]["sma"] == [20, 50] and ind["source_file"] == src.name
    assert ind["warmup_rows"]["sma50"] == 49 and ind["columns"][0] == "sma20" and ind["rows"] == len(df)
    assert ind["engine"].startswith("TA-Lib ")


def test_not_simulated_flag_is_carried_too(settings_env):
    df = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-05")
    write_parquet(df, dataset_path(Dataset("BTCUSDT", "1h", 4)), metadata={"simulated": False, "exchange": "binance"})
    res = make_ta_file(Dataset("BTCUSDT", "1h", 4))
    assert read_metadata(res.path)["simulated"] is False and not res.simulated


def test_missing_source_names_the_s1_command(settings_env):
    with pytest.raises(UserError, match=r"create it first with: python S1/historical.py --symbol ETHUSDC "
                                        r"--interval 1h --days 365$"):
        make_ta_file(Dataset("ethusdc", "1h", 365))
    assert not dataset_path(Dataset("ETHUSDC", "1h", 365), "ta").exists()


def test_bad_source_leaves_previous_output_intact(eth_file):
    src, df = eth_file
    good = make_ta_file(Dataset("ETHUSDC", "1h", 14)).path
    before = good.read_bytes()
    write_parquet(df.drop(columns=["trades"]), src)  # a broken S1 file
    with pytest.raises(UserError, match=r"missing columns \['trades'\]"):
        make_ta_file(Dataset("ETHUSDC", "1h", 14))
    write_parquet(df.iloc[:30], src)  # too short for sma50
    with pytest.raises(UserError, match="30 rows, fewer than the 50"):
        make_ta_file(Dataset("ETHUSDC", "1h", 14))
    assert good.read_bytes() == before
    assert sorted(p.name for p in good.parent.iterdir()) == [src.name, good.name]  # no temp files left


@pytest.mark.parametrize("change", ["float32", "int_prices", "trades_float", "reordered", "naive_index",
                                    "index_name", "ms_index"])
def test_other_sources_are_normalised_by_s1(eth_file, change):
    src, df = eth_file
    bad = {"float32": lambda d: d.astype({"volume": np.float32}),
           "int_prices": lambda d: d.assign(high=d["high"].round().astype(np.int64)),
           "trades_float": lambda d: d.astype({"trades": np.float64}),
           "reordered": lambda d: d[list(d.columns[::-1])],
           "naive_index": lambda d: d.set_axis(d.index.tz_localize(None), axis=0),
           "index_name": lambda d: d.rename_axis("time"),
           "ms_index": lambda d: d.set_axis(d.index.as_unit("ms"), axis=0)}[change](df)
    write_parquet(bad, src)
    out = read_parquet(make_ta_file(Dataset("ETHUSDC", "1h", 14)).path)
    pd.testing.assert_frame_equal(out, add_indicators(read_candles(src)), check_exact=True)


@pytest.mark.parametrize("change, message", [
    ("duplicate", "1 duplicate open times"), ("decreasing", "open times are not increasing"),
    ("nat", "open times are not increasing")])
def test_bad_index_keeps_the_s1_error(eth_file, change, message):
    src, df = eth_file
    idx = df.index.to_series()
    if change == "duplicate":
        idx.iloc[5] = idx.iloc[4]
    elif change == "decreasing":
        idx.iloc[[4, 5]] = idx.iloc[[5, 4]].to_numpy()
    else:
        idx.iloc[0] = pd.NaT
    write_parquet(df.set_axis(pd.DatetimeIndex(idx, name="open_time"), axis=0), src)
    with pytest.raises(UserError, match=message) as s1:
        read_candles(src)
    with pytest.raises(UserError) as s2:
        make_ta_file(Dataset("ETHUSDC", "1h", 14))
    assert str(s2.value) == str(s1.value)


def test_load_ta_missing_names_the_s2_command(settings_env):
    with pytest.raises(UserError, match="create it first with: python S2/indicators.py --symbol SOLUSDT "
                                        "--interval 4h --days 90"):
        load_ta(Dataset("solusdt", "4h", 90))


def test_dataset_names_round_trip(settings_env):
    for args, kind, exchange in [(("ETHUSDC", "1h", 365), "candles", None), (("BTCUSDT", "1M", 3000), "ta", None),
                                 (("SOLUSDT", "15m", 7), "ta", "okx"), (("ADABTC", "1m", 2), "signals", None)]:
        p = dataset_path(*args, kind, exchange=exchange)
        assert parse_dataset_name(p) == DatasetName(*args, kind, exchange)
        assert DatasetName(*args, kind, exchange).path() == p
    for bad in ["x.parquet", "btcusdt_1h_365.parquet", "btcusdt_1H_365d.parquet", "btcusdt_1h_0d.parquet",
                ".btcusdt_1h_3d.parquet.123.tmp", "btcusdt_1h_3d.json", "a_b_c_d_e_3d.parquet"]:
        assert parse_dataset_name(bad) is None, bad


def test_list_datasets(settings_env):
    assert list_datasets().empty  # the data dir does not even exist yet
    df = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-03")
    for sym in ("BTCUSDT", "ETHUSDC"):
        write_parquet(df, dataset_path(Dataset(sym, "1h", 2)))
    write_parquet(add_indicators(df, config=IndicatorConfig(sma=5, macd=(3, 6, 2), bbands=(5, 2), ema=3)),
                  dataset_path(Dataset("BTCUSDT", "1h", 2), "ta"))
    (settings_env.data_dir / "notes.parquet").write_bytes(b"")
    listing = list_datasets()
    assert sorted(listing["name"]) == ["btcusdt_1h_2d.parquet", "btcusdt_1h_2d_ta.parquet", "ethusdc_1h_2d.parquet"]
    assert set(list_datasets(("ta",))["label"]) == {"BTCUSDT 1h 2d"}
    assert listing["modified"].is_monotonic_decreasing


# --------------------------------------------------------------------------- SQLite
SCHEMA = """CREATE TABLE kline (
    symbol TEXT NOT NULL, interval TEXT NOT NULL, open_time INTEGER NOT NULL, close_time INTEGER NOT NULL,
    open REAL, high REAL, low REAL, close REAL, volume REAL, quote_volume REAL, trades INTEGER,
    taker_buy_base REAL, taker_buy_quote REAL, is_closed INTEGER NOT NULL, updated_at INTEGER,
    PRIMARY KEY (symbol, interval, open_time))"""


def _write_db(path, frames: dict[str, pd.DataFrame], interval: str = "1m", open_last: bool = True):
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(SCHEMA)
    for sym, df in frames.items():
        rows = []
        for i, (t, r) in enumerate(df.iterrows()):
            closed = 0 if (open_last and i == len(df) - 1) else 1
            rows.append((sym, interval, t.value // 10**6, r.close_time.value // 10**6, r.open, r.high, r.low,
                         r.close, r.volume, r.quote_volume, int(r.trades), r.taker_buy_base, r.taker_buy_quote,
                         closed, 0))
        # insert newest first so the reader's ORDER BY matters
        con.executemany("INSERT INTO kline VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows[::-1])
    con.commit()
    return con


def test_sqlite_last_closed_rows_as_candle_frame(tmp_path):
    btc = simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-01 05:00")
    eth = simulate_candles("ETHUSDC", "1m", "2024-03-01", "2024-03-01 05:00")
    db = tmp_path / "btcusdt_1m_realtime.db"
    con = _write_db(db, {"BTCUSDT": btc, "ETHUSDC": eth})  # kept open: the streamer is "running"
    try:
        got = read_kline_sqlite(db, symbol="btcusdt", interval="1m", limit=120)
        expected = btc.iloc[-121:-1]  # the last row is still in progress
        pd.testing.assert_frame_equal(got, expected)
        assert read_kline_sqlite(db, symbol="ETHUSDC", interval="1m", limit=10_000).equals(eth.iloc[:-1])
        assert read_kline_sqlite(db, symbol="BTCUSDT", interval="5m").empty
        # the computation works on it like on any candle frame
        ta = add_indicators(got)
        assert ta["MACDs_12_26_9"].iloc[33:].notna().all()
    finally:
        con.close()
    assert db.stat().st_size > 0


def test_sqlite_errors(tmp_path):
    with pytest.raises(UserError, match="start the streamer first: python S1/streamer.py --symbol BTCUSDT"):
        read_kline_sqlite(tmp_path / "none.db", symbol="BTCUSDT", interval="1m")
    assert not (tmp_path / "none.db").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(UserError, match="cannot read the kline table"):
        read_kline_sqlite(empty, symbol="BTCUSDT", interval="1m")
    with pytest.raises(UserError, match="limit must be a positive"):
        read_kline_sqlite(empty, symbol="BTCUSDT", interval="1m", limit=0)
    with pytest.raises(UserError, match="unsupported interval"):
        read_kline_sqlite(empty, symbol="BTCUSDT", interval="1H")


def test_sqlite_null_trades_become_zero(tmp_path):
    btc = simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-01 01:00")
    db = tmp_path / "k.db"
    con = _write_db(db, {"BTCUSDT": btc}, open_last=False)
    con.execute("UPDATE kline SET trades = NULL")
    con.commit()
    con.close()
    got = read_kline_sqlite(db, symbol="BTCUSDT", interval="1m", limit=5)
    assert got["trades"].tolist() == [0] * 5 and got["trades"].dtype == np.int64


def test_module_doctests():
    import doctest

    res = doctest.testmod(ta_io)
    assert res.attempted > 0 and res.failed == 0
