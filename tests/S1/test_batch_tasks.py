"""Named batch tasks: selection, one-line validation, instruments.csv, the 1m lake through the batch
(plan, run, --derive-only without any request) and stream tasks against the local stream server."""

from __future__ import annotations

import sqlite3

import pytest

from S1.batch import main
from S1.batch_runner import expand, load_config, load_instruments
from S1.datasets import Dataset, dataset_path, lake_path, read_candles
from S1.errors import UserError
from S1.intervals import to_ms

NOW = "2024-03-10 12:30"


def _yaml(tmp_path, text, name="batch.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def sim(settings_env, monkeypatch):
    from S1.local.exchange import LocalBinance
    from S1.settings import get_settings

    with LocalBinance(simulate=True, simulate_days=60, now_ms=to_ms(NOW)) as ex:
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_ARCHIVE_URL", ex.url)
        get_settings.cache_clear()
        yield ex
    get_settings.cache_clear()


def test_tasks_select_and_unknown_names_list_the_known_ones(tmp_path):
    cfg = load_config(_yaml(tmp_path, """
defaults: {days: [10], end: "2024-01-01"}   # end applies to the history tasks only
jobs:
  - {symbols: [BTCUSDT], intervals: [1h]}
tasks:
  - {name: a, symbols: [ETHUSDC], intervals: [1h, 4h]}
  - {name: b, exchange: [binance, okx], market: swap, symbols: [BTC/USDT], intervals: [1h]}
  - {name: live, mode: stream, exchange: [binance, okx], symbols: [BTC/USDT], duration: 5}
"""))
    assert [t.stem for t in expand(cfg)] == ["btcusdt_1h_10d", "ethusdc_1h_10d", "ethusdc_4h_10d",
                                             "binance-swap_btcusdt_1h_10d", "okx-swap_btcusdt_1h_10d",
                                             "stream:live"]
    assert [t.stem for t in expand(cfg, names="a,job1")] == ["btcusdt_1h_10d", "ethusdc_1h_10d", "ethusdc_4h_10d"]
    assert [t.stem for t in expand(cfg, "okx", names=["b"])] == ["okx-swap_btcusdt_1h_10d"]
    live = expand(cfg, names="live")[0]
    assert live.streams_by_exchange == {"binance": ("spot", ["BTC/USDT"]), "okx": ("spot", ["BTC/USDT"])}
    with pytest.raises(UserError, match=r"unknown task 'nope'.*known tasks: job1, a, b, live"):
        expand(cfg, names="a,nope")


@pytest.mark.parametrize("body, message", [
    ("- {name: s1, mode: stream, symbols: [BTCUSDT]}", r"task 's1' \(tasks.0\): \(task\): a stream task needs duration"),
    ("- {name: h1, symbols: [BTCUSDT], intervals: [1H]}", r"task 'h1' \(tasks.0\): intervals: unsupported interval '1H'"),
    ("- {name: ok, symbols: [BTCUSDT]}\n- {name: x2, symbols: [BTCUSDT], shell: rm}", r"task 'x2' \(tasks.1\): shell"),
    ("- {name: l, lake: true, symbols: [BTCUSDT], intervals: [1h]}", r"task 'l'.*the lake stores 1m candles"),
    ("- {name: b, symbols: [BTCUSDT], instruments: i.csv}", r"task 'b'.*either symbols or instruments"),
    ("- {name: d, symbols: [A1]}\n- {name: d, symbols: [B1]}", r"task names must be unique: d"),
    ("- {name: 'bad name', symbols: [BTCUSDT]}", r"task 'bad name' \(tasks.0\): name"),
    ("- {name: k, mode: stream, symbols: [BTCUSDT], streams: [kline, depth], duration: 3}", r"one stream per task"),
])
def test_a_bad_task_is_one_line_naming_task_and_field(tmp_path, body, message):
    path = _yaml(tmp_path, "tasks:\n" + "\n".join("  " + line for line in body.splitlines()) + "\n")
    with pytest.raises(UserError, match=message) as ei:
        load_config(path)
    assert "\n" not in str(ei.value)


def test_instruments_csv(tmp_path):
    csv = tmp_path / "inst.csv"
    csv.write_text("# comment\nname,source,source_symbol,exchange,price_scale\n"
                   "BTCUSDT,spot,BTCUSDT,binance,1\n1000SHIB,swap,1000SHIB/USDT:USDT,okx,0.001\n")
    rows = load_instruments(csv)
    assert [(i.name, i.source, i.exchange, i.price_scale) for i in rows] == [
        ("BTCUSDT", "spot", "binance", 1.0), ("1000SHIB", "swap", "okx", 0.001)]
    cfg = load_config(_yaml(tmp_path, "tasks:\n  - {name: l, lake: true, instruments: inst.csv, "
                                      "instruments_filter: okx, days: [5]}\n"))
    (u,) = expand(cfg)
    assert (u.kind, u.exchange, u.market, u.symbol, u.name, u.price_scale) == (
        "lake", "okx", "swap", "1000SHIB/USDT:USDT", "1000SHIB", 0.001)
    csv.write_text("name,source,source_symbol,exchange,price_scale\nX,spot,X,binance,-1\n")
    with pytest.raises(UserError, match="line 2: price_scale '-1'"):
        load_instruments(csv)
    with pytest.raises(UserError, match="instruments_filter 'okx' matches no row"):
        expand(cfg)


def test_lake_task_plan_run_and_derive_only_without_requests(sim, tmp_path, capsys):
    (tmp_path / "inst.csv").write_text("name,source,source_symbol,exchange,price_scale\n"
                                       "BTCUSDT,spot,BTCUSDT,binance,1\nETH,spot,ETHUSDC,binance,1\n")
    cfg = _yaml(tmp_path, f"""
tasks:
  - name: lake
    lake: true
    instruments: inst.csv
    days: [3]
    end: "{NOW}"
    derive: [1h, 1d]
""")
    sim.requests.clear()
    assert main(["--config", str(cfg), "--plan"]) == 0
    out = capsys.readouterr().out
    assert sim.requests == [] and "lake:binance/spot/ETH_3d" in out and "0 complete, 1 to fetch" in out

    assert main(["--config", str(cfg), "--workers", "2"]) == 0    # one lake market per worker process
    eth_1m = lake_path("binance", "spot", "ETH", "1m", "2024-03")
    eth_1h = lake_path("binance", "spot", "ETH", "1h", "2024-03")
    assert len(read_candles(eth_1m)) == 3 * 1440 and len(read_candles(eth_1h)) == 71
    assert lake_path("binance", "spot", "BTCUSDT", "1d", "2024-03").exists()

    sim.requests.clear()
    assert main(["--config", str(cfg), "--plan"]) == 0
    assert "1 complete, 0 to fetch" in capsys.readouterr().out

    before = eth_1h.read_bytes()
    eth_1h.unlink()
    assert main(["--config", str(cfg), "--derive-only", "--derive", "4h"]) == 0
    assert sim.requests == []
    assert eth_1h.read_bytes() == before
    assert len(read_candles(lake_path("binance", "spot", "ETH", "4h", "2024-03"))) == 17


def test_history_task_derive_only_makes_no_request(exchange, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")   # the summary table unwrapped
    cfg = _yaml(tmp_path, """
tasks:
  - {name: btc, source: rest, end: "2023-05-01", symbols: [BTCUSDT], intervals: [1h], days: [20], derive: [4h]}
""")
    assert main(["--config", str(cfg)]) == 0
    four = dataset_path(Dataset("BTCUSDT", "4h", 20))
    assert len(read_candles(four)) == 20 * 6
    four.unlink()
    exchange.requests.clear()
    assert main(["--config", str(cfg), "--derive-only", "--derive", "1d"]) == 0
    assert exchange.requests == []
    assert len(read_candles(four)) == 20 * 6 and len(read_candles(dataset_path(Dataset("BTCUSDT", "1d", 20)))) == 20
    # nothing on disk for a task: --derive-only reports it, still without a request
    cfg2 = _yaml(tmp_path, "tasks:\n  - {name: eth, symbols: [ETHUSDC], intervals: [1h], days: [5]}\n", "b2.yaml")
    assert main(["--config", str(cfg2), "--derive-only", "--derive", "4h"]) == 1
    assert "does not exist: nothing to derive from" in capsys.readouterr().out and exchange.requests == []


def test_stream_task_runs_the_streamer_and_reports_rows(settings_env, monkeypatch, tmp_path, capsys):
    from S1.offline import fast_market, stream_url
    from S1.settings import get_settings

    server = fast_market(["BTCUSDT", "ETHUSDT"], candle_seconds=0.5).start()
    try:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        monkeypatch.setenv("BINANCE_WS_URL", stream_url(server))
        get_settings.cache_clear()
        cfg = _yaml(tmp_path, """
tasks:
  - {name: live, mode: stream, symbols: [BTCUSDT, ETHUSDT], intervals: [1m], duration: 4}
""")
        assert main(["--config", str(cfg), "--plan"]) == 0
        plan = capsys.readouterr().out
        assert "1 connection(s)" in plan and "btcusdt_1m_realtime.db (new)" in plan
        assert main(["--config", str(cfg)]) == 0
        out = capsys.readouterr().out
    finally:
        server.stop()
    db = settings_env.data_dir / "btcusdt_1m_realtime.db"
    con = sqlite3.connect(db)
    try:
        n = con.execute("SELECT count(*) FROM kline").fetchone()[0]
        symbols = {r[0] for r in con.execute("SELECT DISTINCT symbol FROM kline")}
    finally:
        con.close()
    assert n > 0 and symbols == {"BTCUSDT", "ETHUSDT"}
    assert "binance:" in out and "rows" in out and "ok" in out


def test_stream_task_on_two_exchanges_at_once(settings_env, monkeypatch, tmp_path, capsys):
    """binance and okx in one stream task: two streamers (one connection each) run at the same time,
    each writing its own file."""
    pytest.importorskip("ccxt.pro")
    from S1.local.okx import serve
    from S1.offline import fast_market, stream_url
    from S1.settings import get_settings

    monkeypatch.setenv("COLUMNS", "300")
    server = fast_market(["BTCUSDT"], candle_seconds=0.5).start()
    okx, okx_ws = serve(port=0, inst_ids=["BTC-USDT"], speed=120.0, days=1)
    try:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        monkeypatch.setenv("BINANCE_WS_URL", stream_url(server))
        monkeypatch.setenv("CCXT_API_URLS", f"okx={okx.url}")
        monkeypatch.setenv("CCXT_WS_URLS", f"okx={okx_ws.ws_url}")
        get_settings.cache_clear()
        cfg = _yaml(tmp_path, """
tasks:
  - {name: both, mode: stream, exchange: [binance, okx], symbols: [BTC/USDT], intervals: [1m], duration: 5}
""")
        assert main(["--config", str(cfg)]) == 0, capsys.readouterr().out
        out = capsys.readouterr().out
    finally:
        server.stop()
        okx.stop()
    counts = {}
    for name in ("btcusdt_1m_realtime.db", "okx_btcusdt_1m_realtime.db"):
        con = sqlite3.connect(settings_env.data_dir / name)
        try:
            counts[name] = con.execute("SELECT count(*) FROM kline").fetchone()[0]
        finally:
            con.close()
    assert all(n > 0 for n in counts.values()), counts
    assert "binance:" in out and "okx:" in out
