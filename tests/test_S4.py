"""The user's sprint-plan check for S4: the signals file exists, has entry/exit/signal,
and signal only takes the values -1, 0 and 1."""

from __future__ import annotations

import pandas as pd

from S1.cli import run
from S1.datasets import Dataset, dataset_path, sentiment_path, write_parquet
from S4 import decision
from tests.S4.helpers import make_sentiment, write_market


def test_signals_file_exists_with_entry_exit_and_signal_in_minus1_0_1(settings_env, btc_1h):
    write_market(settings_env.data_dir, btc_1h)                       # S1 + S2 outputs
    write_parquet(make_sentiment(btc_1h.index), sentiment_path("1h"))  # S3 output
    code = run(decision.main, ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150",
                               "--rules", str(decision.DEFAULT_RULES), "--no-plot"])
    assert code == 0
    path = dataset_path(Dataset("BTCUSDT", "1h", 150), "signals")
    assert path.exists()
    df = pd.read_parquet(path)
    for col in ("entry", "exit", "signal"):
        assert col in df.columns
    assert set(df["signal"].unique()) <= {-1, 0, 1}
    assert set(df["signal"].unique()) == {-1, 0, 1}, "real data: the example rules buy and sell"
    assert df["entry"].dtype == bool and df["exit"].dtype == bool
    assert ((df["signal"] == 1) == df["entry"]).all() and ((df["signal"] == -1) == df["exit"]).all()
    assert str(df.index.tz) == "UTC" and len(df) == len(btc_1h)
