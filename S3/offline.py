"""Offline mode for S3: the one door from product code to the local news server and simulated feed.

Product modules never import :mod:`S3.local` directly (``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def simulated_rss(*, symbol: str = "BTCUSDT", days: int = 365, end=None, per_day: int = 4) -> bytes:
    """A deterministic *simulated* RSS feed (see :func:`S3.local.simulated_news.simulated_rss`):
    market-wide, the same whichever ``symbol`` is asked for (kept for compatibility)."""
    from S3.local.simulated_news import simulated_rss as _rss

    return _rss(symbol=symbol, days=days, end=end, per_day=per_day)


@contextmanager
def local_news(*, symbol: str = "BTCUSDT", days: int = 365) -> Iterator[dict[str, str]]:
    """Serve the simulated market-wide RSS feed on 127.0.0.1; yield ``{"NEWS_FEEDS": url}`` for S3's
    sources. Every symbol's run serves the same feed, so the stored items do not grow with each symbol."""
    from S3.local.news import LocalNews

    news = LocalNews().start()
    try:
        yield {"NEWS_FEEDS": news.add_feed("simulated", simulated_rss(symbol=symbol, days=days))}
    finally:
        news.stop()
