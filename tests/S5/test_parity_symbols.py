"""``python S5/parity.py --symbols A,B --workers N | --scheduler ...`` (issue 20): one parity check
per symbol through S1.fanout, one line each and a total, the same lines and files as a sequential
run, a non-zero exit when any symbol differs or cannot be checked."""

from __future__ import annotations

import os
import re

import pytest

from S1.cli import run

SYMBOLS = ("BTCUSDT", "ETHUSDT")
ARGS = ["--interval", "1h", "--days", "60", "--rules", "S4/rules_ta_only.yaml"]


@pytest.fixture
def markets(settings_env):
    from S1.local.simulated import simulate_candles
    from tests.S4.helpers import write_market

    for s in SYMBOLS:
        write_market(settings_env.data_dir, simulate_candles(s, "1h", "2023-01-01", "2023-03-02"), symbol=s,
                     days=60, simulated=True)
    return settings_env


def _main(argv) -> int:
    from S5.parity import main

    return run(main, argv)


def _files(data_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.glob("*_parity.json"))}


def _run(markets, capsys, extra) -> tuple[int, list[str], dict[str, bytes]]:
    for p in markets.data_dir.glob("*_parity.json"):
        p.unlink()
    code = _main(["--symbols", ",".join(SYMBOLS), *ARGS, *extra])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    return code, lines, _files(markets.data_dir)


def test_workers_give_the_sequential_lines_and_files(markets, capsys):
    seq = _run(markets, capsys, [])
    par = _run(markets, capsys, ["--workers", "2"])
    assert seq == par
    code, lines, files = seq
    assert code == 0 and len(files) == 2
    per = [ln for ln in lines if re.match(r"^[A-Z]+USDT: \d+ trades, 0 mismatches -> ", ln)]
    assert [ln.split(":")[0] for ln in per] == list(SYMBOLS)       # the order of --symbols
    n = [int(re.search(r"(\d+) trades", ln).group(1)) for ln in per]
    assert min(n) > 0 and lines[-1] == f"total: 2 symbols, {sum(n)} trades, 0 mismatches"
    # each symbol's file is the one the single-symbol command writes
    for p in markets.data_dir.glob("*_parity.json"):
        p.unlink()
    assert _main(["--symbol", "ETHUSDT", *ARGS]) == 0
    capsys.readouterr()
    single = _files(markets.data_dir)
    assert len(single) == 1 and single.items() <= files.items()


def test_a_difference_or_a_missing_symbol_fails_the_run(markets, capsys, monkeypatch):
    code = _main(["--symbols", "BTCUSDT,SOLUSDT", *ARGS, "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"^BTCUSDT: \d+ trades, 0 mismatches", out, re.M)
    assert re.search(r"^SOLUSDT: not checked -- .*python S2/indicators.py --symbol SOLUSDT", out, re.M)
    assert out.strip().splitlines()[-1].endswith("0 mismatches, 1 not checked")
    from S5 import parity_check

    real = parity_check.run_paper

    def perturbed(*a, **kw):
        got = real(*a, **kw)
        if kw.get("symbol") == "ETHUSDT":
            got["trades"][0]["qty"] *= 1.001
        return got

    monkeypatch.setattr(parity_check, "run_paper", perturbed)      # in-process: the sequential run
    assert _main(["--symbols", ",".join(SYMBOLS), *ARGS]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^BTCUSDT: \d+ trades, 0 mismatches", out, re.M)
    assert re.search(r"^ETHUSDT: \d+ trades, 1 mismatches", out, re.M) and "  trade 0: qty" in out
    assert re.search(r"^total: 2 symbols, \d+ trades, 1 mismatches$", out, re.M)


@pytest.mark.parametrize("argv,needle", [
    (["--symbol", "BTCUSDT", "--symbols", "ETHUSDT"], "give --symbol or --symbols"),
    ([], "give --symbol or --symbols"),
    (["--symbol", "BTCUSDT", "--workers", "2"], "--workers / --scheduler spread --symbols"),
    (["--symbols", "BTCUSDT,btcusdt"], "lists BTCUSDT more than once"),
    (["--symbols", "BTCUSDT", "--scheduler", "127.0.0.1:8786"], "not a Dask scheduler address"),
])
def test_bad_options_are_one_line(settings_env, capsys, argv, needle):
    assert _main([*argv, *ARGS]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_a_dask_cluster_gives_the_sequential_lines_and_files(markets, capsys):
    distributed = pytest.importorskip("distributed")
    seq = _run(markets, capsys, [])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:      # started here: the workers see DATA_DIR
        got = _run(markets, capsys, ["--scheduler", cluster.scheduler_address])
        with distributed.Client(cluster) as client:
            pids = client.run(os.getpid)
    assert got == seq and seq[0] == 0
    assert len(pids) == 2
