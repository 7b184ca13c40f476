"""The offline mode's simulated news: market-wide (the same for every symbol run), and
its items keep their 'simulated' label on a later ``--no-fetch`` run."""

from __future__ import annotations

import re

import pandas as pd

END = "2024-03-01"


def _items(body: bytes) -> set[bytes]:
    return set(re.findall(rb"<item>.*?</item>", body))


def test_feed_is_the_same_for_every_symbol_and_stable_across_windows():
    from S3.offline import simulated_rss

    btc = simulated_rss(symbol="BTCUSDT", days=20, end=END)
    eth = simulated_rss(symbol="ETHUSDT", days=20, end=END)
    assert btc == eth
    longer = simulated_rss(symbol="SOLUSDT", days=40, end=END)
    assert _items(btc) and _items(btc) <= _items(longer)   # a day's headlines do not depend on the window
    assert b"<title>ETH " in btc or b" ETH " in btc        # market-wide: not only the run's asset


def _run(symbol, tmp_path, *, fetch=True):
    from S1.settings import get_settings
    from S3.local.news import LocalNews
    from S3.offline import simulated_rss
    from S3.pipeline import build_sentiment

    with LocalNews() as news:
        url = news.add_feed("simulated", simulated_rss(symbol=symbol, days=30, end=END))
        settings = get_settings().model_copy(update={"news_feeds": url})
        series, run = build_sentiment(since="2024-02-10", until=END, interval="1h", sources=["rss"],
                                      classifier="lexicon", settings=settings, fetch=fetch,
                                      items_path=tmp_path / "news_items.parquet",
                                      out_path=tmp_path / "sentiment_1h.parquet", progress=False)
    return series, run


def test_rerunning_btc_after_eth_gives_the_same_market_wide_series(settings_env, tmp_path):
    first, run1 = _run("BTCUSDT", tmp_path)
    items_after_btc = pd.read_parquet(tmp_path / "news_items.parquet")
    _run("ETHUSDT", tmp_path)
    assert len(pd.read_parquet(tmp_path / "news_items.parquet")) == len(items_after_btc)  # nothing new stored
    again, run2 = _run("BTCUSDT", tmp_path)
    assert run1.items_used == run2.items_used > 0
    pd.testing.assert_frame_equal(first, again)


def test_no_fetch_keeps_the_simulated_label(settings_env, tmp_path):
    from S1.datasets import read_metadata
    from S1.settings import get_settings

    assert not get_settings().simulated_market       # this run itself is not in offline mode
    _run("BTCUSDT", tmp_path)
    series, run = _run("BTCUSDT", tmp_path, fetch=False)
    assert run.simulated_items == run.items_used > 0
    meta = read_metadata(tmp_path / "sentiment_1h.parquet")
    assert meta["simulated"] is True and meta["simulated_items"] == run.items_used


def test_real_items_are_not_labelled_simulated(settings_env, tmp_path):
    from S3.items import make_items, simulated_mask

    items = make_items([{"title": "Bitcoin rallies", "published_at": "2024-01-01", "guid": "real-1",
                         "url": "https://news.example.com/a"}], source="rss:x", fetched_at=pd.Timestamp(END))
    assert not simulated_mask(items).any()
    sim = make_items([{"title": "BTC rallies", "published_at": "2024-01-01", "guid": "sim-BTC-20240101-0",
                       "url": "http://127.0.0.1/simulated/sim-BTC-20240101-0"}], source="rss:127.0.0.1",
                     fetched_at=pd.Timestamp(END))
    assert simulated_mask(sim).all()


def test_sentiment_script_no_fetch_plot_says_simulated(settings_env, monkeypatch, capsys):
    """``python S3/sentiment.py --no-fetch --plot`` on items of the simulated feed (fetched by
    an earlier offline run) labels its output SIMULATED although this run is not offline."""
    from S1.cli import run
    from S1.datasets import read_metadata, sentiment_path
    from S1.settings import get_settings
    from S3.local.news import LocalNews
    from S3.offline import simulated_rss
    from S3.sentiment import main

    with LocalNews() as news:
        monkeypatch.setenv("NEWS_FEEDS", news.add_feed("simulated", simulated_rss(days=30, end=END)))
        get_settings.cache_clear()
        args = ["--since", "2024-02-10", "--until", END, "--interval", "1h", "--classifier", "lexicon"]
        assert run(main, args) == 0
    monkeypatch.delenv("NEWS_FEEDS")
    get_settings.cache_clear()
    capsys.readouterr()
    assert run(main, [*args, "--no-fetch", "--plot"]) == 0
    out = capsys.readouterr().out
    assert "SIMULATED:" in out
    assert read_metadata(sentiment_path("1h"))["simulated"] is True
    page = (get_settings().reports_dir / "sentiment_1h.html").read_text()
    assert "class='banner'>SIMULATED" in page
