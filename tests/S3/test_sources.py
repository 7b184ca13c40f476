"""S3/sources.py + S3/fetch.py against a local HTTP news server: RSS/Atom (the
real CoinDesk capture when ../shared is there), CryptoPanic, X, files; failures
of one source never stop the others."""

from __future__ import annotations

import logging
import time

import pandas as pd
import pytest

from S1.datasets import news_items_path
from S1.errors import UserError
from S1.settings import get_settings
from S3.fetch import FetchError, http_get, retry_after_seconds
from S3.items import read_items
from S3.sources import collect, fetch_cryptopanic, fetch_x, ingest, parse_source_specs

NOW = pd.Timestamp("2024-05-02 00:00", tz="UTC")

RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Test News</title><link>https://news.test/</link>
<item><title>Bitcoin ETF approval lifts BTC to a record</title><link>https://news.test/a?utm_source=rss</link>
<guid isPermaLink="false">guid-a</guid><pubDate>Wed, 01 May 2024 10:37:00 +0000</pubDate>
<description><![CDATA[<p>Spot <b>ETF</b> approved.</p>]]></description></item>
<item><title>Exchange hacked &amp; ether drained</title><link>https://news.test/b</link>
<guid>guid-b</guid><pubDate>Wed, 01 May 2024 11:05:00 +0200</pubDate></item>
</channel></rss>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom test</title><id>urn:x</id><updated>2024-05-01T12:00:00Z</updated>
<entry><title>Solana network halts for five hours</title><id>urn:atom:1</id>
<link href="https://atom.test/1"/><updated>2024-05-01T12:00:00Z</updated><summary>Outage.</summary></entry>
</feed>"""


@pytest.fixture
def news_env(settings_env, monkeypatch, news_server):
    monkeypatch.setenv("CRYPTOPANIC_URL", news_server.url + "/cryptopanic")
    monkeypatch.setenv("X_API_URL", news_server.url + "/x")
    monkeypatch.setenv("HTTP_TIMEOUT", "30")  # generous: no test here waits on a timeout
    get_settings.cache_clear()
    return news_server


def _with_feeds(monkeypatch, urls):
    monkeypatch.setenv("NEWS_FEEDS", ",".join(urls))
    get_settings.cache_clear()


def test_real_coindesk_capture(news_env, monkeypatch, shared_dir, fast_config):
    body = (shared_dir / "data/news/coindesk_rss_2026-09-25.xml").read_bytes()
    _with_feeds(monkeypatch, [news_env.add_feed("coindesk", body)])
    items, report = ingest(["rss"], config=fast_config, now=pd.Timestamp("2026-09-25 17:00", tz="UTC"))
    assert report.added == 3 and not report.failed
    assert items["title"].tolist() == [
        "Tether confirms minimal EQIBank exposure following $89M US asset seizure",
        "Tokenization is moving faster than Washington",
        "Circle and Tether step in to freeze hacker wallet after massive Bitget crypto heist",
    ]
    assert items["published_at"].tolist() == [pd.Timestamp(t, tz="UTC") for t in
                                              ("2026-09-25 14:32:48", "2026-09-25 14:37:32", "2026-09-25 14:41:53")]
    assert set(items["guid"]) == {"a0b4a6ba-5569-4fef-940c-e402f9698d89", "4b1641e9-2454-46f5-841d-56cf7c985a35",
                                  "8c72534c-d321-4ff2-a9db-0d3ee8cc1a04"}
    heist = items.iloc[2]
    assert heist["summary"].startswith("The stablecoin issuer blacklisted a wallet")  # not lost to <dc:description/>
    assert heist["url"].startswith("https://www.coindesk.com/markets/2026/09/25/circle-and-tether")
    assert heist["source"].startswith("rss:127.0.0.1") and "USDT" in heist["symbols"]
    # a second run fetches the same feed and stores nothing new
    _, report = ingest(["rss"], config=fast_config, now=pd.Timestamp("2026-09-25 18:00", tz="UTC"))
    assert report.added == 0 and report.total == 3


def test_failures_are_skipped_and_others_ingested(news_env, monkeypatch, fast_config, caplog):
    good = news_env.add_feed("good", RSS)
    atom = news_env.add_feed("atom", ATOM, content_type="application/atom+xml")
    malformed = news_env.add_feed("malformed", "<html><body>We are down for maintenance</body>",
                                  content_type="text/html")
    error = news_env.add_feed("error", "boom", status=500, content_type="text/html")
    missing = news_env.url + "/feeds/missing"
    dead = "http://127.0.0.1:9/feed"  # nothing listens on the discard port
    _with_feeds(monkeypatch, [good, malformed, error, missing, dead, atom])
    caplog.set_level(logging.WARNING)
    items, report = ingest(["rss"], config=fast_config, now=NOW)
    assert sorted(items["title"]) == ["Bitcoin ETF approval lifts BTC to a record", "Exchange hacked & ether drained",
                                      "Solana network halts for five hours"]
    assert len(report.failed) == 4 and all("SKIPPED" in line for line in report.lines() if "feeds/m" in line)
    assert "not a valid RSS/Atom feed" in report.failed[f"rss {malformed}"]
    assert "HTTP 500" in report.failed[f"rss {error}"]
    assert "HTTP 404" in report.failed[f"rss {missing}"]
    assert len(news_env.requests_to("/feeds/error")) == fast_config.http.max_attempts  # 5xx retried, bounded
    assert len(news_env.requests_to("/feeds/missing")) == 1                              # 4xx not retried
    assert "skipped" in caplog.text
    row = items.set_index("title").loc["Exchange hacked & ether drained"]
    assert row["published_at"] == pd.Timestamp("2024-05-01 09:05", tz="UTC")  # +0200 -> UTC
    assert row["symbols"] == "ETH"
    first = items.set_index("title").loc["Bitcoin ETF approval lifts BTC to a record"]
    assert first["summary"] == "Spot ETF approved." and first["url"] == "https://news.test/a"


def test_transient_errors_are_retried_then_succeed(news_env, monkeypatch, fast_config):
    url = news_env.add_feed("flaky", RSS)
    news_env.inject("status", path="/feeds/flaky", status=503)
    news_env.inject("drop", path="/feeds/flaky")
    _with_feeds(monkeypatch, [url])
    items, report = collect(["rss"], config=fast_config, now=NOW)
    assert len(items) == 2 and not report.failed
    assert [r["fault"] for r in news_env.requests_to("/feeds/flaky")] == ["status", "drop", None]


def test_retry_after_is_honoured_and_capped(news_env, fast_config):
    url = news_env.add_feed("limited", RSS)
    news_env.inject("429", path="/feeds/limited", retry_after=1)
    t0 = time.monotonic()
    resp = http_get(url, config=fast_config.http, timeout=30)
    assert resp.status == 200 and time.monotonic() - t0 >= 0.95
    times = [r["t"] for r in news_env.requests_to("/feeds/limited")]
    assert times[1] - times[0] >= 0.95
    news_env.inject("429", path="/feeds/limited", retry_after=600)  # longer than max_retry_after: give up now
    n = len(news_env.requests_to("/feeds/limited"))
    with pytest.raises(FetchError, match="wait 600s"):
        http_get(url, config=fast_config.http, timeout=30)
    # given up at once: the one 429, no retry, nothing waited out
    assert [r["fault"] for r in news_env.requests_to("/feeds/limited")[n:]] == ["429"]
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert retry_after_seconds({"x-rate-limit-reset": "1000"}, now=990.0) == 10.0


def test_cryptopanic_pages_symbols_and_token_secrecy(news_env, monkeypatch, fast_config, caplog):
    monkeypatch.setenv("CRYPTOPANIC_TOKEN", "cp-token")
    get_settings.cache_clear()
    news_env.cryptopanic_pages = [
        [{"id": 1, "title": "Bitcoin tops $70,000", "published_at": "2024-05-01T10:00:00Z",
          "original_url": "https://site.test/btc", "currencies": [{"code": "BTC"}], "source": {"title": "Site"}}],
        [{"id": 2, "title": "Solana outage", "description": "Down.", "published_at": "2024-05-01T11:00:00Z",
          "url": "https://cryptopanic.test/2", "instruments": [{"code": "SOL"}], "source": {"domain": "sol.test"}}],
    ]
    items = fetch_cryptopanic(config=fast_config, settings=get_settings(), now=NOW)
    assert items["title"].tolist() == ["Bitcoin tops $70,000", "Solana outage"]
    assert items["symbols"].tolist() == ["BTC", "SOL"]
    assert items["source"].tolist() == ["cryptopanic:Site", "cryptopanic:sol.test"]
    assert items["guid"].tolist() == ["cryptopanic:1", "cryptopanic:2"]
    reqs = news_env.requests_to("/cryptopanic/posts")
    assert [r["query"]["page"] for r in reqs] == ["1", "2"] and reqs[0]["query"]["kind"] == "news"
    # a failing API is reported without the token, which travels in the query string
    news_env.inject("status", path="/cryptopanic", status=502, count=10)
    caplog.set_level(logging.INFO)
    _, report = collect(["cryptopanic"], config=fast_config, now=NOW)
    assert "HTTP 502" in report.failed["cryptopanic"]
    assert "cp-token" not in report.failed["cryptopanic"] and "cp-token" not in caplog.text


def test_x_recent_search_paging(news_env, monkeypatch, fast_config):
    monkeypatch.setenv("X_BEARER_TOKEN", "x-token")
    get_settings.cache_clear()
    news_env.x_pages = [
        [{"id": "101", "text": "$BTC breaking out", "created_at": "2024-05-01T10:00:00.000Z"}],
        [{"id": "102", "text": "ether looks weak", "created_at": "2024-05-01T09:00:00.000Z"}],
    ]
    items = fetch_x(config=fast_config, settings=get_settings(), now=NOW)
    assert sorted(items["guid"]) == ["x:101", "x:102"]
    assert set(items["url"]) == {"https://x.com/i/web/status/101", "https://x.com/i/web/status/102"}
    assert items.set_index("guid").loc["x:101", "symbols"] == "BTC"
    reqs = news_env.requests_to("/x/tweets")
    assert reqs[0]["headers"]["Authorization"] == "Bearer x-token" and reqs[1]["query"]["next_token"] == "p1"


def test_missing_tokens_and_bad_specs(news_env, fast_config, tmp_path):
    with pytest.raises(UserError, match="CRYPTOPANIC_TOKEN"):
        collect(["cryptopanic"], config=fast_config)
    with pytest.raises(UserError, match="X_BEARER_TOKEN"):
        collect(["x"], config=fast_config)
    with pytest.raises(UserError, match="unknown news source"):
        parse_source_specs("rss,telegram")
    with pytest.raises(UserError, match="does not exist"):
        collect([f"file:{tmp_path / 'none.csv'}"], config=fast_config)


def test_file_source_with_rss_in_one_run(news_env, monkeypatch, fast_config, tmp_path):
    p = tmp_path / "history.csv"
    p.write_text("date,headline\n2021-01-02,Bitcoin ETF approval lifts BTC to a record\n"
                 "2021-01-03,Old story\n")
    _with_feeds(monkeypatch, [news_env.add_feed("good", RSS)])
    items, report = ingest(["rss", f"file:{p}"], config=fast_config, now=NOW)
    assert report.fetched[f"file {p}"] == 2 and report.added == 4  # same title, years apart: two stories
    stored = read_items(news_items_path())
    assert len(stored) == 4
    assert stored.loc[stored["title"] == "Old story", "published_at"].item() == \
        pd.Timestamp("2021-01-03 23:59:59.999", tz="UTC")
