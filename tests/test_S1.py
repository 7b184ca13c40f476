"""The user's sprint-plan check for S1: the Parquet file is created with the right structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def test_parquet_file_creation_and_structure(exchange, settings_env):
    from S1.history import update_dataset

    summary = update_dataset(symbol="BTCUSDT", interval="1h", days=60, end="2023-05-01", progress=False)
    path = settings_env.data_dir / "btcusdt_1h_60d.parquet"
    assert summary.path == path and path.exists()

    schema = pq.read_schema(path)
    assert schema.field("open_time").type.tz == "UTC"
    df = pd.read_parquet(path)
    assert df.index.name == "open_time" and str(df.index.tz) == "UTC"
    assert df.index.is_unique and df.index.is_monotonic_increasing
    for col in ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base", "taker_buy_quote"):
        assert df[col].dtype == np.float64, col
    assert df["trades"].dtype == np.int64
    assert str(df["close_time"].dt.tz) == "UTC"
    span = df["close_time"] - df.index.to_series()
    # normally the bucket's last ms; a halted candle (real: 2023-03-24 12:00) closes early
    assert ((span > pd.Timedelta(0)) & (span <= pd.Timedelta(milliseconds=3_599_999))).all()
    assert (df["high"] >= df[["open", "close"]].max(axis=1)).all()
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    assert df.index[0] == pd.Timestamp("2023-03-02", tz="UTC")
    assert df["close_time"].iloc[-1] < pd.Timestamp("2023-05-01", tz="UTC")
