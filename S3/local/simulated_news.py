"""A deterministic simulated news feed for the offline mode of the main job.

It produces a real RSS 2.0 document (served by :class:`S3.local.news.LocalNews`),
so the offline run goes through exactly the same fetch, parse, deduplicate and
classify code as the real feeds. Headlines are built from neutral templates and
the simulated market's own daily moves (a big up day tends to get bullish
headlines the *next* morning), so the sentiment series is plausible, but it is
simulated and every file made from it says so (GUIDs ``sim-…``, links under
``/simulated/``: :func:`S3.items.simulated_mask` recognises them).

The feed is **market-wide and the same whichever symbol is run**: it covers the
fixed assets :data:`MARKET_ASSETS`, and each day's headlines are seeded by the day
alone. Running BTC, then ETH, then BTC again therefore stores the same items and
gives BTC the same market-wide sentiment both times (a feed that followed the
symbol would add ETH headlines to the market-wide series on every ETH run).

>>> body = simulated_rss(days=3, end="2024-01-10")
>>> body.count(b"<item>"), b"simulated" in body
(12, True)
>>> simulated_rss(symbol="ETHUSDT", days=3, end="2024-01-10") == body       # the symbol does not matter
True
"""

from __future__ import annotations

import zlib
from email.utils import format_datetime

import numpy as np
import pandas as pd

#: The assets the simulated market-wide news talks about (each has its own simulated candles).
MARKET_ASSETS = ("BTC", "ETH")

_BULL = ["{a} rallies as inflows into spot funds accelerate", "{a} climbs after major exchange adds new pairs",
         "Analysts turn bullish on {a} after strong weekly close", "{a} network activity hits record high"]
_BEAR = ["{a} slides as traders brace for regulatory crackdown", "Exchange hack rattles {a} markets",
         "{a} drops sharply amid wave of liquidations", "{a} miners sell holdings as fees fall"]
_NEUTRAL = ["{a} trades sideways ahead of central bank decision", "What to watch in {a} markets this week",
            "{a} developers publish quarterly roadmap update", "Options expiry looms for {a} traders"]


def simulated_rss(*, symbol: str | None = None, days: int = 365, end=None, per_day: int = 4) -> bytes:
    """An RSS document with ``per_day`` simulated headlines a day over ``days`` days before ``end``.

    ``symbol`` is accepted for compatibility and ignored: the feed is market-wide
    (headline ``k`` of a day is about ``MARKET_ASSETS[k % len(MARKET_ASSETS)]``)."""
    from S1.local.simulated import simulate_candles

    del symbol  # market-wide: the same feed for every symbol (see the module docstring)
    end_ts = (pd.Timestamp(end, tz="UTC") if end is not None else pd.Timestamp.now(tz="UTC")).floor("D")
    start = end_ts - pd.Timedelta(days=days)
    moves = {}
    for a in MARKET_ASSETS:
        daily = simulate_candles(f"{a}USDT", "1d", start - pd.Timedelta(days=1), end_ts)
        moves[a] = (daily["close"] / daily["open"] - 1)
    items = []
    for day in pd.date_range(start - pd.Timedelta(days=1), end_ts - pd.Timedelta(days=1), freq="D"):
        # seeded by the day alone: the same headlines whatever the window asked for
        rng = np.random.default_rng(zlib.crc32(f"news:market:{day:%Y%m%d}".encode()))
        for k in range(per_day):
            a = MARKET_ASSETS[k % len(MARKET_ASSETS)]
            move = float(moves[a].get(day, 0.0))
            tilt = np.tanh(move * 40)  # yesterday's move colours today's news
            u = rng.random()
            pool = _BULL if u < 0.33 + 0.25 * tilt else _BEAR if u > 0.67 + 0.25 * tilt else _NEUTRAL
            title = pool[rng.integers(len(pool))].format(a=a)
            when = day + pd.Timedelta(days=1) + pd.Timedelta(minutes=int(rng.integers(0, 1440)))
            if when > end_ts or when <= start:
                continue
            guid = f"sim-{a}-{day:%Y%m%d}-{k}"
            items.append((when, title, guid))
    items.sort(key=lambda x: x[0], reverse=True)
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<rss version="2.0"><channel>',
           "<title>Simulated crypto news (offline mode)</title>",
           "<link>http://127.0.0.1/simulated</link><description>simulated headlines</description>"]
    for when, title, guid in items:
        out.append(f"<item><title>{title}</title><link>http://127.0.0.1/simulated/{guid}</link>"
                   f"<guid>{guid}</guid><pubDate>{format_datetime(when.to_pydatetime())}</pubDate>"
                   "<description>simulated headline</description></item>")
    out.append("</channel></rss>")
    return "\n".join(out).encode()
