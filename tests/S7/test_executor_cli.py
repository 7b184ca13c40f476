"""``python S7/executor.py`` as a user runs it: the dry-run replay on a simulated
market, a testnet session on the local test exchange fed by a streamer database
(restart included), SIGTERM, a canary secret that must never leak, and bad input
answered in one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.S7.helpers import ALWAYS_ENTER, API_KEY, CANARY_SECRET, candles, warm_closes

REPO = Path(__file__).resolve().parents[2]
ACTIVE = "entry: {col: rsi14, op: crosses_above, value: 50}\nexit: {col: rsi14, op: crosses_below, value: 50}\n"


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BINANCE_", "OPENAI_", "ALERT_WEBHOOK", "CRYPTOPANIC", "X_BEARER"))}
    env.update(DATA_DIR=str(tmp_path / "data"), REPORTS_DIR=str(tmp_path / "reports"),
               TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"), HTTP_MAX_RETRIES="1", HTTP_TIMEOUT="10")
    (tmp_path / "empty.env").write_text("")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run(args, env, *, module=False, timeout=120):
    cmd = [sys.executable, "-m", "S7.executor", *args] if module else [sys.executable, "S7/executor.py", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def sim_market():
    from S1.local.exchange import LocalBinance

    with LocalBinance(simulate=True, simulate_days=30) as server:
        yield server


def test_dry_run_replay_end_to_end(sim_market, tmp_path):
    rules = tmp_path / "active.yaml"
    rules.write_text(ACTIVE)
    env = _env(tmp_path, BINANCE_API_URL=sim_market.api_url)
    r = _run(["--symbol", "BTCUSDT", "--interval", "1h", "--rules", str(rules), "--dry-run", "--replay-days", "7",
              "--duration", "600"], env)  # a bound, not a speed test: the replay ends first
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "S7 dry-run BTCUSDT 1h (simulated market): replayed 168 closed candles (end of data)" in out
    for label in ("orders", "fills", "position", "pnl", "kill-switch", "order log", "state"):
        assert f"  {label}" in out
    assert str(tmp_path / "data" / "orders.jsonl") in out
    assert "reconcile (start): no pending order" in r.stderr
    from S7.order_log import REQUIRED_KEYS, read_order_log

    events = read_order_log(tmp_path / "data" / "orders.jsonl")
    fills = [e for e in events if e["status"] == "FILL"]
    assert len(fills) >= 2 and all(REQUIRED_KEYS <= set(e) for e in events)
    assert {e["mode"] for e in events} == {"dry-run replay"}
    # each fill is at the open of the candle after the signal (the next price), not at the signal's close,
    # slipped against the side by the backtest's default 5 bp and on the tick grid (S5.costs.fill_price)
    assert "COSTS DIFFER" not in out
    # the commission in the quote asset by default, as the backtest and S5/parity.py book it
    assert {f["commission_asset"] for f in fills} == {"USDT"}
    rows = sim_market.market[("BTCUSDT", "1h")]
    opens = {int(t): o for t, o in zip(rows[:, 0], rows[:, 1])}
    by_id = {e["client_id"]: e for e in events if e["event"] == "intent"}

    def next_open(f) -> float:
        signal_candle = by_id[f["client_id"]]["candle"]
        nxt = int((np.datetime64(signal_candle.replace(" ", "T")) - np.datetime64("1970-01-01T00:00"))
                  / np.timedelta64(1, "ms")) + 3_600_000
        return opens[nxt]

    for f in fills:
        buy = by_id[f["client_id"]]["side"] == "BUY"
        slipped = next_open(f) * (1.0005 if buy else 0.9995)
        px = float(f["price"])
        assert (slipped <= px <= slipped * (1 + 1e-6)) if buy else (slipped * (1 - 1e-6) <= px <= slipped)
    # --slippage-bps 0 --fee-asset received: one loud line naming both, fills at the next open exactly,
    # the BUY commission paid in the coin received (as Binance charges without BNB)
    (tmp_path / "zero").mkdir()
    env0 = _env(tmp_path / "zero", BINANCE_API_URL=sim_market.api_url)
    r0 = _run(["--symbol", "BTCUSDT", "--interval", "1h", "--rules", str(rules), "--dry-run", "--replay-days", "7",
               "--slippage-bps", "0", "--fee-asset", "received"], env0)
    assert r0.returncode == 0, r0.stderr
    assert sum("WARNING: COSTS DIFFER FROM THE BACKTEST" in x and "slippage 0 bp (backtest default 5 bp)" in x
               and "commission in the asset received" in x for x in r0.stdout.splitlines()) == 1
    ev0 = read_order_log(tmp_path / "zero" / "data" / "orders.jsonl")
    by_id.update({e["client_id"]: e for e in ev0 if e["event"] == "intent"})
    fills0 = [e for e in ev0 if e["status"] == "FILL"]
    assert len(fills0) >= 2
    assert {f["commission_asset"] for f in fills0 if by_id[f["client_id"]]["side"] == "BUY"} == {"BTC"}
    for f in fills0:
        assert float(f["price"]) == pytest.approx(next_open(f), rel=1e-9)
    # a second replay starts from a fresh simulated account: same decisions, same fills
    r2 = _run(["--symbol", "BTCUSDT", "--interval", "1h", "--rules", str(rules), "--dry-run", "--replay-days", "7"],
              env, module=True)
    assert r2.returncode == 0, r2.stderr
    line = next(x for x in out.splitlines() if x.startswith("  fills"))
    assert line in r2.stdout


def _streamer_db(path: Path, df) -> None:
    from S1.datasets import candles_to_rows
    from S1.stream_store import KlineStore, rows_from_klines

    st = KlineStore(path)
    st.write(rows_from_klines("BTCUSDT", "1m", candles_to_rows(df)))
    st.close()


@pytest.fixture
def testnet(tmp_path, settings_env):
    from S1.local.exchange import LocalBinance, load_real_exchange_info
    from S7.local.exchange import BinanceTestExchange
    from tests.S7.helpers import SHARED

    info = load_real_exchange_info(SHARED) if (SHARED / "data").is_dir() else None
    server = LocalBinance(simulate=True, simulate_days=3, exchange_info=info)
    ex = BinanceTestExchange(server, api_key=API_KEY, api_secret=CANARY_SECRET)
    with server:
        yield server, ex


def test_testnet_session_from_the_streamer_db_and_restart(testnet, tmp_path, rules_file):
    server, ex = testnet
    df = candles(np.r_[warm_closes(80, 27_000.0), 27_050.0])        # the last one closed < 1 min ago
    ex.set_price("BTCUSDT", "27060")
    db = tmp_path / "data" / "btcusdt_1m_realtime.db"
    db.parent.mkdir(parents=True)
    _streamer_db(db, df)
    env = _env(tmp_path, BINANCE_API_URL=server.api_url, BINANCE_TESTNET_API_URL=server.api_url,
               BINANCE_TESTNET_API_KEY=API_KEY, BINANCE_TESTNET_API_SECRET=CANARY_SECRET)
    args = ["--symbol", "BTCUSDT", "--interval", "1m", "--rules", str(rules_file(ALWAYS_ENTER)), "--duration", "6",
            "--max-candle-age", "600", "--verbose"]
    r = _run(args, env)
    assert r.returncode == 0, r.stderr
    assert "S7 testnet BTCUSDT 1m: 1 closed candle (--duration 6s)" in r.stdout
    assert "1 sent (1 BUY, 0 SELL): 1 FILLED" in r.stdout
    posted = ex.posted()
    assert len(posted) == 1 and posted[0].status == 200
    assert re.search(r"position    0\.\d+ @ 27,060\.00 \(stop 2\d+", r.stdout), r.stdout
    assert "equity 10,000.00 -> 9,9" in r.stdout
    # the user-data stream (derived from the local REST URL) was up: the order's events came through it
    m = re.search(r"user stream (\d+) events, 1 subscription\(s\), 0 drop\(s\), 0 terminated \(ws://127\.0\.0\.1:\d+"
                  r"/ws-api/v3\)", r.stdout)
    assert m and int(m.group(1)) >= 2, r.stdout
    assert len(ex.user_stream.subscribe_requests()) == 1
    # restart: reconciles, finds the position, does not act on the same candle again
    r2 = _run(args, env)
    assert r2.returncode == 0, r2.stderr
    assert re.search(r"position: 0\.\d+ BTC @ 27,060\.00", r2.stderr)
    assert "1 BTC more than the strategy's position: not ours" in r2.stderr
    assert len(ex.posted()) == 1 and "order log" in r2.stdout and "(+0 events)" in r2.stdout
    # the canary secret is nowhere: output, order log, state files
    blobs = [r.stdout, r.stderr, r2.stdout, r2.stderr]
    for p in (tmp_path / "data").rglob("*"):
        if p.is_file():
            blobs.append(p.read_bytes().decode("latin-1"))
    assert all(CANARY_SECRET not in b for b in blobs)
    assert ex.user_stream.signatures_seen and all(sig not in b for b in blobs for sig in ex.user_stream.signatures_seen)


def test_wrong_testnet_secret_is_one_line_without_the_secret(testnet, tmp_path, rules_file):
    server, ex = testnet
    db = tmp_path / "data" / "btcusdt_1m_realtime.db"
    db.parent.mkdir(parents=True)
    _streamer_db(db, candles(warm_closes(80, 27_000.0)))
    wrong = "wrong-" + CANARY_SECRET
    env = _env(tmp_path, BINANCE_TESTNET_API_URL=server.api_url, BINANCE_API_URL=server.api_url,
               BINANCE_TESTNET_API_KEY=API_KEY, BINANCE_TESTNET_API_SECRET=wrong)
    r = _run(["--symbol", "BTCUSDT", "--rules", str(rules_file(ALWAYS_ENTER)), "--duration", "1", "--verbose"], env)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the exchange refused our credentials") and "-1022" in last
    assert "https://testnet.binance.vision" in last
    assert wrong not in r.stderr + r.stdout and CANARY_SECRET not in r.stderr + r.stdout
    assert ex.posted() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_cleanly_with_a_summary(tmp_path, rules_file, sig):
    db = tmp_path / "data" / "btcusdt_1m_realtime.db"
    db.parent.mkdir(parents=True)
    _streamer_db(db, candles(warm_closes(80, 27_000.0)))
    info = tmp_path / "info.json"
    import json

    from S1.local.exchange import simulated_symbol_info

    info.write_text(json.dumps({"symbols": [simulated_symbol_info("BTCUSDT", 27_000.0)]}))
    env = _env(tmp_path, BINANCE_API_URL="http://127.0.0.1:9/api")            # nothing there: no network
    proc = subprocess.Popen([sys.executable, "S7/executor.py", "--symbol", "BTCUSDT", "--rules",
                             str(rules_file(ALWAYS_ENTER)), "--dry-run", "--exchange-info", str(info)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = threading.Event()
    err: list[str] = []

    def read():
        for line in proc.stderr:
            err.append(line)
            if "reconcile (start)" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "".join(err)  # signal handlers are installed before the reconcile
        proc.send_signal(sig)
        proc.wait(timeout=30)
        out = proc.stdout.read()
        reader.join(10)
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(err)
    assert "(stop signal)" in out and "S7 dry-run BTCUSDT 1m" in out
    assert any(f"{sig.name}: stopping" in x for x in err)


@pytest.mark.parametrize("args, env_extra, needle", [
    ([], {}, "--testnet needs BINANCE_TESTNET_API_KEY and BINANCE_TESTNET_API_SECRET -- get free testnet keys at "
             "https://testnet.binance.vision"),
    (["--live"], {}, "--live trades real money and needs --i-understand-this-trades-real-money"),
    (["--live", "--i-understand-this-trades-real-money"], {}, "--live needs BINANCE_API_KEY and BINANCE_API_SECRET"),
    (["--replay-days", "3"], {}, "--replay-days replays past candles and only works with --dry-run"),
    (["--dry-run", "--replay-days", "0"], {}, "--replay-days must be more than 0"),
    (["--dry-run", "--interval", "1H"], {}, "did you mean '1h'"),
    (["--dry-run", "--duration", "-5"], {}, "--duration must be a positive number"),
    (["--dry-run", "--poll", "0"], {}, "--poll must be between"),
    (["--dry-run", "--cash", "-1"], {}, "--cash: -1 is not positive"),
    (["--dry-run", "--fee", "0.2"], {}, "--fee must be in [0, 0.05)"),
    (["--dry-run", "--rules", "nope.yaml"], {}, "rules file nope.yaml does not exist"),
    (["--dry-run", "--rules", "S4/rules_ml.yaml"], {}, "reads ml_proba, which the executor cannot score live"),
    (["--dry-run", "--rules", "S4/rules.yaml"], {}, "the rules read sentiment but"),
    (["--dry-run"], {}, "does not exist -- start the streamer first: python S1/streamer.py --symbol BTCUSDT"),
    (["--dry-run", "--symbol", "BTC$USDT"], {}, "invalid symbol"),
    (["--dry-run", "--testnet"], {}, "not allowed with argument"),
    (["--dry-run", "--rules", "HOSTILE"], {}, "HOSTILE"),
])
def test_bad_input_is_one_line(tmp_path, settings_env, capsys, args, env_extra, needle):
    """In-process through S1.cli.run (exactly what ``main_entry`` runs), for speed; the
    subprocess tests above and below cover the real command line."""
    from S1.cli import run as cli_run
    from S7.executor import main

    if "HOSTILE" in args:
        bad = tmp_path / "hostile.yaml"
        bad.write_text("entry: !!python/object/apply:os.system ['echo hacked']\n")
        args = [a if a != "HOSTILE" else str(bad) for a in args]
        needle = "tags such as '!!python/object/apply:os.system' are not allowed"
    base = ["--symbol", "BTCUSDT", "--interval", "1m", "--rules", "S4/rules_ta_only.yaml"]
    for flag in ("--symbol", "--interval", "--rules"):
        if flag in args:
            i = base.index(flag)
            del base[i:i + 2]
    old = os.getcwd()
    os.chdir(REPO)
    try:
        try:
            code = cli_run(main, base + args)
        except SystemExit as exc:      # argparse errors exit from inside main
            code = exc.code
    finally:
        os.chdir(old)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (settings_env.data_dir / "orders.jsonl").exists()


def test_bad_input_from_the_real_command_line(tmp_path):
    r = _run(["--symbol", "BTCUSDT", "--rules", "S4/rules_ta_only.yaml", "--live"], _env(tmp_path))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["error: --live trades real money and needs "
                                             "--i-understand-this-trades-real-money -- add that flag if you mean it; "
                                             "otherwise use --testnet (the default) or --dry-run"]


def test_unknown_symbol_in_a_replay_suggests(sim_market, tmp_path):
    sim_market.rows_for("BTCUSDT", "1h")      # the simulated exchange lists the symbols it has served
    r = _run(["--symbol", "BTCUSTD", "--interval", "1h", "--rules", "S4/rules_ta_only.yaml", "--dry-run",
              "--replay-days", "1"], _env(tmp_path, BINANCE_API_URL=sim_market.api_url))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == \
        f"error: unknown symbol 'BTCUSTD' on {sim_market.api_url} -- did you mean BTCUSDT?"
