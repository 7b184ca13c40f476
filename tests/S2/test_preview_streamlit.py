"""S2/preview_streamlit.py with Streamlit's own AppTest (no browser): dataset picker,
date range, overlay toggles, panels, lengths, errors -- on a tmp DATA_DIR -- and
S2/charts.py, the Plotly figure it draws."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from S1.datasets import Dataset, dataset_path, write_parquet
from S1.errors import UserError
from S1.local.simulated import simulate_candles
from S2.charts import indicator_chart
from S2.ta import IndicatorConfig, add_indicators

APP = str(Path(__file__).resolve().parents[2] / "S2" / "preview_streamlit.py")


@pytest.fixture(scope="module")
def frames():
    eth = simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-03-01")  # 1,440 candles
    btc = simulate_candles("BTCUSDT", "4h", "2024-01-01", "2024-03-01")
    return eth, add_indicators(eth), btc


@pytest.fixture
def data(settings_env, frames):
    eth, eth_ta, btc = frames
    write_parquet(eth, dataset_path(Dataset("ETHUSDC", "1h", 60)), metadata={"simulated": True})
    write_parquet(eth_ta, dataset_path(Dataset("ETHUSDC", "1h", 60), "ta"),
                  metadata={"simulated": True, "indicators": {"config": IndicatorConfig().to_dict()}})
    write_parquet(btc, dataset_path(Dataset("BTCUSDT", "4h", 60)), metadata={"simulated": False})
    return frames


def app(monkeypatch, *args: str) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["preview_streamlit.py", *args])
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    return at


def chart(at: AppTest) -> dict:
    (element,) = at.get("plotly_chart")
    return json.loads(element.proto.spec)


def values(arr) -> np.ndarray:
    if isinstance(arr, dict) and "bdata" in arr:  # plotly's typed-array encoding
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]))
    return np.asarray(arr)


def traces(at: AppTest) -> dict[str, dict]:
    return {t.get("name"): t for t in chart(at)["data"]}


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


ETH_ARGS = ("--symbol", "ethusdc", "--interval", "1h", "--days", "60")


def test_opens_the_requested_dataset_with_every_panel(data, monkeypatch):
    _, eth_ta, _ = data
    at = app(monkeypatch, *ETH_ARGS)
    no_errors(at)
    picker = at.sidebar.selectbox[0]
    assert picker.value == ("ETHUSDC", "1h", 60, None)
    assert sorted(picker.options) == ["BTCUSDT 4h 60d · candles (indicators computed here)",
                                      "ETHUSDC 1h 60d · indicators"]
    start, end = at.sidebar.date_input[0].value
    assert end == dt.date(2024, 2, 29) and start == eth_ta.index[-1000].date()
    assert [t.label for t in at.sidebar.toggle] == ["SMA", "EMA", "Bollinger Bands"]
    assert all(t.value for t in at.sidebar.toggle)
    assert "Simulated market data" in at.warning[0].value
    names = set(traces(at))
    assert {"ETHUSDC", "SMA 50", "EMA 21", "BB 20 x2.0 upper", "BB 20 x2.0 lower", "volume", "RSI 14",
            "MACD", "MACD signal", "MACD histogram", "ATR 14", "NATR 14 %"} <= names
    # what is drawn is the file's data for the picked range
    window = eth_ta[eth_ta.index >= pd.Timestamp(start, tz="UTC")]
    t = traces(at)
    np.testing.assert_allclose(values(t["RSI 14"]["y"]), window["rsi14"].to_numpy())
    np.testing.assert_allclose(values(t["NATR 14 %"]["y"]), window["natr14"].to_numpy())
    assert len(t["ETHUSDC"]["x"]) == len(window)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["RSI 14"] == f"{window['rsi14'].iloc[-1]:.1f}" and metrics["Candles"] == f"{len(window):,}"
    shapes = chart(at)["layout"]["shapes"]
    assert sorted((s["y0"], s["y1"]) for s in shapes if s["type"] == "rect") == [(0, 30), (70, 100)]


def test_toggles_panels_and_date_range(data, monkeypatch):
    _, eth_ta, _ = data
    at = app(monkeypatch, *ETH_ARGS)
    at.sidebar.toggle[0].set_value(False)  # SMA
    at.sidebar.toggle[2].set_value(False)  # Bollinger
    at.sidebar.multiselect[0].set_value(["rsi", "natr"])
    at.sidebar.date_input[0].set_value((dt.date(2024, 2, 1), dt.date(2024, 2, 3)))
    at.run()
    no_errors(at)
    names = set(traces(at))
    assert "SMA 50" not in names and not any(n.startswith("BB ") for n in names)
    assert "EMA 21" in names and "RSI 14" in names and "NATR 14 %" in names
    assert not names & {"volume", "MACD", "ATR 14"}
    x = pd.to_datetime(traces(at)["ETHUSDC"]["x"])
    assert x[0] == pd.Timestamp("2024-02-01", tz="UTC") and x[-1] == pd.Timestamp("2024-02-03 23:00", tz="UTC")
    assert len(x) == 72


def test_candle_file_gets_indicators_computed_in_the_app(data, monkeypatch):
    _, _, btc = data
    at = app(monkeypatch, *ETH_ARGS)
    at.sidebar.selectbox[0].set_value(("BTCUSDT", "4h", 60, None))
    at.run()
    no_errors(at)
    assert "indicators computed in this app" in at.caption[0].value
    assert not at.warning  # not simulated
    expected = add_indicators(btc)
    start = pd.Timestamp(at.sidebar.date_input[0].value[0], tz="UTC")
    np.testing.assert_allclose(values(traces(at)["MACD"]["y"]),
                               expected.loc[expected.index >= start, "MACD_12_26_9"].to_numpy())


def test_other_lengths_recompute(data, monkeypatch):
    _, eth_ta, _ = data
    at = app(monkeypatch, *ETH_ARGS)
    rsi_input = next(t for t in at.sidebar.text_input if t.label == "RSI")
    rsi_input.set_value("7,21")
    next(t for t in at.sidebar.text_input if t.label == "SMA").set_value("10")
    at.run()
    no_errors(at)
    names = set(traces(at))
    assert {"RSI 7", "RSI 21", "SMA 10"} <= names and "RSI 14" not in names
    full = add_indicators(eth_ta, config=IndicatorConfig(rsi=(7, 21), sma=10))
    y = values(traces(at)["RSI 7"]["y"])
    np.testing.assert_allclose(y, full["rsi7"].to_numpy()[-len(y):])
    # a bad length shows one error and keeps the file's lengths
    next(t for t in at.sidebar.text_input if t.label == "MACD fast,slow,signal").set_value("26,12,9")
    at.run()
    assert not at.exception and "fast length 26 must be below slow length 12" in at.error[0].value
    assert "MACD" in traces(at) and "RSI 14" in traces(at)


def test_ta_file_without_metadata_and_other_lengths(settings_env, frames, monkeypatch):
    eth, _, _ = frames
    ta = add_indicators(eth, config=IndicatorConfig(rsi=7, atr=10, sma=(20, 100)))
    write_parquet(ta, dataset_path(Dataset("ETHUSDC", "1h", 60), "ta"))  # no toolkit metadata at all
    at = app(monkeypatch, *ETH_ARGS)
    no_errors(at)
    assert {"RSI 7", "NATR 10 %", "SMA 20", "SMA 100"} <= set(traces(at))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["RSI 7"] == f"{ta['rsi7'].iloc[-1]:.1f}" and "NATR 10 %" in metrics
    assert not at.warning  # not labelled simulated without the flag
    lengths = {t.label: t.value for t in at.sidebar.text_input}
    assert lengths["RSI"] == "7" and lengths["SMA"] == "20,100" and lengths["ATR / NATR"] == "10"


def test_max_candles_cap(data, monkeypatch):
    at = app(monkeypatch, *ETH_ARGS, "--max-candles", "100")
    no_errors(at)
    assert "drawing the last 100" in at.info[0].value
    assert len(traces(at)["ETHUSDC"]["x"]) == 100


def test_missing_requested_dataset_warns_with_commands(data, monkeypatch):
    at = app(monkeypatch, "--symbol", "SOLUSDT", "--interval", "1d", "--days", "30")
    no_errors(at)
    text = at.warning[0].value
    assert "solusdt_1d_30d_ta.parquet is not in" in text
    assert "python S1/historical.py --symbol SOLUSDT --interval 1d --days 30" in text
    assert "python S2/indicators.py --symbol SOLUSDT --interval 1d --days 30" in text
    assert at.get("plotly_chart")  # still shows the first dataset


def test_empty_data_dir_and_bad_arguments(settings_env, monkeypatch):
    at = app(monkeypatch)
    assert not at.exception and "No datasets in" in at.error[0].value
    assert not at.get("plotly_chart")
    at = app(monkeypatch, "--days", "many")
    assert not at.exception and "bad app argument" in at.error[0].value


# ----------------------------------------------------------------------- the figure
def test_chart_figure_unit(frames):
    _, eth_ta, _ = frames
    fig = indicator_chart(eth_ta.iloc[-300:], panels=("macd",), sma=False, name="ETH")
    names = [t.name for t in fig.data]
    assert names[0] == "ETH" and "SMA 50" not in names and "MACD" in names and "RSI 14" not in names
    assert [a.text for a in fig.layout.annotations] == ["ETH", "MACD 12/26/9"]
    candles_only = indicator_chart(eth_ta.iloc[-300:, :10])  # no indicator columns: price + volume only
    assert [t.name for t in candles_only.data] == ["price", "volume"]
    with pytest.raises(UserError, match=r"unknown chart panel\(s\) \['obv'\]"):
        indicator_chart(eth_ta, panels=("obv",))
    with pytest.raises(UserError, match="open_time index"):
        indicator_chart(eth_ta.reset_index())


def test_charts_doctests():
    import doctest

    from S2 import charts

    res = doctest.testmod(charts)
    assert res.attempted > 0 and res.failed == 0
