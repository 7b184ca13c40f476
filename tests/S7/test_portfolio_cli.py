"""The portfolio scripts speak the one option vocabulary (issue 21) -- old spellings still work with a
deprecation line, --interval / --days have the single-symbol defaults -- and ``python
S7/portfolio_executor.py`` runs a live testnet session through its command line against the local test
exchange: both symbols' newest candles decided together, the better-ranked one bought, the other
skipped by --max-open."""

from __future__ import annotations

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
    assert (a.interval, a.days, a.slippage_bps) == ("1h", 365, 0.0)
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
    assert main(["--symbols", "ETHUSDT,BNBUSDT", "--rules", str(rules), "--max-open", "1", "--db", str(db),
                 "--duration", "1", "--group-wait", "0", "--order-log", str(tmp_path / "orders.jsonl")]) == 0
    out = capsys.readouterr().out
    posted = texchange.exchange.posted()[before:]
    assert len(posted) == 1 and posted[0].params["symbol"] == "ETHUSDT" and posted[0].params["side"] == "BUY"
    assert "S7 testnet portfolio ETHUSDT,BNBUSDT 1h" in out and "skipped {'max_open': 1}" in out
    assert "most open 1 of --max-open 1" in out
    assert sum("ETHUSDT 1h close" in ln for ln in out.splitlines()) == 1     # one heartbeat line per symbol
