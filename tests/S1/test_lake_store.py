"""The 1m lake: monthly partitions (incremental, idempotent, atomic), derived intervals checked
against the exchange's own candles, reads for the later sprints, SQL over the lake."""

from __future__ import annotations

import numpy as np
import pytest

from S1.datasets import lake_path, read_candles, read_metadata
from S1.errors import UserError
from S1.intervals import to_ms
from S1.lake_store import derive_lake, plan_lake, read_lake, update_lake

NOW = "2024-03-10 12:30"


@pytest.fixture
def sim(settings_env, monkeypatch):
    """The local Binance server on a simulated market (any symbol, any interval), clock at NOW."""
    from S1.local.exchange import LocalBinance
    from S1.settings import get_settings

    clock = {"now": to_ms(NOW)}
    with LocalBinance(simulate=True, simulate_days=80, now_ms=lambda: clock["now"]) as ex:
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_ARCHIVE_URL", ex.url)
        get_settings.cache_clear()
        ex.clock = clock
        yield ex
    get_settings.cache_clear()


def _wire(rows):
    """The exchange's rows as it sends them (decimal strings), back to floats."""
    from S1.local.exchange import kline_json_rows

    return np.array([r[:11] for r in kline_json_rows(rows)], dtype=float)


def _bytes(paths):
    return {p: p.read_bytes() for p in paths}


def test_partitions_incremental_idempotent_and_exact(sim):
    s = update_lake(symbol="BTCUSDT", days=45, end=NOW)
    jan, feb, mar = (lake_path("binance", "spot", "BTCUSDT", "1m", m) for m in ("2024-01", "2024-02", "2024-03"))
    assert [p.name for p in s.written] == ["2024-01.parquet", "2024-02.parquet", "2024-03.parquet"]
    # every candle equals the exchange's own 1m candle; the window is exactly [NOW - 45 d, NOW)
    served = sim.rows_for("BTCUSDT", "1m")
    for p in (jan, feb, mar):
        df = read_candles(p)
        t = df.index.as_unit("ms").asi8
        rows = _wire(served[np.isin(served[:, 0], t)])
        assert len(rows) == len(df) and np.array_equal(rows[:, 1:6], df[["open", "high", "low", "close", "volume"]].to_numpy())
    assert len(read_candles(feb)) == 29 * 1440
    assert read_candles(jan).index[0].strftime("%m-%d %H:%M") == "01-25 12:30"
    assert read_candles(mar).index[-1].strftime("%m-%d %H:%M") == "03-10 12:29"
    assert read_metadata(feb)["simulated"] is True
    before = _bytes([jan, feb, mar])

    # re-run: nothing asked of the exchange, nothing written
    sim.requests.clear()
    again = update_lake(symbol="BTCUSDT", days=45, end=NOW)
    assert sim.requests == [] and again.written == [] and again.complete == 3
    assert _bytes([jan, feb, mar]) == before

    # later: only the open month is fetched and rewritten; complete months are not asked for
    sim.clock["now"] = to_ms("2024-03-12")
    plan = plan_lake(symbol="BTCUSDT", days=46, end="2024-03-12")
    assert [bool(p.todo) for p in plan] == [False, False, True]
    sim.requests.clear()
    later = update_lake(symbol="BTCUSDT", days=46, end="2024-03-12")
    assert [p.name for p in later.written] == ["2024-03.parquet"] and later.new_rows == 1440 + 690
    klines = [r for r in sim.requests if r.path.endswith("/klines")]
    assert klines and all(int(r.params["startTime"]) >= to_ms(NOW) for r in klines)
    assert not [r for r in sim.requests if "/data/spot/" in r.path and "2024-02" in r.path]
    assert _bytes([jan, feb]) == {k: v for k, v in before.items() if k != mar}
    assert len(read_candles(mar)) == 11 * 1440


def test_derive_matches_the_exchanges_own_candles_without_any_request(sim):
    update_lake(symbol="ETHUSDC", days=40, end=NOW)
    sim.requests.clear()
    written = derive_lake(targets=["5m", "1h", "4h", "1d"])
    assert sim.requests == []
    assert len(written) == 3 * 4
    for interval in ("5m", "1h", "4h", "1d"):
        own = sim.rows_for("ETHUSDC", interval)     # the exchange's own candles of that interval
        df = read_lake("ETHUSDC", interval)
        t = df.index.as_unit("ms").asi8
        ref = _wire(own[np.isin(own[:, 0], t)])
        assert len(ref) == len(df) > 0, interval
        for i, col in enumerate(("open", "high", "low", "close"), start=1):
            assert np.array_equal(ref[:, i], df[col].to_numpy()), (interval, col)
        assert np.allclose(ref[:, 5], df["volume"].to_numpy(), rtol=0, atol=1e-6)  # sums of 8-decimal wire values
    # the first day is partial (window starts at 12:30): no 1d candle for it, its hours are there
    d = read_lake("ETHUSDC", "1d")
    assert d.index[0].strftime("%Y-%m-%d") == "2024-01-31"
    assert read_lake("ETHUSDC", "1h").index[0].strftime("%Y-%m-%d %H:%M") == "2024-01-30 13:00"
    # a re-derive rewrites nothing (bytes identical); a read slices by time
    feb_1h = lake_path("binance", "spot", "ETHUSDC", "1h", "2024-02")
    b = feb_1h.read_bytes()
    assert derive_lake(targets=["1h"]) == [] and feb_1h.read_bytes() == b
    assert len(read_lake("ETHUSDC", "1h", start="2024-02-01", end="2024-02-02")) == 24


def test_read_derives_in_memory_when_no_partition_of_that_interval(sim):
    update_lake(symbol="BTCUSDT", days=3, end=NOW)
    got = read_lake("BTCUSDT", "15m")
    own = sim.rows_for("BTCUSDT", "15m")
    ref = _wire(own[np.isin(own[:, 0], got.index.as_unit("ms").asi8)])
    assert len(got) == len(ref) == 3 * 96 and np.array_equal(ref[:, 2], got["high"].to_numpy())


def test_bad_requests_are_one_line(settings_env):
    with pytest.raises(UserError, match="weeks straddle months"):
        derive_lake(targets=["1w"])
    with pytest.raises(UserError, match="not market 'future'"):
        plan_lake(symbol="BTCUSDT", days=3, market="future")
    with pytest.raises(UserError, match="no binance/spot/BTCUSDT candles"):
        read_lake("BTCUSDT", "1h")


def test_sql_over_the_lake(sim):
    from S1.lake import query

    update_lake(symbol="BTCUSDT", days=2, end=NOW)
    derive_lake(targets=["1h"])
    df = query("SELECT exchange, market, symbol, interval, count(*) AS n FROM lake "
               "GROUP BY ALL ORDER BY interval")
    assert list(df["interval"]) == ["1h", "1m"] and list(df["n"]) == [47, 2 * 1440]
    assert df["symbol"].tolist() == ["BTCUSDT", "BTCUSDT"] and df["exchange"].tolist() == ["binance"] * 2
    # partition pruning by month works through the month column
    n = query("SELECT count(*) AS n FROM lake WHERE interval = '1m' AND month = '2024-03'")["n"].iloc[0]
    assert n == len(read_candles(lake_path("binance", "spot", "BTCUSDT", "1m", "2024-03")))


def test_s2_indicators_from_the_lake(sim, capsys):
    from S1.datasets import Dataset, dataset_path, read_parquet
    from S2.indicators import main as indicators

    update_lake(symbol="BTCUSDT", days=5, end=NOW)
    derive_lake(targets=["1h"])
    assert not dataset_path(Dataset("BTCUSDT", "1h", 3)).exists()
    assert indicators(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "3", "--from-lake"]) == 0
    ta_path = dataset_path(Dataset("BTCUSDT", "1h", 3), "ta")
    ta = read_parquet(ta_path)
    lake = read_lake("BTCUSDT", "1h")
    assert len(ta) == 72 and ta.index[-1] == lake.index[-1] and (ta["close"] == lake["close"].iloc[-72:]).all()
    meta = read_metadata(ta_path)
    assert meta["simulated"] is True and meta["from_lake"].endswith("BTCUSDT") and "rsi14" in ta.columns
    # 15m is not derived on disk: read_lake derives it in memory from the 1m partitions
    assert indicators(["--symbol", "BTCUSDT", "--interval", "15m", "--days", "2", "--from-lake"]) == 0
    assert len(read_parquet(dataset_path(Dataset("BTCUSDT", "15m", 2), "ta"))) == 2 * 96
    with pytest.raises(UserError, match="no binance/swap/BTCUSDT candles"):
        indicators(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "3", "--from-lake", "binance/swap"])


def test_okx_swap_lake_through_ccxt(settings_env, monkeypatch):
    """Another exchange and market (CCXT's okx class against the local OKX server): exact candles, the
    candle in progress left out, a re-run asks for no candle."""
    from S1.local.okx import LocalOkx
    from S1.local.simulated import simulate_candles
    from S1.settings import get_settings

    src = simulate_candles("BTCUSDTPERP", "1m", "2023-05-29", "2023-06-01")
    with LocalOkx("2023-05-31 12:30") as ex:
        ex.add("last", "BTC-USDT-SWAP", "1m", src)
        monkeypatch.setenv("CCXT_API_URLS", f"okx={ex.server.url}")
        get_settings.cache_clear()
        s = update_lake(symbol="BTC/USDT:USDT", exchange="okx", market="swap", days=2)
        path = lake_path("okx", "swap", "BTCUSDT", "1m", "2023-05")
        assert s.written == [path]
        got = read_candles(path)
        assert len(got) == 2 * 1440 and got.index[-1].strftime("%m-%d %H:%M") == "05-31 12:29"
        ref = src.loc[got.index]
        for col in ("open", "high", "low", "close", "volume"):
            assert np.array_equal(got[col].to_numpy(), ref[col].to_numpy()), col
        assert read_metadata(path)["ccxt_symbol"] == "BTC/USDT:USDT"
        before = path.read_bytes()
        ex.server.requests.clear()
        again = update_lake(symbol="BTC/USDT:USDT", exchange="okx", market="swap", days=2)
        assert again.written == [] and path.read_bytes() == before
        assert not [r for r in ex.requests if "candles" in r.path]
    get_settings.cache_clear()
