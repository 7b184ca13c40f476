"""The portfolio scripts speak the one option vocabulary (issue 21) -- old spellings still work with a
deprecation line, --interval / --days have the single-symbol defaults -- and ``python
S7/portfolio_executor.py`` runs a live testnet session through its command line against the local test
exchange: both symbols' newest candles decided together, the better-ranked one bought, the other
skipped by --max-open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.S7.helpers import ALWAYS_ENTER, candles


def test_s5_portfolio_old_spellings_still_work(capsys):
    from S5.portfolio import build_parser

    a = build_parser().parse_args(["--symbols", "BTCUSDT,ETHUSDT", "--max-open", "1", "--fees", "0.002",
                                   "--slippage", "0.001", "--init-cash", "500", "--no-report",
                                   "--risk-config", "S6/risk.yaml"])
    assert (a.fee, a.slippage_bps, a.cash, a.no_html, a.risk) == (0.002, 10.0, 500.0, True, "S6/risk.yaml")
    assert (a.interval, a.days, a.rules) == ("1h", 365, "S4/rules.yaml")
    err = capsys.readouterr().err
    for old in ("--fees", "--slippage", "--init-cash", "--no-report", "--risk-config"):
        assert f"deprecated: {old} is now" in err


def test_s7_portfolio_executor_old_spellings_and_defaults(capsys):
    from S7.portfolio_executor import build_parser

    a = build_parser().parse_args(["--symbols", "BTCUSDT,ETHUSDT", "--max-open", "2", "--balance", "750",
                                   "--risk-config", "S6/risk.yaml", "--fees", "0.0005"])
    assert (a.cash, a.risk, a.fee, a.mode) == (750.0, "S6/risk.yaml", 0.0005, "testnet")
    assert (a.interval, a.days, a.slippage_bps) == ("1m", 365, 5.0)            # as S7/executor.py and the backtest
    err = capsys.readouterr().err
    assert "deprecated: --balance is now --cash" in err and "deprecated: --risk-config is now --risk" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--symbols", "BTCUSDT"])          # --max-open is required


def test_bad_input_is_one_line(texchange, rules_file, tmp_path):
    from S1.errors import UserError
    from S7.portfolio_executor import main

    rules = rules_file(ALWAYS_ENTER)
    base = ["--symbols", "ETHUSDT,BNBUSDT", "--rules", str(rules), "--db", str(tmp_path / "none.db")]
    with pytest.raises(UserError, match="max-open"):
        main([*base, "--max-open", "0"])
    with pytest.raises(UserError, match="real-money"):
        main([*base, "--max-open", "1", "--live"])
    with pytest.raises(UserError, match="streamer database"):
        main([*base, "--max-open", "1"])
    with pytest.raises(UserError, match="dry-run"):
        main([*base, "--max-open", "1", "--replay-days", "5"])


def test_live_testnet_session_through_the_command_line(texchange, rules_file, tmp_path, capsys):
    from S1.stream_store import KlineStore
    from S7.portfolio_executor import main

    rules = rules_file(ALWAYS_ENTER)
    db = tmp_path / "ethusdt_1h_realtime.db"
    n = 120
    rising = {"ETHUSDT": 1000 * np.exp(np.linspace(0, 0.02, n)),      # ranks first: the higher trailing return
              "BNBUSDT": 300 * np.exp(np.linspace(0, 0.01, n))}
    store = KlineStore(db, checkpoint_every_s=None)
    try:
        for sym, closes in rising.items():
            f = candles(closes, interval="1h")
            store.write([(sym, "1h", int(t.value // 1_000_000), int(t.value // 1_000_000) + 3_599_999,
                          *(float(f[c].iloc[i]) for c in ("open", "high", "low", "close", "volume", "quote_volume",
                                                          "taker_buy_base", "taker_buy_quote")),
                          int(f["trades"].iloc[i]), 1) for i, t in enumerate(f.index)])
            texchange.exchange.set_price(sym, float(closes[-1]))
    finally:
        store.close()
    before = len(texchange.exchange.posted())
    assert main(["--symbols", "ETHUSDT,BNBUSDT", "--interval", "1h", "--rules", str(rules), "--max-open", "1",
                 "--db", str(db),
                 "--duration", "1", "--group-wait", "0", "--order-log", str(tmp_path / "orders.jsonl")]) == 0
    out = capsys.readouterr().out
    posted = texchange.exchange.posted()[before:]
    assert len(posted) == 1 and posted[0].params["symbol"] == "ETHUSDT" and posted[0].params["side"] == "BUY"
    assert "S7 testnet portfolio ETHUSDT,BNBUSDT 1h" in out and "skipped {'max_open': 1}" in out
    assert "most open 1 of --max-open 1" in out
    assert sum("ETHUSDT 1h close" in ln for ln in out.splitlines()) == 1     # one heartbeat line per symbol


def _write(db, closes: dict, *, live_price: dict | None = None):
    """Closed 1h candles (the newest fresh), and optionally each symbol's candle in progress."""
    from S1.stream_store import KlineStore

    store = KlineStore(db, checkpoint_every_s=None)
    try:
        for sym, cl in closes.items():
            f = candles(cl, interval="1h")
            rows = [(sym, "1h", int(t.value // 1_000_000), int(t.value // 1_000_000) + 3_599_999,
                     *(float(f[c].iloc[i]) for c in ("open", "high", "low", "close", "volume", "quote_volume",
                                                     "taker_buy_base", "taker_buy_quote")),
                     int(f["trades"].iloc[i]), 1) for i, t in enumerate(f.index)]
            if live_price:
                t = int(f.index[-1].value // 1_000_000) + 3_600_000
                p = live_price[sym]
                rows.append((sym, "1h", t, t + 3_599_999, p, p, p, p, 1.0, p, 0.5, p / 2, 1, 0))
            store.write(rows)
    finally:
        store.close()


def test_dry_run_on_live_candles_fills_at_the_next_price_and_restarts_without_reentering(texchange, rules_file,
                                                                                          tmp_path, capsys):
    import json

    import yaml

    from S1.datasets import state_path
    from S7.portfolio_executor import main
    from S7.store import ExecutorStore

    rules = rules_file(ALWAYS_ENTER)
    risk = yaml.safe_load(Path("S6/risk.yaml").read_text())
    risk["sizing"].update({"method": "fixed", "fixed_fraction": 0.3})      # 30 % of the equity per entry
    (tmp_path / "risk.yaml").write_text(yaml.safe_dump(risk))
    db = tmp_path / "ethusdt_1h_realtime.db"
    n = 120
    _write(db, {"ETHUSDT": 1000 * np.exp(np.linspace(0, 0.02, n)), "BNBUSDT": 300 * np.exp(np.linspace(0, 0.01, n))},
           live_price={"ETHUSDT": 1025.0, "BNBUSDT": 304.0})
    argv = ["--symbols", "ETHUSDT,BNBUSDT", "--interval", "1h", "--rules", str(rules), "--max-open", "2", "--db",
            str(db), "--dry-run",
            "--duration", "1", "--group-wait", "0", "--cash", "5000", "--order-log", str(tmp_path / "orders.jsonl"),
            "--name", "duo", "--risk", str(tmp_path / "risk.yaml"), "--slippage-bps", "0"]
    posted = len(texchange.exchange.posted())
    assert main(argv) == 0
    assert len(texchange.exchange.posted()) == posted          # nothing left this machine
    out = capsys.readouterr().out
    assert "S7 dry-run portfolio ETHUSDT,BNBUSDT 1h" in out and "most open 2 of --max-open 2" in out
    st = ExecutorStore.open_readonly(state_path("s7_dryrun_portfolio_duo_1h.db"))
    try:
        for sym, px in (("ETHUSDT", 1025.0), ("BNBUSDT", 304.0)):
            fills = st.fills(sym)
            assert len(fills) == 1 and float(fills[0]["price"]) == pytest.approx(px)   # the next price
            assert st.position(sym).is_open
        spent = sum(float(f["qty"]) * float(f["price"]) for s in ("ETHUSDT", "BNBUSDT") for f in st.fills(s))
    finally:
        st.close()
    book = json.loads(state_path("s7_dryrun_portfolio_duo_1h.sim.json").read_text())["book"]
    assert "ETH" in json.dumps(book) and "BNB" in json.dumps(book)
    assert spent == pytest.approx(2 * 0.3 * 5000, rel=0.01)      # one balance: 30 % of the same 5,000 each
    # a restart on the same state: the account is restored, the candle already acted on is not acted on again
    assert main(argv) == 0
    st = ExecutorStore.open_readonly(state_path("s7_dryrun_portfolio_duo_1h.db"))
    try:
        assert [len(st.orders(s)) for s in ("ETHUSDT", "BNBUSDT")] == [1, 1]
    finally:
        st.close()
