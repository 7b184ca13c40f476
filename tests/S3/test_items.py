"""S3/items.py: normalisation, de-duplication, idempotent atomic append, file import."""

from __future__ import annotations

import pandas as pd
import pytest

from S1.datasets import news_items_path, read_parquet
from S1.errors import UserError
from S3.items import (
    append_items,
    canonical_url,
    clean_text,
    dedupe,
    find_symbols,
    make_items,
    normalise_title,
    parse_times,
    read_headlines,
    read_items,
)

NOW = pd.Timestamp("2024-03-01 12:00", tz="UTC")


def _items(rows, source="rss:test", now=NOW):
    return make_items(list(rows), source=source, fetched_at=now, aliases={"BTC": ("bitcoin", "btc"), "ETH": ("ether",)})


def test_normalisation_helpers():
    assert clean_text("<p>Bitcoin&nbsp;<b>soars</b>\x00\u200b  </p>") == "Bitcoin soars"
    assert normalise_title("Bitcoin SOARS — to $100K!") == normalise_title("bitcoin soars to 100k")
    assert normalise_title("Bitcoin soars") != normalise_title("Bitcoin sinks")
    assert canonical_url("https://X.com/a/?utm_medium=rss&b=2#c") == "https://x.com/a?b=2"
    assert canonical_url("https://x.com/a") == canonical_url("https://x.com/a/")
    assert find_symbols("Bitcoin and $SOL rally, ethereal art unaffected", {"BTC": ("bitcoin",), "ETH": ("ether",)}) \
        == "BTC,SOL"  # "ethereal" is not "ether"


def test_make_items_types_dates_and_clamping():
    df = _items([
        {"title": "Bitcoin hits record", "published_at": "2024-03-01T10:37:00Z", "url": "https://a.com/1"},
        {"title": "Undated story", "published_at": None},
        {"title": "Feed from the future", "published_at": "2024-03-02T00:00:00Z"},
        {"title": "   ", "published_at": "2024-03-01"},  # no title: dropped
    ])
    assert len(df) == 3
    assert str(df["published_at"].dtype) == "datetime64[ns, UTC]"
    got = dict(zip(df["title"], df["published_at"]))
    assert got["Bitcoin hits record"] == pd.Timestamp("2024-03-01 10:37", tz="UTC")
    assert got["Undated story"] == NOW            # first moment we knew it
    assert got["Feed from the future"] == NOW     # never later than we saw it
    assert df.loc[df["title"] == "Bitcoin hits record", "symbols"].item() == "BTC"
    assert df["item_id"].str.len().eq(16).all() and df["item_id"].is_unique


def test_dedupe_by_guid_url_and_title_window():
    base = _items([{"title": "ETF approved", "published_at": "2024-03-01T10:00Z", "guid": "g1",
                    "url": "https://a.com/etf"}])
    new = _items([
        {"title": "Different title same guid", "published_at": "2024-03-01T11:00Z", "guid": "g1"},
        {"title": "Different title same url", "published_at": "2024-03-01T11:00Z", "url": "https://a.com/etf/?utm_source=x"},
        {"title": "ETF Approved!", "published_at": "2024-03-02T10:00Z", "url": "https://b.com/other"},   # same story, 1 day later
        {"title": "ETF approved", "published_at": "2024-03-20T10:00Z", "url": "https://b.com/later"},    # outside 72h: new story
        {"title": "Fresh story", "published_at": "2024-03-01T09:00Z", "url": "https://c.com/1"},
        {"title": "Fresh story", "published_at": "2024-03-01T08:00Z", "url": "https://d.com/1"},         # earlier copy wins
    ], now=pd.Timestamp("2024-04-01", tz="UTC"))
    out = dedupe(new, base, title_window_hours=72)
    assert sorted(zip(out["title"], out["url"])) == [
        ("ETF approved", "https://b.com/later"), ("Fresh story", "https://d.com/1")]


def test_append_is_idempotent_and_keeps_existing_rows(settings_env):
    path = news_items_path()
    first = _items([{"title": f"Story {i}", "published_at": f"2024-03-01T0{i}:00Z", "url": f"https://a.com/{i}"}
                    for i in range(5)])
    allrows, added = append_items(first, path)
    assert added == 5 and len(read_parquet(path)) == 5
    before = read_items(path)
    # the same items again (re-fetched later: a new fetch time) add nothing and change nothing
    again = make_items([{"title": f"Story {i}", "published_at": f"2024-03-01T0{i}:00Z", "url": f"https://a.com/{i}"}
                        for i in range(5)], source="rss:test", fetched_at=NOW + pd.Timedelta(hours=5))
    _, added = append_items(again, path)
    assert added == 0
    pd.testing.assert_frame_equal(read_items(path), before)
    # one new story is appended; old rows are untouched, the file stays sorted by time
    more = _items([{"title": "Story late", "published_at": "2024-03-01T00:30Z", "url": "https://a.com/x"}])
    allrows, added = append_items(more, path)
    stored = read_items(path)
    assert added == 1 and len(stored) == 6 and stored["published_at"].is_monotonic_increasing
    pd.testing.assert_frame_equal(stored[stored["title"] != "Story late"].reset_index(drop=True), before)


def test_failed_write_keeps_the_previous_file(settings_env, monkeypatch):
    path = news_items_path()
    append_items(_items([{"title": "Kept", "published_at": "2024-03-01T00:00Z"}]), path)
    raw = path.read_bytes()
    import pyarrow.parquet as pq

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError):
        append_items(_items([{"title": "Lost", "published_at": "2024-03-01T01:00Z"}]), path)
    assert path.read_bytes() == raw
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_read_headlines_date_only_is_end_of_day(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("date,headline,label\n2022-01-25,Bitcoin soars,1\n2022-01-26,\"Quoted, with comma\",0\n")
    df = read_headlines(p)
    assert df["published_at"].iloc[0] == pd.Timestamp("2022-01-25 23:59:59.999", tz="UTC")
    assert df["title"].tolist() == ["Bitcoin soars", "Quoted, with comma"]
    df2 = read_headlines(p, date_only="start_of_day")
    assert df2["published_at"].iloc[0] == pd.Timestamp("2022-01-25", tz="UTC")


def test_parse_times_formats_and_errors():
    s = parse_times(pd.Series(["2024-01-01T10:37:00+02:00", "2024-01-01 10:37"]))
    assert s.tolist() == [pd.Timestamp("2024-01-01 08:37", tz="UTC"), pd.Timestamp("2024-01-01 10:37", tz="UTC")]
    assert parse_times(pd.Series(["1704067200"]))[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert parse_times(pd.Series(["1704067200000"]))[0] == pd.Timestamp("2024-01-01", tz="UTC")
    with pytest.raises(UserError, match="not dates"):
        parse_times(pd.Series(["2024-01-01", "yesterday"]))


def test_read_headlines_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_headlines(tmp_path / "nope.csv")
    p = tmp_path / "bad.csv"
    p.write_text("when,words\n2024-01-01,x\n")
    with pytest.raises(UserError, match="no headline column"):
        read_headlines(p)
    p.write_text("headline\nx\n")
    with pytest.raises(UserError, match="no date column"):
        read_headlines(p)
    assert read_headlines(p, need_date=False)["title"].tolist() == ["x"]
