"""The S3 scripts end to end (classify, train_classifier, sentiment, news, evaluate):
outputs, printed metrics, one-line errors with exit codes, both ways of running them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import read_metadata, read_parquet, sentiment_path
from S1.settings import get_settings

REPO = Path(__file__).resolve().parents[2]

LABELLED = """id,date,headline,label
1,2024-01-01,Crypto exchange hacked and $200 million in bitcoin stolen,-1
2,2024-01-01,SEC approves first spot bitcoin ETF,1
3,2024-01-02,Bitcoin conference to be held in Miami on Thursday,0
4,2024-01-02,Bitcoin plunges as liquidations mount,-1
5,2024-01-03,Ether rallies as institutional demand surges,1
6,2024-01-03,Ethereum developers schedule a call for next week,0
"""


@pytest.fixture
def labelled(tmp_path) -> Path:
    p = tmp_path / "labelled.csv"
    p.write_text(LABELLED)
    return p


def cli(module: str, argv: list[str]) -> int:
    mod = __import__(f"S3.{module}", fromlist=["main"])
    return run(mod.main, argv)


def test_classify_lexicon_prints_metrics(settings_env, labelled, tmp_path, capsys):
    out = tmp_path / "out.parquet"
    assert cli("classify", ["--input", str(labelled), "--classifier", "lexicon", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "accuracy=1.000" in text and "macro-F1=1.000" in text and "pred bearish" in text
    df = read_parquet(out)
    assert len(df) == 6 and {"title", "true_label", "label", "score", "confidence"} <= set(df.columns)
    assert df["true_label"].tolist() == [-1, 1, 0, -1, 1, 0]
    assert read_metadata(out)["classifier"] == "lexicon"


def test_classify_with_openai_through_local_server(llm_settings, labelled, tmp_path, capsys, llm_server):
    out = tmp_path / "out.csv"
    assert cli("classify", ["--input", str(labelled), "--classifier", "openai", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "LLM gpt-4o-mini: 6 item(s), 0 from cache, 1 API request(s)" in text and "estimated cost $" in text
    assert pd.read_csv(out)["label"].tolist() == ["bearish", "bullish", "neutral", "bearish", "bullish", "neutral"]
    assert cli("classify", ["--input", str(labelled), "--classifier", "openai", "--out", str(out)]) == 0
    assert "6 from cache, 0 API request(s)" in capsys.readouterr().out
    assert len(llm_server.requests) == 1


def test_train_then_classify_local(settings_env, tmp_path, capsys):
    rows = ["headline,label"]
    for coin in ("Bitcoin", "Ether", "Solana", "Cardano", "Litecoin", "Polkadot"):
        rows += [f"{coin} soars to a record,1", f"{coin} rallies on ETF approval,1",
                 f"{coin} exchange hacked,-1", f"{coin} plunges on liquidations,-1",
                 f"{coin} conference next week,0", f"{coin} podcast episode,0"]
    train_csv = tmp_path / "train.csv"
    train_csv.write_text("\n".join(rows) + "\n")
    assert cli("train_classifier", ["--labels", str(train_csv), "--folds", "3", "--name", "tiny"]) == 0
    text = capsys.readouterr().out
    assert "3-fold cross-validation on 36 rows" in text and "model saved" in text
    model = get_settings().data_dir / "models" / "tiny.joblib"
    assert model.exists() and model.with_suffix(".joblib.json").exists()
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("headline,label\nDogecoin soars to a record,1\nDogecoin exchange hacked,-1\n")
    assert cli("classify", ["--input", str(test_csv), "--classifier", "local:tiny",
                            "--out", str(tmp_path / "o.parquet")]) == 0
    assert "accuracy=1.000" in capsys.readouterr().out


def test_sentiment_from_a_file_has_no_look_ahead(settings_env, tmp_path, capsys):
    p = tmp_path / "news.csv"
    p.write_text("published_at,title\n2024-01-01T10:37:00Z,Exchange hacked and funds stolen\n"
                 "2024-01-01T12:00:00Z,Bitcoin ETF approval sends BTC to a record high\n")
    argv = ["--since", "2024-01-01", "--until", "2024-01-01 16:00", "--sources", f"file:{p}",
            "--classifier", "lexicon", "--half-life", "2h"]
    assert cli("sentiment", argv) == 0
    text = capsys.readouterr().out
    assert "2 item(s) classified with lexicon" in text and "17 1h candle(s)" in text
    s = read_parquet(sentiment_path("1h"))
    assert list(s.columns) == ["sentiment_score", "n_items", "evidence"] and len(s) == 17
    assert str(s.index.dtype) == "datetime64[ns, UTC]"
    t = lambda h: pd.Timestamp(f"2024-01-01 {h}:00", tz="UTC")  # noqa: E731
    assert s.loc[:t(10), "sentiment_score"].eq(0).all() and s.loc[t(10), "n_items"] == 0
    assert s.loc[t(11), "n_items"] == 1 and s.loc[t(11), "sentiment_score"] < 0   # the 10:37 hack
    assert s.loc[t(12), "n_items"] == 0 and s.loc[t(12), "sentiment_score"] < 0   # the 12:00 ETF news is not yet in
    assert s.loc[t(13), "n_items"] == 1 and s.loc[t(13), "sentiment_score"] > s.loc[t(12), "sentiment_score"]
    meta = read_metadata(sentiment_path("1h"))
    assert meta["classifier"] == "lexicon" and meta["half_life"] == "2h"
    # a re-run appends nothing and writes the same series
    assert cli("sentiment", argv) == 0
    assert "0 new item(s) appended, 2 stored" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_parquet(sentiment_path("1h")), s)


def test_news_and_sentiment_from_local_feeds(settings_env, monkeypatch, news_server, shared_dir, capsys):
    body = (shared_dir / "data/news/coindesk_rss_2026-09-25.xml").read_bytes()
    good = news_server.add_feed("coindesk", body)
    bad = news_server.add_feed("broken", "oops", status=500, content_type="text/html")
    monkeypatch.setenv("NEWS_FEEDS", f"{good},{bad}")
    monkeypatch.setenv("HTTP_TIMEOUT", "30")  # generous: no test here waits on a timeout
    get_settings.cache_clear()
    cfg = Path(settings_env.data_dir).parent / "fast.yaml"
    cfg.write_text("http: {max_attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}\n")
    assert cli("news", ["--sources", "rss", "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "3 new item(s) appended, 3 stored" in text and "SKIPPED (" in text and "HTTP 500" in text
    assert cli("sentiment", ["--since", "2026-09-25 12:00", "--until", "2026-09-25 18:00", "--interval", "15m",
                             "--no-fetch", "--classifier", "lexicon", "--config", str(cfg), "--plot"]) == 0
    html = get_settings().reports_dir / "sentiment_15m.html"
    assert f"plot -> {html}" in capsys.readouterr().out and html.stat().st_size > 10_000
    s = read_parquet(sentiment_path("15m"))
    assert s["n_items"].sum() == 3
    # 14:32:48, 14:37:32 and 14:41:53 all become visible at the 14:45 candle
    assert s.loc[pd.Timestamp("2026-09-25 14:45", tz="UTC"), "n_items"] == 3
    assert s.loc[:pd.Timestamp("2026-09-25 14:30", tz="UTC"), "sentiment_score"].eq(0).all()


def test_one_line_errors(settings_env, labelled, tmp_path, capsys):
    out = str(tmp_path / "o.parquet")
    cases = [
        ("classify", ["--input", str(tmp_path / "none.csv"), "--classifier", "lexicon", "--out", out], "does not exist"),
        ("classify", ["--input", str(labelled), "--classifier", "gpt", "--out", out], "unknown classifier"),
        ("classify", ["--input", str(labelled), "--classifier", "lexicon", "--out", "x.txt"], ".parquet or .csv"),
        ("classify", ["--input", str(labelled), "--classifier", "local:missing", "--out", out], "train one with"),
        ("classify", ["--input", str(labelled), "--classifier", "openai", "--out", out], "OPENAI_API_KEY is not set"),
        ("sentiment", ["--since", "2024-01-01", "--interval", "1H", "--no-fetch"], "unsupported interval"),
        ("sentiment", ["--since", "2024-01-01", "--no-fetch"], "no news items"),
        ("sentiment", ["--since", "2024-01-01", "--sources", "telegram"], "unknown news source"),
        ("sentiment", ["--since", "2024-01-01", "--no-fetch", "--half-life", "soon"], "not a duration"),
        ("train_classifier", ["--labels", str(labelled)], "only 6 labelled rows"),
    ]
    for module, argv, message in cases:
        assert cli(module, argv) == 2, (module, argv)
        err = capsys.readouterr().err.strip()
        assert message in err and err.startswith("error:") and "\n" not in err, err
    assert not Path(out).exists()


@pytest.mark.parametrize("form", ["file", "module"])
def test_scripts_run_both_ways(tmp_path, form):
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "TOOLKIT_ENV_FILE": str(tmp_path / "none.env")}
    env = {k: v for k, v in env.items() if not k.startswith(("OPENAI_", "CRYPTOPANIC_", "X_BEARER"))}
    p = tmp_path / "h.csv"
    p.write_text(LABELLED)
    cmd = [sys.executable, "S3/classify.py"] if form == "file" else [sys.executable, "-m", "S3.classify"]
    r = subprocess.run(cmd + ["--input", str(p), "--classifier", "lexicon", "--out", str(tmp_path / "o.parquet")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "macro-F1=1.000" in r.stdout
    assert read_parquet(tmp_path / "o.parquet")["label"].tolist() == \
        ["bearish", "bullish", "neutral", "bearish", "bullish", "neutral"]
