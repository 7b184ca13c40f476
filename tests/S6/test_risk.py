"""The risk command line: size (with real filters / a local exchange), status, trip,
reset, alert-test; both `python S6/risk.py` and `python -m S6.risk` forms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from S1.cli import run
from S6.risk import EXIT_REFUSED, main

REPO = Path(__file__).resolve().parents[2]
SIZE = ["size", "--equity", "10000", "--price", "43000", "--atr", "350", "--method", "atr", "--risk", "0.01",
        "--k", "2", "--symbol", "BTCUSDT"]


@pytest.fixture
def real_info_file(shared_dir) -> Path:
    return shared_dir / "data/api/rest_exchangeInfo_2021-10-12.json"


def test_size_atr_with_real_filters(settings_env, real_info_file, capsys):
    assert main(SIZE + ["--exchange-info", str(real_info_file)]) == 0
    out = capsys.readouterr().out
    assert "0.14285714 BTC" in out and "stop       42,300" in out and "take-profit 44,400" in out
    assert "BTCUSDT OK: order 0.14285 BTC @ 43000" in out


def test_size_json(settings_env, real_info_file, capsys):
    assert main(SIZE + ["--exchange-info", str(real_info_file), "--json"]) == 0
    o = json.loads(capsys.readouterr().out)
    assert o["size"] == pytest.approx(100 / 700) and o["stop"] == 42_300 and o["risk_amount"] == pytest.approx(100)
    assert o["filters"]["ok"] and o["filters"]["qty"] == "0.14285" and o["filters"]["stop"] == "42300"


def test_size_refused_by_min_notional(settings_env, real_info_file, capsys):
    code = main(["size", "--equity", "100", "--price", "0.0035", "--method", "fixed", "--fraction", "0.05",
                 "--symbol", "BTTUSDT", "--exchange-info", str(real_info_file)])
    out = capsys.readouterr().out
    assert code == EXIT_REFUSED
    assert "REFUSED (MIN_NOTIONAL)" in out and "raise the size to at least 2858" in out


def test_size_fetches_exchange_info_from_the_exchange(settings_env, monkeypatch, capsys):
    from S1.datasets import exchange_info_path
    from S1.local.exchange import LocalBinance
    from S1.local.simulated import simulate_candles
    from S1.settings import get_settings

    with LocalBinance() as server:
        server.add_candles("BTCUSDT", "1h", simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-02"))
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        get_settings.cache_clear()
        assert main(SIZE) == 0
        assert len(server.requests_to("exchangeInfo")) == 1
    assert exchange_info_path().exists() and "BTCUSDT OK" in capsys.readouterr().out


def test_size_input_errors_are_one_line(settings_env, capsys):
    assert run(main, ["size", "--equity", "10000", "--price", "100", "--method", "kelly", "--win-rate", "0.55",
                      "--payoff", "1.5", "--n-trades", "12"]) == 2
    assert run(main, ["size", "--equity", "10000", "--price", "100", "--method", "atr"]) == 2
    assert run(main, ["size", "--equity", "-5", "--price", "100", "--atr", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert "at least 30 closed trades" in err[0] and "needs an ATR" in err[1] and "equity must be > 0" in err[2]


def test_kelly_from_backtest(sim_backtest, tmp_path, capsys):
    from S1.datasets import Dataset, dataset_path, write_parquet
    from S1.local.exchange import simulated_symbol_info
    from S6.sizing import kelly_fraction, kelly_stats

    info = tmp_path / "info.json"
    info.write_text(json.dumps({"symbols": [simulated_symbol_info("BTCUSDT", 100.0)]}))
    args = ["size", "--equity", "10000", "--price", "100", "--method", "kelly", "--from-backtest",
            "--symbol", "BTCUSDT", "--interval", "1h", "--days", "90", "--exchange-info", str(info), "--json"]
    trades = sim_backtest["trades"]
    p, b, n = kelly_stats(trades["return"])
    assert n == 90 and kelly_fraction(win_rate=p, payoff=b) == 0          # this simple strategy has no edge
    assert main(args) == 0
    o = json.loads(capsys.readouterr().out)
    assert o["size"] == 0 and "no edge" in o["note"] and o["filters"] is None
    # mirror the trades: now the backtest has an edge and Kelly sizes from its statistics
    flipped = trades.assign(**{"return": -trades["return"], "pnl": -trades["pnl"]})
    write_parquet(flipped, dataset_path(Dataset("BTCUSDT", "1h", 90), kind="trades"))
    assert main(args) == 0
    o = json.loads(capsys.readouterr().out)
    p, b, n = kelly_stats(flipped["return"])
    expected = kelly_fraction(win_rate=p, payoff=b, fraction=0.5, cap=0.25)
    assert 0 < expected and o["kelly_fraction"] == pytest.approx(expected)
    assert o["size"] == pytest.approx(expected * 10_000 / 100) and o["filters"]["ok"]
    assert run(main, ["size", "--equity", "10000", "--price", "100", "--method", "kelly", "--from-backtest",
                      "--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"]) == 2
    assert "python S5/backtest.py --symbol BTCUSDT --interval 1h --days 30" in capsys.readouterr().err


def test_status_trip_reset_cycle(settings_env, capsys):
    from S1.datasets import state_path

    assert main(["status"]) == 0
    assert "armed" in capsys.readouterr().out
    assert main(["trip", "--reason", "holiday", "--by", "erin"]) == 0
    assert "TRIPPED" in capsys.readouterr().out
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "TRIPPED (manual)" in out and "holiday (by erin)" in out
    assert main(["reset", "--by", "erin", "--note", "back"]) == 0
    assert "was tripped (manual" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    [st] = json.loads(capsys.readouterr().out)        # a list: one entry per state file
    assert st["mode"] == "live" and not st["tripped"] and st["events"][-1]["event"] == "reset" and st["events"][-1]["by"] == "erin"
    assert Path(st["path"]) == state_path("kill_switch.json")


def test_alert_test_command(settings_env, receiver, monkeypatch, capsys, tmp_path):
    from S1.settings import get_settings

    fast = tmp_path / "fast.yaml"
    fast.write_text("alerts:\n  timeout_s: 1\n  max_retries: 2\n  backoff_initial_s: 0.01\n  backoff_max_s: 0.02\n")

    assert run(main, ["alert-test"]) == 2                     # no URL configured
    assert "ALERT_WEBHOOK_URL is not set" in capsys.readouterr().err
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("ALERT_WEBHOOK_KIND", "slack")
    get_settings.cache_clear()
    assert main(["alert-test", "--message", "hello"]) == 0
    assert receiver.received[0].json == {"text": ":information_source: [INFO] test alert: hello"}
    receiver.answer(500, 500, 500, 500)
    assert run(main, ["alert-test", "--config", str(fast)]) == 3
    assert len(receiver.received) == 1 + 3                     # the first test alert + 3 attempts


def _script(args, tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "REPORTS_DIR": str(tmp_path / "reports"),
           "TOOLKIT_ENV_FILE": str(tmp_path / "none.env")}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_both_invocation_forms(tmp_path):
    a = _script(["S6/risk.py", "size", "--equity", "10000", "--price", "43000", "--atr", "350"], tmp_path)
    assert a.returncode == 0, a.stderr
    assert "0.14285714" in a.stdout and "filters    not checked" in a.stdout
    b = _script(["-m", "S6.risk", "status"], tmp_path)
    assert b.returncode == 0 and "armed" in b.stdout
    c = _script(["S6/stress.py", "--symbol", "BTCUSDT", "--interval", "1h"], tmp_path)
    assert c.returncode == 2 and c.stderr.count("\n") == 1 and "--days" in c.stderr
