"""S7/dashboard.py with Streamlit's AppTest (no browser) on a tmp DATA_DIR holding
small real outputs of every sprint -- simulated candles (S1) with a planted gap, S2
indicators, an S3-layout sentiment file, S4 signals and an S5 backtest written by
their own functions, an order log written by S7's OrderLog, an executor store
written by S7's ExecutorStore, kill-switch states written by S6's KillSwitch -- plus
a real dry-run replay session (the executor's CLI against the local simulated
market), the empty and partial data directories, unreadable files, bad arguments,
S7/dashboard_data.py on its own, and the dashboard in a real headless browser
through S2/screenshot.py (marked ``browser``)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from S7.dashboard_data import COVERAGE_COLUMNS

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "S7" / "dashboard.py")
ETH = ("ETHUSDC", "1h", 60)
BTC4 = ("BTCUSDT", "4h", 60)
GAP = pd.date_range("2024-01-20 05:00", periods=3, freq="h", tz="UTC")  # planted: 3 missing candles


# ------------------------------------------------------------------------- the data
def _settings_for(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    import S1.settings as settings_mod

    env = tmp / "empty.env"
    env.write_text("")
    mp.setenv("TOOLKIT_ENV_FILE", str(env))
    mp.setenv("DATA_DIR", str(tmp / "data"))
    mp.setenv("REPORTS_DIR", str(tmp / "reports"))
    mp.setitem(settings_mod.Settings.model_config, "env_file", str(env))
    settings_mod.get_settings.cache_clear()


def _stream_rows(symbol: str, interval: str, frame: pd.DataFrame) -> list[tuple]:
    from S1.stream_store import rows_from_klines

    ms = lambda s: pd.DatetimeIndex(s).as_unit("ms").asi8
    arr = np.column_stack([ms(frame.index), frame["open"], frame["high"], frame["low"], frame["close"],
                           frame["volume"], ms(frame["close_time"]), frame["quote_volume"], frame["trades"],
                           frame["taker_buy_base"], frame["taker_buy_quote"]])
    return rows_from_klines(symbol, interval, arr)


def build_data(tmp: Path) -> dict:
    """Write one small output of every sprint under ``tmp/data`` and ``tmp/reports``
    with the sprints' own writers; returns what was written, for the assertions."""
    from S1.datasets import Dataset, dataset_path, orders_log_path, sentiment_path, state_path, write_parquet
    from S1.local.simulated import simulate_candles
    from S1.stream_store import KlineStore
    from S2.ta import IndicatorConfig, add_indicators
    from S4.signals import build_signals
    from S5.backtest_files import backtest_files
    from S6.config import KillSwitchConfig
    from S6.killswitch import KillSwitch
    from S7.order_log import OrderLog
    from S7.orders import Fill
    from S7.store import ExecutorStore

    with pytest.MonkeyPatch.context() as mp:
        _settings_for(tmp, mp)
        eth = simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-03-01")
        eth = eth.drop(GAP)
        write_parquet(eth, dataset_path(*ETH), metadata={"simulated": True, "gaps": ["planted"]})
        eth_ta = add_indicators(eth)
        write_parquet(eth_ta, dataset_path(*ETH, "ta"),
                      metadata={"simulated": True, "indicators": {"config": IndicatorConfig().to_dict()}})
        btc = simulate_candles("BTCUSDT", "4h", "2024-01-01", "2024-03-01")
        write_parquet(btc, dataset_path(*BTC4), metadata={"simulated": False})
        # S3's layout: open_time index, sentiment_score, n_items, evidence; metadata as S3/pipeline.py writes it
        t = pd.date_range("2024-01-01", "2024-02-29 23:00", freq="h", tz="UTC", name="open_time")
        score = np.round(np.sin(np.arange(len(t)) / 17.0) * 0.6, 6)
        items = (np.arange(len(t)) % 3).astype(np.int64)
        sent = pd.DataFrame({"sentiment_score": score, "n_items": items, "evidence": items * 0.5}, index=t)
        write_parquet(sent, sentiment_path("1h"), metadata={"kind": "sentiment", "interval": "1h",
                                                            "classifier": "lexicon", "half_life": "6h",
                                                            "simulated": True})
        # S4 + S5 with their own functions
        build_signals(Dataset(*ETH), "S4/rules_ta_only.yaml")
        run = backtest_files(Dataset(*ETH), rules_file="S4/rules_ta_only.yaml")
        # the streamer's SQLite file (S1's writer), 1m candles with a gap of 2
        m1 = simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-01 02:00")
        m1 = m1.drop(m1.index[[10, 11]])
        store = KlineStore(tmp / "data" / "btcusdt_1m_realtime.db")
        store.write(_stream_rows("BTCUSDT", "1m", m1))
        store.close()
        # S7: the order log and the executor store (testnet BTCUSDT 1m) with an open position
        log = OrderLog(orders_log_path(), mode="testnet")
        common = dict(symbol="BTCUSDT", type="MARKET", reason="entry:pullback", interval="1m")
        log.append(**common, side="BUY", quantity="0.01", price="42000", client_id="s7-buy1", exchange_id=None,
                   status="INTENT", event="intent", time="2024-03-01T10:00:00Z")
        log.append(**common, side="BUY", quantity="0.01", price="42000", client_id="s7-buy1", exchange_id=77,
                   status="FILLED", event="accepted", executed_qty="0.01", avg_price="42010.5",
                   time="2024-03-01T10:00:01Z")
        log.append(**common, side="BUY", quantity="0.01", price="42010.5", client_id="s7-buy1", exchange_id=77,
                   status="FILL", event="fill", trade_id=9001, commission="0.00001", commission_asset="BTC",
                   time="2024-03-01T10:00:01Z")
        log.append(**common, side="BUY", quantity="0.02", price="41000", client_id="s7-blk1", exchange_id=None,
                   status="BLOCKED", event="not_sent", error="kill-switch tripped", time="2024-03-01T11:00:00Z")
        log.append(**common, side="BUY", quantity="0.5", price="41000", client_id="s7-rej1", exchange_id=None,
                   status="REJECTED", event="rejected", code=-2010, error="Account has insufficient balance",
                   time="2024-03-01T12:00:00Z")
        st = ExecutorStore(state_path("s7_testnet_btcusdt_1m.db"))
        st.insert_order("s7-buy1", symbol="BTCUSDT", interval="1m", side="BUY", type="MARKET", quantity="0.01",
                        status="FILLED", reason="entry:pullback")
        fill = Fill("BTCUSDT", 9001, 77, "BUY", Decimal("42010.5"), Decimal("0.01"), Decimal("0.00001"), "BTC",
                    int(pd.Timestamp("2024-03-01T10:00:01Z").value // 10**6), "s7-buy1")
        st.apply_fill(fill, base_asset="BTC", quote_asset="USDT", min_tradable=Decimal("0.00001"))
        st.set_levels("BTCUSDT", stop=41000.0, take_profit=44000.0)
        st.close()
        # S6: testnet tripped by its drawdown limit, dry-run fine
        ks = KillSwitch(KillSwitchConfig(max_drawdown=0.1, daily_loss_limit=None, max_consecutive_losses=None),
                        path=state_path("kill_switch_testnet.json"))
        ks.update_equity(10_000.0, at="2024-03-01T10:00:00Z")
        assert ks.update_equity(8_900.0, at="2024-03-01T11:00:00Z") is False
        KillSwitch(path=state_path("kill_switch_dryrun.json")).update_equity(5_000.0, at="2024-03-01T10:00:00Z")
        return {"eth": eth, "eth_ta": eth_ta, "btc": btc, "sent": sent, "m1": m1, "backtest": run.summary,
                "equity": run.result.equity, "paths": {k: Path(v).name for k, v in run.paths.items()}}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard-template")
    return tmp, build_data(tmp)


@pytest.fixture
def full(settings_env, template):
    """The template's data and reports copied into this test's DATA_DIR / REPORTS_DIR."""
    tmp, written = template
    shutil.copytree(tmp / "data", settings_env.data_dir)
    shutil.copytree(tmp / "reports", settings_env.reports_dir)
    return written


def app(monkeypatch, *args: str) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["dashboard.py", *args])
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    return at


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def texts(at: AppTest) -> list[str]:
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "warning", "info", "success"):
        out += [e.value for e in getattr(at, kind)]
    return out


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def values(arr) -> np.ndarray:
    if isinstance(arr, dict) and "bdata" in arr:  # plotly's typed-array encoding
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]))
    return np.asarray(arr)


#: the tables of the app, told apart by their columns (AppTest does not expose a dataframe's key)
TABLES = {"coverage-table": ({"file", "kind", "gap_ranges"}, set()),
          "positions": ({"qty", "entry_price", "round_trips", "fills_by"}, set()),
          "orders": ({"client_id", "fills_by", "events"}, set()),
          "order-events": ({"client_id", "event"}, {"fills_by"}),
          "bt-metrics": ({"metric", "value"}, set())}


def table_of(at: AppTest, key: str):
    need, never = TABLES[key]
    found = [d for d in at.dataframe if need <= set(d.value.columns) and not never & set(d.value.columns)]
    assert len(found) == 1, f"{len(found)} tables look like {key}"
    return found[0]


def frame_of(at: AppTest, key: str) -> pd.DataFrame:
    return table_of(at, key).value


def shown_columns(at: AppTest, key: str) -> list[str]:
    """The columns the page shows, in their order (``column_order``; every column when unset)."""
    table = table_of(at, key)
    return list(table.proto.column_order) or list(table.value.columns)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


ETH_ARGS = ("--symbol", "ETHUSDC", "--interval", "1h", "--days", "60")


# --------------------------------------------------------------------------- the app
def test_every_section_from_the_sprints_files(full, monkeypatch, settings_env):
    at = app(monkeypatch, *ETH_ARGS, "--candles", "300")
    no_errors(at)
    assert [h.value for h in at.header] == ["Data coverage", "Indicators", "Sentiment", "Backtest", "Paper trading",
                                             "Runs side by side"]
    # -- coverage: every file, counted from the files themselves
    cov = frame_of(at, "coverage-table").set_index(["file", "market"])
    eth = cov.loc[("ethusdc_1h_60d.parquet", "ETHUSDC 1h 60d")]
    assert (eth["kind"], eth["rows"], eth["gaps"], eth["missing"]) == ("candles", 1437, 1, 3)
    assert pd.Timestamp(eth["first"]) == full["eth"].index[0] and pd.Timestamp(eth["last"]) == full["eth"].index[-1]
    assert eth["gap_ranges"] == "2024-01-20 05:00 .. 2024-01-20 07:00 (3)" and eth["simulated"] == "SIMULATED"
    btc = cov.loc[("btcusdt_4h_60d.parquet", "BTCUSDT 4h 60d")]
    assert (btc["rows"], btc["gaps"], btc["simulated"]) == (len(full["btc"]), 0, "real")
    stream = cov.loc[("btcusdt_1m_realtime.db", "BTCUSDT")]
    assert (stream["kind"], stream["rows"], stream["gaps"], stream["missing"]) == ("stream", 118, 1, 2)
    assert stream["simulated"] == "not recorded"
    kinds = dict(zip(cov.index.get_level_values(0), cov["kind"]))
    assert kinds["ethusdc_1h_60d_ta.parquet"] == "ta" and kinds["ethusdc_1h_60d__rules_ta_only_signals.parquet"] == "signals"
    assert kinds["ethusdc_1h_60d__rules_ta_only_equity.parquet"] == "equity" and kinds["sentiment_1h.parquet"] == "sentiment"
    assert cov.loc[("ethusdc_1h_60d__rules_ta_only_trades.parquet", "ETHUSDC 1h 60d [rules_ta_only]"), "rows"] == full["backtest"]["metrics"][
        "n_trades"]
    # what explains a row first: the gap ranges beside the counts, the notes (here the stream's) before file facts
    cols = shown_columns(at, "coverage-table")
    assert cols[cols.index("missing") + 1] == "gap_ranges" and cols.index("note") < cols.index("size_mb")
    assert set(cols) == set(COVERAGE_COLUMNS)
    banner = at.warning[0].value
    assert banner.startswith("**SIMULATED market data:**") and f"of {len(cov)} dataset file(s)" in banner
    # -- indicators: the requested dataset, its last 300 rows drawn, labelled simulated
    assert at.selectbox(key="ind-dataset").value == 1  # ETHUSDC sorts after BTCUSDT: picked by the arguments
    assert "ETHUSDC 1h 60d · indicators · SIMULATED" in at.selectbox(key="ind-dataset").options
    (ind, sent_chart, eq_chart, compare_chart) = charts(at)  # the last: runs side by side
    assert len(compare_chart["data"]) >= 1
    traces = {t.get("name"): t for t in ind["data"]}
    last = full["eth_ta"].iloc[-300:]
    np.testing.assert_allclose(values(traces["RSI 14"]["y"]), last["rsi14"].to_numpy())
    assert "ETHUSDC (simulated)" in traces and ind["layout"]["annotations"][0]["text"] == "ETHUSDC (simulated)"
    assert metric(at, "RSI 14") == f"{last['rsi14'].iloc[-1]:.1f}"
    # -- sentiment: values from the file
    s = full["sent"]
    assert metric(at, "Latest score") == f"{s['sentiment_score'].iloc[-1]:+.3f}"
    assert metric(at, "Items, last 24 h") == f"{int(s['n_items'].iloc[-24:].sum()):,}"
    assert metric(at, "Mean, last 7 days") == f"{s['sentiment_score'].iloc[-168:].mean():+.3f}"
    assert sent_chart["layout"]["title"]["text"] == "sentiment score (simulated market)"
    score = next(t for t in sent_chart["data"] if t["name"] == "sentiment score")
    assert len(values(score["y"])) == 30 * 24  # the last 30 days up to the last open time
    np.testing.assert_allclose(values(score["y"]), s["sentiment_score"].iloc[-30 * 24:].to_numpy())
    # the item counts are drawn in their own panel under the score, never over its line
    bars = next(t for t in sent_chart["data"] if t["name"] == "items")
    np.testing.assert_array_equal(values(bars["y"]), s["n_items"].iloc[-30 * 24:].to_numpy())
    lay = sent_chart["layout"]
    score_dom, bars_dom = (lay["yaxis" + t.get("yaxis", "y")[1:]]["domain"] for t in (score, bars))
    assert bars_dom[1] < score_dom[0] and lay["yaxis"]["range"] == [-1.05, 1.05]
    # -- backtest: S5's own JSON and equity file
    from S5.metrics import format_metric

    m = full["backtest"]["metrics"]
    assert at.subheader[0].value == "ETHUSDC 1h 60d · SIMULATED"
    assert metric(at, "Total return") == format_metric("total_return", m["total_return"])
    assert metric(at, "Sharpe") == format_metric("sharpe", m["sharpe"])
    assert metric(at, "Trades") == format_metric("n_trades", m["n_trades"])
    eq = {t["name"]: t for t in eq_chart["data"]}
    np.testing.assert_allclose(values(eq["equity"]["y"]), full["equity"].to_numpy())
    assert "buy and hold" in eq and eq_chart["layout"]["annotations"][0]["text"].endswith("(simulated market): equity")
    html = settings_env.reports_dir / "ethusdc_1h_60d__rules_ta_only_backtest.html"
    assert any(f"full report: `{html}`" in c.value for c in at.caption)
    # -- paper trading: S6 state, S7 store and order log
    tripped = next(w.value for w in at.warning if "Kill-switch testnet" in w.value)
    state = settings_env.data_dir / "state" / "kill_switch_testnet.json"
    assert "TRIPPED** (max_drawdown)" in tripped and f"python S6/risk.py reset --state {state}" in tripped
    assert "reached the limit 10.00%" in tripped  # the trip's own detail, from the limit it ran with
    assert "now: drawdown 11.00% · day loss 11.00% · losing streak 0 · last equity 8,900.00 (peak 10,000.00)" in tripped
    from S6.config import RiskConfig

    assert f"limits in S6/risk.yaml: drawdown {RiskConfig.load().kill_switch.max_drawdown:.2%}" in tripped
    ok = next(s.value for s in at.success if "dry-run" in s.value)
    assert ok.startswith("**Kill-switch dry-run: OK**, entries allowed")
    pos = frame_of(at, "positions").iloc[0]
    assert (pos["mode"], pos["symbol"], pos["state"], pos["qty"]) == ("testnet", "BTCUSDT", "OPEN", 0.00999)
    assert (pos["entry_price"], pos["stop"], pos["take_profit"]) == (42010.5, 41000.0, 44000.0)
    assert metric(at, "Open") == "1"
    # -- the top row
    top = {m.label: (m.value,) for m in at.metric}
    assert top["Open positions"][0] == "1" and top["Kill-switch"][0] == "TRIPPED"
    assert top["Datasets"][0] == str(len(cov)) and top["Latest backtest return"][0] == metric(at, "Total return")
    assert top["Latest sentiment"][0] == metric(at, "Latest score")
    deltas = {m.label: m.proto.delta for m in at.metric}
    assert deltas["Kill-switch"] == "testnet · 1 of 2" and deltas["Datasets"] == "6 SIMULATED"  # ETH candles, ta, signals, equity, trades + sentiment
    assert deltas["Latest backtest return"] == "ETHUSDC 1h 60d · SIMULATED"
    assert deltas["Latest sentiment"] == f"{s.index[-1]:%Y-%m-%d %H:%M} UTC"  # which time the score is of
    orders = frame_of(at, "orders").set_index("client_id")
    assert orders.loc["s7-buy1", "status"] == "FILLED" and orders.loc["s7-buy1", "avg_price"] == 42010.5
    assert orders.loc["s7-buy1", "fills"] == 1 and orders.loc["s7-blk1", "status"] == "BLOCKED"
    assert orders.loc["s7-rej1", "error"] == "Account has insufficient balance"
    assert list(orders.index) == ["s7-rej1", "s7-blk1", "s7-buy1"]  # newest first
    cols = shown_columns(at, "orders")  # why an order failed is beside its status, not scrolled off
    assert cols[cols.index("status") + 1] == "error" and set(cols) == set(orders.reset_index().columns)
    assert (metric(at, "Orders"), metric(at, "Filled"), metric(at, "Blocked / refused"),
            metric(at, "Rejected / unknown")) == ("3", "1", "1", "1")
    assert len(frame_of(at, "order-events")) == 5


def test_widgets_change_what_is_drawn(full, monkeypatch):
    at = app(monkeypatch, *ETH_ARGS)
    at.number_input(key="ind-candles").set_value(100)
    at.run()
    no_errors(at)
    ind = charts(at)[0]
    rsi = next(t for t in ind["data"] if t.get("name") == "RSI 14")
    np.testing.assert_allclose(values(rsi["y"]), full["eth_ta"]["rsi14"].to_numpy()[-100:])
    # the BTC 4h candle file has no _ta file: its indicators are computed in the app, not labelled simulated
    sel = at.selectbox(key="ind-dataset")
    assert sel.options == ["BTCUSDT 4h 60d · candles (indicators computed here)", "ETHUSDC 1h 60d · indicators · SIMULATED"]
    sel.select_index(0)
    at.run()
    no_errors(at)
    ind = charts(at)[0]
    assert ind["layout"]["annotations"][0]["text"] == "BTCUSDT"
    from S2.ta import add_indicators

    macd = next(t for t in ind["data"] if t.get("name") == "MACD")
    np.testing.assert_allclose(values(macd["y"]), add_indicators(full["btc"])["MACD_12_26_9"].to_numpy()[-100:])
    assert any("indicators computed here (no _ta file)" in c.value for c in at.caption)
    # the order table follows the mode filter
    at.multiselect(key="order-modes").set_value([])
    at.run()
    no_errors(at)
    assert frame_of(at, "orders").empty


def test_a_rerun_shows_what_changed_on_disk(full, monkeypatch, settings_env):
    """The executor and a person in another terminal change the state files while the
    page is open: the next run (Reload data, or any widget) shows the new state."""
    from S1.datasets import orders_log_path, state_path
    from S6.killswitch import KillSwitch
    from S7.order_log import OrderLog

    at = app(monkeypatch, *ETH_ARGS)
    assert metric(at, "Kill-switch") == "TRIPPED"
    KillSwitch(path=state_path("kill_switch_dryrun.json")).trip("going on holiday", by="tester")
    KillSwitch(path=state_path("kill_switch_testnet.json")).reset(by="tester", note="checked")
    OrderLog(orders_log_path(), mode="testnet").append(
        symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.00999", price="43000", client_id="s7-sell1",
        exchange_id=78, status="NEW", reason="exit:stop", time="2024-03-01T13:00:00Z")
    at.sidebar.button(key="reload").click()
    at.run()
    no_errors(at)
    assert metric(at, "Kill-switch") == "TRIPPED"
    assert next(m.proto.delta for m in at.metric if m.label == "Kill-switch") == "dry-run · 1 of 2"
    tripped = next(w.value for w in at.warning if "Kill-switch dry-run" in w.value)
    assert "TRIPPED** (manual)" in tripped and "going on holiday (by tester)" in tripped
    assert any(s.value.startswith("**Kill-switch testnet: OK**") for s in at.success)
    orders = frame_of(at, "orders")
    assert orders.iloc[0]["client_id"] == "s7-sell1" and orders.iloc[0]["status"] == "NEW" and len(orders) == 4


def test_a_real_candle_file_is_not_labelled_simulated(settings_env, monkeypatch):
    from S1.datasets import dataset_path, write_parquet
    from S1.local.simulated import simulate_candles

    write_parquet(simulate_candles("BTCUSDT", "4h", "2024-01-01", "2024-03-01"), dataset_path(*BTC4),
                  metadata={"simulated": False})
    at = app(monkeypatch)
    no_errors(at)
    assert not any("SIMULATED" in t or "simulated" in t.lower() for t in texts(at))
    assert "note" not in shown_columns(at, "coverage-table")  # no empty column when every file has no note
    (ind,) = charts(at)
    assert ind["layout"]["annotations"][0]["text"] == "BTCUSDT"
    assert "indicators computed here" in at.selectbox(key="ind-dataset").options[0]
    # the missing outputs name the commands for this market
    infos = " ".join(i.value for i in at.info)
    assert "python S3/sentiment.py --since" in infos and "--interval 4h" in infos
    assert "python S4/decision.py --symbol BTCUSDT --interval 4h --days 60 --rules S4/rules.yaml" in infos
    assert "python S5/backtest.py --symbol BTCUSDT --interval 4h --days 60" in infos
    assert "python S7/executor.py --symbol BTCUSDT --interval 4h --rules S4/rules.yaml --dry-run" in infos


@pytest.mark.parametrize("make_dir", [True, False])
def test_empty_data_dir_names_the_commands(settings_env, monkeypatch, make_dir):
    if make_dir:
        settings_env.data_dir.mkdir(parents=True)
    at = app(monkeypatch)
    no_errors(at)
    (info,) = at.info
    text = info.value
    assert f"No data yet in `{settings_env.data_dir}`" in text
    assert "`make demo`" in text and "`make demo ARGS=--offline`" in text
    assert "python S1/historical.py --symbol BTCUSDT --interval 1h --days 365" in text
    assert "python S2/indicators.py --symbol BTCUSDT --interval 1h --days 365" in text
    assert "python S5/backtest.py --symbol BTCUSDT --interval 1h --days 365" in text
    assert not at.get("plotly_chart") and not at.header
    assert not settings_env.data_dir.exists() or not any(settings_env.data_dir.iterdir())  # nothing created


def test_only_an_order_log(settings_env, monkeypatch):
    from S1.datasets import orders_log_path
    from S7.order_log import OrderLog

    OrderLog(orders_log_path(), mode="dry-run").append(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001", price="27000", client_id="s7-x",
        exchange_id=None, status="REFUSED", reason="entry:x", error="notional below the minimum")
    at = app(monkeypatch)
    no_errors(at)
    assert len(at.header) == 5
    infos = [i.value for i in at.info]
    assert infos[0].startswith("No dataset files yet") and "python S1/historical.py" in infos[0]
    assert any("No backtest yet" in i for i in infos) and any("No kill-switch state yet" in i for i in infos)
    orders = frame_of(at, "orders")
    assert list(orders["status"]) == ["REFUSED"] and list(orders["fills_by"]) == ["simulated (dry-run)"]
    assert metric(at, "Blocked / refused") == "1"


def test_a_session_that_never_traded_is_not_no_state(settings_env, monkeypatch):
    """A replay that decided nothing leaves a store without a position row: the page
    names the session instead of saying there is no executor state."""
    from S1.datasets import executor_state_path, orders_log_path
    from S7.order_log import OrderLog
    from S7.store import ExecutorStore

    db = executor_state_path("replay", "BTCUSDT", "1h", replay=True)
    ExecutorStore(db).close()
    at = app(monkeypatch)
    no_errors(at)
    infos = [i.value for i in at.info]
    assert not any(i.startswith("No executor state yet") for i in infos)
    assert "No position yet: 1 executor session(s) found, none has a fill" in " ".join(infos)
    assert any(c.value == "executor state: dry-run replay BTCUSDT 1h (`state/replay/s7_replay_btcusdt_1h.db`)"
               for c in at.caption)
    assert metric(at, "Open positions") == "0"
    # and with no store at all (here only an order log), the hint names the command that creates one
    db.unlink()
    OrderLog(orders_log_path(), mode="dry-run").append(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001", price="27000", client_id="s7-x",
        exchange_id=None, status="REFUSED", reason="entry:x", error="notional below the minimum")
    at = app(monkeypatch)
    no_errors(at)
    assert any(i.value.startswith("No executor state yet") and "python S7/executor.py" in i.value for i in at.info)


def test_unreadable_files_are_shown_not_raised(settings_env, monkeypatch):
    from S1.datasets import Dataset, dataset_path, orders_log_path, state_path, write_parquet
    from S1.local.simulated import simulate_candles

    write_parquet(simulate_candles("BTCUSDT", "1d", "2024-01-01", "2024-02-01"), dataset_path(Dataset("BTCUSDT", "1d", 31)))
    dataset_path(Dataset("SOLUSDT", "1h", 30)).write_bytes(b"not parquet at all")
    ks = state_path("kill_switch_testnet.json")
    ks.parent.mkdir(parents=True)
    ks.write_text("{broken")
    orders_log_path().write_text('{"time": "2024-01-01T00:00:00Z", "status": "NEW", "client_id": "a"}\nnot json\n')
    (settings_env.data_dir / "btcusdt_1m_realtime.db").write_bytes(b"no sqlite here" * 100)
    at = app(monkeypatch)
    no_errors(at)
    # the 31-candle file is too short for the indicators: said in that section only
    assert any(w.value.startswith("Indicators: btcusdt_1d_31d.parquet: 31 rows, fewer than the 50") for w in at.warning)
    assert len(at.header) == 5
    cov = frame_of(at, "coverage-table").set_index("file")
    assert cov.loc["solusdt_1h_30d.parquet", "note"].startswith("unreadable: ")
    assert cov.loc["btcusdt_1m_realtime.db", "note"].startswith("unreadable: ")
    assert cov.loc["btcusdt_1d_31d.parquet", "rows"] == 31
    cols = shown_columns(at, "coverage-table")
    assert cols.index("note") < cols.index("size_mb")  # the unreadable files' notes are shown
    tripped = next(w.value for w in at.warning if "Kill-switch testnet" in w.value)
    assert "TRIPPED** (state_unreadable)" in tripped and f"--state {ks}" in tripped
    assert ks.read_text() == "{broken"  # read, never rewritten
    assert list(frame_of(at, "orders")["status"]) == ["NEW"]


def test_bad_arguments_one_error_line(settings_env, monkeypatch):
    at = app(monkeypatch, "--days", "many")
    assert not at.exception and at.error[0].value.startswith("bad dashboard argument: argument --days")
    at = app(monkeypatch, "--candles", "0")
    assert not at.exception and at.error[0].value == "--candles must be a positive number, got 0 -- e.g. --candles 500"


def test_plain_python_and_help():
    r = subprocess.run([sys.executable, "S7/dashboard.py", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: S7/dashboard.py") and "--candles" in r.stdout
    r = subprocess.run([sys.executable, "S7/dashboard.py"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "run it with: streamlit run S7/dashboard.py" in r.stderr


# ------------------------------------------------- a real executor session, then the app
def test_a_dry_run_replay_session_is_what_the_dashboard_shows(settings_env, monkeypatch, tmp_path):
    """The pipeline's own S7 command (dry-run replay against the local simulated market)
    writes the order log, the store and the kill-switch; the app shows exactly that."""
    from S1.datasets import sentiment_path, write_parquet
    from S1.local.exchange import LocalBinance
    from S7.order_log import read_order_log
    from S7.store import ExecutorStore

    end = pd.Timestamp.now(tz="UTC").floor("h")
    idx = pd.date_range(end - pd.Timedelta(days=30), end, freq="h", tz="UTC", name="open_time")
    write_parquet(pd.DataFrame({"sentiment_score": np.clip(np.sin(np.arange(len(idx)) / 9.0), -1, 1),
                                "n_items": 3}, index=idx), sentiment_path("1h"), metadata={"simulated": True})
    with LocalBinance(simulate=True, simulate_days=60) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_")}
        env.update(BINANCE_API_URL=server.api_url, SIMULATED_MARKET="1", DATA_DIR=str(settings_env.data_dir))
        # rules that cross often, so the replay trades whatever the last 7 days of the simulated market did
        # (S4/rules.yaml may legitimately stay flat for a week: the test must not depend on the date it runs)
        rules = tmp_path / "often.yaml"
        rules.write_text("entry: {col: close, op: crosses_above, other: {col: ema21}}\n"
                         "exit: {col: close, op: crosses_below, other: {col: ema21}}\n")
        r = subprocess.run([sys.executable, "S7/executor.py", "--symbol", "BTCUSDT", "--interval", "1h", "--rules",
                            str(rules), "--dry-run", "--replay-days", "7", "--duration", "600"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    db = settings_env.data_dir / "state" / "replay" / "s7_replay_btcusdt_1h.db"
    store = ExecutorStore(db)
    try:
        want_orders = {o["client_order_id"]: o["status"] for o in store.orders("BTCUSDT")}
        want_pos = store.position("BTCUSDT")
        want_trips = store.round_trips("BTCUSDT")
    finally:
        store.close()
    assert want_orders, "the replay made no order: the test would prove nothing"
    events = read_order_log(settings_env.data_dir / "orders.jsonl")
    at = app(monkeypatch)
    no_errors(at)
    orders = frame_of(at, "orders")
    assert dict(zip(orders["client_id"], orders["status"])) == want_orders
    # the replay ran on the local simulated market: the executor labels every event, the page shows it
    assert all(e.get("simulated") is True for e in events)
    assert set(orders["mode"]) == {"dry-run replay"} and set(orders["fills_by"]) == {"SIMULATED market"}
    assert len(frame_of(at, "order-events")) == len(events)
    pos = frame_of(at, "positions").iloc[0]
    assert pos["mode"] == "dry-run replay" and pos["qty"] == float(want_pos.qty)
    assert pos["realized_pnl"] == pytest.approx(float(want_pos.realized_pnl), rel=1e-12)
    assert pos["round_trips"] == len(want_trips) == want_pos.round_trips
    assert any(s.value.startswith("**Kill-switch replay BTCUSDT 1h: OK**") for s in at.success) or any(
        "Kill-switch replay BTCUSDT 1h: TRIPPED" in w.value for w in at.warning)
    assert any("filled by the local simulator" in c.value for c in at.caption)


# ------------------------------------------------------------------ the data module
def test_coverage_table_on_its_own(full, settings_env):
    from S7.dashboard_data import COVERAGE_COLUMNS, coverage_table

    cov = coverage_table()
    assert tuple(cov.columns) == COVERAGE_COLUMNS
    assert list(cov["kind"].iloc[:2]) == ["candles", "candles"]  # kinds in S1.datasets.KINDS order
    files = set(cov["file"])
    assert {"ethusdc_1h_60d_ta.parquet", "ethusdc_1h_60d__rules_ta_only_signals.parquet", "ethusdc_1h_60d__rules_ta_only_equity.parquet",
            "ethusdc_1h_60d__rules_ta_only_trades.parquet", "sentiment_1h.parquet", "btcusdt_1m_realtime.db"} <= files
    ta = cov.set_index("file").loc["ethusdc_1h_60d_ta.parquet"]
    assert (ta["rows"], ta["gaps"], ta["missing"], ta["simulated"]) == (1437, 1, 3, True)
    sig = cov.set_index("file").loc["ethusdc_1h_60d__rules_ta_only_signals.parquet"]
    assert bool(sig["simulated"]) is True  # S4 carried the flag over
    # a temp file of an atomic write in progress is not a dataset
    (settings_env.data_dir / ".ethusdc_1h_60d.parquet.abc.tmp").write_bytes(b"partial")
    assert len(coverage_table()) == len(cov)
    # S3's per-asset series is listed as sentiment of that asset's news
    import shutil

    shutil.copy(settings_env.data_dir / "sentiment_1h.parquet", settings_env.data_dir / "sentiment_btc_1h.parquet")
    row = coverage_table().set_index("file").loc["sentiment_btc_1h.parquet"]
    assert (row["kind"], row["market"], row["interval"]) == ("sentiment", "BTC news", "1h")


def test_backtest_runs_newest_first_and_missing_files(full, settings_env):
    from S5.metrics import format_metric
    from S7.dashboard_data import backtest_runs, load_backtest, metric_rows

    (ref,) = backtest_runs()
    assert (ref.symbol, ref.interval, ref.days, ref.simulated) == ("ETHUSDC", "1h", 60, True)
    doc = json.loads(ref.json_path.read_text())
    newer = dict(doc, symbol="BTCUSDT", interval="4h", simulated=False,
                 created_at=(pd.Timestamp(doc["created_at"]) + pd.Timedelta(minutes=5)).isoformat())
    (settings_env.data_dir / "btcusdt_4h_60d_backtest.json").write_text(json.dumps(newer))
    (settings_env.data_dir / "notes_backtest.json").write_text("{}")  # not a dataset name: ignored
    refs = backtest_runs()
    assert [r.json_path.name for r in refs] == ["btcusdt_4h_60d_backtest.json", "ethusdc_1h_60d__rules_ta_only_backtest.json"]
    bt = load_backtest(refs[0])
    assert bt.equity is None and bt.missing == ["btcusdt_4h_60d_equity.parquet", "btcusdt_4h_60d_trades.parquet"]
    bt = load_backtest(refs[1])
    assert bt.html is not None and bt.html.name == "ethusdc_1h_60d__rules_ta_only_backtest.html"
    # buy and hold = S5's definition: first open -> each close, from the initial cash
    sig = full["eth_ta"]
    assert bt.buy_and_hold.iloc[-1] == pytest.approx(bt.init_cash * sig["close"].iloc[-1] / sig["open"].iloc[0])
    assert bt.buy_and_hold.iloc[-1] / bt.init_cash - 1 == pytest.approx(bt.metrics["buy_and_hold_return"])
    rows = metric_rows(bt.metrics).set_index("metric")["value"]
    assert rows["max drawdown"] == format_metric("max_drawdown", bt.metrics["max_drawdown"])


def test_max_drawdown_of_the_drawn_curve_is_s5s(full, settings_env):
    from S7.dashboard_data import backtest_runs, drawdown, load_backtest

    bt = load_backtest(backtest_runs()[0])
    assert drawdown(bt.equity, bt.init_cash).max() == pytest.approx(bt.metrics["max_drawdown"], rel=1e-9)


def test_the_app_does_not_write_into_the_data_dir(full, monkeypatch, settings_env):
    def snapshot():  # SQLite readers of a WAL database may create its -wal/-shm companions; S6's reader its lock
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in settings_env.data_dir.rglob("*")
                if p.is_file() and not p.name.endswith((".lock", "-wal", "-shm"))}

    before = snapshot()
    at = app(monkeypatch, *ETH_ARGS)
    no_errors(at)
    assert snapshot() == before


DATA_MODULES = ("dashboard_data", "dashboard_files", "dashboard_market", "dashboard_backtest", "dashboard_paper",
                "dashboard_figures")


@pytest.mark.parametrize("name", DATA_MODULES)
def test_doctests(name):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(f"S7.{name}"))
    assert res.attempted >= 3 and res.failed == 0


def test_dashboard_data_is_the_one_import():
    """``S7.dashboard_data`` re-exports the loaders of the focused modules (the same
    objects, not copies), and the app uses nothing else of it."""
    import importlib

    from S7 import dashboard_data as D

    owners = {}
    for name in DATA_MODULES[1:]:
        mod = importlib.import_module(f"S7.{name}")
        for attr in mod.__all__:
            owners[attr] = mod
    for attr in D.__all__:
        assert hasattr(D, attr), attr
        if attr in owners:
            assert getattr(D, attr) is getattr(owners[attr], attr), attr
    assert set(D.__all__) - set(owners) == {"overview"}  # the one function of its own
    used = set(re.findall(r"\bD\.([A-Za-z_]+)", (REPO / "S7" / "dashboard.py").read_text()))
    assert used and used <= set(D.__all__), used - set(D.__all__)
    assert all(len((REPO / "S7" / f"{n}.py").read_text().splitlines()) < 400 for n in DATA_MODULES)


def test_commands_are_the_owning_sprints(settings_env):
    from S1.datasets import Dataset
    from S4.signals import sentiment_command
    from S5.backtest_files import backtest_command, signals_command
    from S7.dashboard_data import commands

    c = commands("solusdt", "15m", 30)
    assert c["signals"] == signals_command(Dataset("SOLUSDT", "15m", 30))
    assert c["backtest"] == backtest_command(Dataset("SOLUSDT", "15m", 30))
    since = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=30)).strftime("%Y-%m-%d")
    assert c["sentiment"] == sentiment_command("15m", pd.Timestamp(since)) == (
        f"python S3/sentiment.py --since {since} --interval 15m")


def test_kill_switch_modes_follow_s1_names(settings_env):
    from S1.datasets import kill_switch_path
    from S6.killswitch import KillSwitch
    from S7.dashboard_data import kill_switch_states

    for mode in ("dry-run", "live", "testnet"):
        KillSwitch(path=kill_switch_path(mode)).update_equity(1_000.0, at="2024-03-01T10:00:00Z")
    KillSwitch(path=kill_switch_path("dry-run", symbol="ETHUSDC", interval="4h", replay=True)).update_equity(
        1_000.0, at="2024-03-01T10:00:00Z")
    got = [(k["mode"], k["label"], k["reset_command"]) for k in kill_switch_states()]
    replay = kill_switch_path("dry-run", symbol="ETHUSDC", interval="4h", replay=True)
    assert got == [("live", "live", "python S6/risk.py reset"),
                   ("testnet", "testnet", f"python S6/risk.py reset --state {kill_switch_path('testnet')}"),
                   ("dry-run", "dry-run", f"python S6/risk.py reset --state {kill_switch_path('dry-run')}"),
                   ("dry-run replay", "replay ETHUSDC 4h", f"python S6/risk.py reset --state {replay}")]


# ------------------------------------------------------------------- a real browser
SHOT_SKIP = pytest.mark.skipif(not Path("/usr/bin/chromium").is_file() and not os.environ.get("CHROMIUM"),
                               reason="no headless browser at /usr/bin/chromium (apt-get install -y chromium)")


@pytest.mark.browser
@SHOT_SKIP
def test_dashboard_in_a_real_browser(full, settings_env, tmp_path):
    """The README's command: python S2/screenshot.py S7/dashboard.py --full-page -- ..."""
    import matplotlib.image as mpimg

    out = tmp_path / "dashboard.png"
    env = {**os.environ, "DATA_DIR": str(settings_env.data_dir), "REPORTS_DIR": str(settings_env.reports_dir)}
    r = subprocess.run([sys.executable, "S2/screenshot.py", "S7/dashboard.py", "--out", str(out), "--full-page",
                        "--window-size", "1400,1200", "--wait", "120", "--", *ETH_ARGS], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r"saved (\S+) \(1400x(\d+) full page, (\d+) chart\(s\)", r.stdout)
    assert m and Path(m.group(1)) == out, r.stdout
    assert int(m.group(3)) == 4  # indicators, sentiment, equity, runs side by side: all drawn before the shot
    img = mpimg.imread(out)
    assert img.shape[1] == 1400 and img.shape[0] == int(m.group(2)) > 2500  # the whole page, not the window
    rgb = (img[..., :3] * 255).astype(np.uint8).astype(int)

    def count(hexcolor: str, tol: int = 8) -> int:
        c = [int(hexcolor[i:i + 2], 16) for i in (1, 3, 5)]
        return int(np.all(np.abs(rgb - c) <= tol, axis=-1).sum())

    assert count("#26a69a") > 300 and count("#ef5350") > 300  # candles up / down (S2.charts)
    assert count("#1565c0") > 200  # the equity line
    assert count("#6a1b9a") > 100  # the sentiment line
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 300
